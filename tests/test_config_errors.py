"""Bad input gets one clear error naming its place: file, line, column, dotted path.

Each test starts from tests/data/minimal.yaml (valid), breaks one thing, and
checks the problem's line and message. Line numbers of minimal.yaml:
5 api_key_env, 7 gpt-5.5, 8 price, 15 prompt, 16 fallback, 17 and 18 the steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from io import StringIO
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from router.cli import main as cli_main
from router.errors import ConfigError, ConfigProblem, RouterError
from router.files import MAX_FILE_BYTES
from router.plan import load_config
from router.router import Router
from router.validate import run_validate

DATA = Path(__file__).parent / "data"
MINIMAL = (DATA / "minimal.yaml").read_text()
ENV = {"OPENAI_API_KEY": "sk-test-0123456789abcdef"}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, files: dict[str, str] | None = None) -> None:
    Path("providers.yaml").write_text(text)
    for name, body in (files or {}).items():
        Path("templates").mkdir(exist_ok=True)
        Path("templates", name).write_text(body)


def problems(
    text: str,
    *,
    env: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    require_env: bool = True,
) -> list[ConfigProblem]:
    write(text, files)
    with pytest.raises(ConfigError) as info:
        load_config("providers.yaml", env=ENV if env is None else env, require_env=require_env)
    return info.value.problems


def only(text: str, **kw: object) -> ConfigProblem:
    found = problems(text, **kw)  # type: ignore[arg-type]
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def test_minimal_is_valid(cwd: Path) -> None:
    """The base of every mutation below loads cleanly."""
    write(MINIMAL)
    config = load_config("providers.yaml", env=ENV)
    assert [s[:2] for s in config.chain("r")] == [("openai", "gpt-5.5"), ("mock", "mock-1")]


def test_missing_env_key_names_variable_provider_and_line(cwd: Path) -> None:
    p = only(MINIMAL, env={})
    assert (p.file, p.line, p.col) == ("providers.yaml", 5, 18)
    assert p.path == "providers.openai.api_key_env"
    assert "OPENAI_API_KEY is not set" in p.message
    assert "'openai'" in p.message
    assert str(p).startswith("providers.yaml:5:18: providers.openai.api_key_env: ")


def test_two_missing_keys_are_reported_together(cwd: Path) -> None:
    text = MINIMAL.replace(
        "  mock:\n",
        "  anthropic:\n    kind: anthropic\n    api_key_env: ANTHROPIC_API_KEY\n"
        "    models: {claude-haiku-4-5: {price: {input_per_mtok: 1, output_per_mtok: 5}}}\n"
        "  mock:\n",
    )
    found = problems(text, env={})
    assert [(p.line, p.path) for p in found] == [
        (5, "providers.openai.api_key_env"),
        (11, "providers.anthropic.api_key_env"),
    ]
    assert "OPENAI_API_KEY" in found[0].message
    assert "ANTHROPIC_API_KEY" in found[1].message


def test_typo_in_chain_provider_suggests_the_declared_one(cwd: Path) -> None:
    p = only(MINIMAL.replace("- openai/gpt-5.5", "- opnai/gpt-5.5"))
    assert (p.line, p.path) == (17, "routes.r.fallback[0]")
    assert p.message == "unknown provider 'opnai' (did you mean 'openai'?)"


def test_model_not_declared_under_its_provider(cwd: Path) -> None:
    p = only(MINIMAL.replace("- openai/gpt-5.5", "- openai/gpt-5.6"))
    assert (p.line, p.path) == (17, "routes.r.fallback[0]")
    assert "model 'gpt-5.6' is not declared under providers.openai.models" in p.message
    assert "did you mean 'gpt-5.5'" in p.message


def test_model_check_in_a_step_mapping_points_at_its_model_key(cwd: Path) -> None:
    text = MINIMAL.replace("- openai/gpt-5.5", "- {model: openai/gpt-4o, retries: 0}")
    p = only(text)
    assert (p.line, p.path) == (17, "routes.r.fallback[0].model")


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "hint"),
    [
        ("version: 1", "verison: 1", 1, "verison", "version"),
        ("    kind: openai", "    knd: openai", 4, "providers.openai.knd", "kind"),
        ("input_per_mtok: 5", "input_per_mtoken: 5", 8, "", "input_per_mtok"),
        ('    prompt: "Hi', '    promt: "Hi', 15, "routes.r.promt", "prompt"),
    ],
)
def test_unknown_key_anywhere_is_named_with_a_suggestion(
    cwd: Path, old: str, new: str, line: int, path: str, hint: str
) -> None:
    found = problems(MINIMAL.replace(old, new))
    unknown = [p for p in found if p.message.startswith("unknown key")]
    assert len(unknown) == 1, [str(p) for p in found]
    p = unknown[0]
    assert p.line == line
    if path:
        assert p.path == path
    assert f"did you mean {hint!r}" in p.message


def test_unknown_settings_key(cwd: Path) -> None:
    p = only(MINIMAL.replace("version: 1\n", "version: 1\nsettings:\n  deadline: 5\n"))
    assert (p.line, p.col, p.path) == (3, 3, "settings.deadline")
    assert "did you mean 'deadline_s'" in p.message


def test_duplicate_yaml_key_points_at_the_second_and_the_first(cwd: Path) -> None:
    text = MINIMAL.replace("    kind: openai\n", "    kind: openai\n    kind: anthropic\n")
    p = only(text)
    assert (p.line, p.path) == (5, "providers.openai.kind")
    assert p.message == "duplicate key 'kind' (first defined at line 4)"


def test_negative_price(cwd: Path) -> None:
    p = only(MINIMAL.replace("input_per_mtok: 5", "input_per_mtok: -5"))
    assert p.line == 8
    assert p.path == 'providers.openai.models["gpt-5.5"].price.input_per_mtok'
    assert "greater than or equal to 0" in p.message


KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345"


@pytest.mark.parametrize("value", [KEY, "xai-9f8e7d6c5b4a39281706f5e4", "a8F3kd92LmQ0zX7pW4tR6yB1"])
def test_key_pasted_into_yaml_is_refused_without_echoing_it(cwd: Path, value: str) -> None:
    write(MINIMAL.replace("OPENAI_API_KEY", value))
    with pytest.raises(ConfigError) as info:
        load_config("providers.yaml", env=ENV)
    p = info.value.problems[0]
    assert (p.line, p.path) == (5, "providers.openai.api_key_env")
    assert "looks like an API key" in p.message
    assert "NAME" in p.message
    assert value not in str(info.value)
    assert value not in repr(info.value)
    assert all(value not in str(q) for q in info.value.problems)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("sk-test-0123456789\nabcdef", "a line break (CR or LF)"),
        ("sk-test-0123456789\r\nabcdef", "a line break (CR or LF)"),
        ("sk-test-0123456789\rabcdef", "a line break (CR or LF)"),
        ("sk-test-0123456789\x00abcdef", "a control character"),
        ("sk-test-0123456789\tabcdef", "a control character"),
        ("sk-test-0123456789\x7fabcdef", "a control character"),
        ("sk-test-0123456789éabcdef", "a non-ASCII character"),
        ("sk-test-0123456789\u200babcdef", "a non-ASCII character"),
    ],
    ids=["lf", "crlf", "cr", "nul", "tab", "del", "latin1", "zero-width-space"],
)
@pytest.mark.parametrize("require_env", [True, False], ids=["load", "no-env"])
def test_key_variable_with_a_bad_character_is_a_config_error_naming_the_variable(
    cwd: Path, value: str, what: str, require_env: bool
) -> None:
    """A key no HTTP header can carry is refused at load (also with require_env=False,
    as ``router validate --no-env`` loads), naming the variable and the kind of
    character, never the value: not a bare ValueError when the Router starts."""
    p = only(MINIMAL, env={"OPENAI_API_KEY": value}, require_env=require_env)
    assert (p.line, p.path) == (5, "providers.openai.api_key_env")
    assert f"environment variable OPENAI_API_KEY holds {what}" in p.message
    assert "'openai'" in p.message
    for piece in ("0123456789", "abcdef"):
        assert piece not in str(p)


def test_router_validate_reports_a_key_variable_with_a_newline(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``router validate`` says invalid (exit 1) and names the variable, not the value."""
    write(MINIMAL)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789\nabcdef")
    out = io.StringIO()
    assert run_validate("providers.yaml", out=out) == 1
    text = out.getvalue()
    assert "providers.yaml:5:" in text and "OPENAI_API_KEY holds a line break" in text
    assert "0123456789" not in text and "invalid, 1 problem" in text


