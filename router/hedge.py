"""The walk of a route that hedges or has a pool step (``Route.walker``).

It keeps the plain walk's rules (router.call: one deadline, each attempt capped at
its share, retries by the policy table, fallback_on, every attempt holding its own
ticket) and adds two things:

- **pools**: a ``pool:NAME`` step tries its members in the order the pool's
  strategy gives (router.pool); a retryable failure moves on to the next member at
  once, and only once every member has failed does the step retry (with backoff)
  or give up;
- **hedging**: each attempt runs as a lane (its own task, router.race). When the
  newest lane's step hedges (``hedge:``) and it has not answered after the delay
  (``after_s``, or ``after: pNN`` of its provider's recent latencies between
  ``min_s`` and ``max_s``), the next attempt — the pool's next member, else the
  next step — starts beside it, as long as fewer than ``1 + max_hedges`` lanes run
  and the slow provider's ``hedge_budget`` allows one more. The first success wins
  (streams: the first text delta); the others are cancelled at once, their
  connections closed, and billed their input estimate (a loser that had answered
  is billed what it reported). See docs/latency.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

from router.call import Call, Step, retry_limit
from router.errors import DeadlineExceededError, ProviderError
from router.policy import rule_for
from router.race import CURRENT_LANE, Lane, Race
from router.types import Skip

__all__ = ["hedged_walk"]


class _Cursor:
    """Where the walk is in its chain: the step, its members' order and its tries."""

    __slots__ = ("call", "index", "order", "pos", "prepared", "tries")

    def __init__(self, call: Call[Any]) -> None:
        self.call = call
        self.index = -1  # the current chain step
        self.order: list[Step] = []  # its members, in the order to try them
        self.prepared: dict[int, Any] = {}  # what each member is sent (by id)
        self.pos = 0  # the next member to try
        self.tries = 0  # retries of the step so far

    def _next_step(self) -> bool:
        call = self.call
        steps = call.route.steps
        while self.index + 1 < len(steps):
            self.index += 1
            step = steps[self.index]
            members = step.members or (step,)
            order = list(members)
            if step.picker is not None:
                idx = step.picker.order(members, call.rt.state, call.stream)
                order = [members[i] for i in idx]
            self.order = []
            self.prepared = {}
            for m in order:
                prepared = call.prepare(m)
                if isinstance(prepared, Skip):
                    call._skip(m, prepared, call.rt.clock())
                    continue
                self.order.append(m)
                self.prepared[id(m)] = prepared
            self.pos = 0
            self.tries = 0
            if self.order:
                return True
        return False

    def take(self) -> Step | None:
        """The next attempt's target: the step's next member, else the next step's first."""
        if self.pos >= len(self.order) and not self._next_step():
            return None
        step = self.order[self.pos]
        self.pos += 1
        return step

    def may_have_next(self) -> bool:
        """Whether :meth:`take` may give a target (a later step may still be skipped)."""
        return self.pos < len(self.order) or self.index + 1 < len(self.call.route.steps)

    def done_with_step(self) -> None:
        self.pos = len(self.order)


def _hedge_delay(call: Call[Any], step: Step) -> float | None:
    """Seconds after an attempt on ``step`` starts before it is hedged; None: never."""
    hedge = step.plan.hedge
    if hedge is None:
        return None
    if hedge.after_s is not None:
        return hedge.after_s
    q = hedge.quantile
    assert q is not None
    seen = call.rt.state.observed(step.provider.gate).quantile(q, call.stream)
    if seen is None:
        return hedge.max_s
    return min(max(seen, hedge.min_s), hedge.max_s)


async def _lane(call: Call[Any], lane: Lane, prepared: Any, steps_left: int) -> Any:
    """One attempt as a lane: run it, and tell the State what was seen of the provider."""
    CURRENT_LANE.set(lane)  # this task's own context
    step = lane.step
    state = call.rt.state
    request, max_tokens, worst = prepared
    outcome = await call._attempt(step, steps_left, request, max_tokens, worst, lane.t0)
    if isinstance(outcome, ProviderError):
        state.observe(step.provider.gate, call.rt.clock() - lane.t0, None, ok=False)
    elif outcome is not None:
        ttft = getattr(outcome, "ttft_s", None)  # a stream's first text delta
        state.observe(step.provider.gate, call.rt.clock() - lane.t0, ttft, ok=True)
    return outcome


