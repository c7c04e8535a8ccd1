"""The command line end to end: every test runs a real ``python -m router`` process
(PYTHONPATH = this checkout), with no API key in its environment unless the test sets
one, and reads its exit code, stdout and stderr.

The example providers.yaml is copied into tmp_path with its SQLite ledger pointed
there too, so nothing is written in the repo. Without keys the example works
offline: the keyed providers are disabled and the ``analysis`` route falls back
mock_flaky (503, 503) -> mock.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.routerkit import write_config
from tests.upstream import Upstream, replay, reply, stream

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS_VARS = (
    "--var",
    "ticker=ACME",
    "--var",
    "prices=[101.5, 102.25]",
    "--var",
    "horizon_days=5",
)
# The example's analysis route asks for structured output: the mock answers its
# mock.output setting as compact JSON.
MOCK_OUTPUT = {
    "signal": "HOLD",
    "confidence": 0,
    "reasons": ["offline mock answer: no market view was formed"],
}
MOCK_TEXT = json.dumps(MOCK_OUTPUT, separators=(",", ":"))
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "XAI_API_KEY")
EXIT_CODES = {"ok": 0, "failed": 1, "usage": 2, "config": 3, "request": 4}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_text(self) -> str:
        """stderr from the ``error:`` line on (log lines may come before it)."""
        start = self.err.find("error: ")
        assert start >= 0, self.err
        return self.err[start:]

    def error(self) -> dict[str, Any]:
        """The ``--json`` error: the last line of stderr (log lines may come before)."""
        doc = json.loads(self.err.strip().splitlines()[-1])
        assert set(doc) == {"error"}, doc
        err: dict[str, Any] = doc["error"]
        assert {"type", "exit_code", "message"} <= set(err)
        assert err["exit_code"] == self.code
        return err


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS and k != "ROUTER_CONFIG"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def cli(
    *argv: str, cwd: Path, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> Result:
    """Run ``python -m router *argv`` in ``cwd``; no key set unless ``env`` sets one."""
    proc = subprocess.run(
        [sys.executable, "-m", "router", *argv],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(env),
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


async def acli(*argv: str, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
    """:func:`cli` without blocking the event loop (a loopback upstream runs in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=_env(env),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


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


MOCK_ONLY = """\
providers:
  m:
    kind: mock
    mock: {reply: "answer from {model}", latency_s: 0}
    models: {m1: {price: {input_per_mtok: 0.01, output_per_mtok: 0}}}
routes:
  r:
    prompt: "Hello {{ name }}, here are {{ items | length }} items"
    vars: {name: str, items: "list[int]"}
    fallback: [m/m1]
  loose:
    prompt: "{{ text }}"
    fallback: [m/m1]
"""


@pytest.fixture
def mock_only(tmp_path: Path) -> Path:
    """A config with one free-standing mock provider and two routes (one with declared vars)."""
    return write_config(tmp_path, MOCK_ONLY)


# ------------------------------------------------------------------ help, version


def test_help_lists_every_command(tmp_path: Path) -> None:
    r = cli("--help", cwd=tmp_path)
    assert r.code == 0, r.err
    for command in (
        "init",
        "validate",
        "schema",
        "routes",
        "render",
        "complete",
        "stream",
        "health",
        "spend",
    ):
        assert re.search(rf"^\s+{command}\s+\S", r.out, re.M), command
    assert "exit codes" in r.out


_MISSING_HELP = """
import json
from router.cli import build_parser

def walk(parser, name):
    for action in parser._actions:
        if action.help is None:
            yield f"{name} {'/'.join(action.option_strings) or action.dest}"
        for sub_name, sub in getattr(action, "choices", None).items() if isinstance(
            getattr(action, "choices", None), dict) else ():
            yield from walk(sub, f"{name} {sub_name}")

print(json.dumps(list(walk(build_parser(), "router"))))
"""


def test_every_option_of_every_command_has_help(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _MISSING_HELP],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(None),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("command", ["complete", "stream", "render", "validate", "init"])
def test_each_command_help_documents_its_options(tmp_path: Path, command: str) -> None:
    r = cli(command, "--help", cwd=tmp_path)
    assert r.code == 0, r.err
    for option in ("--config", "--json", "--no-env"):
        assert option in r.out
    if command in ("complete", "stream"):
        for option in ("--max-tokens", "--temperature", "--deadline", "--var", "--verbose"):
            assert option in r.out


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    r = cli("--version", cwd=tmp_path)
    assert r.code == 0, r.err
    assert r.out.strip() == f"router {version('yaml-llm-router')}"


# ------------------------------------------------------------------ no keys needed


def test_render_needs_no_key(example: Path) -> None:
    """A dry run sends nothing, so it needs no key: without --no-env and without any key
    it renders, shows the chain that would run here, and names each disabled step
    with the variable it lacks. Nothing goes to stderr."""
    r = cli("render", "analysis", "--config", str(example), *ANALYSIS_VARS, cwd=example.parent)
    assert r.code == 0, r.err
    assert r.err == ""
    assert "--- system ---" in r.out and "Ticker: ACME" in r.out and "101.5, 102.25" in r.out
    chain = r.out.split("--- chain (dry run: nothing sent) ---\n", 1)[1]
    assert "1. mock_flaky/mock-1" in chain and "2. mock/mock-1" in chain
    disabled = chain.split("--- disabled here (no key) ---\n", 1)[1]
    assert "anthropic/claude-sonnet-5-5: ANTHROPIC_API_KEY not set (required" in disabled
    assert "deepseek/deepseek-v4-flash: DEEPSEEK_API_KEY not set (optional" in disabled


def test_render_names_the_variable_a_disabled_provider_lacks(tmp_path: Path) -> None:
    """A provider with its key set but its proxy variable unset is disabled because of
    the proxy variable: the dry run names that one, not the key's."""
    path = write_config(
        tmp_path,
        """\
providers:
  p:
    kind: openai
    base_url: https://api.example.com/v1
    api_key_env: P_KEY
    proxy_url_env: P_PROXY
    optional: true
    models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}
  local: {kind: mock, models: {m: {}}}
routes:
  r: {prompt: hi, fallback: [p/m, local/m]}
""",
    )
    r = cli("render", "r", "--config", str(path), cwd=tmp_path, env={"P_KEY": "k" * 40})
    assert r.code == 0, r.err
    assert "p/m: P_PROXY not set (optional: skipped)" in r.out
    assert "k" * 40 not in r.out


def test_render_with_keys_shows_the_whole_priced_chain(example: Path) -> None:
    keys = {var: f"sk-render-{var.lower()}-0123456789" for var in KEY_VARS}
    r = cli("render", "analysis", "--config", str(example), *ANALYSIS_VARS, cwd=ROOT, env=keys)
    assert r.code == 0, r.err
    chain = r.out.split("--- chain (dry run: nothing sent) ---\n", 1)[1].splitlines()
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
    # No attempt can outlast the route's deadline (20 s): the dry run promises none.
    caps = [float(line.rsplit("attempt cap ", 1)[1].rstrip("s")) for line in chain]
    assert caps and all(cap <= 20.0 for cap in caps)
    assert "sk-render" not in r.out + r.err


def test_render_shows_a_prompt_cache_breakpoint(example: Path) -> None:
    """With prompt_cache.system on, the dry run marks the system message as a cache
    breakpoint (and only it), in the text and in the JSON."""
    text = example.read_text().replace(
        "    system: { file: analysis_system.j2 }\n",
        "    system: { file: analysis_system.j2 }\n    prompt_cache: { system: true }\n",
    )
    example.write_text(text)
    r = cli("render", "analysis", "--config", str(example), *ANALYSIS_VARS, cwd=ROOT)
    assert r.code == 0, r.err
    assert "--- system (prompt cache breakpoint) ---" in r.out
    assert "--- user ---" in r.out
    r = cli("render", "analysis", "--config", str(example), "--json", *ANALYSIS_VARS, cwd=ROOT)
    assert [m["cache"] for m in r.json()["messages"]] == [True, False]


@pytest.mark.parametrize("argv", [("spend",), ("routes",), ("spend", "--json")])
def test_commands_that_send_nothing_need_no_key(example: Path, argv: tuple[str, ...]) -> None:
    r = cli(*argv, "--config", str(example), cwd=ROOT)
    assert r.code == 0, r.err
    assert r.err == ""


def test_schema_needs_no_config_and_is_the_published_schema(tmp_path: Path) -> None:
    """``router schema`` runs in a folder without providers.yaml; its output is
    docs/providers.schema.json (with or without --json)."""
    published = json.loads((ROOT / "docs" / "providers.schema.json").read_text())
    for argv in (("schema",), ("schema", "--json")):
        r = cli(*argv, cwd=tmp_path)
        assert r.code == 0, r.err
        assert r.json() == published


def test_validate_no_env_accepts_the_example_without_keys(example: Path) -> None:
    r = cli("validate", str(example), "--no-env", cwd=ROOT)
    assert r.code == 0, r.out + r.err
    assert "valid: 9 providers, 3 routes" in r.out


def test_a_call_without_its_keys_is_a_config_error_on_stderr(example: Path) -> None:
    """complete needs the keys: exit 3, the variables named on stderr, nothing on
    stdout, no traceback."""
    r = cli("complete", "analysis", "--config", str(example), *ANALYSIS_VARS, cwd=ROOT)
    assert r.code == EXIT_CODES["config"]
    assert r.out == ""
    assert r.error_text.startswith("error: 2 problems in config")
    assert "OPENAI_API_KEY" in r.err and "ANTHROPIC_API_KEY" in r.err
    assert "Traceback" not in r.err


# ------------------------------------------------------------------ complete / stream


def test_complete_runs_the_offline_fallback(example: Path) -> None:
    r = cli("complete", "analysis", "--config", str(example), "--no-env", *ANALYSIS_VARS, cwd=ROOT)
    assert r.code == 0, r.err
    assert r.out.startswith(MOCK_TEXT + "\n")
    assert "output (checked against the route's schema):" in r.out
    assert "answered by mock/mock-1" in r.out
    assert "attempts:" in r.out and r.out.count("mock_flaky/mock-1") == 2
    assert "error:" not in r.out


def test_complete_json(example: Path, tmp_path: Path) -> None:
    """``complete --json``: the answer, exact usage and cost (a string of digits), and the
    attempt trail 503, 503, ok."""
    r = cli(
        "complete",
        "analysis",
        "--config",
        str(example),
        "--no-env",
        "--json",
        *ANALYSIS_VARS,
        cwd=ROOT,
    )
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["text"] == MOCK_TEXT and doc["output"] == MOCK_OUTPUT
    assert doc["tool_calls"] == []
    assert (doc["route"], doc["provider"], doc["model"]) == ("analysis", "mock", "mock-1")
    assert doc["finish_reason"] == "stop"
    usage = doc["usage"]
    assert usage["estimated"] is False and usage["input_tokens"] > 0
    # mock-1's pretend price: $0.50 in, $1.50 out per million tokens.
    expected = (
        usage["input_tokens"] * Decimal("0.5") + usage["output_tokens"] * Decimal("1.5")
    ) / 1_000_000
    assert isinstance(doc["cost_usd"], str) and Decimal(doc["cost_usd"]) == expected
    trail = [(a["provider"], a["outcome"], a["status"]) for a in doc["attempts"]]
    assert trail == [
        ("mock_flaky", "error", 503),
        ("mock_flaky", "error", 503),
        ("mock", "ok", 200),
    ]
    assert doc["attempts"][0]["error_type"] == "ServerError"
    assert Decimal(doc["attempts"][-1]["cost_usd"]) == expected
    assert (tmp_path / "ledger.sqlite3").exists()


def test_log_lines_are_json_under_json(example: Path) -> None:
    """The example's settings.log is console at info; under --json every stderr line is
    a JSON object all the same (the disabled providers, then the call's events), and
    the call's cost in them is written exactly."""
    r = cli(
        "complete",
        "analysis",
        "--config",
        str(example),
        "--no-env",
        "--json",
        *ANALYSIS_VARS,
        cwd=ROOT,
    )
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.err.splitlines()]
    names = [e["event"] for e in events]
    assert "provider_disabled" in names and names[-1] == "llm_call"
    assert events[-1]["cost_usd"] == r.json()["cost_usd"]


