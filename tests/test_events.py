"""One event channel: logs, hooks, stats and exporters are observers of every attempt
and call; skips carry a typed kind that every exporter labels; filtered log events
are not built; provider_states() reports live admission state."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.registry import CollectorRegistry

from router import CallRecord, Observer, ProviderState, SkipKind
from router.errors import AllProvidersFailedError, RouterError
from router.logger import Log
from router.logging import LogEvents
from router.metrics.prometheus import PrometheusMetrics, register
from router.metrics.stats import SKIP_CLASSES, SKIP_LABELS, Stats
from router.observe import Hooks
from router.router import Router
from router.types import Attempt, Completion
from tests.logs import capture_logs
from tests.routerkit import make_config
from tests.test_metrics_stats import mix_router, run_mix

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
"""


class Recorder:
    """An app's observer: keeps what it is told, in order."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        self.log.append(("observer_attempt", attempt))

    def on_call(self, record: CallRecord) -> None:
        self.log.append(("observer_call", record))


# ------------------------------------------------------------------ skip kinds and labels


def test_every_skip_kind_has_its_own_metric_label_in_every_exporter() -> None:
    """Adding a SkipKind without a row in SKIP_LABELS fails here (it would be "other")."""
    labels = [SKIP_LABELS.get(kind) for kind in SkipKind]
    assert None not in labels, f"skip kinds without a metric label: {list(SkipKind)}"
    assert len(set(labels)) == len(labels)  # one label per kind
    assert "other" not in labels and set(SKIP_CLASSES) == {*labels, "other"}
    # The Prometheus exporter labels a skip of every kind with that label.
    metrics = PrometheusMetrics(object())  # type: ignore[arg-type]  # observes only here
    for kind in SkipKind:
        metrics.on_attempt("r", Attempt("p", "m", "skipped", reason="any wording", skip=kind))
    skips = next(f for f in metrics.collect() if f.name == "llm_skips")
    seen = {s.labels["reason"]: s.value for s in skips.samples if s.name == "llm_skips_total"}
    assert seen == {SKIP_LABELS[kind]: 1.0 for kind in SkipKind}


async def test_skips_the_router_makes_carry_their_kind(tmp_path: Path) -> None:
    """Cooldown and budget skips from real calls: the kind on the attempt, the label in stats."""
    async with mix_router(tmp_path) as router:
        results = await run_mix(router)
        stats = router.stats()
    cooled, costly = results[3], results[4]
    assert isinstance(cooled, RouterError) and isinstance(costly, RouterError)
    first = cooled.attempts[0]
    assert (first.outcome, first.skip) == ("skipped", SkipKind.COOLDOWN)
    assert [a.skip for a in costly.attempts] == [SkipKind.BUDGET]
    assert all(a.skip is None for r in results if isinstance(r, Completion) for a in r.attempts)
    assert stats["routes"]["bad"]["skips"] == {"cooldown": 1}
    assert stats["routes"]["costly"]["skips"] == {"budget": 1}


# ------------------------------------------------------------------ one channel


async def test_logs_hooks_stats_and_app_observers_share_one_channel(tmp_path: Path) -> None:
    told: list[tuple[str, Any]] = []
    router = Router(
        make_config(tmp_path, CHAIN),
        on_attempt=lambda route, a: told.append(("hook_attempt", a)),
        on_call=lambda route, result, error: told.append(("hook_call", (result, error))),
        observers=[Recorder(told)],
    )
    kinds = [type(o) for o in router.observers]
    assert kinds == [LogEvents, Hooks, Stats, Recorder]
    async with router:
        with capture_logs() as logs:
            result = await router.complete("r")
    # Every attempt reached the hook and the observer, as the same objects, in order.
    hook_attempts = [a for k, a in told if k == "hook_attempt"]
    observed = [a for k, a in told if k == "observer_attempt"]
    assert hook_attempts == observed == result.attempts
    assert all(x is y for x, y in zip(hook_attempts, result.attempts, strict=True))
    assert [k for k, _ in told] == [
        "hook_attempt",
        "observer_attempt",
        "hook_attempt",
        "observer_attempt",
        "hook_call",
        "observer_call",
    ]
    (record,) = [r for k, r in told if k == "observer_call"]
    assert record.result is result and told[4][1] == (result, None)
    # The log lines come from the same events: one per attempt, one per call.
    events = [e for e in logs if e["event"] in ("llm_attempt", "llm_call")]
    assert [e["event"] for e in events] == ["llm_attempt", "llm_attempt", "llm_call"]
    assert [e["outcome"] for e in events] == ["error", "ok", "ok"]
    assert events[1]["deadline_left_ms"] == round(result.attempts[1].deadline_left_s * 1000, 2)
    assert router.stats()["routes"]["r"]["calls"] == 1


async def test_the_log_lines_are_an_observer_that_can_be_taken_off(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, CHAIN)) as router:
        (log_events,) = [o for o in router.observers if isinstance(o, LogEvents)]
        router.remove_observer(log_events)
        with capture_logs() as quiet:
            await router.complete("r")
        router.add_observer(log_events)
        with capture_logs() as loud:
            await router.complete("r")
    assert not [e for e in quiet if e["event"].startswith("llm_")]
    logged = [(e["event"], e.get("skip")) for e in loud if e["event"].startswith("llm_")]
    # bad cools down after its 401: a skipped attempt (logged with its kind), then good.
    assert logged == [("llm_attempt", "cooldown"), ("llm_attempt", None), ("llm_call", None)]


async def test_exporters_register_on_the_channel_and_leave_it(tmp_path: Path) -> None:
    async with mix_router(tmp_path) as router:
        metrics = register(router, CollectorRegistry())
        assert metrics in router.observers
        metrics.unregister()
        assert metrics not in router.observers
        observer: Observer = metrics  # the Protocol is the public contract
        assert callable(observer.on_attempt) and callable(observer.on_call)


# ------------------------------------------------------------------ filtered logs are free


@pytest.fixture
def counted_logger(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The llm_* events built (handed to the logger), in order, whatever is emitted."""
    built: list[str] = []
    real = Log.emit

    def emit(self: Log, level: int, event: str, fields: Any, stacklevel: int = 2) -> None:
        if event.startswith("llm_"):
            built.append(event)
        real(self, level, event, fields, stacklevel + 1)

    monkeypatch.setattr(Log, "emit", emit)
    return built


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.DEBUG, ["llm_attempt", "llm_attempt", "llm_call"]),
        (logging.INFO, ["llm_attempt", "llm_attempt", "llm_call"]),
        # Only bad's failed attempt (warning); good's attempt and the call are info.
        (logging.WARNING, ["llm_attempt"]),
        (logging.ERROR, []),
    ],
)
async def test_a_filtered_log_event_is_not_built(
    tmp_path: Path, counted_logger: list[str], level: int, expected: list[str]
) -> None:
    """The stdlib level of the ``router`` logger decides, before any field is built."""
    logging.getLogger("router").setLevel(level)
    async with Router(make_config(tmp_path, CHAIN)) as router:
        await router.complete("r")
    assert counted_logger == expected


