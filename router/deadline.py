"""One monotonic time budget for a whole call.

Every wait inside a call draws on the same :class:`Deadline`: limiter
admission, connect, read, backoff sleeps, Retry-After and the next step. The
clock is injectable so tests can drive time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Deadline:
    """A point in monotonic time by which a call must be over."""

    __slots__ = ("_clock", "_end", "seconds", "started_at")

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds  # the budget it was created with
        self._clock = clock
        self.started_at = clock()  # monotonic start, to place attempts in time
        self._end = self.started_at + seconds  # absolute monotonic end

    @property
    def end(self) -> float:
        """The monotonic time by which the call must be over."""
        return self._end

    def remaining(self, now: float | None = None) -> float:
        """Seconds left (at ``now``, a reading of the deadline's clock; default: now),
        never negative."""
        left = self._end - (self._clock() if now is None else now)
        return left if left > 0.0 else 0.0

    def elapsed(self) -> float:
        """Seconds since the deadline was created."""
        return self.seconds - (self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self._end

    def share(self, steps_left: int, now: float | None = None) -> float:
        """The time one attempt may take so that later steps keep their reserve.

        The rule (docs/routing.md): an equal share of what remains among the
        steps not yet tried, counting its own — ``remaining / steps_left``. A hung
        step is cut at its share, so it can never eat the time of the steps after
        it; the last step gets everything left.
        """
        left = self.remaining(now)
        return left if steps_left <= 1 else left / steps_left

    def can_wait(self, pause_s: float, steps_left: int, floor_s: float) -> bool:
        """Whether to wait ``pause_s`` and retry: only if at least ``floor_s`` is then
        left for this step and for each later one (else the chain moves on at once)."""
        left = self.remaining() - pause_s
        return left > 0 and left >= floor_s * steps_left

    def __repr__(self) -> str:
        return f"<Deadline {self.seconds:g}s remaining={self.remaining():.3f}s>"
