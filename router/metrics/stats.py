"""In-process call statistics: :class:`Stats`, an observer every Router carries.

Updates are plain ``int``/``dict`` arithmetic on the event loop's thread (the
router is single-loop, so there are no locks); everything costly — sorting
latency samples, summing per-model series into per-provider ones, reading
cooldowns and budgets — happens in :meth:`Stats.snapshot`, which an operator
calls rarely.

Latency percentiles come from a **sliding window of the last**
:data:`WINDOW` **samples** per series (a ring buffer of C doubles, 8 KiB per
series): they describe recent traffic, not all time, and memory is bounded by
the number of routes and provider/model pairs in the config. Prometheus
histograms (router.metrics.prometheus) are the all-time view.

The vocabulary shared with the Prometheus and OpenTelemetry exporters is here
too: :func:`error_type` (a fixed set of error labels), :data:`SKIP_LABELS` (the
label of every :class:`~router.types.SkipKind`) and :func:`call_moves` (which
attempts were retries and where a call fell back).

Live state (cooldowns, in-flight attempts, budgets, the ledger) is read through
the Router's public methods (:class:`Live`), so this module never imports the
router.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from router.errors import (
    ERROR_KINDS,
    AllProvidersFailedError,
    BudgetExceededError,
    DeadlineExceededError,
    ProviderError,
    RouterError,
    StateUnavailableError,
    StreamInterruptedError,
)
from router.money import usd
from router.observe import CallRecord
from router.types import Attempt, ProviderState, SkipKind, Usage

if TYPE_CHECKING:
    from router.budget import BudgetStatus, LedgerStatus

__all__ = [
    "CALL_ERROR_TYPES",
    "ERROR_TYPES",
    "SKIP_CLASSES",
    "SKIP_LABELS",
    "WINDOW",
    "Live",
    "Stats",
    "call_moves",
    "error_type",
    "skip_label",
]

# Samples kept per latency series (the percentiles describe the last WINDOW of them).
WINDOW = 1024

# Every error label an attempt can carry: ProviderError.kind values, plus "other".
ERROR_TYPES: tuple[str, ...] = (*ERROR_KINDS, StreamInterruptedError.kind, "other")
# Errors a whole call can end with, besides a ProviderError kind (a stream interrupted).
CALL_ERROR_TYPES: tuple[str, ...] = (
    "all_providers_failed",
    "deadline_exceeded",
    "budget_exceeded",
    "state_unavailable",
    *ERROR_TYPES,
)
_KNOWN_ERRORS = frozenset(CALL_ERROR_TYPES)

# The metric label of every skip kind (Attempt.skip). A new SkipKind needs its row
# here: the label is a promise to dashboards and alerts (docs/operations.md).
SKIP_LABELS: Mapping[SkipKind, str] = {
    SkipKind.COOLDOWN: "cooldown",
    SkipKind.RETRY_AFTER: "retry_after",
    SkipKind.RATE: "rate",
    SkipKind.TOKENS: "tokens",
    SkipKind.CONCURRENCY: "concurrency",
    SkipKind.BUDGET: "budget",
    SkipKind.MAX_COST: "max_cost",
    SkipKind.LEDGER: "ledger",
    SkipKind.STATE: "state",
    SkipKind.DEADLINE: "deadline",
    SkipKind.CONTEXT_WINDOW: "context_window",
    SkipKind.TOOLS_UNSUPPORTED: "tools_unsupported",
}
# Every skip label, plus "other" for a skipped Attempt without a kind (built outside the router).
SKIP_CLASSES: tuple[str, ...] = (*SKIP_LABELS.values(), "other")


def error_type(error: RouterError | None) -> str:
    """The fixed-vocabulary label of an error (see :data:`CALL_ERROR_TYPES`)."""
    if error is None:
        return "none"
    if isinstance(error, ProviderError):
        kind = error.kind
        return kind if kind in _KNOWN_ERRORS else "other"
    if isinstance(error, AllProvidersFailedError):
        return "all_providers_failed"
    if isinstance(error, DeadlineExceededError):
        return "deadline_exceeded"
    if isinstance(error, BudgetExceededError):
        return "budget_exceeded"
    if isinstance(error, StateUnavailableError):
        return "state_unavailable"
    return "other"


def skip_label(kind: SkipKind | None) -> str:
    """The metric label of a skipped attempt's kind (see :data:`SKIP_LABELS`)."""
    if kind is None:
        return "other"
    return SKIP_LABELS.get(kind, "other")


