"""The router logs like a Python library: through stdlib ``logging`` under ``router``,
silent until the app configures logging, structured fields on every record, never a
key in any handler's output; ``configure()`` honours ``settings.log``; failed attempts
and cooldowns say what happened; a failed call's text names each attempt's error."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import structlog

import router.logging as router_logging
from router.cli import main
from router.config import Cooldown, Limits, LogSettings
from router.errors import AllProvidersFailedError, ServerError, short_error
from router.limits import ProviderGate
from router.logger import LOGGER_NAMES, fields_of, get_logger
from router.plan import load_config
from router.policy import rule_for
from router.router import Router
from router.types import Attempt
from tests.fakeclock import FakeClock
from tests.logs import capture_logs
from tests.routerkit import make_config, write_config
from tests.upstream import Upstream, reply

ROOT = Path(__file__).resolve().parents[1]

# bad rejects its key (401, a cooldown at once), good answers.
CHAIN = """\
settings:
  backoff: {initial_s: 0, max_s: 0}
providers:
  bad:
    kind: mock
    mock: {failures: [401]}
    models: {m1: {}}
  good:
    kind: mock
    models: {m2: {}}
routes:
  r: {prompt: "hi", fallback: [bad/m1, good/m2]}
  only_bad: {prompt: "hi", fallback: [bad/m1]}
"""


# -------------------------------------------------------------------------- silent library


def test_an_unconfigured_router_prints_nothing(tmp_path: Path) -> None:
    """In a fresh interpreter that configures no logging: a failed attempt (a warning),
    a cooldown (a warning), a good answer and a failed call print nothing at all."""
    config = write_config(tmp_path, CHAIN)
    code = f"""
import asyncio
from router.errors import AllProvidersFailedError
from router.plan import load_config
from router.router import Router

async def main():
    async with Router(load_config({str(config)!r}, env={{}})) as router:
        answer = await router.complete("r")
        assert answer.provider == "good", answer
        try:
            await router.complete("only_bad")
        except AllProvidersFailedError:
            pass
        else:
            raise AssertionError("only_bad was meant to fail")

asyncio.run(main())
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


# -------------------------------------------------------------------------- stdlib records


async def test_the_stdlib_level_of_the_router_logger_filters_its_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: everything that propagates
    logging.getLogger("router").setLevel(logging.WARNING)
    async with Router(make_config(tmp_path, CHAIN)) as router:
        await router.complete("r")
    mine = [r for r in caplog.records if r.name.startswith("router")]
    assert mine, "the failed attempt and the cooldown are warnings"
    assert all(r.levelno >= logging.WARNING for r in mine)
    assert {r.event for r in mine} == {"llm_attempt", "cooldown_started"}  # type: ignore[attr-defined]


async def test_records_carry_the_event_and_its_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router")
    async with Router(make_config(tmp_path, CHAIN)) as router:
        answer = await router.complete("r")
    calls = [r for r in caplog.records if r.name == "router.calls"]
    failed, ok, call = calls
    assert (failed.levelno, ok.levelno, call.levelno) == (
        logging.WARNING,
        logging.INFO,
        logging.INFO,
    )
    assert fields_of(ok) == {
        "event": "llm_attempt",
        "route": "r",
        "provider": "good",
        "model": "m2",
        "outcome": "ok",
        "status": 200,
        "error_type": None,
        "error": None,
        "skip": None,
        "reason": None,
        "latency_ms": ok.latency_ms,  # type: ignore[attr-defined]
        "ttft_ms": None,
        "deadline_left_ms": ok.deadline_left_ms,  # type: ignore[attr-defined]
    }
    assert isinstance(ok.latency_ms, float)  # type: ignore[attr-defined]
    # A readable message: the event, then its fields that have a value.
    assert ok.getMessage().startswith("llm_attempt route=r provider=good model=m2 outcome=ok")
    assert "ttft_ms=" not in ok.getMessage()  # None: left out of the message
    # The failed attempt says what went wrong, in the message too.
    assert failed.error_type == "auth"  # type: ignore[attr-defined]
    assert failed.error.startswith("AuthenticationError HTTP 401: ")  # type: ignore[attr-defined]
    assert "error='AuthenticationError HTTP 401: " in failed.getMessage()
    assert (call.event, call.cost_usd, call.attempts) == (  # type: ignore[attr-defined]
        "llm_call",
        str(answer.cost_usd),
        2,
    )
    # The record points at the router's code that logged, not the logging helper.
    assert failed.filename == "logging.py" and ok.module == "logging"
    assert {r.name for r in caplog.records} <= set(LOGGER_NAMES)


