"""The attempts of one hedged call that run at once, and which of them won.

A call that hedges (router.hedge) runs each attempt as a *lane*: its own task,
with its :class:`Lane` in :data:`CURRENT_LANE`. Every attempt a lane records is
marked through the call's :class:`Race`: ``hedged`` when the lane was started while
another was still running, ``won`` once more than one lane has run (True for the
attempt whose answer the call returned, False for the others).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from router.types import Attempt

__all__ = ["CURRENT_LANE", "Lane", "Race"]


class Lane:
    """One attempt of a hedged call, running as its own task."""

    __slots__ = ("hedged", "index", "lost", "race", "step", "t0")

    def __init__(self, race: Race, step: Any, index: int, hedged: bool, t0: float) -> None:
        self.race = race
        self.step = step  # the router.call.Step it sends to
        self.index = index  # the chain step it belongs to
        self.hedged = hedged  # started while another lane was running
        self.lost = False  # cancelled because another lane won: billed as sent
        self.t0 = t0

    def __repr__(self) -> str:
        p = self.step.provider.name
        return f"<Lane {p}/{self.step.plan.model} step={self.index} hedged={self.hedged}>"


CURRENT_LANE: ContextVar[Lane | None] = ContextVar("router_lane", default=None)


class Race:
    """The lanes of one call: how many were started, and the winner once known."""

    __slots__ = ("started", "winner")

    def __init__(self) -> None:
        self.started = 0
        # The lane whose answer the call returns: the first to record a success
        # (complete) or to deliver a first text delta (stream, set by the walk).
        self.winner: Lane | None = None

    def mark(self, attempt: Attempt) -> None:
        """Mark an attempt recorded by a lane (or by the winning stream, later)."""
        lane = CURRENT_LANE.get() or self.winner
        if lane is None:
            return
        attempt.hedged = lane.hedged
        if attempt.outcome == "ok" and self.winner is None:
            self.winner = lane
        if self.started > 1 and attempt.outcome in ("ok", "cancelled"):
            attempt.won = lane is self.winner