class Live(Protocol):
    """Where :meth:`Stats.snapshot` reads live state: a Router's public methods."""

    def provider_states(self) -> Mapping[str, ProviderState]: ...

    def spend(self) -> Sequence[BudgetStatus]: ...

    def ledger_status(self) -> LedgerStatus: ...


def call_moves(attempts: Sequence[Attempt]) -> tuple[list[int], list[int]]:
    """Where a call retried and where it fell back, from its attempt trail.

    Returns ``(retries, left)``: indices of attempts that were retries (a
    non-skipped try right after an error of the same provider/model), and
    indices of attempts whose step the call then left for the next step. A
    skipped attempt always ends its step; a change of provider/model starts a
    new one (so two adjacent chain steps naming the same model count as one).
    """
    retries: list[int] = []
    left: list[int] = []
    for i in range(1, len(attempts)):
        prev = attempts[i - 1]
        cur = attempts[i]
        if prev.outcome == "error" and prev.provider == cur.provider and prev.model == cur.model:
            if cur.outcome != "skipped":
                retries.append(i)
        else:
            left.append(i - 1)
    return retries, left


class Window:
    """The last :data:`WINDOW` samples of one latency series, in a ring buffer."""

    __slots__ = ("_buf", "count")

    def __init__(self) -> None:
        self._buf = array("d")
        # Samples ever added (the buffer keeps the last WINDOW of them).
        self.count = 0

    def add(self, value: float) -> None:
        n = self.count
        if n < WINDOW:
            self._buf.append(value)
        else:
            self._buf[n % WINDOW] = value
        self.count = n + 1

    def samples(self) -> list[float]:
        return list(self._buf)

    @staticmethod
    def summary(samples: list[float], count: int) -> dict[str, Any]:
        """count (all time), p50/p90/p99/max over ``samples`` (nearest rank); None when empty."""
        if not samples:
            return {"count": count, "p50": None, "p90": None, "p99": None, "max": None}
        s = sorted(samples)
        n = len(s)

        def rank(q: float) -> float:
            # Nearest rank: the smallest sample with at least q of them at or below it.
            return round(s[max(0, math.ceil(q * n - 1e-9) - 1)], 6)

        return {
            "count": count,
            "p50": rank(0.50),
            "p90": rank(0.90),
            "p99": rank(0.99),
            "max": round(s[-1], 6),
        }


class _Usage:
    """Token and money totals."""

    __slots__ = ("cache_write", "cached_input", "cost", "input", "output", "reasoning")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cached_input = 0
        self.cache_write = 0
        self.reasoning = 0
        self.cost = Decimal(0)

    def add(self, usage: Usage | None, cost: Decimal) -> None:
        if usage is not None:
            self.input += usage.input_tokens
            self.output += usage.output_tokens
            self.cached_input += usage.cached_input_tokens
            self.cache_write += usage.cache_write_tokens
            self.reasoning += usage.reasoning_tokens
        if cost:
            self.cost += cost

    def merge(self, other: _Usage) -> None:
        self.input += other.input
        self.output += other.output
        self.cached_input += other.cached_input
        self.cache_write += other.cache_write
        self.reasoning += other.reasoning
        self.cost += other.cost

    def tokens(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cached_input": self.cached_input,
            "cache_write": self.cache_write,
            "reasoning": self.reasoning,
        }


class _Target:
    """Counters of one provider/model pair (what attempts did there)."""

    __slots__ = (
        "attempts",
        "errors",
        "fallbacks",
        "latency",
        "ok",
        "retries",
        "skips",
        "ttft",
        "usage",
    )

    def __init__(self) -> None:
        self.attempts = 0  # attempts sent (not skipped)
        self.ok = 0
        self.errors: dict[str, int] = {}  # error type -> attempts
        self.skips: dict[str, int] = {}  # skip class -> skipped attempts
        self.retries = 0  # attempts that repeated the previous, failed one
        self.fallbacks = 0  # times a call left this step for the next one
        self.usage = _Usage()
        self.latency = Window()  # attempt latency (ok and error)
        self.ttft = Window()  # streams: time to first token