def test_stream_prints_the_text_then_a_summary(example: Path) -> None:
    r = cli("stream", "analysis", "--config", str(example), "--no-env", *ANALYSIS_VARS, cwd=ROOT)
    assert r.code == 0, r.err
    answer, _, summary = r.out.partition("\n\n")
    assert answer == MOCK_TEXT
    assert summary.startswith("answered by mock/mock-1")
    assert "first token after" in summary and "cost $" in summary
    assert summary.count("mock_flaky/mock-1") == 2


def test_stream_json_is_ndjson_deltas_then_done(example: Path) -> None:
    """``stream --json``: one JSON object per line; delta events whose texts make the
    answer, then one done event with usage, exact cost and the attempts."""
    r = cli(
        "stream",
        "analysis",
        "--config",
        str(example),
        "--no-env",
        "--json",
        *ANALYSIS_VARS,
        cwd=ROOT,
    )
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.out.splitlines()]
    assert len(events) >= 3
    *deltas, done = events
    assert {e["event"] for e in deltas} == {"delta"}
    assert "".join(e["text"] for e in deltas) == MOCK_TEXT
    assert done["event"] == "done"
    assert done["text"] == MOCK_TEXT and done["provider"] == "mock"
    assert done["output"] == MOCK_OUTPUT
    assert done["usage"]["output_tokens"] > 0
    assert Decimal(done["cost_usd"]) > 0
    assert [a["outcome"] for a in done["attempts"]] == ["error", "error", "ok"]