@pytest.mark.parametrize("value", ["httpx", "aiohttp"])
def test_removed_transport_setting_says_it_was_removed_and_why(cwd: Path, value: str) -> None:
    """``settings.transport`` (the httpcore pool) was removed: naming it, with either
    value, is one clear problem at its line, not "unknown key"."""
    p = only(MINIMAL.replace("version: 1\n", f"version: 1\nsettings:\n  transport: {value}\n"))
    assert (p.line, p.col, p.path) == (3, 3, "settings.transport")
    assert p.message.startswith("settings.transport was removed: aiohttp's connection pool")
    assert "httpcore" in p.message and "Delete this line" in p.message


def test_api_key_env_that_is_not_a_variable_name(cwd: Path) -> None:
    p = only(MINIMAL.replace("OPENAI_API_KEY", "'OPENAI KEY'"))
    assert p.line == 5
    assert "NAME of an environment variable" in p.message


def test_inline_template_syntax_error_points_at_the_yaml_line(cwd: Path) -> None:
    p = only(MINIMAL.replace("Hi {{ name }}", "Hi {{ name }"))
    assert (p.file, p.line, p.path) == ("providers.yaml", 15, "routes.r.prompt")
    assert p.message.startswith("template syntax error in routes.r.prompt:")


def test_block_template_syntax_error_points_at_the_broken_line(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n',
        "    prompt: |\n      line one\n      {% if name %}never closed\n",
    )
    p = only(text)
    # Line 1 of the template is file line 16; the tag left open is reported at the end.
    assert p.file == "providers.yaml"
    assert p.path == "routes.r.prompt"
    assert p.line is not None
    assert 16 <= p.line <= 18
    assert "template syntax error" in p.message


