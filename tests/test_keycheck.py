"""Wrong keys found at start: ``Router.start(verify_keys=True)``,
``Router.from_yaml(..., verify_keys=True)`` and ``router validate --online``, against
loopback listing endpoints. A 401/403 fails naming the provider and the variable
(never the key); an unreachable provider is a warning and the start succeeds."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from router import ConfigError, KeyCheck, Router, RouterClosedError, load_config
from tests.logs import capture_logs
from tests.routerkit import write_config
from tests.test_cli import acli
from tests.upstream import Upstream, hang_before_headers, reply

ROOT = Path(__file__).resolve().parent.parent
GOOD = "sk-keycheck-good-0123456789abcdef"
BAD = "sk-keycheck-BAD-fedcba9876543210"
PRICE = "{price: {input_per_mtok: 1, output_per_mtok: 1}}"


def listing(*ids: str) -> dict[str, object]:
    return {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}


def echo_401(key: str) -> dict[str, object]:
    """What a careless upstream answers: the key it got, quoted whole."""
    return {"error": {"message": f"Incorrect API key provided: {key}", "type": "auth"}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, good_url: str, other_url: str, other_kind: str = "openai") -> Path:
    other_key = "    api_key_env: OTHER_KEY\n"
    other_base = f"{other_url}/v1" if other_kind != "anthropic" else other_url
    return write_config(
        tmp_path,
        f"""\
providers:
  good:
    kind: openai
    base_url: {good_url}/v1
    api_key_env: GOOD_KEY
    models:
      m: {PRICE}
  other:
    kind: {other_kind}
    base_url: {other_base}
{other_key}    models:
      m: {PRICE}
  local:
    kind: ollama
    base_url: {good_url}
    models:
      llama: {{}}
  offline:
    kind: mock
    models:
      m: {{}}
  spare:
    kind: openai
    base_url: {good_url}/v1
    api_key_env: SPARE_KEY_NOT_SET
    optional: true
    models:
      m: {PRICE}
routes:
  r:
    prompt: hi
    fallback: [good/m, other/m, local/llama, offline/m]