async def test_a_failed_call_is_still_logged_at_warning(
    tmp_path: Path, counted_logger: list[str]
) -> None:
    body = CHAIN.replace("fallback: [bad/m1, good/m2]", "fallback: [bad/m1]")
    async with Router(make_config(tmp_path, body)) as router:
        with capture_logs(logging.WARNING) as logs, pytest.raises(AllProvidersFailedError):
            await router.complete("r")
    assert counted_logger == ["llm_attempt", "llm_call"]  # both warnings, nothing else
    calls = [e for e in logs if e["event"].startswith("llm_")]
    assert [(e["event"], e["log_level"]) for e in calls] == [
        ("llm_attempt", "warning"),
        ("llm_call", "warning"),
    ]
    # The failure says what went wrong, not only its class.
    assert calls[0]["error"].startswith("AuthenticationError HTTP 401: ")
    assert calls[1]["error"].startswith("AllProvidersFailedError: route 'r'")


# ------------------------------------------------------------------ provider_states()

LIMITED = """\
settings:
  cooldown: {failures: 1, seconds: 30}
providers:
  lim:
    kind: mock
    mock: {latency_s: 0.2}
    limits: {requests_per_minute: 2, tokens_per_minute: 1000, max_concurrency: 3}
    models: {m: {}}
  bad:
    kind: mock
    mock: {failures: [500]}
    models: {m: {}}
  free:
    kind: mock
    models: {m: {}}
routes:
  r: {prompt: "hi", max_tokens: 20, fallback: [lim/m]}
  b: {prompt: "hi", fallback: [bad/m, free/m]}
"""