def test_file_template_syntax_error_names_the_file_and_its_line(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: p.j2}")
    p = only(text, files={"p.j2": "ok\nstill ok\n{% for x in %}\n"})
    assert (p.file, p.line, p.path) == ("templates/p.j2", 3, "routes.r.prompt")
    assert "template syntax error in p.j2" in p.message


def test_template_using_an_undeclared_variable(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n', '    prompt: "Hi {{ nme }}"\n    vars: {name: str}\n'
    )
    p = only(text)
    assert (p.line, p.path) == (15, "routes.r.prompt")
    assert "uses variable 'nme', which is not declared in routes.r.vars" in p.message
    assert "did you mean 'name'" in p.message


def test_undeclared_variable_in_a_file_template_names_file_and_line(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: p.j2}\n    vars: {name: str}")
    p = only(text, files={"p.j2": "Hi {{ name }}\nAlso {{ other }}\n"})
    assert (p.file, p.line) == ("templates/p.j2", 2)
    assert "'other'" in p.message


def test_non_existent_template_file(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: promt.j2}")
    p = only(text, files={"prompt.j2": "Hi\n"})
    assert (p.line, p.path) == (15, "routes.r.prompt.file")
    assert "template file 'promt.j2' not found in templates" in p.message
    assert "did you mean 'prompt.j2'" in p.message


def test_missing_include_names_the_including_template(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: p.j2}")
    p = only(text, files={"p.j2": '{% include "nope.j2" %}\n'})
    assert p.line == 15
    assert "p.j2 includes 'nope.j2', not found" in p.message


def test_computed_include_name_is_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("Hi {{ name }}", "{% include name %}"))
    assert p.line == 15
    assert "computed template name" in p.message


def test_empty_file(cwd: Path) -> None:
    p = only("# only a comment\n")
    assert (p.line, p.path) == (1, "")
    assert "file is empty" in p.message


@pytest.mark.parametrize(
    ("text", "what"), [("- a\n- b\n", "a list"), ("hello\n", "a single value")]
)
def test_non_mapping_top_level(cwd: Path, text: str, what: str) -> None:
    p = only(text)
    assert p.line == 1
    assert "top level must be a mapping" in p.message
    assert what in p.message


def test_yaml_syntax_error_has_its_line(cwd: Path) -> None:
    text = MINIMAL.replace("      - mock/mock-1", "      - mock/mock-1\n    bad: [unclosed")
    p = only(text)
    assert p.line == 20
    assert p.message.startswith("YAML syntax error")


def test_tab_indentation_is_a_syntax_error_with_its_line(cwd: Path) -> None:
    p = only(MINIMAL.replace("    kind: openai", "\tkind: openai"))
    assert p.line == 4
    assert "YAML syntax error" in p.message


def test_plain_http_to_a_remote_host(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        "    api_key_env: OPENAI_API_KEY\n    base_url: http://api.example.com/v1\n",
    )
    p = only(text)
    assert (p.line, p.path) == (6, "providers.openai.base_url")
    assert "plain http:// to non-local host 'api.example.com' is refused" in p.message
    assert "allow_http: true" in p.message


@pytest.mark.parametrize(
    "url", ["http://localhost:8000/v1", "http://127.0.0.1:8000", "http://[::1]:9/v1"]
)
def test_plain_http_to_loopback_is_allowed(cwd: Path, url: str) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        f"    api_key_env: OPENAI_API_KEY\n    base_url: {url}\n",
    )
    write(text)
    assert load_config("providers.yaml", env=ENV).providers["openai"].base_url == url.rstrip("/")


