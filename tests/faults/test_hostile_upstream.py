"""Fault injection, hostile upstream: every answer echoes the request's key where an HTTP
client's parser, logger or redirect logic would pick it up (tests/hostile.py).

Three openai-kind providers on local upstreams; each request meets the next answer of
a fixed cycle: the key in a header line over 8 KB (whole, or cut at the point where
aiohttp stops quoting the line), in an invalid header line, in the status line, in a
chunk-size line (the first line of the body, or after a streamed text delta), in a
same-origin redirect's Location, in the request-id header; or a valid answer. Calls
run concurrently, half ``complete()`` and half ``stream()``, through 3-step chains.

Everything an operator could see is captured and searched for the canary (whole, or
a prefix or suffix cut from it): every log record of every logger, the root logger at
DEBUG (httpx's, aiohttp's and asyncio's included), formatted with its traceback; the
router's JSON logs at debug; and, for every error, ``traceback.format_exception`` of
it (``__cause__``/``__context__`` chains), of each attempt's error and of an
interrupted stream's cause, with ``str``, ``repr`` and ``args`` of every exception on
those chains. The figures (calls, answers served per kind, canary hits, overshoot)
are printed even without ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import structlog

import router.logging as router_logging
from router import Router
from router.config import Config
from router.errors import ProviderError, StreamInterruptedError
from router.types import Completion
from tests.conftest import FaultReport
from tests.hostile import HOSTILE, ok_reply, ok_stream
from tests.routerkit import make_config
from tests.upstream import Behaviour, Request, Upstream

PROVIDERS = ("alpha", "beta", "gamma")
# Canary keys of no known shape: only the router's handling of loaded keys can hide
# them. Searched for by two markers, so a prefix or suffix cut from a key is caught.
CANARY_HEAD = "HOSTILECANARY"
CANARY_CORE = "9d41b7e2c6a0"
KEYS = {p: f"{CANARY_HEAD}{CANARY_CORE}5f3e81-{p}" for p in PROVIDERS}
ENV = {f"HOSTILE_KEY_{p.upper()}": key for p, key in KEYS.items()}
MARKERS = (CANARY_HEAD, CANARY_CORE)
# The answers each provider cycles through (offset per provider, so a call's three
# steps meet three different answers).
ANSWERS = [*HOSTILE, "ok"]
CALLS = 320
CONCURRENCY = 20
DEADLINE_S = 1.0
# A call ending later than this past its deadline is a hang, not timer lateness.
HANG_S = 0.5


def hostile_config(tmp_path: Path, urls: dict[str, str]) -> Config:
    providers = "".join(
        f"""
      {p}:
        kind: openai
        base_url: {urls[p]}/v1
        api_key_env: HOSTILE_KEY_{p.upper()}
        timeout_s: 0.5
        connect_timeout_s: 0.25
        models: {{m-{p}: {{price: {{input_per_mtok: 1, output_per_mtok: 2}}}}}}"""
        for p in PROVIDERS
    )
    body = f"""
    settings:
      deadline_s: {DEADLINE_S}
      retries: 0
      attempt_floor_s: 0.05
      first_token_timeout_s: 0.3
      idle_timeout_s: 0.15
      cooldown: {{failures: 1000, seconds: 0.1}}
      ledger: {{backend: memory}}
    providers:{providers}
    routes:
      hostile:
        prompt: "hostile call {{{{ i }}}}"
        vars: {{i: int}}
        max_tokens: 16
        fallback: [alpha/m-alpha, beta/m-beta, gamma/m-gamma]
    """
    return make_config(tmp_path, body, env=ENV)


class Served:
    """Chooses each request's answer (a cycle per provider) and counts what was served."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {"complete": Counter(), "stream": Counter()}
        self._cycles = {
            p: itertools.cycle(ANSWERS[k:] + ANSWERS[:k]) for k, p in enumerate(PROVIDERS)
        }

    def handler(self, provider: str) -> Callable[[Request], Behaviour]:
        def choose(request: Request) -> Behaviour:
            name = next(self._cycles[provider])
            mode = "stream" if request.json().get("stream") else "complete"
            self.counts[mode][name] += 1
            if name == "ok":
                return ok_stream() if mode == "stream" else ok_reply()
            return HOSTILE[name]()

        return choose