async def test_provider_states_report_cooldown_in_flight_and_headroom(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, LIMITED)) as router:
        states = router.provider_states()
        assert set(states) == {"lim", "bad", "free"}
        assert states["lim"] == ProviderState(
            provider="lim",
            cooling_down=False,
            cooldown_remaining_s=0.0,
            probing=False,
            failures=0,
            in_flight=0,
            retry_after_s=0.0,
            requests_available=2.0,
            tokens_available=1000.0,
            concurrency_available=3,
            runtime_id=states["lim"].runtime_id,  # a process-wide counter: its value is not fixed
        )
        free = states["free"]
        assert (free.requests_available, free.tokens_available) == (None, None)
        assert free.concurrency_available is None

        call = asyncio.create_task(router.complete("r"))
        await asyncio.sleep(0.05)  # the mock answers after 0.2 s
        during = router.provider_states()["lim"]
        assert during.in_flight == 1 and during.concurrency_available == 2
        assert 0.9 <= (during.requests_available or 0) <= 1.1  # one of two taken
        tokens = during.tokens_available or 0
        assert 900 < tokens < 1000  # the input estimate plus max_tokens
        await call
        assert router.provider_states()["lim"].in_flight == 0

        await router.complete("b")  # bad answers 500: one failure -> cooldown
        bad = router.provider_states()["bad"]
        assert bad.cooling_down and 29 < bad.cooldown_remaining_s <= 30
        assert router.stats()["providers"]["bad"]["state"]["cooldown"] is True


async def test_a_successful_call_ends_at_one_reading_of_the_clock(tmp_path: Path) -> None:
    """The ok attempt's latency and deadline left, the Completion's latency and the
    call record's latency are one instant: the clock is read once when the call ends
    (a ticking clock: every reading moves it on)."""
    readings: list[float] = []

    def ticking() -> float:
        readings.append(float(len(readings)))
        return readings[-1]

    told: list[CallRecord] = []
    router = Router(
        make_config(
            tmp_path,
            "providers:\n  p: {kind: mock, models: {m: {}}}\n"
            "routes:\n  r: {prompt: hi, fallback: [p/m], deadline_s: 100}\n",
        ),
        clock=ticking,
        on_call=lambda route, result, error: None,
        observers=[
            type(
                "R", (), {"on_attempt": lambda *a: None, "on_call": lambda self, r: told.append(r)}
            )()
        ],
    )
    async with router:
        result = await router.complete("r")
    (attempt,) = result.attempts
    (record,) = told
    start = attempt.start_s
    assert record.latency_s == result.latency_s
    assert attempt.start_s + attempt.latency_s == result.latency_s == start + attempt.latency_s
    assert attempt.deadline_left_s == 100 - result.latency_s


def test_observers_methods_are_looked_up_when_registered_not_per_event() -> None:
    """The channel binds each observer's on_attempt/on_call when the list changes (add,
    remove), and does not tell a Hooks without hooks anything."""
    from router.observe import Events

    lookups: list[str] = []
    seen: list[Any] = []

    class Counting:
        def __getattribute__(self, name: str) -> Any:
            lookups.append(name)
            return object.__getattribute__(self, name)

        def on_attempt(self, route: str, attempt: Attempt) -> None:
            seen.append(attempt)

        def on_call(self, record: CallRecord) -> None:
            seen.append(record)

    def told(*args: Any) -> None:
        raise AssertionError("a Hooks without hooks was told")

    counting = Counting()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Hooks, "on_attempt", told)
        events = Events([Hooks(None, None), counting])
    bound = len(lookups)
    attempt = Attempt("p", "m", "ok")
    for _ in range(3):
        events.attempt("r", attempt)
    assert seen == [attempt] * 3 and len(lookups) == bound  # no lookup per event
    other: list[str] = []
    events.add(Hooks(lambda route, a: other.append(route), None))
    events.attempt("r", attempt)
    assert other == ["r"] and len(seen) == 4
    events.remove(counting)
    events.attempt("r", attempt)
    assert len(seen) == 4 and other == ["r", "r"]
