"""What the router observes of each provider for hedging and pools.

Per provider, :class:`Observed` keeps a sliding window of attempt latencies (and,
for streams, times to first token) for ``hedge.after: pNN``, decaying averages of
latency, time to first token and failures for the latency-aware pool strategies,
the attempts in flight for ``least_busy``, and the counts a
:class:`~router.config.HedgeBudget` is checked against. Only calls on routes that
hedge or use a pool feed it: a plain route does no work for it.

:class:`~router.state.State` hands these out (``State.observed``), so that a shared
backend can keep them across processes; :class:`LatencyBook` is the in-process one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from router.config import HedgeBudget

__all__ = ["DECAY", "MIN_SAMPLES", "WINDOW", "LatencyBook", "Observed"]

# Latencies kept per provider for the percentiles (the most recent ones).
WINDOW = 256
# Fewer samples than this and ``after: pNN`` uses its cap (max_s): no guess from noise.
MIN_SAMPLES = 20
# Weight of a new sample in the decaying averages (about the last ten attempts).
DECAY = 0.2
# What one failure adds to a member's latency score under least_latency (seconds):
# a fast 503 must not look like the fastest deployment.
FAILURE_PENALTY_S = 10.0


class Observed:
    """One provider as the router has seen it lately."""

    __slots__ = (
        "attempts",
        "failure",
        "hedges",
        "in_flight",
        "latency",
        "latency_avg",
        "ttft",
        "ttft_avg",
    )

    def __init__(self) -> None:
        self.latency: deque[float] = deque(maxlen=WINDOW)  # successful attempts
        self.ttft: deque[float] = deque(maxlen=WINDOW)  # streams: first text delta
        self.latency_avg: float | None = None  # decaying average (None: no sample yet)
        self.ttft_avg: float | None = None
        self.failure = 0.0  # decaying failure rate, 0..1
        self.in_flight = 0  # attempts of pool and hedging calls running now
        self.attempts: deque[float] = deque()  # start times, for the hedge budget
        self.hedges: deque[float] = deque()  # hedges this provider's slowness started

    def __repr__(self) -> str:
        avg = "-" if self.latency_avg is None else f"{self.latency_avg * 1000:.0f}ms"
        return f"<Observed avg={avg} failure={self.failure:.2f} in_flight={self.in_flight}>"

    def add(self, latency_s: float, ttft_s: float | None, ok: bool) -> None:
        """One finished attempt: its latency (and time to first token), and its verdict."""
        self.failure += DECAY * ((0.0 if ok else 1.0) - self.failure)
        if not ok:
            return
        self.latency.append(latency_s)
        self.latency_avg = _decay(self.latency_avg, latency_s)
        if ttft_s is not None:
            self.ttft.append(ttft_s)
            self.ttft_avg = _decay(self.ttft_avg, ttft_s)

    def quantile(self, q: float, stream: bool = False) -> float | None:
        """The ``q`` quantile of recent latencies (streams: times to first token); None
        with fewer than :data:`MIN_SAMPLES`."""
        window = self.ttft if stream else self.latency
        n = len(window)
        if n < MIN_SAMPLES:
            return None
        ordered = sorted(window)
        return ordered[min(n - 1, int(q * n))]

    def score(self, stream: bool = False) -> float:
        """Lower is better (least_latency): the decaying average latency (streams: time
        to first token), plus a penalty per recent failure. 0.0 before any sample, so
        an untried deployment is tried."""
        avg = self.ttft_avg if stream and self.ttft_avg is not None else self.latency_avg
        return (avg or 0.0) + self.failure * FAILURE_PENALTY_S

    def _trim(self, now: float, window_s: float) -> None:
        start = now - window_s
        for q in (self.attempts, self.hedges):
            while q and q[0] < start:
                q.popleft()

    def note_attempt(self, now: float, budget: HedgeBudget) -> None:
        """An attempt of a hedging call went to this provider (the budget's base)."""
        self._trim(now, budget.window_s)
        self.attempts.append(now)

    def take_hedge(self, now: float, budget: HedgeBudget) -> bool:
        """Whether this provider's slow attempt may start one more hedge now (and count
        it): hedges in the window stay within ``min_hedges + ratio x attempts``."""
        self._trim(now, budget.window_s)
        if len(self.hedges) >= budget.min_hedges + budget.ratio * len(self.attempts):
            return False
        self.hedges.append(now)
        return True


def _decay(avg: float | None, sample: float) -> float:
    return sample if avg is None else avg + DECAY * (sample - avg)


class LatencyBook:
    """:class:`Observed` per provider name, in this process (kept across reloads)."""

    __slots__ = ("_by_name", "clock")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._by_name: dict[str, Observed] = {}

    def get(self, name: str) -> Observed:
        o = self._by_name.get(name)
        if o is None:
            o = self._by_name[name] = Observed()
        return o