class Records(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self.by_logger: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.by_logger[record.name] += 1


@contextlib.contextmanager
def everything_logged() -> Iterator[tuple[Records, io.StringIO]]:
    """The root logger at DEBUG into :class:`Records`; the router's JSON logs at debug."""
    root = logging.getLogger()
    records = Records()
    level = root.level
    root.addHandler(records)
    root.setLevel(logging.DEBUG)
    saved = structlog.get_config()
    buffer = io.StringIO()
    router_logging.configure(format="json", level="debug", stream=buffer)
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield records, buffer
    finally:
        structlog.configure(**saved)
        root.removeHandler(records)
        root.setLevel(level)


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    """An exception, the errors it carries (attempts, a stream's cause) and every link of
    their ``__cause__``/``__context__`` chains."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__]
        if isinstance(e, StreamInterruptedError):
            stack.append(e.cause)
        stack += [a.error for a in getattr(e, "attempts", ())]


def texts_of(exc: BaseException) -> Iterator[str]:
    for e in chain(exc):
        yield "".join(traceback.format_exception(e))
        yield str(e)
        yield repr(e)
        yield from (repr(a) for a in e.args)
        if isinstance(e, ProviderError):
            yield from (e.detail, str(e.request_id), str(getattr(e, "cause_summary", "")))
        yield from (repr(a) for a in getattr(e, "attempts", ()))


def hits(texts: list[str]) -> list[str]:
    return [t[:300] for t in texts if any(m in t for m in MARKERS)]


async def one_call(router: Router, i: int, stream: bool) -> tuple[object, float]:
    """(the Completion or the exception, seconds past the deadline)."""
    started = time.monotonic()
    outcome: object
    try:
        if stream:
            async with router.stream("hostile", {"i": i}, deadline_s=DEADLINE_S) as s:
                async for _ in s:
                    pass
            outcome = s.completion
        else:
            outcome = await router.complete("hostile", {"i": i}, deadline_s=DEADLINE_S)
    except Exception as exc:
        outcome = exc
    return outcome, time.monotonic() - started - DEADLINE_S


@pytest.mark.slow
async def test_a_hostile_upstream_echoing_the_key_everywhere_leaks_it_nowhere(
    tmp_path: Path,
    upstream_factory: Callable[..., Awaitable[Upstream]],
    fault_report: FaultReport,
) -> None:
    served = Served()
    ups: dict[str, Upstream] = {}
    for p in PROVIDERS:
        up = await upstream_factory()
        up.handler = served.handler(p)
        ups[p] = up
    config = hostile_config(tmp_path, {p: u.url for p, u in ups.items()})
    outcomes: list[tuple[str, object, float]] = []
    found: list[str] = []
    with everything_logged() as (records, buffer):
        async with Router(config) as router:
            numbers = iter(range(CALLS))

            async def caller() -> None:
                for i in numbers:
                    stream = i % 2 == 1
                    outcome, over = await one_call(router, i, stream)
                    mode = "stream" if stream else "complete"
                    outcomes.append((mode, type(outcome).__name__, over))
                    if isinstance(outcome, BaseException):
                        # As an app would: log it with its traceback, both ways.
                        logging.getLogger("app").error("call failed", exc_info=outcome)
                        structlog.get_logger("app").exception("call_failed", error=outcome)
                        found.extend(hits(list(texts_of(outcome))))
                    elif isinstance(outcome, Completion):
                        found.extend(hits([repr(outcome), *(repr(a) for a in outcome.attempts)]))
                    outcome = None  # no cycle through this frame

            await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    log_lines = [*records.lines, *buffer.getvalue().splitlines()]
    found += hits(log_lines)
    requests = [r for u in ups.values() for r in u.requests]
    followed = [r.target for r in requests if "api_key" in r.target]

    by_outcome = Counter((mode, name) for mode, name, _ in outcomes)
    worst_ms = max(over for _, _, over in outcomes) * 1000
    fault_report(
        [
            f"hostile upstream: {len(outcomes)} calls ({CONCURRENCY} callers, deadline"
            f" {DEADLINE_S}s), {len(requests)} requests",
            f"  served (complete): {dict(sorted(served.counts['complete'].items()))}",
            f"  served (stream):   {dict(sorted(served.counts['stream'].items()))}",
            f"  outcomes: {dict(sorted(by_outcome.items()))}",
            f"  log records {len(records.lines)} (by logger"
            f" {dict(records.by_logger.most_common(6))}),"
            f" router log lines {len(buffer.getvalue().splitlines())}",
            f"  redirects followed: {len(followed)}; canary hits: {len(found)};"
            f" max overshoot of the deadline {worst_ms:.1f} ms",
        ]
    )
    assert len(outcomes) == CALLS
    assert not found, f"canary in {len(found)} texts: {found[:3]}"
    assert not followed, followed
    # The run is meaningful: every answer was served on both paths, the keys were sent,
    # the app's error records were captured, and calls failed and succeeded.
    for mode in ("complete", "stream"):
        assert set(served.counts[mode]) == set(ANSWERS), served.counts[mode]
    assert all(r.headers["authorization"].startswith(f"Bearer {CANARY_HEAD}") for r in requests)
    assert records.by_logger["app"] > 0 and records.by_logger["httpx"] > 0
    assert {("complete", "Completion"), ("stream", "Completion")} <= set(by_outcome)
    assert ("stream", "StreamInterruptedError") in by_outcome
    assert worst_ms < HANG_S * 1000, f"a call ended {worst_ms:.0f} ms past its deadline"