def test_deadline_option_bounds_the_call(tmp_path: Path) -> None:
    """--deadline overrides the route's: a 2 s mock answer under --deadline 0.3 is a
    DeadlineExceededError, exit 1, reported in well under the mock's latency."""
    path = write_config(
        tmp_path,
        """\
providers:
  slow: {kind: mock, mock: {latency_s: 2.0}, models: {m: {}}}
routes:
  r: {prompt: hi, deadline_s: 30, fallback: [slow/m]}
""",
    )
    r = cli("complete", "r", "--config", str(path), "--json", "--deadline", "0.3", cwd=tmp_path)
    assert r.code == EXIT_CODES["failed"]
    assert r.out == ""
    err = r.error()
    assert err["type"] == "DeadlineExceededError"
    assert err["deadline_s"] == 0.3 and err["route"] == "r"


async def test_max_tokens_and_temperature_reach_the_request(
    tmp_path: Path, upstream: Upstream
) -> None:
    """--max-tokens and --temperature override the route's values in the request body."""
    upstream.route("/v1/chat/completions", replay("openai/openai-chat-200-json-wire.meta.json"))
    path = write_config(
        tmp_path,
        f"""\
providers:
  p:
    kind: openai
    base_url: {upstream.url}/v1
    models: {{m: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
routes:
  r: {{prompt: hi, max_tokens: 500, temperature: 1.0, fallback: [p/m]}}
""",
    )
    r = await acli(
        "complete",
        "r",
        "--config",
        str(path),
        "--max-tokens",
        "37",
        "--temperature",
        "0.25",
        cwd=tmp_path,
    )
    assert r.code == 0, r.err
    body = upstream.requests[-1].json()
    assert body["temperature"] == 0.25
    assert 37 in (body.get("max_tokens"), body.get("max_completion_tokens"))