async def hedged_walk(call: Call[Any]) -> Any:
    """Walk ``call``'s chain with pools and hedging (see the module doc)."""
    rt = call.rt
    deadline = call.deadline
    n = len(call.route.steps)
    race = call.race = Race()
    cursor = _Cursor(call)
    running: dict[asyncio.Task[Any], Lane] = {}
    newest: Lane | None = None  # the lane a hedge would be started beside
    hedge_at: float | None = None  # when to start it (call clock)
    pause = 0.0  # backoff before the next attempt when none is running

    def start(step: Step, hedged: bool) -> None:
        nonlocal newest, hedge_at
        t0 = rt.clock()
        lane = Lane(race, step, cursor.index, hedged, t0)
        race.started += 1
        if step.plan.hedge is not None:
            rt.state.note_attempt(step.provider.gate, step.provider.plan.hedge_budget)
        task = asyncio.create_task(_lane(call, lane, cursor.prepared[id(step)], n - cursor.index))
        running[task] = lane
        # In flight from now (least_busy orders the next call by it), until the task ends.
        gate = step.provider.gate
        rt.state.started(gate)
        task.add_done_callback(lambda _: rt.state.ended(gate))
        newest = lane
        delay = _hedge_delay(call, step)
        hedge_at = None if delay is None else t0 + delay

    def hedge() -> None:
        nonlocal hedge_at
        hedge_at = None
        slow = newest
        if slow is None or slow not in running.values():
            return
        plan = slow.step.plan.hedge
        if plan is None or len(running) > plan.max_hedges:
            return
        if rt.clock() >= deadline.end or not cursor.may_have_next():
            return
        # The budget first: a refused hedge must not move the walk on to the next step
        # (the slow attempt's own step keeps its retries).
        provider = slow.step.provider
        if not rt.state.take_hedge(provider.gate, provider.plan.hedge_budget):
            return
        step = cursor.take()
        if step is not None:
            start(step, hedged=True)

    try:
        while True:
            if rt.closed:
                raise call.closed_error()
            if not running:
                step = cursor.take()
                if step is None:
                    break
                if pause > 0:
                    await rt.sleep(pause)
                    pause = 0.0
                if rt.clock() >= deadline.end:
                    raise DeadlineExceededError(deadline.seconds, call.attempts, call.route.name)
                start(step, hedged=False)
            wait = None if hedge_at is None else max(0.0, hedge_at - rt.clock())
            done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                hedge()
                continue
            winner: Lane | None = None
            result: Any = None
            for task in done:
                lane = running.pop(task)
                outcome = task.result()  # a RouterError ends the call (others cancelled)
                if outcome is None:  # skipped (cooldown, limits, budget)
                    continue
                if not isinstance(outcome, ProviderError):
                    if call.stream and race.winner is None:
                        race.winner = lane  # the first text delta wins
                    if winner is None and race.winner is lane:
                        winner, result = lane, outcome
                    else:
                        await _discard(call, lane, outcome)
                    continue
                pause = _after_failure(call, cursor, lane, outcome, pause)
            if winner is not None:
                await _cancel(call, running, lost=True)
                return result
            if newest is not None and newest not in running.values() and running:
                # The newest lane ended: hedge timing follows the newest still running.
                newest = max(running.values(), key=lambda la: la.t0)
                delay = _hedge_delay(call, newest.step)
                hedge_at = None if delay is None else newest.t0 + delay
        raise call._failure()
    finally:
        # Leaving on an error or the caller's cancellation: the lanes still running
        # are released as a cancelled plain attempt is (docs/money.md).
        await _cancel(call, running, lost=False)


def _after_failure(
    call: Call[Any], cursor: _Cursor, lane: Lane, err: ProviderError, pause: float
) -> float:
    """What follows a failed lane: its pool's next member, a retry of its step after a
    pause (returned), or the next step; raises when fallback_on stops the call."""
    rule = rule_for(err.kind)
    if lane.index != cursor.index:  # the walk has moved past this step already
        call._give_up(err)
        return pause
    if rule.retry and cursor.pos < len(cursor.order):
        return 0.0  # the pool's next member, at once
    if not rule.retry or cursor.tries >= retry_limit(rule, lane.step.plan.retries):
        call._give_up(err)
        cursor.done_with_step()
        return 0.0
    cursor.tries += 1
    wait = call._pause(cursor.tries, err.retry_after) if rule.backoff else 0.0
    steps_left = len(call.route.steps) - cursor.index
    if not call.deadline.can_wait(wait, steps_left, call.rt.floor_s):
        call._give_up(err)
        cursor.done_with_step()
        return 0.0
    cursor.pos = 0  # the members again, in the same order
    return wait


async def _discard(call: Call[Any], lane: Lane, result: Any) -> None:
    """A success that came in with the winner's: closed and settled as a loser."""
    token = CURRENT_LANE.set(lane)
    try:
        await call.discard(result)
    finally:
        CURRENT_LANE.reset(token)


async def _cancel(call: Call[Any], running: dict[asyncio.Task[Any], Lane], lost: bool) -> None:
    """Cancel the lanes still running and wait for them. ``lost``: another lane won,
    so each is billed as sent and recorded ``cancelled``."""
    if not running:
        return
    lanes = list(running.items())
    running.clear()
    for task, lane in lanes:
        lane.lost = lost
        task.cancel()
    results = await asyncio.gather(*(t for t, _ in lanes), return_exceptions=True)
    for (_, lane), r in zip(lanes, results, strict=True):
        # A lane that answered just as it was cancelled: closed and settled as a loser.
        if r is not None and not isinstance(r, BaseException):
            await _discard(call, lane, r)