def test_allow_http_opts_in_to_a_remote_host(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        "    api_key_env: OPENAI_API_KEY\n    base_url: http://vllm.internal/v1\n"
        "    allow_http: true\n",
    )
    write(text)
    assert load_config("providers.yaml", env=ENV).providers["openai"].base_url.startswith("http:")


def test_credentials_in_base_url_are_refused(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        "    api_key_env: OPENAI_API_KEY\n    base_url: https://user:pw@api.example.com\n",
    )
    assert "must not contain credentials" in only(text).message


def test_remote_openai_kind_needs_api_key_env(cwd: Path) -> None:
    p = only(MINIMAL.replace("    api_key_env: OPENAI_API_KEY\n", ""))
    assert (p.line, p.path) == (3, "providers.openai")
    assert "needs api_key_env" in p.message


def test_price_required_for_paid_kinds(cwd: Path) -> None:
    text = MINIMAL.replace("        price: {input_per_mtok: 5, output_per_mtok: 30}\n", "")
    text = text.replace("      gpt-5.5:\n", "      gpt-5.5: {}\n")
    p = only(text)
    assert (p.line, p.path) == (7, 'providers.openai.models["gpt-5.5"]')
    assert "price is required for kind openai" in p.message


def test_mock_section_only_for_kind_mock(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    models:\n      gpt", "    mock: {reply: hi}\n    models:\n      gpt"
    )
    p = only(text)
    assert (p.line, p.path) == (6, "providers.openai.mock")
    assert "only for kind: mock" in p.message


def test_budget_scopes_must_exist(cwd: Path) -> None:
    text = MINIMAL.replace(
        "routes:\n",
        "budgets:\n  b:\n    limit_usd: 1\n    provider: opneai\n  c:\n    limit_usd: 1\n"
        "    route: rr\nroutes:\n",
    )
    found = problems(text)
    assert [(p.line, p.path) for p in found] == [
        (16, "budgets.b.provider"),
        (19, "budgets.c.route"),
    ]
    assert "did you mean 'openai'" in found[0].message
    assert "did you mean 'r'" in found[1].message


def test_budget_cannot_have_both_scopes(cwd: Path) -> None:
    text = MINIMAL.replace(
        "routes:\n",
        "budgets:\n  b:\n    limit_usd: 1\n    provider: openai\n    route: r\nroutes:\n",
    )
    p = only(text)
    assert (p.line, p.path) == (14, "budgets.b")
    assert "not both" in p.message


def test_chain_empty_after_optional_providers_are_dropped(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n", "    api_key_env: OPENAI_API_KEY\n    optional: true\n"
    )
    text = text.replace("      - mock/mock-1\n", "")
    p = only(text, env={})
    assert (p.line, p.path) == (17, "routes.r.fallback")
    assert "no usable step" in p.message
    assert "OPENAI_API_KEY not set" in p.message


def test_route_var_type_must_be_known(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n', '    prompt: "Hi {{ name }}"\n    vars: {name: string}\n'
    )
    p = only(text)
    assert (p.line, p.path) == (16, "routes.r.vars.name")
    assert "unknown type 'string'" in p.message
    assert "did you mean 'str'" in p.message


def test_route_var_name_must_be_an_identifier(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n', '    prompt: "Hi"\n    vars: {my-var: str}\n'
    )
    p = only(text)
    assert p.line == 16
    assert "invalid key 'my-var'" in p.message


def test_provider_name_with_a_slash(cwd: Path) -> None:
    p = problems(MINIMAL.replace("  mock:\n", "  mo/ck:\n"))[0]
    assert (p.line, p.path) == (9, 'providers["mo/ck"]')
    assert "without '/'" in p.message


def test_secret_header_is_refused(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    models:\n      gpt", "    headers: {Authorization: x}\n    models:\n      gpt"
    )
    p = only(text)
    assert p.line == 6
    assert "carries a credential" in p.message


def test_missing_required_key_points_at_its_parent(cwd: Path) -> None:
    # (a route's prompt is optional: its fallback is not)
    p = only(MINIMAL.replace("    fallback:\n      - openai/gpt-5.5\n      - mock/mock-1\n", ""))
    assert (p.line, p.path) == (14, "routes.r")
    assert p.message == "missing required key 'fallback'"


def test_wrong_type_names_the_value(cwd: Path) -> None:
    p = only(MINIMAL.replace("mock-1: {}", "mock-1: {context_window: lots}"))
    assert p.line == 12
    assert p.path.endswith("context_window")
    assert "integer" in p.message


