"""Prometheus metrics for a Router (optional extra: ``pip install 'yaml-llm-router[prometheus]'``).

::

    from prometheus_client import start_http_server
    from router.metrics.prometheus import register

    register(router)            # into prometheus_client's default REGISTRY
    start_http_server(9464)

:func:`register` adds one observer to the router and one collector to the
registry. The observer only bumps numbers in dicts keyed by label tuples
(no prometheus_client objects, no locks on the call path); the collector turns
them into metric families when scraped, and reads the gauges (budget
remaining, cooldowns, in-flight attempts) from the router at that moment.

Labels are low-cardinality by construction: ``route``, ``provider`` and
``model`` are names from providers.yaml; ``outcome``, ``error_type``,
``reason`` and ``direction`` come from fixed vocabularies
(router.metrics.stats). No request ids, messages or other free text.
The names and meaning of every metric are in docs/operations.md.

Scrapes may run on another thread (``start_http_server``): the collector
copies each dict before reading it, which CPython does atomically.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from router.metrics.extras import missing_extra

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, CollectorRegistry
except ImportError as missing:  # the optional dependency is not installed
    raise missing_extra(__name__, "prometheus", missing) from missing

from router.metrics.stats import call_moves, error_type, skip_label
from router.observe import CallRecord
from router.types import Attempt

if TYPE_CHECKING:
    from router.router import Router

__all__ = ["ATTEMPT_BUCKETS", "TTFT_BUCKETS", "PrometheusMetrics", "register"]

# Bucket bounds (seconds) of the OpenTelemetry GenAI metrics conventions:
# gen_ai.client.operation.duration and gen_ai.client.operation.time_to_first_chunk.
ATTEMPT_BUCKETS: tuple[float, ...] = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TTFT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

Labels = tuple[str, ...]


class _Histogram:
    """Bucket counts (not cumulative; the last one is +Inf), sum and count of one series."""

    __slots__ = ("counts", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)
        self.sum = 0.0


class _Histograms:
    """One histogram metric: its bucket bounds and a series per label tuple."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.series: dict[Labels, _Histogram] = {}

    def observe(self, labels: Labels, value: float) -> None:
        h = self.series.get(labels)
        if h is None:
            h = self.series[labels] = _Histogram(len(self.bounds))
        h.counts[bisect_left(self.bounds, value)] += 1
        h.sum += value

    def family(self, name: str, doc: str, label_names: Sequence[str]) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=label_names)
        les = [*(_le(b) for b in self.bounds), "+Inf"]
        for labels, h in self.series.copy().items():
            counts = list(h.counts)
            buckets: list[tuple[str, float]] = []
            total = 0
            for le, c in zip(les, counts, strict=True):
                total += c
                buckets.append((le, total))
            fam.add_metric(list(labels), buckets, h.sum)
        return fam


def _le(bound: float) -> str:
    return repr(float(bound))


def _bump(counts: dict[Labels, float], labels: Labels, by: float = 1) -> None:
    counts[labels] = counts.get(labels, 0) + by


def _counter(
    name: str, doc: str, label_names: Sequence[str], counts: dict[Labels, float]
) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=label_names)
    for labels, value in counts.copy().items():
        fam.add_metric(list(labels), value)
    return fam


_TOKEN_FIELDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
)

_R = ("route",)
_RPM = ("route", "provider", "model")


def _usd_counter(name: str, doc: str, values: dict[Labels, Decimal]) -> Metric:
    """A counter of exact USD per route, provider and model (a float when scraped)."""
    family = CounterMetricFamily(name, doc, labels=_RPM)
    for labels, usd in values.copy().items():
        family.add_metric(list(labels), float(usd))
    return family