""",
    )


ENV = {"GOOD_KEY": GOOD, "OTHER_KEY": BAD}


@pytest.mark.parametrize(
    ("kind", "path", "status"),
    [
        ("openai", "/v1/models", 401),
        ("anthropic", "/v1/models", 403),
        # Gemini refuses a bad key with a 400 whose body says so (AuthenticationError).
        ("gemini", "/v1/models", 400),
    ],
)
async def test_a_rejected_key_fails_the_start_naming_provider_and_variable(
    tmp_path: Path, upstream_factory: object, kind: str, path: str, status: int
) -> None:
    make = upstream_factory
    good, other = await make(), await make()  # type: ignore[operator]
    good.route("/v1/models", reply(200, listing("m")))
    other.route(path, reply(status, echo_401(BAD)))
    router = Router.from_yaml(config(tmp_path, good.url, other.url, kind), env=ENV)
    with pytest.raises(ConfigError) as info:
        await router.start(verify_keys=True)
    (problem,) = info.value.problems
    assert problem.path == "providers.other.api_key_env" and problem.line is not None
    assert "'other'" in problem.message and "OTHER_KEY" in problem.message
    assert f"HTTP {status}" in problem.message
    for text in (str(info.value), repr(info.value), str(problem)):
        assert BAD not in text and BAD[8:20] not in text
    # One listing request each, nothing else; the failed start closed the router.
    assert [(r.method, r.path) for r in other.requests] == [("GET", path)]
    assert [(r.method, r.path) for r in good.requests] == [("GET", "/v1/models")]
    with pytest.raises(RouterClosedError):
        await router.complete("r")


async def test_keys_accepted_start_and_report_what_was_checked(
    tmp_path: Path, upstream_factory: object
) -> None:
    make = upstream_factory
    good, other = await make(), await make()  # type: ignore[operator]
    good.route("/v1/models", reply(200, listing("m")))
    other.route("/v1/models", reply(200, listing("m")))
    async with Router.from_yaml(
        config(tmp_path, good.url, other.url), env=ENV, verify_keys=True
    ) as router:
        check = router.key_check
        assert check == KeyCheck(
            verified=("good", "other"), unverified=(), skipped=("local", "offline")
        )
        # Keyless ollama and the mock were not called; the optional provider without
        # its key is not even loaded.
        assert [r.path for r in good.requests] == ["/v1/models"]
        assert [r.path for r in other.requests] == ["/v1/models"]
        # The listings refreshed the health cache: health asks only the keyless one.
        await router.health()
    assert [r.path for r in good.requests] == ["/v1/models", "/api/tags"]
    assert [r.path for r in other.requests] == ["/v1/models"]


@pytest.mark.parametrize("failure", ["refused", "timeout", "5xx"])
async def test_an_unreachable_provider_is_a_warning_not_a_failure(
    tmp_path: Path, upstream_factory: object, failure: str
) -> None:
    make = upstream_factory
    good = await make()  # type: ignore[operator]
    good.route("/v1/models", reply(200, listing("m")))
    other_url = f"http://127.0.0.1:{closed_port()}"
    if failure != "refused":
        other: Upstream = await make()  # type: ignore[operator]
        behaviour = hang_before_headers() if failure == "timeout" else reply(503, b"down")
        other.route("/v1/models", behaviour)
        other_url = other.url
    router = Router.from_yaml(config(tmp_path, good.url, other_url), env=ENV)
    t0 = time.monotonic()
    with capture_logs() as logs:
        await router.start(verify_keys=True, verify_timeout_s=0.5)
    try:
        assert time.monotonic() - t0 < 3.0  # bounded by the timeout
        check = router.key_check
        assert check is not None and check.verified == ("good",)
        (report,) = check.unverified
        assert report.provider == "other" and not report.ok
        warnings = [e for e in logs if e["event"] == "key_check_unverified"]
        assert [w["provider"] for w in warnings] == ["other"]
        assert warnings[0]["log_level"] == "warning"
        assert BAD not in str(logs)
    finally:
        await router.aclose()


async def test_start_without_verify_keys_calls_no_provider(
    tmp_path: Path, upstream_factory: object
) -> None:
    make = upstream_factory
    good, other = await make(), await make()  # type: ignore[operator]
    async with Router.from_yaml(config(tmp_path, good.url, other.url), env=ENV) as router:
        assert router.key_check is None
    assert good.requests == [] and other.requests == []


# ------------------------------------------------------------------ router validate --online


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """A real ``python -m router`` in a subprocess (the test's loop keeps serving)."""
    base = {k: v for k, v in os.environ.items() if not k.endswith("_KEY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        *args,
        cwd=ROOT,
        env={**base, **env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_validate_online_exit_codes(tmp_path: Path, upstream_factory: object) -> None:
    make = upstream_factory
    good, other = await make(), await make()  # type: ignore[operator]
    good.route("/v1/models", reply(200, listing("m")))
    other.route("/v1/models", reply(401, echo_401(BAD)))
    path = str(config(tmp_path, good.url, other.url))

    code, out = await run_cli("validate", path, env=ENV)  # offline: the key is not checked
    assert code == 0, out
    assert other.requests == []

    code, out = await run_cli("validate", path, "--online", env=ENV)
    assert code == 1, out
    assert "providers.other.api_key_env" in out and "OTHER_KEY" in out and "HTTP 401" in out
    assert BAD not in out and GOOD not in out
    assert "invalid, 1 problem" in out
    assert not (tmp_path / "spend.sqlite3").exists()  # validating opens no ledger

    other.route("/v1/models", reply(200, listing("m")))
    code, out = await run_cli("validate", path, "--online", env=ENV)
    assert code == 0, out
    assert "good: key accepted" in out and "other: key accepted" in out
    assert "local: no key to check" in out

    unreachable = str(config(tmp_path, good.url, f"http://127.0.0.1:{closed_port()}"))
    code, out = await run_cli("validate", unreachable, "--online", env=ENV)
    assert code == 0, out
    assert "other: NOT CHECKED" in out and "good: key accepted" in out


async def test_the_constructor_flag_checks_keys_on_async_with(
    tmp_path: Path, upstream_factory: object
) -> None:
    """``Router(plan, verify_keys=True)``: entering ``async with`` runs the check, and a
    refused key raises there (the body never runs)."""
    make = upstream_factory
    good, other = await make(), await make()  # type: ignore[operator]
    good.route("/v1/models", reply(200, listing("m")))
    other.route("/v1/models", reply(401, echo_401(BAD)))
    plan = load_config(config(tmp_path, good.url, other.url), env=ENV)
    entered = False
    with pytest.raises(ConfigError, match="OTHER_KEY"):
        async with Router(plan, verify_keys=True):
            entered = True
    assert not entered


async def test_validate_online_json_reports_the_keys(
    tmp_path: Path, upstream_factory: object
) -> None:
    """``router validate --online --json``: the key check is part of the document (a
    rejected key a problem, exit 1; accepted keys listed), and no key is in it."""
    make = upstream_factory
    good, other = await make(), await make()  # type: ignore[operator]
    good.route("/v1/models", reply(200, listing("m")))
    other.route("/v1/models", reply(401, echo_401(BAD)))
    path = str(config(tmp_path, good.url, other.url))

    r = await acli("validate", path, "--online", "--json", cwd=tmp_path, env=ENV)
    assert r.code == 1, r.out + r.err
    doc = json.loads(r.out)
    assert doc["valid"] is False
    assert [p["path"] for p in doc["problems"]] == ["providers.other.api_key_env"]
    assert BAD not in r.out + r.err and GOOD not in r.out + r.err

    other.route("/v1/models", reply(200, listing("m")))
    r = await acli("--json", "validate", "--online", "--config", path, cwd=tmp_path, env=ENV)
    assert r.code == 0, r.out + r.err
    keys = json.loads(r.out)["keys"]
    assert sorted(keys["accepted"]) == ["good", "other"]
    assert keys["not_checked"] == [] and "local" in keys["without_key"]