def test_prompt_of_the_wrong_shape(cwd: Path) -> None:
    p = only(MINIMAL.replace('"Hi {{ name }}"', "[1, 2]"))
    assert p.line == 15
    assert "inline template text or a mapping {file: name.j2}" in p.message


def test_literal_typo_gets_a_suggestion(cwd: Path) -> None:
    p = only(MINIMAL.replace("kind: openai", "kind: opneai"))
    assert p.line == 4
    assert "did you mean 'openai'" in p.message


def test_infinity_is_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("version: 1\n", "version: 1\nsettings: {deadline_s: .inf}\n"))
    assert p.path == "settings.deadline_s"
    assert p.line == 2


def test_python_tags_are_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("version: 1", "version: !!python/object:os.system 1"))
    assert p.line == 1


def test_invalid_timestamp_scalar_is_a_problem_not_a_crash(cwd: Path) -> None:
    found = problems(MINIMAL.replace("mock-1: {}", "mock-1: {extra: {when: 2026-13-45}}"))
    assert found[0].line == 12
    assert "invalid value" in found[0].message


def test_two_documents_are_refused(cwd: Path) -> None:
    p = only(MINIMAL + "---\nversion: 1\n")
    assert p.line == 19
    assert "YAML syntax error" in p.message


def test_alias_bomb_is_refused(cwd: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    p = only("\n".join(lines) + "\n")
    assert "alias" in p.message


def test_recursive_alias_is_a_problem(cwd: Path) -> None:
    found = problems(MINIMAL + "budgets: &b\n  x: *b\n")
    assert any("recursive" in p.message for p in found)


def test_merge_keys_work_and_explicit_keys_win(cwd: Path) -> None:
    text = MINIMAL.replace(
        "routes:\n  r:\n",
        "routes:\n  base: &base\n    prompt: base\n    fallback: [mock/mock-1]\n"
        "  r:\n    <<: *base\n",
    )
    write(text)
    config = load_config("providers.yaml", env=ENV)
    assert config.routes["r"].source.prompt == "Hi {{ name }}"
    assert [(s.provider, s.model) for s in config.routes["base"].steps] == [("mock", "mock-1")]


def test_every_problem_is_collected_in_line_order(cwd: Path) -> None:
    text = (
        MINIMAL.replace("version: 1", "version: 2")
        .replace("input_per_mtok: 5", "input_per_mtok: -1")
        .replace("- mock/mock-1", "- mock/mock-2")
    )
    found = problems(text, env={})
    lines = [p.line for p in found]
    assert lines == sorted(lines)
    assert lines == [1, 5, 8, 18]
    assert str(ConfigError(found)).startswith("4 problems in config:")


def test_file_not_found(cwd: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("nope.yaml")
    assert str(info.value.problems[0]) == "nope.yaml: file not found"


def test_invalid_utf8_is_reported(cwd: Path) -> None:
    Path("providers.yaml").write_bytes(b"version: 1\nx: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config("providers.yaml", env=ENV)
    assert info.value.problems[0].line == 2
    assert "UTF-8" in info.value.problems[0].message


def test_empty_routes_and_empty_chain_are_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("      - openai/gpt-5.5\n      - mock/mock-1\n", "      []\n"))
    assert (p.line, p.path, p.message) == (17, "routes.r.fallback", "must not be empty")
    text = MINIMAL[: MINIMAL.index("routes:")] + "routes: {}\n"
    p = only(text)
    assert (p.line, p.path, p.message) == (13, "routes", "must not be empty")


def test_ordinary_headers_pass_but_a_key_shaped_value_does_not(cwd: Path) -> None:
    headers = (
        "    headers: {anthropic-version: '2023-06-01', Accept: 'application/json; charset=utf-8',"
        " OpenAI-Project: proj_9f8e7d6c5b4a3928170f6e5d}\n"
    )
    text = MINIMAL.replace("    models:\n      gpt", headers + "    models:\n      gpt")
    write(text)
    assert "Accept" in load_config("providers.yaml", env=ENV).providers["openai"].headers
    bad = text.replace("'2023-06-01'", "'Bearer abcdefgh12345678'")
    p = only(bad)
    assert p.line == 6
    assert "looks like a credential" in p.message
    assert "abcdefgh12345678" not in str(p)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "greater than or equal to 0"),
        ("100001", "less than or equal to 100000"),
        ("1.5", "valid integer"),
        ("lots", "valid integer"),
    ],
)
def test_input_overhead_tokens_out_of_bounds(cwd: Path, value: str, message: str) -> None:
    p = only(
        MINIMAL.replace("    api_key_env:", f"    input_overhead_tokens: {value}\n    api_key_env:")
    )
    assert (p.line, p.path) == (5, "providers.openai.input_overhead_tokens")
    assert message in p.message