def _sse_chunk(text: str) -> bytes:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
async def test_a_stream_cut_after_its_first_text_fails_on_stderr(
    tmp_path: Path, upstream: Upstream, as_json: bool
) -> None:
    """The upstream resets after two deltas: stdout holds what arrived (delta events,
    no done event), stderr the StreamInterruptedError, exit 1."""
    upstream.queue(stream([_sse_chunk("Hello "), _sse_chunk("wor")], end="reset"))
    path = write_config(
        tmp_path,
        f"""\
providers:
  p:
    kind: openai
    base_url: {upstream.url}/v1
    models: {{m: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
routes:
  r: {{prompt: hi, fallback: [p/m]}}
""",
    )
    argv = ("stream", "r", "--config", str(path), *(("--json",) if as_json else ()))
    r = await acli(*argv, cwd=tmp_path)
    assert r.code == EXIT_CODES["failed"], r.err
    if as_json:
        events = [json.loads(line) for line in r.out.splitlines()]
        assert events == [
            {"event": "delta", "text": "Hello "},
            {"event": "delta", "text": "wor"},
        ]
        err = r.error()
        assert err["type"] == "StreamInterruptedError"
        assert (err["provider"], err["model"], err["partial_chars"]) == ("p", "m", 9)
    else:
        assert r.out == "Hello wor\n"
        assert r.error_text.startswith("error: p/m")
        assert "stream interrupted after 9 characters" in r.err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-tokens", "0"), ("--max-tokens", "x"), ("--temperature", "3"), ("--deadline", "-1")],
)
def test_bad_call_options_are_usage_errors(mock_only: Path, option: str, value: str) -> None:
    r = cli("complete", "r", "--config", str(mock_only), option, value, cwd=mock_only.parent)
    assert r.code == EXIT_CODES["usage"]
    assert r.out == "" and option in r.err and "must be" in r.err


