"""The CLI (``python -m router ...``) end to end, mostly in-process through
``router.cli.main(argv, out=StringIO())``, with the example providers.yaml copied into
tmp_path (its SQLite ledger pointed there too, so nothing is written in the repo).

Under ``--no-env`` the example config works offline: the keyed providers are disabled
and the ``analysis`` route falls back mock_flaky (503, 503) -> mock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import structlog

import router.logging as router_logging
from router.cli import main
from tests.routerkit import write_config
from tests.upstream import Upstream, replay

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS_VARS = [
    "--var",
    "ticker=ACME",
    "--var",
    "prices=[101.5, 102.25]",
    "--var",
    "horizon_days=5",
]
MOCK_TEXT = "HOLD (offline mock answer from mock-1; no market view was formed)"
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "XAI_API_KEY")


@pytest.fixture(autouse=True)
def _uncached_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """main() calls router.logging.configure(), which caches loggers on first use (a bug,
    see tests/test_secrets.py); keep that from leaking into other tests. No key is set."""
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    real = router_logging.configure

    def configure(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(router_logging, "configure", configure)
    yield
    structlog.reset_defaults()


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example providers.yaml and its templates, ledger in tmp_path."""
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    text = (ROOT / "providers.yaml").read_text()
    assert "    path: spend.sqlite3" in text
    text = text.replace("    path: spend.sqlite3", f"    path: {tmp_path / 'ledger.sqlite3'}")
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    return path


def run(*argv: str) -> tuple[int, str]:
    out = StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


# ------------------------------------------------------------------ subprocesses