# ------------------------------------------------------------------ bounded numbers

BOUNDED = MINIMAL.replace(
    "version: 1\n",
    "version: 1\nsettings:\n  deadline_s: 30\n  backoff: {multiplier: 2}\n"
    "  cooldown: {seconds: 30}\n",
).replace("    prompt:", "    max_tokens: 100\n    prompt:")
# BOUNDED's lines: 3 deadline_s, 4 backoff, 5 cooldown, 12 price, 19 max_tokens.


def test_bounded_base_is_valid(cwd: Path) -> None:
    write(BOUNDED + "budgets: {b: {limit_usd: 10}}\n")
    load_config("providers.yaml", env=ENV)


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "allowed"),
    [
        (
            "input_per_mtok: 5",
            "input_per_mtok: '1e999999'",
            12,
            'providers.openai.models["gpt-5.5"].price.input_per_mtok',
            "greater than or equal to 0 and less than or equal to 1000000",
        ),
        (
            "output_per_mtok: 30",
            "output_per_mtok: 1.0e+300",
            12,
            'providers.openai.models["gpt-5.5"].price.output_per_mtok',
            "less than or equal to 1000000",
        ),
        (
            "multiplier: 2",
            "multiplier: 1.0e+200",
            4,
            "settings.backoff.multiplier",
            "greater than or equal to 1 and less than or equal to 10",
        ),
        (
            "deadline_s: 30",
            "deadline_s: 1.0e+300",
            3,
            "settings.deadline_s",
            "greater than 0 and less than or equal to 86400",
        ),
        (
            "seconds: 30",
            "seconds: 1.0e+30",
            5,
            "settings.cooldown.seconds",
            "greater than or equal to 0 and less than or equal to 86400",
        ),
        (
            "max_tokens: 100",
            "max_tokens: 1000000000000",
            19,
            "routes.r.max_tokens",
            "greater than or equal to 1 and less than or equal to 100000000",
        ),
    ],
)
def test_an_absurd_number_is_refused_at_load_with_its_range(
    cwd: Path, old: str, new: str, line: int, path: str, allowed: str
) -> None:
    """A number the router would crash on later (a bare decimal.Overflow when pricing,
    OverflowError in the backoff) is refused at load, at its line, with its range."""
    p = only(BOUNDED.replace(old, new))
    assert (p.file, p.line, p.path) == ("providers.yaml", line, path)
    assert p.col is not None
    assert allowed in p.message
    assert str(p).startswith(f"providers.yaml:{line}:{p.col}: {path}: must be ")


@pytest.mark.parametrize(
    ("snippet", "path", "allowed"),
    [
        ("budgets: {b: {limit_usd: '1e999999999'}}", "budgets.b.limit_usd", "1000000000"),
        ("budgets: {b: {limit_usd: 1000000000.01}}", "budgets.b.limit_usd", "1000000000"),
        (
            "settings: {max_response_bytes: 1000000000000}",
            "settings.max_response_bytes",
            "1073741824",
        ),
        (
            "settings: {health_ttl_s: 100000}",
            "settings.health_ttl_s",
            "less than or equal to 86400",
        ),
    ],
)
def test_absurd_top_level_numbers(cwd: Path, snippet: str, path: str, allowed: str) -> None:
    p = only(MINIMAL + snippet + "\n")
    assert (p.line, p.path) == (19, path)
    assert allowed in p.message


def test_every_number_in_a_provider_is_bounded(cwd: Path) -> None:
    text = (
        MINIMAL.replace(
            "    kind: openai\n",
            "    kind: openai\n    timeout_s: 1.0e+10\n    connect_timeout_s: 100000\n"
            "    limits: {requests_per_minute: 10000000000, max_concurrency: 1000000000}\n",
        )
        .replace(
            "price: {input_per_mtok: 5, output_per_mtok: 30}",
            "price: {input_per_mtok: 5, output_per_mtok: 30, cached_input_per_mtok: 1.0e+7}\n"
            "        context_window: 1000000000000\n        max_output_tokens: 1000000000000",
        )
        .replace("mock-1: {}", "mock-1: {}\n    mock: {latency_s: 1.0e+9, failures: [503, 99999]}")
    )
    found = {p.path: p for p in problems(text)}
    assert sorted(found) == [
        "providers.mock.mock.failures[1]",
        "providers.mock.mock.latency_s",
        "providers.openai.connect_timeout_s",
        "providers.openai.limits.max_concurrency",
        "providers.openai.limits.requests_per_minute",
        'providers.openai.models["gpt-5.5"].context_window',
        'providers.openai.models["gpt-5.5"].max_output_tokens',
        'providers.openai.models["gpt-5.5"].price.cached_input_per_mtok',
        "providers.openai.timeout_s",
    ]
    assert all(
        p.line is not None and " and less than or equal to " in p.message for p in found.values()
    )
    assert "greater than or equal to 100 and less than or equal to 599" in (
        found["providers.mock.mock.failures[1]"].message
    )


