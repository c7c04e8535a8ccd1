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

    def remaining(self) -> float:
        """Seconds left, never negative."""
        left = self._end - self._clock()
        return left if left > 0.0 else 0.0

    def elapsed(self) -> float:
        """Seconds since the deadline was created."""
        return self.seconds - (self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self._end

    def share(self, steps_left: int, floor_s: float) -> float:
        """The time one attempt may take so that later steps keep a reserve.

        The rule (docs/routing.md): an attempt gets an equal share of what
        remains among the steps not yet tried, counting its own —
        ``remaining / steps_left`` — but never less than ``floor_s`` (a share too
        small to answer in helps nobody) and never more than what remains.
        The last step gets everything left.
        """
        left = self.remaining()
        if steps_left <= 1:
            return left
        fair = left / steps_left
        return min(left, max(fair, floor_s))

    def __repr__(self) -> str:
        return f"<Deadline {self.seconds:g}s remaining={self.remaining():.3f}s>"