class PrometheusMetrics:
    """A Router observer and a Prometheus collector in one; made by :func:`register`."""

    def __init__(self, router: Router) -> None:
        self._router = router
        # Registry this collector is in (set by register()).
        self._registry: CollectorRegistry | None = None
        # Counters: label tuple -> value.
        self._calls: dict[Labels, float] = {}  # route, outcome, error_type
        self._attempts: dict[Labels, float] = {}  # route, provider, model, outcome, error_type
        self._skips: dict[Labels, float] = {}  # route, provider, model, reason
        self._retries: dict[Labels, float] = {}  # route, provider, model
        self._fallbacks: dict[Labels, float] = {}  # route, provider, model
        self._tokens: dict[Labels, float] = {}  # route, provider, model, direction
        self._hedges: dict[Labels, float] = {}  # route, provider, model
        self._hedge_wins: dict[Labels, float] = {}  # route, provider, model
        # route, provider, model -> USD of attempts that lost a hedge race.
        self._hedge_wasted: dict[Labels, Decimal] = {}
        # route, provider, model -> USD, kept exact and turned into a float when scraped.
        self._cost: dict[Labels, Decimal] = {}
        self._call_duration = _Histograms(ATTEMPT_BUCKETS)  # route, outcome
        self._attempt_duration = _Histograms(ATTEMPT_BUCKETS)  # provider, model, outcome
        self._ttft = _Histograms(TTFT_BUCKETS)  # provider, model

    def __repr__(self) -> str:
        return f"<PrometheusMetrics calls={int(sum(self._calls.copy().values()))}>"

    # -- observer -----------------------------------------------------------------------

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        provider, model, outcome = attempt.provider, attempt.model, attempt.outcome
        if outcome == "skipped":
            _bump(self._attempts, (route, provider, model, outcome, "none"))
            _bump(self._skips, (route, provider, model, skip_label(attempt.skip)))
            return
        _bump(self._attempts, (route, provider, model, outcome, error_type(attempt.error)))
        self._attempt_duration.observe((provider, model, outcome), attempt.latency_s)
        if attempt.ttft_s is not None:
            self._ttft.observe((provider, model), attempt.ttft_s)
        usage = attempt.usage
        if usage is not None:
            for direction, attr in _TOKEN_FIELDS:
                n = getattr(usage, attr)
                if n:
                    _bump(self._tokens, (route, provider, model, direction), n)
        if attempt.cost_usd:
            key = (route, provider, model)
            self._cost[key] = self._cost.get(key, Decimal(0)) + attempt.cost_usd
        if attempt.hedged:
            _bump(self._hedges, (route, provider, model))
            if attempt.won:
                _bump(self._hedge_wins, (route, provider, model))
        if attempt.won is False:
            key = (route, provider, model)
            self._hedge_wasted[key] = self._hedge_wasted.get(key, Decimal(0)) + attempt.cost_usd

    def on_call(self, record: CallRecord) -> None:
        route = record.route
        outcome = "ok" if record.result is not None else "error"
        _bump(self._calls, (route, outcome, error_type(record.error)))
        self._call_duration.observe((route, outcome), record.latency_s)
        attempts = record.attempts
        if len(attempts) > 1:
            retries, left = call_moves(attempts)
            for i in retries:
                a = attempts[i]
                _bump(self._retries, (route, a.provider, a.model))
            for i in left:
                a = attempts[i]
                _bump(self._fallbacks, (route, a.provider, a.model))

    # -- collector ------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        """The metric names this collector exposes (lets the registry catch duplicates)."""
        return self._families(live=False)

    def collect(self) -> Iterator[Metric]:
        return self._families(live=True)

    def _families(self, live: bool) -> Iterator[Metric]:
        yield _counter(
            "llm_calls",
            "Router calls (complete or stream) by final outcome.",
            ("route", "outcome", "error_type"),
            self._calls,
        )
        yield self._call_duration.family(
            "llm_call_duration_seconds",
            "Whole-call latency (every attempt, wait and backoff; streams until their end).",
            ("route", "outcome"),
        )
        yield _counter(
            "llm_attempts",
            "Attempts per chain step: ok, error (by error_type) or skipped.",
            (*_RPM, "outcome", "error_type"),
            self._attempts,
        )
        yield self._attempt_duration.family(
            "llm_attempt_duration_seconds",
            "Latency of one attempt sent to a provider (ok or error).",
            ("provider", "model", "outcome"),
        )
        yield self._ttft.family(
            "llm_time_to_first_token_seconds",
            "Streams: seconds from an attempt's start to its first text delta.",
            ("provider", "model"),
        )
        yield _counter(
            "llm_skips",
            "Chain steps skipped without sending, by skip kind.",
            (*_RPM, "reason"),
            self._skips,
        )
        yield _counter(
            "llm_retries",
            "Attempts that repeated the previous failed attempt of the same step.",
            _RPM,
            self._retries,
        )
        yield _counter(
            "llm_fallbacks",
            "Times a call left this step (after errors or a skip) for the next one.",
            _RPM,
            self._fallbacks,
        )
        yield _counter(
            "llm_tokens",
            "Tokens reported by providers (cached_input is part of input, reasoning of output).",
            (*_RPM, "direction"),
            self._tokens,
        )
        yield _counter(
            "llm_hedges",
            "Attempts started as hedges beside a slow one (docs/latency.md).",
            _RPM,
            self._hedges,
        )
        yield _counter(
            "llm_hedge_wins", "Hedges whose answer was the call's.", _RPM, self._hedge_wins
        )
        yield _usd_counter(
            "llm_cost_usd", "Money spent, from reported usage and YAML prices.", self._cost
        )
        yield _usd_counter(
            "llm_hedge_wasted_usd",
            "Money spent on attempts that lost a hedge race (part of llm_cost_usd).",
            self._hedge_wasted,
        )
        yield from self._gauges(live)

    def _gauges(self, live: bool) -> Iterator[Metric]:
        """Live state read from the router at scrape time."""
        remaining = GaugeMetricFamily(
            "llm_budget_remaining_usd",
            "Budget left this period: limit - spent - reserved.",
            labels=("budget",),
        )
        spent = GaugeMetricFamily(
            "llm_budget_spent_usd", "Budget spent this period.", labels=("budget",)
        )
        limit = GaugeMetricFamily(
            "llm_budget_limit_usd", "Budget limit per period.", labels=("budget",)
        )
        cooldown = GaugeMetricFamily(
            "llm_provider_cooldown",
            "1 while the provider is cooling down (skipped by every call), else 0.",
            labels=("provider",),
        )
        in_flight = GaugeMetricFamily(
            "llm_provider_in_flight",
            "Attempts admitted to the provider and not yet finished.",
            labels=("provider",),
        )
        if live:
            router = self._router
            for b in router.spend():
                remaining.add_metric([b.name], float(b.remaining_usd))
                spent.add_metric([b.name], float(b.spent_usd))
                limit.add_metric([b.name], float(b.limit_usd))
            for name, st in router.provider_states().items():
                cooldown.add_metric([name], 1.0 if st.cooling_down else 0.0)
                in_flight.add_metric([name], float(st.in_flight))
        yield from (remaining, spent, limit, cooldown, in_flight)

    # -- lifecycle ------------------------------------------------------------------------

    def unregister(self) -> None:
        """Stop observing the router and leave the registry."""
        if self._registry is not None:
            self._registry.unregister(self)
            self._registry = None
            self._router.remove_observer(self)


def register(router: Router, registry: CollectorRegistry | None = None) -> PrometheusMetrics:
    """Expose ``router``'s calls, attempts, tokens, cost and live state to Prometheus.

    Args:
        router: the Router to observe (counting starts now).
        registry: where to register; prometheus_client's default ``REGISTRY``
            when None. One router per registry: a second registration of the
            same metric names raises ValueError.

    Returns:
        The collector (also the observer); ``.unregister()`` undoes both.
    """
    metrics = PrometheusMetrics(router)
    target = REGISTRY if registry is None else registry
    target.register(metrics)
    metrics._registry = target
    router.add_observer(metrics)
    return metrics