def test_usd_figures_have_at_most_twelve_decimal_places(cwd: Path) -> None:
    p = only(MINIMAL + "budgets: {b: {limit_usd: '1e-999999999'}}\n")
    assert (p.line, p.path) == (19, "budgets.b.limit_usd")
    assert "at most 12 decimal places" in p.message
    # Trailing zeros are not places: they are dropped from what is kept.
    write(MINIMAL + "budgets: {b: {limit_usd: '5." + "0" * 5000 + "'}}\n")
    limit = load_config("providers.yaml", env=ENV).budgets["b"].limit_usd
    assert limit == 5
    assert len(f"{limit:f}") <= 15


# Number texts a YAML author might write: any decimal, huge and tiny exponents, the bounds.
NUMBER_TEXTS = st.one_of(
    st.decimals(min_value=0, max_value=1_000_000, places=12),
    st.decimals(min_value=0, allow_nan=False, allow_infinity=False),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(0, 999), st.integers(-(10**9), 10**9)),
    st.sampled_from(["1e999999", "1e999999999", "1000000000", "1000000", "1e-12"]),
).map(str)


def _spend_everything(path: Path) -> None:
    """Call, then read every figure back: spend(), stats() (as JSON), `router spend`."""

    async def run() -> None:
        async with Router(load_config(path, env={})) as router:
            for _ in range(2):
                # Refused by the budget is a clear error, not a crash.
                with contextlib.suppress(RouterError):
                    await router.complete("r")
            for s in router.spend():
                for figure in (s.limit_usd, s.spent_usd, s.reserved_usd, s.remaining_usd):
                    assert len(f"{figure:.6f}") < 40
            json.dumps(router.stats())

    asyncio.run(run())
    out = StringIO()
    assert cli_main(["spend", "--config", str(path)], out=out) == 0
    assert "b" in out.getvalue()


@settings(max_examples=30, deadline=None)
@given(input_price=NUMBER_TEXTS, output_price=NUMBER_TEXTS, limit=NUMBER_TEXTS)
def test_any_number_the_loader_accepts_can_be_priced_summed_and_shown(
    tmp_path_factory: pytest.TempPathFactory, input_price: str, output_price: str, limit: str
) -> None:
    """Property: every price and limit is refused at load with its line, or works
    everywhere later: pricing a call, reserving its worst case, spend(), stats(), the CLI."""
    path = tmp_path_factory.mktemp("numbers") / "providers.yaml"
    path.write_text(
        "version: 1\n"
        "settings: {ledger: {backend: memory}, max_tokens: 100000000}\n"
        "providers:\n"
        "  m:\n"
        "    kind: mock\n"
        f"    models: {{x: {{price: {{input_per_mtok: '{input_price}',"
        f" output_per_mtok: '{output_price}'}}}}}}\n"
        f"budgets: {{b: {{limit_usd: '{limit}'}}}}\n"
        f"routes: {{r: {{prompt: hi, max_cost_usd: '{limit}', fallback: [m/x]}}}}\n"
    )
    try:
        load_config(path, env={})
    except ConfigError as exc:
        for p in exc.problems:
            assert p.line in (6, 7, 8), str(p)
            assert "less than or equal to" in p.message or "decimal places" in p.message, str(p)
        return
    event("accepted")
    _spend_everything(path)


# ------------------------------------------------------------------ files the loader reads