def _leaky_config(tmp_path: Path, up: Upstream) -> Any:
    return make_config(
        tmp_path,
        f"""\
settings: {{retries: 0, cooldown: {{failures: 1, seconds: 30}}}}
providers:
  oa:
    kind: openai
    base_url: {up.url}/v1
    api_key_env: OA_KEY
    models: {{m: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
routes:
  r: {{prompt: "hi", fallback: [oa/m]}}
""",
        env={"OA_KEY": KEY},
    )


KEY = "CANARYb7e1c0d4a9f2e8b3c6d5a4f1e0"  # not shaped like a key: only registration finds it
SHAPED = "sk-proj-Zq8Xw7Vu6Ts5Rq4Po3Nm2Lk1"


async def test_a_key_in_an_upstream_error_reaches_no_handler(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The upstream echoes the loaded key and a key-shaped token in its error: no stdlib
    handler's output shows either, whatever its formatter prints (the message, every
    attribute of the record, structlog's ProcessorFormatter as an app would set it up)."""
    body = {"error": {"message": f"bad key {KEY}, also {SHAPED}", "type": "server_error"}}
    upstream.route("/v1/chat/completions", reply(500, json.dumps(body)))

    class EverythingFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{record.getMessage()} {vars(record)!r}"

    plain, dumped, app_structlog = StringIO(), StringIO(), StringIO()
    handlers = [logging.StreamHandler(s) for s in (plain, dumped, app_structlog)]
    handlers[0].setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handlers[1].setFormatter(EverythingFormatter())
    handlers[2].setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    try:
        async with Router(_leaky_config(tmp_path, upstream)) as router:
            with pytest.raises(AllProvidersFailedError) as info:
                await router.complete("r")
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(saved)
    # The upstream's message made it into the logs (redacted), through every handler.
    for out in (plain, dumped, app_structlog):
        text = out.getvalue()
        assert "llm_attempt" in text and "bad key [REDACTED], also [REDACTED]" in text
        assert KEY not in text and SHAPED not in text and KEY[:12] not in text
    lines = [json.loads(line) for line in app_structlog.getvalue().splitlines()]
    attempt = next(e for e in lines if e.get("event") == "llm_attempt")
    assert (attempt["provider"], attempt["status"], attempt["error_type"]) == ("oa", 500, "server")
    assert KEY not in str(info.value) and KEY not in repr(info.value.attempts)


# -------------------------------------------------------------------------- configure()


async def test_configure_honours_settings_log(tmp_path: Path) -> None:
    """``configure(router.plan.settings.log)``: the file's format and level; keyword
    arguments override them; a second call replaces the first's handler."""
    body = CHAIN.replace("settings:\n", "settings:\n  log: {format: json, level: warning}\n")
    buf = StringIO()
    async with Router(make_config(tmp_path, body)) as router:
        assert router.plan.settings.log == LogSettings(format="json", level="warning")
        router_logging.configure(router.plan.settings.log, stream=buf)
        await router.complete("r")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    # warning and above only: the failed attempt and the cooldown, not the answer.
    assert [(e["event"], e["level"], e["logger"]) for e in lines] == [
        ("cooldown_started", "warning", "router.providers"),
        ("llm_attempt", "warning", "router.calls"),
    ]
    assert lines[1]["error"].startswith("AuthenticationError HTTP 401: ")
    assert "timestamp" in lines[0]

    console = StringIO()
    router_logging.configure(LogSettings(format="json"), format="console", stream=console)
    router_logging.configure(LogSettings(format="json"), format="console", stream=console)
    handlers = logging.getLogger("router").handlers
    assert sum(isinstance(h, logging.StreamHandler) for h in handlers) == 1
    assert logging.getLogger("router").level == logging.INFO  # the LogSettings default
    async with Router(make_config(tmp_path, CHAIN)) as router:
        await router.complete("r")
    text = console.getvalue()
    assert "llm_call" in text and "[info" in text and not text.lstrip().startswith("{")
    assert len(text.splitlines()) == 4  # cooldown, failed attempt, ok attempt, call


def test_the_cli_logs_as_settings_log_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = CHAIN.replace("settings:\n", "settings:\n  log: {format: json, level: info}\n")
    path = write_config(tmp_path, body)
    out = StringIO()
    assert main(["complete", "r", "--config", str(path)], out) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["event"] for e in events if e["event"].startswith("llm_")] == [
        "llm_attempt",
        "llm_attempt",
        "llm_call",
    ]


# -------------------------------------------------------------------------- cooldowns


def _gate(clock: FakeClock) -> ProviderGate:
    return ProviderGate("oa", Limits(), Cooldown(failures=3, seconds=30.0), clock=clock)


def _error(status: int, text: str) -> ServerError:
    return ServerError(text, provider="oa", model="m", status=status)


