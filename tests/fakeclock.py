"""A hand-driven monotonic clock for time-dependent logic."""

from __future__ import annotations


class FakeClock:
    """Returns ``now``; tests move it with :meth:`advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