def test_a_failed_call_prints_the_error_and_trail_on_stderr(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
providers:
  p: {kind: mock, mock: {failures: [500, 500, 500]}, models: {m: {}}}
routes:
  r: {prompt: hi, fallback: [p/m]}
""",
    )
    r = cli("complete", "r", "--config", str(path), cwd=tmp_path)
    assert r.code == EXIT_CODES["failed"]
    assert r.out == ""
    assert r.error_text.startswith("error: route 'r': all 2 attempt(s) failed")
    assert r.err.count("p/m") >= 3 and "server: mock failure" in r.err

    r = cli("complete", "r", "--config", str(path), "--json", cwd=tmp_path)
    err = r.error()
    assert err["type"] == "AllProvidersFailedError" and err["route"] == "r"
    assert [a["status"] for a in err["attempts"]] == [500, 500]


# ------------------------------------------------------------------ --config, ROUTER_CONFIG


@pytest.mark.parametrize(
    "where", ["before", "after", "env"], ids=["--config before", "--config after", "env"]
)
def test_config_before_or_after_the_command_or_from_the_environment(
    mock_only: Path, tmp_path: Path, where: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv: tuple[str, ...] = ("routes", "--json")
    env = None
    if where == "before":
        argv = ("--config", str(mock_only), *argv)
    elif where == "after":
        argv = (*argv, "--config", str(mock_only))
    else:
        env = {"ROUTER_CONFIG": str(mock_only)}
    r = cli(*argv, cwd=elsewhere, env=env)
    assert r.code == 0, r.err
    assert [route["name"] for route in r.json()] == ["r", "loose"]


def test_config_after_the_command_wins_over_the_one_before(mock_only: Path, tmp_path: Path) -> None:
    r = cli(
        "--config", str(tmp_path / "nope.yaml"), "routes", "--config", str(mock_only), cwd=tmp_path
    )
    assert r.code == 0, r.err


def test_validate_takes_a_path_or_config(mock_only: Path, tmp_path: Path) -> None:
    """validate keeps its positional PATH; --config (or $ROUTER_CONFIG) works too; two
    different files are a usage error."""
    for argv, env in (
        ((str(mock_only),), None),
        (("--config", str(mock_only)), None),
        ((), {"ROUTER_CONFIG": str(mock_only)}),
    ):
        r = cli("validate", *argv, cwd=tmp_path / "..", env=env)
        assert r.code == 0, (argv, r.out, r.err)
        assert f"{mock_only}: valid: 1 provider, 2 routes" in r.out
    r = cli("validate", str(mock_only), "--config", str(tmp_path / "other.yaml"), cwd=tmp_path)
    assert r.code == EXIT_CODES["usage"]
    assert "two files" in r.err


def test_a_missing_config_file_is_exit_3_naming_it(tmp_path: Path) -> None:
    r = cli("routes", cwd=tmp_path)
    assert r.code == EXIT_CODES["config"]
    assert "providers.yaml: file not found" in r.err
    r = cli("routes", "--json", cwd=tmp_path)
    err = r.error()
    assert err["type"] == "ConfigError"
    assert err["problems"] == [
        {
            "file": "providers.yaml",
            "line": None,
            "col": None,
            "path": "",
            "message": "file not found",
        }
    ]


# ------------------------------------------------------------------ --var


def _rendered(r: Result) -> str:
    assert r.code == 0, r.err
    return "".join(m["content"] for m in r.json()["messages"])


def test_var_values_are_typed_by_the_declared_vars(mock_only: Path) -> None:
    r = cli(
        "render",
        "r",
        "--json",
        "--config",
        str(mock_only),
        "--var",
        "name=42",
        "--var",
        "items=[1, 2, 3]",
        cwd=mock_only.parent,
    )
    # name is declared str: "42" stays text; items is list[int]: JSON.
    assert _rendered(r) == "Hello 42, here are 3 items"


def test_var_from_a_file_and_from_stdin(mock_only: Path) -> None:
    (mock_only.parent / "items.json").write_text("[1, 2]\n")
    r = cli(
        "render",
        "r",
        "--json",
        "--config",
        str(mock_only),
        "--var",
        "name=@-",
        "--var",
        "items=@items.json",
        cwd=mock_only.parent,
        stdin="Ada\n",
    )
    # stdin's final newline is dropped; the file is JSON because items is list[int].
    assert _rendered(r) == "Hello Ada, here are 2 items"


def test_var_from_a_file_for_an_undeclared_route_is_text(mock_only: Path) -> None:
    (mock_only.parent / "doc.txt").write_text('{"not": "parsed"}\nsecond line\n')
    r = cli(
        "render",
        "loose",
        "--json",
        "--config",
        str(mock_only),
        "--var",
        "text=@doc.txt",
        cwd=mock_only.parent,
    )
    assert _rendered(r) == '{"not": "parsed"}\nsecond line'


def test_a_literal_at_sign_is_written_twice(mock_only: Path) -> None:
    r = cli(
        "render",
        "r",
        "--json",
        "--config",
        str(mock_only),
        "--var",
        "name=@@ada",
        "--var",
        "items=[]",
        cwd=mock_only.parent,
    )
    assert _rendered(r) == "Hello @ada, here are 0 items"


@pytest.mark.parametrize(
    ("var", "needle"),
    [
        ("name", "expected NAME=VALUE"),
        ("name=@missing.txt", "file not found"),
        ("=x", "expected NAME=VALUE"),
    ],
)
def test_bad_var_arguments_are_usage_errors(mock_only: Path, var: str, needle: str) -> None:
    r = cli(
        "render",
        "r",
        "--config",
        str(mock_only),
        "--var",
        var,
        "--var",
        "items=[]",
        cwd=mock_only.parent,
    )
    assert r.code == EXIT_CODES["usage"]
    assert needle in r.err and r.out == ""


def test_a_var_given_twice_is_a_usage_error(mock_only: Path) -> None:
    r = cli(
        "render",
        "r",
        "--json",
        "--config",
        str(mock_only),
        "--var",
        "name=a",
        "--var",
        "name=b",
        "--var",
        "items=[]",
        cwd=mock_only.parent,
    )
    assert r.error()["type"] == "UsageError"
    assert "given more than once" in r.error()["message"]


def test_every_missing_variable_is_named_at_once(example: Path) -> None:
    """A route with three declared variables and none passed: one error names all
    three (exit 4, nothing sent)."""
    r = cli("render", "analysis", "--config", str(example), cwd=ROOT)
    assert r.code == EXIT_CODES["request"]
    assert "missing variables 'ticker', 'prices', 'horizon_days'" in r.err
    r = cli("complete", "analysis", "--config", str(example), "--no-env", "--json", cwd=ROOT)
    err = r.error()
    assert err["type"] == "TemplateError"
    assert err["variables"] == ["ticker", "prices", "horizon_days"]
    assert err["route"] == "analysis"


@pytest.mark.parametrize(
    ("vars_", "needle"),
    [
        (ANALYSIS_VARS[:4], "missing variable 'horizon_days'"),
        ((*ANALYSIS_VARS[:4], "--var", "horizon_days=abc"), "'horizon_days' must be int"),
        ((*ANALYSIS_VARS, "--var", "tickr=X"), "unexpected variable 'tickr'"),
    ],
    ids=["missing", "mistyped", "undeclared"],
)
def test_variables_that_do_not_fit_are_exit_4(
    example: Path, vars_: tuple[str, ...], needle: str
) -> None:
    r = cli("complete", "analysis", "--config", str(example), "--no-env", *vars_, cwd=ROOT)
    assert r.code == EXIT_CODES["request"]
    assert r.error_text.startswith("error: route 'analysis': ") and needle in r.err
    assert "attempts:" not in r.err and r.out == ""


def test_an_unknown_route_is_exit_4_with_a_suggestion(example: Path) -> None:
    r = cli("complete", "analysys", "--config", str(example), "--no-env", "--json", cwd=ROOT)
    err = r.error()
    assert r.code == EXIT_CODES["request"]
    assert err["type"] == "UnknownRouteError" and err["route"] == "analysys"
    assert "did you mean 'analysis'" in err["message"]


# ------------------------------------------------------------------ JSON on every command


def test_render_json(mock_only: Path) -> None:
    r = cli(
        "render",
        "r",
        "--json",
        "--config",
        str(mock_only),
        "--var",
        "name=Ada",
        "--var",
        "items=[1]",
        cwd=mock_only.parent,
    )
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["sent"] is False and doc["route"] == "r"
    assert doc["messages"] == [
        {"role": "user", "content": "Hello Ada, here are 1 items", "cache": False}
    ]
    (step,) = doc["chain"]
    estimate = step.pop("input_tokens_estimate")
    assert isinstance(estimate, int) and estimate > 0
    assert step == {
        "provider": "m",
        "model": "m1",
        "price": {"input_per_mtok": "0.01", "output_per_mtok": "0"},
        "retries": 1,
        "attempt_cap_s": 30.0,
        "context_window": None,
        "max_tokens": 1024,
        "fits": True,
        "server_tools": [],
        "max_tool_calls": 0,
        "tool_calls_reserve_usd": "0",
        "request": {
            "key_env": None,
            "key_header": None,
            "method": "POST",
            "url": "mock://local/chat/completions",
            "settings": {"max_tokens": 1024},
        },
        "pool": None,  # a pool:NAME step: its members and order (docs/latency.md)
        "hedge": None,
    }
    assert doc["disabled"] == []


GEMINI_ONLY = """\
providers:
  g:
    kind: gemini
    api_key_env: G_KEY
    extra:
      safetySettings: [{category: HARM_CATEGORY_HATE_SPEECH, threshold: BLOCK_ONLY_HIGH}]
    models:
      models/gemini-2.5-flash:
        price: {input_per_mtok: 0.3, output_per_mtok: 2.5}
        extra: {thinkingConfig: {thinkingBudget: 0}}
routes:
  r: {system: Be terse., prompt: hi, max_tokens: 300, fallback: [g/models/gemini-2.5-flash]}
"""


def test_render_shows_what_a_gemini_step_would_send(tmp_path: Path) -> None:
    """The dry run shows each step's request as its kind builds it: the URL (the key is
    never in it), the header that would carry the key, and the kind's own settings
    (Gemini: generationConfig with the thinking budget, safetySettings)."""
    path = write_config(tmp_path, GEMINI_ONLY)
    key = "AIza-render-0123456789abcdef"
    r = cli("render", "r", "--config", str(path), cwd=tmp_path, env={"G_KEY": key})
    assert r.code == 0, r.err
    assert key not in r.out + r.err
    section = r.out.split("--- requests (dry run: what each step would send) ---\n", 1)[1]
    line = section.splitlines()[0]
    assert line == (
        "  1. g/models/gemini-2.5-flash: POST https://generativelanguage.googleapis.com/v1beta"
        "/models/gemini-2.5-flash:generateContent, key in header x-goog-api-key (from G_KEY);"
        ' safetySettings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold":'
        ' "BLOCK_ONLY_HIGH"}], generationConfig={"maxOutputTokens": 300, "thinkingConfig":'
        ' {"thinkingBudget": 0}}'
    )
    r = cli("render", "r", "--json", "--config", str(path), cwd=tmp_path, env={"G_KEY": key})
    (step,) = r.json()["chain"]
    assert step["request"]["settings"]["generationConfig"] == {
        "maxOutputTokens": 300,
        "thinkingConfig": {"thinkingBudget": 0},
    }


def test_routes_lists_vars_with_types_and_chains(example: Path) -> None:
    r = cli("routes", "--json", "--config", str(example), cwd=ROOT)
    assert r.code == 0, r.err
    routes = {doc["name"]: doc for doc in r.json()}
    analysis = routes["analysis"]
    assert analysis["vars"] == {"ticker": "str", "prices": "list[float]", "horizon_days": "int"}
    assert analysis["deadline_s"] == 20.0 and analysis["max_cost_usd"] == "0.05"
    steps = [(s["provider"], s["model"], s["enabled"]) for s in analysis["steps"]]
    assert steps[0] == ("anthropic", "claude-sonnet-5-5", False)
    assert steps[-2:] == [("mock_flaky", "mock-1", True), ("mock", "mock-1", True)]
    assert "ANTHROPIC_API_KEY" in analysis["steps"][0]["disabled"]
    assert routes["summary"]["vars"] is None
    assert routes["summary"]["variables"] == ["max_words", "text"]

    r = cli("routes", "--config", str(example), cwd=ROOT)
    assert r.code == 0, r.err
    assert "vars:   ticker: str, prices: list[float], horizon_days: int" in r.out
    assert "1. anthropic/claude-sonnet-5-5  [disabled: ANTHROPIC_API_KEY not set" in r.out
    assert "vars:   not declared (the templates use: max_words, text)" in r.out


def test_spend_json_reflects_a_call(example: Path) -> None:
    r = cli("spend", "--config", str(example), "--json", cwd=ROOT)
    assert r.code == 0, r.err
    rows = {row["budget"]: row for row in r.json()}
    assert set(rows) == {"daily_total", "openai_monthly", "analysis_daily"}
    assert rows["daily_total"]["period"] == "day"
    assert Decimal(rows["daily_total"]["limit_usd"]) == 20
    assert all(Decimal(row["spent_usd"]) == 0 for row in rows.values())

    r = cli(
        "complete",
        "analysis",
        "--config",
        str(example),
        "--no-env",
        "--json",
        *ANALYSIS_VARS,
        cwd=ROOT,
    )
    cost = Decimal(r.json()["cost_usd"])
    rows = {
        row["budget"]: row
        for row in cli("spend", "--config", str(example), "--json", cwd=ROOT).json()
    }
    assert Decimal(rows["daily_total"]["spent_usd"]) == cost
    assert Decimal(rows["analysis_daily"]["spent_usd"]) == cost
    assert Decimal(rows["openai_monthly"]["spent_usd"]) == 0
    assert Decimal(rows["daily_total"]["remaining_usd"]) == 20 - cost


def test_validate_json(mock_only: Path, tmp_path: Path) -> None:
    r = cli("validate", str(mock_only), "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["valid"] is True and doc["routes"] == ["loose", "r"]
    assert doc["problems"] == [] and doc["warnings"] == []

    broken = tmp_path / "broken.yaml"
    broken.write_text(mock_only.read_text().replace("kind: mock", "kind: mok"))
    r = cli("validate", str(broken), "--json", cwd=tmp_path)
    assert r.code == EXIT_CODES["failed"]
    doc = r.json()
    assert doc["valid"] is False
    (problem,) = doc["problems"]
    assert problem["path"] == "providers.m.kind" and problem["line"] == 3
    assert set(problem) == {"file", "line", "col", "path", "message"}


async def test_health_json(tmp_path: Path, upstream: Upstream) -> None:
    """health --json: one entry per provider; exit 1 when one fails."""
    listing = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
    upstream.route("/v1/models", reply(200, listing))
    path = write_config(
        tmp_path,
        f"""\