def test_a_cooldown_starting_and_ending_is_logged() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    server = rule_for("server")
    with capture_logs() as logs:
        gate.failed(server, None, _error(502, "bad gateway"))
        gate.failed(server, None, _error(503, "overloaded"))
        assert not [e for e in logs if e["event"].startswith("cooldown")]
        gate.failed(server, None, _error(503, "overloaded"))  # the third in a row
        assert gate.unavailable() is not None  # cooling down
        clock.advance(31.0)
        assert gate.unavailable() is None  # the probe goes out
        gate.succeeded()
    cooldown = [e for e in logs if e["event"].startswith("cooldown")]
    assert cooldown == [
        {
            "log_level": "warning",
            "logger": "router.providers",
            "event": "cooldown_started",
            "provider": "oa",
            "seconds": 30.0,
            "reason": "3 consecutive failures",
            "error": "ServerError HTTP 503: overloaded",
        },
        {
            "log_level": "debug",
            "logger": "router.providers",
            "event": "cooldown_probe",
            "provider": "oa",
        },
        {
            "log_level": "info",
            "logger": "router.providers",
            "event": "cooldown_ended",
            "provider": "oa",
            "reason": "a call to it succeeded",
        },
    ]


def test_a_rejected_key_and_a_failed_probe_start_a_cooldown_and_say_why() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    with capture_logs(logging.INFO) as logs:
        gate.failed(rule_for("auth"), None, None)
        clock.advance(31.0)
        assert gate.unavailable() is None  # the probe
        gate.failed(rule_for("timeout"), None, _error(504, "slow"))
        clock.advance(31.0)
        assert gate.unavailable() is None  # another probe; its error says nothing
        gate.reset_probe()
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("cooldown_started", "its key was rejected (cools down at once)"),
        ("cooldown_started", "the probe call after a cooldown failed"),
        ("cooldown_ended", "the probe call's error does not count against the provider"),
    ]


async def test_a_rejected_key_in_a_call_logs_its_cooldown(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, CHAIN)) as router:
        with capture_logs(logging.WARNING) as logs:
            await router.complete("r")
    (started,) = [e for e in logs if e["event"] == "cooldown_started"]
    assert started["provider"] == "bad"
    assert started["error"].startswith("AuthenticationError HTTP 401: ")


# -------------------------------------------------------------------------- str / repr


async def test_a_failed_call_names_each_attempts_error(tmp_path: Path) -> None:
    body = CHAIN.replace("mock: {failures: [401]}", "mock: {failures: [401, 401]}")
    async with Router(make_config(tmp_path, body)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("only_bad")
    err = info.value
    (attempt,) = err.attempts
    detail = attempt.error.detail  # type: ignore[union-attr]
    assert detail and f"bad/m1: AuthenticationError HTTP 401: {detail}" in str(err)
    assert f"error='AuthenticationError HTTP 401: {detail}'" in repr(attempt)


def test_short_errors_are_redacted_one_line_and_bounded() -> None:
    err = _error(500, f"upstream said:\n  token {SHAPED} " + "x" * 500)
    text = short_error(err)
    assert SHAPED not in text and "[REDACTED]" in text and "\n" not in text
    assert len(text) == 200 and text.endswith("...")
    attempt = Attempt("oa", "m", "error", error=err, status=500)
    assert SHAPED not in repr(attempt) and text in repr(attempt)
    failed = AllProvidersFailedError([attempt], route="r")
    assert SHAPED not in str(failed) and f"oa/m: {text}" in str(failed)
    # Errors that are not a provider's: their class and message.
    assert short_error(ValueError("no")) == "ValueError: no"
    assert short_error(ValueError()) == "ValueError"


def test_only_the_documented_loggers_exist() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "router").rglob("*.py"))
    names = set(re.findall(r"get_logger\(\"([\w.]+)\"\)", source))
    assert names <= set(LOGGER_NAMES)
    docs = (ROOT / "docs" / "operations.md").read_text()
    for name in LOGGER_NAMES:
        assert f"`{name}`" in docs


def test_load_config_alone_logs_a_disabled_provider_to_router_config(tmp_path: Path) -> None:
    body = """\
providers:
  oa:
    kind: openai
    api_key_env: MISSING_KEY
    optional: true
    models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}
  mock: {kind: mock, models: {m: {}}}
routes:
  r: {prompt: hi, fallback: [oa/m, mock/m]}
"""
    with capture_logs() as logs:
        load_config(write_config(tmp_path, body), env={})
    assert [(e["logger"], e["event"], e["provider"]) for e in logs] == [
        ("router.config", "provider_disabled", "oa")
    ]


def test_a_field_named_like_a_record_attribute_is_kept_with_an_underscore(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="router")
    get_logger("router.config").info("odd", name="n", msg="two words", args=[1, 2], ok=True)
    (record,) = caplog.records
    assert (record.name, record.name_, record.msg_, record.args_) == (  # type: ignore[attr-defined]
        "router.config",
        "n",
        "two words",
        [1, 2],
    )
    assert record.getMessage() == "odd name=n msg='two words' args='[1, 2]' ok=True"