def test_python_m_router_help_lists_every_command() -> None:
    """A real ``python -m router --help`` exits 0 and names every subcommand."""
    proc = subprocess.run(
        [sys.executable, "-m", "router", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("validate", "schema", "render", "complete", "stream", "health", "spend"):
        assert command in proc.stdout


def test_validate_config_script_accepts_the_example_offline() -> None:
    """``python scripts/validate_config.py providers.yaml --no-env`` (what the app's CI
    runs) exits 0 on the example config with no key in the environment."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    proc = subprocess.run(
        [sys.executable, "scripts/validate_config.py", "providers.yaml", "--no-env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ validate / schema


def test_validate_subcommand_matches_the_script(example: Path, tmp_path: Path) -> None:
    """``router validate`` exits 0 on the example (offline) and 1 on a broken file."""
    assert main(["validate", str(example), "--no-env"]) == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(example.read_text().replace("kind: anthropic", "kind: antropic"))
    assert main(["validate", str(broken), "--no-env"]) == 1


def test_schema_prints_the_published_json_schema() -> None:
    """``router schema`` prints JSON equal to docs/providers.schema.json (the file the
    example's yaml-language-server line points editors at)."""
    code, text = run("schema")
    assert code == 0
    assert json.loads(text) == json.loads((ROOT / "docs" / "providers.schema.json").read_text())


# ------------------------------------------------------------------ render (dry run)


def test_render_prints_messages_and_the_priced_chain(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``router render`` prints the rendered system and user messages and every step of
    the chain with its YAML price; with keys set, the real providers appear in order."""
    for var in KEY_VARS:
        monkeypatch.setenv(var, f"sk-render-{var.lower()}-0123456789")
    code, text = run("render", "analysis", "--config", str(example), *ANALYSIS_VARS)
    assert code == 0, text
    assert "--- system ---" in text and "--- user ---" in text
    assert "Ticker: ACME" in text
    assert "101.5, 102.25" in text
    chain = text.split("--- chain (dry run: nothing sent) ---\n", 1)[1].splitlines()
    steps = [line.split(":")[0].split(". ", 1)[1] for line in chain]
    assert steps == [
        "anthropic/claude-sonnet-5-5",
        "openai/gpt-5.5",
        "deepseek/deepseek-v4-flash",
        "xai/grok-4.3",
        "mock_flaky/mock-1",
        "mock/mock-1",
    ]
    assert "$2.0/M in, $10.0/M out" in chain[0]
    assert "$5.0/M in, $30.0/M out, retries=0" in chain[1]
    assert "$0.5/M in, $1.5/M out" in chain[-1]
    assert "sk-render" not in text


def test_render_shows_a_prompt_cache_breakpoint(example: Path) -> None:
    """With prompt_cache.system on, the dry run marks the system message as a cache
    breakpoint (and only it)."""
    text = example.read_text().replace(
        "    system: { file: analysis_system.j2 }\n",
        "    system: { file: analysis_system.j2 }\n    prompt_cache: { system: true }\n",
    )
    example.write_text(text)
    code, out = run("render", "analysis", "--config", str(example), "--no-env", *ANALYSIS_VARS)
    assert code == 0, out
    assert "--- system (prompt cache breakpoint) ---" in out
    assert "--- user ---" in out


def test_render_never_shows_an_attempt_cap_past_the_route_deadline(example: Path) -> None:
    """The analysis route has deadline_s 20: no attempt can last longer, so the dry run
    must not promise one (it shows 60 s, the providers' timeout_s)."""
    code, text = run("render", "analysis", "--config", str(example), "--no-env", *ANALYSIS_VARS)
    assert code == 0, text
    chain = text.split("nothing sent) ---\n", 1)[1].splitlines()
    caps = [float(line.rsplit("attempt cap ", 1)[1].rstrip("s")) for line in chain]
    assert caps and all(cap <= 20.0 for cap in caps), chain


def test_render_offline_drops_keyless_providers(example: Path) -> None:
    """With --no-env the chain shown is what would really run: the two mock steps."""
    code, text = run("render", "analysis", "--config", str(example), "--no-env", *ANALYSIS_VARS)
    assert code == 0, text
    chain = text.split("nothing sent) ---\n", 1)[1]
    assert "1. mock_flaky/mock-1" in chain and "2. mock/mock-1" in chain
    assert "anthropic" not in chain


async def test_render_sends_nothing(tmp_path: Path, upstream: Upstream) -> None:
    """A route whose only step is a live local server: render opens no connection and
    sends no request (and writes no ledger)."""
    upstream.route("/v1/chat/completions", replay("openai/openai-chat-200-json-wire.meta.json"))
    body = f"""\
providers:
  p:
    kind: openai
    base_url: {upstream.url}/v1
    models: {{m: {{price: {{input_per_mtok: 3, output_per_mtok: 7}}}}}}
settings: {{ledger: {{backend: sqlite, path: ledger.sqlite3}}}}
routes:
  r: {{prompt: "Hello {{{{ name }}}}", fallback: [p/m]}}
"""
    path = write_config(tmp_path, body)
    code, text = run("render", "r", "--config", str(path), "--var", "name=Ada")
    assert code == 0, text
    assert "Hello Ada" in text and "p/m: $3/M in, $7/M out" in text
    assert upstream.requests == [] and upstream.connections_opened == 0
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_render_with_a_bad_variable_fails_cleanly(example: Path) -> None:
    code, text = run(
        "render", "analysis", "--config", str(example), "--no-env", "--var", "ticker=ACME"
    )
    assert code == 1
    assert text.startswith("error: ") and "prices" in text


# ------------------------------------------------------------------ complete / stream


def test_complete_json_runs_the_offline_fallback(example: Path, tmp_path: Path) -> None:
    """``complete --json`` on the example config offline: parseable JSON with the mock's
    answer, exact usage and cost, and the attempt trail 503, 503, ok."""
    code, text = run(
        "complete", "analysis", "--config", str(example), "--no-env", "--json", *ANALYSIS_VARS
    )
    assert code == 0, text
    doc = json.loads(text)
    assert doc["text"] == MOCK_TEXT
    assert (doc["route"], doc["provider"], doc["model"]) == ("analysis", "mock", "mock-1")
    assert doc["finish_reason"] == "stop"
    usage = doc["usage"]
    assert usage["estimated"] is False and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    # mock-1's pretend price: $0.50 in, $1.50 out per million tokens.
    expected = (
        usage["input_tokens"] * Decimal("0.5") + usage["output_tokens"] * Decimal("1.5")
    ) / (1_000_000)
    assert Decimal(doc["cost_usd"]) == expected
    trail = [(a["provider"], a["outcome"], a["status"]) for a in doc["attempts"]]
    assert trail == [
        ("mock_flaky", "error", 503),
        ("mock_flaky", "error", 503),
        ("mock", "ok", 200),
    ]
    assert "503" in doc["attempts"][0]["error"]
    assert Decimal(doc["attempts"][-1]["cost_usd"]) == expected
    # The spend was settled in the ledger we pointed at tmp_path.
    assert (tmp_path / "ledger.sqlite3").exists()


def test_complete_text_output_has_answer_summary_and_trail(example: Path) -> None:
    code, text = run("complete", "analysis", "--config", str(example), "--no-env", *ANALYSIS_VARS)
    assert code == 0, text
    assert text.startswith(MOCK_TEXT + "\n")
    assert "answered by mock/mock-1" in text
    assert "attempts:" in text and "mock_flaky/mock-1" in text


@pytest.mark.parametrize(
    ("vars_", "needle"),
    [
        (["--var", "ticker=ACME", "--var", "prices=[1.0]"], "missing variable 'horizon_days'"),
        ([*ANALYSIS_VARS[:4], "--var", "horizon_days=abc"], "'horizon_days' must be int"),
        ([*ANALYSIS_VARS, "--var", "tickr=X"], "tickr"),
    ],
    ids=["missing", "mistyped", "undeclared"],
)
def test_complete_with_a_bad_variable_exits_1_with_the_template_error(
    example: Path, tmp_path: Path, vars_: list[str], needle: str
) -> None:
    """A bad --var is a TemplateError: exit 1, its text printed, nothing sent or spent."""
    code, text = run("complete", "analysis", "--config", str(example), "--no-env", *vars_)
    assert code == 1
    assert text.startswith("error: route 'analysis': ")
    assert needle in text
    assert "attempts:" not in text


def test_complete_of_an_unknown_route_suggests_the_closest(example: Path) -> None:
    code, text = run("complete", "analysys", "--config", str(example), "--no-env", *ANALYSIS_VARS)
    assert code == 1
    assert "did you mean 'analysis'" in text


def test_complete_that_fails_prints_the_trail(tmp_path: Path) -> None:
    """Every step failing: exit 1, the error and every attempt printed."""
    body = """\
providers:
  p: {kind: mock, mock: {failures: [500, 500, 500]}, models: {m: {}}}
routes:
  r: {prompt: hi, fallback: [p/m]}
"""
    path = write_config(tmp_path, body)
    code, text = run("complete", "r", "--config", str(path))
    assert code == 1
    assert text.startswith("error: route 'r': all 2 attempt(s) failed")
    assert text.count("p/m") >= 3 and "server: mock failure" in text


def test_stream_prints_the_text_and_a_summary(example: Path) -> None:
    """``router stream`` prints the answer as it arrives, then who answered, tokens, cost,
    time to first token and the trail."""
    code, text = run("stream", "analysis", "--config", str(example), "--no-env", *ANALYSIS_VARS)
    assert code == 0, text
    answer, _, summary = text.partition("\n\n")
    assert answer == MOCK_TEXT
    assert summary.startswith("answered by mock/mock-1")
    assert "first token after" in summary
    assert "tokens" in summary and "cost $" in summary
    assert summary.count("mock_flaky/mock-1") == 2


# ------------------------------------------------------------------ spend


def test_spend_json_lists_the_example_budgets(example: Path) -> None:
    """``spend --json`` lists every budget of the example with its period and limit, and
    reflects a call made in between (the ledger persists across router instances)."""
    code, text = run("spend", "--config", str(example), "--no-env", "--json")
    assert code == 0, text
    rows = {r["budget"]: r for r in json.loads(text)}
    assert set(rows) == {"daily_total", "openai_monthly", "analysis_daily"}
    assert (rows["daily_total"]["period"], Decimal(rows["daily_total"]["limit_usd"])) == (
        "day",
        Decimal(20),
    )
    assert rows["openai_monthly"]["provider"] == "openai"
    assert rows["analysis_daily"]["route"] == "analysis"
    assert all(
        Decimal(r["spent_usd"]) == 0 and Decimal(r["reserved_usd"]) == 0 for r in rows.values()
    )

    code, text = run(
        "complete", "analysis", "--config", str(example), "--no-env", "--json", *ANALYSIS_VARS
    )
    cost = Decimal(json.loads(text)["cost_usd"])
    code, text = run("spend", "--config", str(example), "--no-env", "--json")
    rows = {r["budget"]: r for r in json.loads(text)}
    assert Decimal(rows["daily_total"]["spent_usd"]) == cost
    assert Decimal(rows["analysis_daily"]["spent_usd"]) == cost
    assert Decimal(rows["openai_monthly"]["spent_usd"]) == 0
    assert Decimal(rows["daily_total"]["remaining_usd"]) == Decimal(20) - cost


def test_spend_table(example: Path) -> None:
    code, text = run("spend", "--config", str(example), "--no-env")
    assert code == 0
    header, *rows = text.splitlines()
    assert header.split() == ["budget", "period", "limit", "spent", "reserved", "remaining"]
    assert [r.split()[0] for r in rows] == ["daily_total", "openai_monthly", "analysis_daily"]


def test_a_missing_key_without_no_env_is_a_config_error(example: Path) -> None:
    """Without --no-env the example needs OPENAI_API_KEY: exit 1 naming the variable, no
    traceback."""
    code, text = run("spend", "--config", str(example))
    assert code == 1
    assert "OPENAI_API_KEY" in text and "Traceback" not in text