class _RouteStats:
    """Counters of one route (what its calls did)."""

    __slots__ = (
        "attempts",
        "calls",
        "errors",
        "fallbacks",
        "hedge_wasted",
        "hedge_wins",
        "hedges",
        "latency",
        "ok",
        "ok_after_fallback",
        "retries",
        "skips",
        "streams",
        "ttft",
        "usage",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.streams = 0  # calls made with stream()
        self.ok = 0
        self.errors: dict[str, int] = {}  # call error type -> calls
        self.attempts = 0  # attempts sent (not skipped)
        self.skips: dict[str, int] = {}  # skip class -> skipped attempts
        self.retries = 0
        self.fallbacks = 0  # moves from one step to the next
        self.ok_after_fallback = 0  # ok calls answered by a step other than their first
        self.hedges = 0  # attempts sent as hedges (docs/latency.md)
        self.hedge_wins = 0  # hedges whose answer was returned
        self.hedge_wasted = Decimal(0)  # cost of attempts that lost a hedge race
        self.usage = _Usage()
        self.latency = Window()  # whole-call latency (ok and error)
        self.ttft = Window()  # streams: the answering attempt's time to first token


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _merge_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _target_dict(t: _Target, latency: dict[str, Any], ttft: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempts": t.attempts,
        "ok": t.ok,
        "errors": dict(sorted(t.errors.items())),
        "skips": dict(sorted(t.skips.items())),
        "retries": t.retries,
        "fallbacks": t.fallbacks,
        "tokens": t.usage.tokens(),
        "cost_usd": usd(t.usage.cost),
        "latency_s": latency,
        "ttft_s": ttft,
    }


class Stats:
    """Counts every call and attempt of a Router; :meth:`snapshot` reports them.

    An :class:`~router.observe.Observer`; the Router keeps one and returns its
    snapshot from ``router.stats()``. Memory is bounded: a fixed set of
    counters and two :class:`Window` s per route and per provider/model.
    """

    __slots__ = ("_routes", "_since", "_targets")

    def __init__(self) -> None:
        self._routes: dict[str, _RouteStats] = {}
        # (provider, model) -> counters.
        self._targets: dict[tuple[str, str], _Target] = {}
        # Wall-clock time counting started (epoch seconds).
        self._since = time.time()

    def __repr__(self) -> str:
        calls = sum(r.calls for r in self._routes.values())
        return f"<Stats routes={len(self._routes)} targets={len(self._targets)} calls={calls}>"

    def reset(self) -> None:
        """Forget everything counted so far."""
        self._routes.clear()
        self._targets.clear()
        self._since = time.time()

    # -- the observer ------------------------------------------------------------------

    def _route(self, route: str) -> _RouteStats:
        r = self._routes.get(route)
        if r is None:
            r = self._routes[route] = _RouteStats()
        return r

    def _target(self, provider: str, model: str) -> _Target:
        key = (provider, model)
        t = self._targets.get(key)
        if t is None:
            t = self._targets[key] = _Target()
        return t

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        # The dict lookups inline (the methods only for a first sighting): per attempt.
        r = self._routes.get(route) or self._route(route)
        t = self._targets.get((attempt.provider, attempt.model)) or self._target(
            attempt.provider, attempt.model
        )
        outcome = attempt.outcome
        if outcome == "skipped":
            cls = skip_label(attempt.skip)
            _bump(t.skips, cls)
            _bump(r.skips, cls)
            return
        r.attempts += 1
        t.attempts += 1
        if outcome == "ok":
            t.ok += 1
        elif outcome == "error":
            _bump(t.errors, error_type(attempt.error))
        if attempt.won is not None or attempt.hedged:
            if attempt.hedged:
                r.hedges += 1
                r.hedge_wins += attempt.won is True
            if attempt.won is False:
                r.hedge_wasted += attempt.cost_usd
        t.latency.add(attempt.latency_s)
        if attempt.ttft_s is not None:
            t.ttft.add(attempt.ttft_s)
        if attempt.usage is not None or attempt.cost_usd:
            t.usage.add(attempt.usage, attempt.cost_usd)
            r.usage.add(attempt.usage, attempt.cost_usd)

    def on_call(self, record: CallRecord) -> None:
        r = self._routes.get(record.route) or self._route(record.route)
        r.calls += 1
        if record.stream:
            r.streams += 1
        attempts = record.attempts
        result = record.result
        if result is not None:
            r.ok += 1
        else:
            _bump(r.errors, error_type(record.error))
        r.latency.add(record.latency_s)
        if len(attempts) > 1:
            retries, left = call_moves(attempts)
            for i in retries:
                a = attempts[i]
                self._target(a.provider, a.model).retries += 1
            for i in left:
                a = attempts[i]
                self._target(a.provider, a.model).fallbacks += 1
            r.retries += len(retries)
            r.fallbacks += len(left)
            if result is not None and left:
                r.ok_after_fallback += 1
        if result is not None and attempts:
            ttft = attempts[-1].ttft_s
            if ttft is not None:
                r.ttft.add(ttft)

    # -- the report ----------------------------------------------------------------------

    def snapshot(self, router: Live | None = None) -> dict[str, Any]:
        """Everything counted so far, as a JSON-serializable dict.

        Args:
            router: when given, each provider also reports its live state
                (cooldown, failures, in-flight attempts) and ``budgets`` the
                remaining money of every budget (``router.spend()``).

        Returns:
            ``{"since", "window", "routes": {route: {...}}, "providers":
            {provider: {..., "models": {model: {...}}, "state": {...}}},
            "budgets": {name: {...}}, "ledger": {...}}`` — see docs/operations.md.
        """
        routes: dict[str, Any] = {}
        for name, r in sorted(self._routes.items()):
            routes[name] = {
                "calls": r.calls,
                "streams": r.streams,
                "ok": r.ok,
                "errors": dict(sorted(r.errors.items())),
                "attempts": r.attempts,
                "retries": r.retries,
                "fallbacks": r.fallbacks,
                "ok_after_fallback": r.ok_after_fallback,
                "hedges": r.hedges,
                "hedge_wins": r.hedge_wins,
                "hedge_wasted_usd": usd(r.hedge_wasted),
                "skips": dict(sorted(r.skips.items())),
                "tokens": r.usage.tokens(),
                "cost_usd": usd(r.usage.cost),
                "latency_s": Window.summary(r.latency.samples(), r.latency.count),
                "ttft_s": Window.summary(r.ttft.samples(), r.ttft.count),
            }
        by_provider: dict[str, list[tuple[str, _Target]]] = {}
        for (provider, model), t in sorted(self._targets.items()):
            by_provider.setdefault(provider, []).append((model, t))
        names: Iterable[str] = by_provider
        states: Mapping[str, ProviderState] = {}
        if router is not None:
            states = router.provider_states()
            names = sorted({*by_provider, *states})
        providers: dict[str, Any] = {}
        for name in names:
            providers[name] = self._provider(by_provider.get(name, []))
        for name, st in states.items():
            providers[name]["state"] = {
                "cooldown": st.cooling_down,
                "cooldown_remaining_s": round(st.cooldown_remaining_s, 3),
                "retry_after_s": round(st.retry_after_s, 3),
                "failures": st.failures,
                "in_flight": st.in_flight,
            }
        snap: dict[str, Any] = {
            "since": self._since,
            "window": WINDOW,
            "routes": routes,
            "providers": providers,
        }
        if router is not None:
            snap["budgets"] = {
                b.name: {
                    "period": b.period,
                    "limit_usd": usd(b.limit_usd),
                    "spent_usd": usd(b.spent_usd),
                    "reserved_usd": usd(b.reserved_usd),
                    "remaining_usd": usd(b.remaining_usd),
                }
                for b in router.spend()
            }
            ledger = router.ledger_status()
            snap["ledger"] = {
                "pending": ledger.pending,
                "write_failures": ledger.write_failures,
                "error": ledger.error,
            }
        return snap

    @staticmethod
    def _provider(models: list[tuple[str, _Target]]) -> dict[str, Any]:
        """One provider's totals (its models summed) with each model's own."""
        total = _Target()
        lat: list[float] = []
        ttft: list[float] = []
        per_model: dict[str, Any] = {}
        for model, t in models:
            t_lat, t_ttft = t.latency.samples(), t.ttft.samples()
            per_model[model] = _target_dict(
                t,
                Window.summary(t_lat, t.latency.count),
                Window.summary(t_ttft, t.ttft.count),
            )
            total.attempts += t.attempts
            total.ok += t.ok
            _merge_counts(total.errors, t.errors)
            _merge_counts(total.skips, t.skips)
            total.retries += t.retries
            total.fallbacks += t.fallbacks
            total.usage.merge(t.usage)
            total.latency.count += t.latency.count
            total.ttft.count += t.ttft.count
            lat += t_lat
            ttft += t_ttft
        out = _target_dict(
            total,
            Window.summary(lat, total.latency.count),
            Window.summary(ttft, total.ttft.count),
        )
        out["models"] = per_model
        return out