providers:
  up:
    kind: openai
    base_url: {upstream.url}/v1
    models: {{gpt-4o-mini: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
  down:
    kind: openai
    base_url: http://127.0.0.1:9/v1
    models: {{x: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
routes:
  r: {{prompt: hi, fallback: [up/gpt-4o-mini]}}
""",
    )
    r = await acli("health", "--json", "--config", str(path), "--timeout", "5", cwd=tmp_path)
    assert r.code == EXIT_CODES["failed"], r.err
    reports = {doc["provider"]: doc for doc in r.json()}
    assert set(reports) == {"up", "down"}
    assert reports["down"]["ok"] is False and reports["down"]["reachable"] is False
    assert set(reports["up"]) == {
        "provider",
        "ok",
        "reachable",
        "status",
        "latency_ms",
        "url",
        "missing_models",
        "error",
    }
    assert reports["up"]["url"] == f"GET {upstream.url}/v1/models"


@pytest.mark.parametrize(
    ("argv", "code", "type_"),
    [
        (("complete", "--bogus"), "usage", "UsageError"),
        (("nosuchcommand",), "usage", "UsageError"),
        (("render", "r", "--var", "name"), "usage", "UsageError"),
        (("routes", "--config", "missing.yaml"), "config", "ConfigError"),
        (("render", "nope"), "request", "UnknownRouteError"),
        (("render", "r", "--var", "name=x"), "request", "TemplateError"),
    ],
)
def test_errors_under_json_have_one_shape(
    mock_only: Path, argv: tuple[str, ...], code: str, type_: str
) -> None:
    """Every error under --json: exit code from the table, nothing on stdout, and the
    last line of stderr is {"error": {"type", "exit_code", "message", ...}}."""
    r = cli("--json", *argv, cwd=mock_only.parent)
    assert r.code == EXIT_CODES[code], r.err
    assert r.out == ""
    assert r.error()["type"] == type_


def test_the_exit_code_table_in_the_docs_is_the_one_the_cli_uses(tmp_path: Path) -> None:
    """docs/cli.md's table lists the codes the CLI's Exit enum defines, no more, no less."""
    doc = (ROOT / "docs" / "cli.md").read_text()
    table = dict(re.findall(r"^\| `(\d+)` \| `(\w+)` \|", doc, re.M))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from router.commands.common import Exit;"
            " print(json.dumps({str(int(e)): e.name for e in Exit}))",
        ],
        capture_output=True,
        text=True,
        env=_env(None),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert table == json.loads(proc.stdout)


# ------------------------------------------------------------------ money


TINY = """\
providers:
  m:
    kind: mock
    mock: {reply: "ok", latency_s: 0}
    models: {m1: {price: {input_per_mtok: 0.01, output_per_mtok: 0}}}
budgets:
  all: {limit_usd: 1, period: day}
  tiny: {limit_usd: 0.0000005, period: day, route: other}
routes:
  r: {prompt: "{{ text }}", fallback: [m/m1]}
  other: {prompt: hi, fallback: [m/m1]}
settings: {ledger: {backend: sqlite, path: ledger.sqlite3}}
"""


def test_small_amounts_are_never_in_exponent_form(tmp_path: Path) -> None:
    """A call costing under a millionth of a dollar, and a budget limit of half a
    millionth: the CLI text, its JSON and `spend` show every digit, never 9.8E-7."""
    path = write_config(tmp_path, TINY)
    r = cli("complete", "r", "--config", str(path), "--var", "text=hello there", cwd=tmp_path)
    assert r.code == 0, r.err
    cost = re.search(r"cost \$(\S+)", r.out)
    assert cost is not None
    assert re.fullmatch(r"0\.0+[1-9]\d*", cost.group(1)), cost.group(1)
    assert Decimal(cost.group(1)) < Decimal("0.000001")

    r = cli("complete", "r", "--config", str(path), "--json", "--var", "text=hello", cwd=tmp_path)
    doc = r.json()
    for amount in [doc["cost_usd"], *(a["cost_usd"] for a in doc["attempts"])]:
        assert isinstance(amount, str) and "e" not in amount.lower()

    r = cli("spend", "--config", str(path), cwd=tmp_path)
    assert r.code == 0, r.err
    assert "E-" not in r.out and "e-" not in r.out
    tiny = next(line for line in r.out.splitlines() if line.startswith("tiny"))
    assert "$0.0000005" in tiny
    spent = next(line for line in r.out.splitlines() if line.startswith("all")).split()[3]
    assert Decimal(spent.lstrip("$")) == Decimal(cost.group(1)) + Decimal(doc["cost_usd"])

    rows = cli("spend", "--config", str(path), "--json", cwd=tmp_path).json()
    assert {row["budget"]: row["limit_usd"] for row in rows}["tiny"] == "0.0000005"
    assert not any("E" in row[k] for row in rows for k in row if k.endswith("_usd"))


# ------------------------------------------------------------------ validate warnings


def test_validate_warns_about_a_declared_variable_no_template_uses(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
providers:
  m: {kind: mock, models: {m1: {}}}
routes:
  r:
    prompt: "Hello {{ name }}"
    vars: {name: str, unused_var: int}
    fallback: [m/m1]
""",
    )
    r = cli("validate", str(path), cwd=tmp_path)
    assert r.code == 0, r.out
    warning, summary = r.out.splitlines()
    assert re.match(
        rf"{re.escape(str(path))}:\d+:\d+: routes\.r\.vars\.unused_var: warning: ", warning
    )
    assert "'unused_var'" in warning and "route 'r'" in warning
    assert "valid: 1 provider, 1 route" in summary

    doc = cli("validate", str(path), "--json", cwd=tmp_path).json()
    (w,) = doc["warnings"]
    assert w["path"] == "routes.r.vars.unused_var" and w["line"] is not None

    r = cli("validate", str(path), "--format", "github", cwd=tmp_path)
    assert r.out.startswith("::warning file=")


# ------------------------------------------------------------------ init


def test_init_writes_a_starter_that_validates_renders_and_runs_offline(tmp_path: Path) -> None:
    target = tmp_path / "project"
    r = cli("init", str(target), cwd=tmp_path)
    assert r.code == 0, r.err
    config = target / "providers.yaml"
    assert config.is_file() and (target / "templates" / "hello.j2").is_file()
    assert "# " in config.read_text()  # commented
    assert "# openai:" in config.read_text()  # real providers, commented out

    r = cli("validate", "--no-env", cwd=target)
    assert r.code == 0, r.out
    assert r.out.startswith("providers.yaml: valid")
    r = cli("render", "hello", "--var", "name=Ada", cwd=target)
    assert r.code == 0, r.err
    assert "Ada" in r.out
    r = cli("complete", "hello", "--var", "name=Ada", "--json", cwd=target)
    assert r.code == 0, r.err
    assert r.json()["provider"] == "mock"


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).code == 0
    config = tmp_path / "providers.yaml"
    config.write_text("# mine\n")
    r = cli("init", cwd=tmp_path)
    assert r.code == EXIT_CODES["failed"]
    assert "not overwriting" in r.err and "--force" in r.err
    assert config.read_text() == "# mine\n"
    r = cli("init", "--json", cwd=tmp_path)
    err = r.error()
    assert err["type"] == "WouldOverwriteError"
    assert sorted(Path(p).name for p in err["paths"]) == ["hello.j2", "providers.yaml"]

    r = cli("init", "--force", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert len(r.json()["written"]) == 2
    assert config.read_text() != "# mine\n"


def test_the_starter_ships_inside_the_package() -> None:
    """The starter is package data under router/starter/, which the wheel includes
    (hatch packages the whole router/ folder)."""
    starter = ROOT / "router" / "starter"
    assert (starter / "providers.yaml").is_file()
    assert (starter / "templates" / "hello.j2").is_file()
    text = (ROOT / "pyproject.toml").read_text()
    assert 'packages = ["router"]' in text


# ------------------------------------------------------------------ render sends nothing


async def test_render_sends_nothing(tmp_path: Path, upstream: Upstream) -> None:
    """A route whose only step is a live local server: render opens no connection and
    writes no ledger."""
    upstream.route("/v1/chat/completions", replay("openai/openai-chat-200-json-wire.meta.json"))
    path = write_config(
        tmp_path,
        f"""\
providers:
  p:
    kind: openai
    base_url: {upstream.url}/v1
    models: {{m: {{price: {{input_per_mtok: 3, output_per_mtok: 7}}}}}}
settings: {{ledger: {{backend: sqlite, path: ledger.sqlite3}}}}
routes:
  r: {{prompt: "Hello {{{{ name }}}}", fallback: [p/m]}}
""",
    )
    r = await acli("render", "r", "--config", str(path), "--var", "name=Ada", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "Hello Ada" in r.out and "p/m: $3/M in, $7/M out" in r.out
    assert upstream.requests == [] and upstream.connections_opened == 0
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_validate_config_script_accepts_the_example_offline() -> None:
    """``python scripts/validate_config.py providers.yaml --no-env`` (what CI runs)."""
    proc = subprocess.run(
        [sys.executable, "scripts/validate_config.py", "providers.yaml", "--no-env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(None),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_completion_json_lists_the_answers_tool_calls() -> None:
    from decimal import Decimal

    from router.commands.report import completion_dict
    from router.types import Completion, ToolCall, Usage

    done = Completion(
        "", "r", "p", "m", Usage(1, 2), Decimal("0.1"), "tool_calls", 0.01, [],
        tool_calls=[ToolCall("call_1", "quote", {"ticker": "AAPL"})],
    )  # fmt: skip
    doc = json.loads(json.dumps(completion_dict(done)))
    assert doc["tool_calls"] == [{"id": "call_1", "name": "quote", "arguments": {"ticker": "AAPL"}}]
    assert doc["output"] is None
