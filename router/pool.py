"""Pools of deployments: which member of a ``pool:NAME`` step a call tries first.

A pool step holds its members (one :class:`~router.call.Step` each); per call,
:meth:`PoolPicker.order` ranks them by the pool's strategy:

- ``weighted``: smooth weighted round robin — over any run of calls each member
  is first in proportion to its weight (exactly, not by chance);
- ``round_robin``: each member first in turn;
- ``least_latency``: the lowest decaying average latency (streams: time to first
  token) plus a penalty per recent failure first; an untried member first;
- ``least_busy``: the fewest attempts in flight first (then by latency).

Whatever the strategy, members that cannot be sent to now — cooling down, waiting
out a Retry-After, with no request, token or concurrency headroom — go last, in
the same order. The call tries the others in that order on a retryable failure
before its step gives up (router.hedge). The live numbers come from the State
(``State.observed``, ``State.provider_state``), so a shared backend shares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from router.state import State

__all__ = ["PoolPicker", "ranked"]


class PoolPicker:
    """A pool's choice state in this process (the weighted and round-robin cursors)."""

    __slots__ = ("current", "name", "strategy", "turn", "weights")

    def __init__(self, name: str, strategy: str, weights: Sequence[int]) -> None:
        self.name = name
        self.strategy = strategy
        self.weights = tuple(weights)
        self.current = [0] * len(weights)  # smooth weighted round robin
        self.turn = 0  # round_robin

    def __repr__(self) -> str:
        return f"<PoolPicker {self.name} {self.strategy} {len(self.weights)} members>"

    def first(self) -> int:
        """The member a call tries first under ``weighted`` or ``round_robin`` (advances)."""
        n = len(self.weights)
        if self.strategy == "round_robin":
            i = self.turn % n
            self.turn += 1
            return i
        total = 0
        best = 0
        current = self.current
        for i, w in enumerate(self.weights):
            current[i] += w
            total += w
            if current[i] > current[best]:
                best = i
        current[best] -= total
        return best

    def _by_turn(self, first: int) -> list[int]:
        n = len(self.weights)
        rest = sorted((i for i in range(n) if i != first), key=lambda i: (-self.weights[i], i))
        return [first, *rest]

    def preview(self) -> list[int]:
        """The order the next call would get by the pool's own cursor, without taking
        its turn (latency-aware strategies: as declared; the live numbers decide)."""
        if self.strategy not in ("weighted", "round_robin"):
            return list(range(len(self.weights)))
        saved = (list(self.current), self.turn)
        try:
            return self._by_turn(self.first())
        finally:
            self.current, self.turn = saved

    def order(
        self, members: Sequence[Any], state: State, stream: bool, advance: bool = True
    ) -> list[int]:
        """The members' indexes in the order a call tries them (see the module doc);
        ``advance=False`` only looks (the weighted and round-robin turn is not taken)."""
        n = len(members)
        if self.strategy in ("weighted", "round_robin"):
            order = self._by_turn(self.first()) if advance else self.preview()
        elif self.strategy == "least_busy":
            seen = [state.observed(m.provider.gate) for m in members]
            order = sorted(range(n), key=lambda i: (seen[i].in_flight, seen[i].score(stream), i))
        else:  # least_latency
            seen = [state.observed(m.provider.gate) for m in members]
            order = sorted(range(n), key=lambda i: (seen[i].score(stream), i))
        return ranked(order, members, state)


def ranked(order: list[int], members: Sequence[Any], state: State) -> list[int]:
    """``order`` with the members that cannot be sent to now moved last."""
    ready: list[int] = []
    later: list[int] = []
    for i in order:
        s = state.provider_state(members[i].provider.gate)
        blocked = (
            s.cooling_down
            or s.retry_after_s > 0
            or s.concurrency_available == 0
            or (s.requests_available is not None and s.requests_available < 1)
            or (s.tokens_available is not None and s.tokens_available < 1)
        )
        (later if blocked else ready).append(i)
    return ready + later
