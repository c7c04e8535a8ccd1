"""The example providers.yaml, what a loaded Plan exposes, keys and their secrecy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from router.config import FREE, config_json_schema, default_base_url
from router.errors import ConfigError, RouterError
from router.plan import load_config
from router.types import Message
from tests.logs import capture_logs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "providers.yaml"
DATA = Path(__file__).parent / "data"
# A key value no test would write by accident: if it shows up anywhere, it leaked.
CANARY = "sk-canary-7fQ2xL9pZ4wK8mN3vB6cJ1hT5"
FULL_ENV = {
    "OPENAI_API_KEY": CANARY,
    "ANTHROPIC_API_KEY": "sk-ant-test-4c3b2a1908f7e6d5",
    "DEEPSEEK_API_KEY": "sk-deepseek-test-11223344",
    "XAI_API_KEY": "xai-test-5566778899aabbcc",
    "GEMINI_API_KEY": "AIza-test-99887766554433221100",
}


def test_example_loads_with_every_key_set() -> None:
    config = load_config(EXAMPLE, env=FULL_ENV)
    assert config.disabled_providers == frozenset()
    assert set(config.providers) == {
        "openai",
        "anthropic",
        "deepseek",
        "xai",
        "grok_news",
        "gemini",
        "ollama",
        "mock",
        "mock_flaky",
    }
    assert set(config.routes) == {"analysis", "news", "summary"}
    # The news route: Grok over the Responses API, searching given X handles.
    [grok, _] = config.routes["news"].steps
    assert (grok.provider, grok.server_tools, grok.max_tool_calls) == (
        "grok_news",
        ("x_search",),
        4,
    )
    analysis = [f"{s.provider}/{s.model}" for s in config.chain("analysis")]
    assert analysis[-2:] == ["mock_flaky/mock-1", "mock/mock-1"]
    assert config.chain("summary")[-2][:2] == ("ollama", "llama3.2:latest")
    assert config.chain("summary")[2][:2] == ("gemini", "gemini-2.5-flash")
    assert config.routes["analysis"].vars == {
        "ticker": "str",
        "prices": "list[float]",
        "horizon_days": "int",
    }
    assert config.providers["mock_flaky"].mock is not None
    assert config.providers["mock_flaky"].mock.failures == [503, 503]
    # xAI refuses search_parameters (Live Search) with 410 Gone: the example sends none.
    assert dict(config.providers["xai"].extra) == {}
    assert "options" in config.providers["ollama"].extra
    gemini = config.providers["gemini"]
    assert (gemini.kind, gemini.base_url, gemini.key_env) == (
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta",
        "GEMINI_API_KEY",
    )
    flash = gemini.models["gemini-2.5-flash"]
    assert (flash.price.input_per_mtok, flash.price.output_per_mtok) == (
        Decimal("0.30"),
        Decimal("2.50"),
    )
    assert flash.structured_output == "json_schema"
    # The validated document stays readable beside the plan.
    assert config.config.providers["mock_flaky"].kind == "mock"


def test_example_budgets_cover_global_provider_and_route_scopes() -> None:
    budgets = load_config(EXAMPLE, env=FULL_ENV).budgets
    scopes = {(b.period, b.provider, b.route) for b in budgets.values()}
    assert ("day", None, None) in scopes
    assert ("month", "openai", None) in scopes
    assert any(route == "analysis" for _, _, route in scopes)


def test_example_first_line_points_editors_at_the_schema() -> None:
    first = EXAMPLE.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=docs/providers.schema.json"


def test_example_without_keys_lists_both_required_variables() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env={})
    text = str(info.value)
    assert "OPENAI_API_KEY" in text
    assert "ANTHROPIC_API_KEY" in text
    # Optional providers are not errors, only disabled.
    assert "DEEPSEEK_API_KEY" not in text
    assert "XAI_API_KEY" not in text
    assert "GEMINI_API_KEY" not in text


def test_optional_providers_without_keys_are_disabled_with_a_warning() -> None:
    env = {k: v for k, v in FULL_ENV.items() if k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    with capture_logs() as logs:
        config = load_config(EXAMPLE, env=env)
    assert config.disabled_providers == {"deepseek", "xai", "grok_news", "gemini"}
    assert all(s.provider not in {"deepseek", "xai"} for s in config.chain("analysis"))
    assert set(config.providers).isdisjoint({"deepseek", "xai", "grok_news", "gemini"})
    # The route as written still lists every step; the plan's steps drop them.
    assert len(config.config.routes["analysis"].fallback) == len(config.chain("analysis")) + 2
    assert len(config.routes["analysis"].steps) == len(config.chain("analysis"))
    events = {(e["event"], e["provider"], e["env_var"]) for e in logs}
    assert events == {
        ("provider_disabled", "deepseek", "DEEPSEEK_API_KEY"),
        ("provider_disabled", "xai", "XAI_API_KEY"),
        ("provider_disabled", "grok_news", "XAI_API_KEY"),
        ("provider_disabled", "gemini", "GEMINI_API_KEY"),
    }
    assert all(e["log_level"] == "warning" for e in logs)


def test_require_env_false_disables_every_provider_without_a_key() -> None:
    with capture_logs():
        config = load_config(EXAMPLE, env={}, require_env=False)
    assert config.disabled_providers == {
        "openai",
        "anthropic",
        "deepseek",
        "xai",
        "grok_news",
        "gemini",
    }
    assert [(s.provider, s.model) for s in config.chain("summary")] == [
        ("ollama", "llama3.2:latest"),
        ("mock", "mock-1"),
    ]
    assert "openai" not in config.providers


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FULL_ENV.items():
        monkeypatch.setenv(name, value)
    config = load_config(EXAMPLE)
    assert config.providers["xai"].key == SecretStr(FULL_ENV["XAI_API_KEY"])


def test_empty_or_blank_key_counts_as_missing() -> None:
    env = dict(FULL_ENV, OPENAI_API_KEY="  ")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        load_config(EXAMPLE, env=env)


def test_keys_are_secret_and_stripped() -> None:
    config = load_config(EXAMPLE, env=dict(FULL_ENV, OPENAI_API_KEY=CANARY + "\n"))
    key = config.providers["openai"].key
    assert isinstance(key, SecretStr)
    assert key.get_secret_value() == CANARY
    assert config.providers["ollama"].key is None  # keyless


def test_no_key_value_leaks_into_repr_errors_or_messages() -> None:
    config = load_config(EXAMPLE, env=FULL_ENV)
    assert CANARY not in repr(config)
    assert CANARY not in str(config)
    assert CANARY not in repr(config.providers["openai"])
    assert CANARY not in json.dumps(config.config.model_dump(mode="json"))
    # An unrelated error raised after the key was loaded cannot carry it either.
    env = dict(FULL_ENV, ANTHROPIC_API_KEY="")
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env=env)
    assert CANARY not in str(info.value)
    assert CANARY not in repr(info.value)
    assert CANARY not in ConfigError([*info.value.problems]).message
    # Loaded keys are registered for redaction, so even a message quoting one is scrubbed.
    from router.errors import RouterError

    assert CANARY not in str(RouterError(f"oops {CANARY} oops"))


def test_what_a_loaded_plan_resolves() -> None:
    config = load_config(EXAMPLE, env=FULL_ENV)
    assert config.source == EXAMPLE
    assert config.base_dir == ROOT
    assert config.templates_dir == ROOT / "templates"
    url = {name: p.base_url for name, p in config.providers.items()}
    assert url["openai"] == "https://api.openai.com/v1"
    assert url["anthropic"] == "https://api.anthropic.com"
    assert url["ollama"] == "http://localhost:11434"
    assert url["mock"] == "mock://local"
    assert url["deepseek"] == "https://api.deepseek.com"
    price = config.providers["anthropic"].models["claude-sonnet-5-5"].price
    assert price.input_per_mtok == Decimal("2.00")
    assert price.cache_write_per_mtok == Decimal("2.50")
    assert config.providers["ollama"].models["llama3.2:latest"].price is FREE
    assert config.providers["mock_flaky"].models["mock-1"].price == FREE
    assert config.providers["mock"].models["mock-1"].price.output_per_mtok == Decimal("1.50")
    with pytest.raises(RouterError, match="did you mean 'analysis'"):
        config.chain("analysys")
    assert set(config.routes) == {"analysis", "news", "summary"}
    # Frozen all the way down.
    with pytest.raises(TypeError):
        config.routes["x"] = config.routes["summary"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.routes["summary"].max_tokens = 1  # type: ignore[misc]


def test_chain_keeps_step_overrides_and_order() -> None:
    config = load_config(EXAMPLE, env=FULL_ENV)
    steps = config.routes["analysis"].steps
    gpt = next(s for s in steps if s.provider == "openai")
    assert gpt.model == "gpt-5.5"
    assert gpt.retries == 0
    assert gpt.params == {"reasoning_effort": "low"}
    assert [f"{s.provider}/{s.model}" for s in steps] == [
        s.model for s in config.config.routes["analysis"].fallback
    ]


def test_example_templates_render_the_trading_prompt() -> None:
    config = load_config(EXAMPLE, env=FULL_ENV)
    messages = config.render(
        "analysis", {"ticker": "ACME", "prices": [100.0, 101, Decimal("99.5")], "horizon_days": 5}
    )
    assert [m.role for m in messages] == ["system", "user"]
    assert "Ticker: ACME" in messages[1].content
    assert "100.0, 101, 99.5" in messages[1].content
    summary = config.render("summary", {"text": "Rates up."})
    assert summary[1] == Message("user", "Summarise in at most 60 words:\n\nRates up.\n")


def test_step_model_names_split_at_the_first_slash_only(tmp_path: Path) -> None:
    text = (
        (DATA / "minimal.yaml")
        .read_text()
        .replace(
            "  mock:\n",
            "  openrouter:\n    kind: openai\n    base_url: https://openrouter.ai/api/v1\n"
            "    api_key_env: OPENROUTER_API_KEY\n"
            "    models:\n      meta-llama/llama-3.2-3b-instruct:free:\n"
            "        price: {input_per_mtok: 0, output_per_mtok: 0}\n  mock:\n",
        )
    )
    text = text.replace(
        "      - mock/mock-1",
        "      - openrouter/meta-llama/llama-3.2-3b-instruct:free\n      - mock/mock-1",
    )
    (tmp_path / "p.yaml").write_text(text)
    config = load_config(
        tmp_path / "p.yaml", env={"OPENAI_API_KEY": "k" * 10, "OPENROUTER_API_KEY": "k" * 10}
    )
    step = config.chain("r")[1]
    assert (step.provider, step.model) == (
        "openrouter",
        "meta-llama/llama-3.2-3b-instruct:free",
    )


def test_templates_dir_is_relative_to_the_yaml_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(DATA / "includes.yaml")
    assert config.base_dir == DATA
    assert config.templates_dir == DATA / "templates"
    assert "with_include" in config.routes


def test_default_base_urls_per_kind() -> None:
    assert default_base_url("openai") == "https://api.openai.com/v1"
    assert default_base_url("anthropic") == "https://api.anthropic.com"
    assert default_base_url("ollama") == "http://localhost:11434"
    assert default_base_url("mock") == "mock://local"


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((ROOT / "docs" / "providers.schema.json").read_text())
    assert committed == config_json_schema(), (
        "docs/providers.schema.json is stale: regenerate it from router.config.config_json_schema()"
    )


def test_json_schema_accepts_string_steps_and_names_the_draft() -> None:
    schema = config_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    items = schema["$defs"]["RouteConfig"]["properties"]["fallback"]["items"]
    assert {"type": "string", "pattern": "^[^/]+/.+$", "description": "provider/model"} in items[
        "anyOf"
    ]
    assert schema["additionalProperties"] is False


def test_import_and_load_are_fast_in_a_fresh_interpreter() -> None:
    """Importing router.plan and loading the example costs well under half a CPU second.

    CPU time, not wall time: other processes sharing the machine's cores stretch the
    wall clock but not the work this interpreter does.
    """
    code = (
        "import time, os; t = time.process_time()\n"
        "import router.plan\n"
        "router.plan.load_config('providers.yaml', require_env=False)\n"
        "print(time.process_time() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = []
    for _ in range(3):  # best of three: other processes may share the machine's two cores
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(float(out.stdout.strip()))
    assert min(runs) < 0.5, runs


def test_input_overhead_defaults_by_api_host_and_can_be_set(tmp_path: Path) -> None:
    """null: xAI's API host gets the hidden-preamble default (docs/money.md), others 0."""
    from tests.routerkit import make_config

    config = make_config(
        tmp_path,
        """\
        providers:
          xai: {kind: openai, base_url: "https://API.x.ai/v1", api_key_env: XK,
                models: {g: {price: {input_per_mtok: 1, output_per_mtok: 2}}}}
          xai_set: {kind: openai, base_url: "https://api.x.ai/v1", api_key_env: XK,
                    input_overhead_tokens: 0,
                    models: {g: {price: {input_per_mtok: 1, output_per_mtok: 2}}}}
          oai: {kind: openai, api_key_env: XK,
                models: {g: {price: {input_per_mtok: 1, output_per_mtok: 2}}}}
          local: {kind: mock, input_overhead_tokens: 40, models: {m: {}}}
        routes:
          r: {prompt: "hi", fallback: [xai/g, xai_set/g, oai/g, local/m]}
        """,
        env={"XK": "xk-test-0123456789abcdef"},
    )
    overhead = {name: p.input_overhead for name, p in config.providers.items()}
    assert overhead == {"xai": 160, "xai_set": 0, "oai": 0, "local": 40}
    assert [s.input_overhead for s in config.routes["r"].steps] == [160, 0, 0, 40]