def _load_with_timeout(path: str, fifo: Path | None = None) -> ConfigError:
    """load_config in a thread: a loader blocked on a FIFO fails the test instead of hanging."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(load_config, path, env=ENV)
        try:
            error = future.exception(timeout=10)
        except FuturesTimeout:
            if fifo is not None:  # let the blocked reader go, so the thread can end
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail("load_config blocked reading a FIFO")
    assert isinstance(error, ConfigError), error
    return error


def test_a_fifo_config_is_refused_not_waited_on(cwd: Path) -> None:
    os.mkfifo("providers.yaml")
    error = _load_with_timeout("providers.yaml", fifo=cwd / "providers.yaml")
    [p] = error.problems
    assert p.file == "providers.yaml"
    assert "FIFO" in p.message
    assert "not a regular file" in p.message


def test_a_device_config_is_refused(cwd: Path) -> None:
    """/dev/zero never ends: it is refused before a byte is read."""
    Path("providers.yaml").symlink_to("/dev/zero")
    [p] = _load_with_timeout("providers.yaml").problems
    assert "character device, not a regular file" in p.message


def test_a_directory_config_is_refused(cwd: Path) -> None:
    Path("providers.yaml").mkdir()
    [p] = _load_with_timeout("providers.yaml").problems
    assert "a directory, not a regular file" in p.message


def test_an_oversized_config_is_refused_with_the_limit(cwd: Path) -> None:
    padding = "# padding\n" * (MAX_FILE_BYTES // 10 + 1)
    write(MINIMAL + padding)
    [p] = problems(MINIMAL + padding)
    assert p.file == "providers.yaml"
    assert "larger than the 1 MiB (1048576 bytes) limit" in p.message


def test_a_config_at_the_size_limit_loads(cwd: Path) -> None:
    text = MINIMAL + "#" * (MAX_FILE_BYTES - len(MINIMAL) - 1) + "\n"
    assert len(text.encode()) == MAX_FILE_BYTES
    write(text)
    load_config("providers.yaml", env=ENV)


def test_a_fifo_template_file_is_refused(cwd: Path) -> None:
    text = MINIMAL.replace('prompt: "Hi {{ name }}"', "prompt: {file: p.j2}")
    write(text)
    Path("templates").mkdir()
    os.mkfifo("templates/p.j2")
    [p] = _load_with_timeout("providers.yaml", fifo=cwd / "templates" / "p.j2").problems
    assert (p.line, p.path) == (15, "routes.r.prompt.file")
    assert "cannot read template file 'p.j2': a FIFO (named pipe), not a regular file" in p.message


def test_an_included_template_that_is_a_device_is_refused(cwd: Path) -> None:
    text = MINIMAL.replace('prompt: "Hi {{ name }}"', "prompt: {file: p.j2}")
    write(text, {"p.j2": '{% include "inc.j2" %}'})
    Path("templates/inc.j2").symlink_to("/dev/zero")
    [p] = _load_with_timeout("providers.yaml").problems
    assert p.line == 15
    assert "includes 'inc.j2', which cannot be read: a character device" in p.message


def test_an_oversized_template_file_is_refused_with_the_limit(cwd: Path) -> None:
    text = MINIMAL.replace('prompt: "Hi {{ name }}"', "prompt: {file: p.j2}")
    [p] = problems(text, files={"p.j2": "x" * (MAX_FILE_BYTES + 1)})
    assert p.line == 15
    assert "larger than the 1 MiB (1048576 bytes) limit" in p.message


def test_a_large_valid_file_is_not_taken_for_an_alias_bomb(cwd: Path) -> None:
    """Values written out are bounded by the file size; only alias expansions are counted."""
    big = ", ".join(["0"] * 210_000)
    text = MINIMAL.replace("mock-1: {}", "mock-1: {extra: {xs: [" + big + "]}}")
    # Anchors used many times are fine too.
    text += "budgets:\n" + "".join(
        f"  b{i}: {'&lim {limit_usd: 5}' if i == 0 else '*lim'}\n" for i in range(2_000)
    )
    write(text)
    config = load_config("providers.yaml", env=ENV)
    assert len(config.providers["mock"].models["mock-1"].extra["xs"]) == 210_000
    assert len(config.budgets) == 2_000


def test_an_alias_bomb_is_refused_at_the_line_of_its_alias(cwd: Path) -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    p = only("\n".join(lines) + "\n")
    assert "aliases expand to more than 100000 values (alias bomb?)" in p.message
    assert p.line is not None and p.col is not None
    assert p.line <= 10
    assert p.path


def test_prompt_cache_of_a_system_message_the_route_lacks_is_an_error(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n',
        '    prompt: "Hi {{ name }}"\n    prompt_cache: {system: true}\n',
    )
    p = only(text)
    assert (p.line, p.path) == (16, "routes.r.prompt_cache.system")
    assert p.message == (
        "prompt_cache.system is true but the route has no system template to cache"
    )


def test_prompt_cache_names_only_known_parts(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n',
        '    prompt: "Hi {{ name }}"\n    prompt_cache: {sytem: true}\n',
    )
    p = only(text)
    assert p.path == "routes.r.prompt_cache.sytem"
    assert p.line == 16
