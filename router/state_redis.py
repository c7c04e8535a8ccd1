"""Shared state in Redis: budgets, rate limits, concurrency caps and cooldowns that
hold across every process pointing at the same Redis and ``key_prefix``.

:class:`RedisState` is the second implementation of the router's state seam
(:mod:`router.state`); the chain walk is the same. Per attempt:

- :meth:`RedisState.begin` is local (the route's ``max_cost_usd``, a cooldown
  this process already knows of) and hands out a :class:`RedisTicket`;
- :meth:`RedisTicket.admit` is one round trip (the ``ADMIT`` script,
  :mod:`router.state_scripts`): cooldown and the half-open probe, the worst-case
  reservation against every matching budget, Retry-After, the request and token
  rates (GCRA, with the exact wait), and a concurrency slot — all or nothing;
- the settle, the release and the verdict on the provider are one more round
  trip (``FINISH``), sent in the background: the answer never waits for it, and
  the reservation keeps the worst case held until it lands.

Everything an attempt holds carries a lease (``lease_s``), renewed by one
background round trip per process (``SYNC``, at most every second) that also
reads every budget's spend and every provider's health, so :meth:`spend` and
:meth:`provider_state` answer without a round trip. A process killed with
``kill -9`` stops renewing: its reservations, slots and probe are reclaimed
within ``lease_s``.

When Redis does not answer within ``timeout_ms`` (or the attempt's share of the
deadline), the state is *unavailable* until a background check succeeds:
``on_unavailable: closed`` refuses paid steps (:class:`StateUnavailableError`)
and runs free ones under this process's own limits; ``local`` runs every step
under this process's own limits and a local account of the budgets (from the last
spend Redis reported), and adds the costs settled meanwhile to Redis when it
answers again (each once). See docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

from router.budget import (
    CLOSE_TIMEOUT_S,
    BudgetStatus,
    LedgerStatus,
    Refusal,
    period_bounds,
)
from router.config import BudgetConfig, StateSettings
from router.deadline import Clock
from router.errors import ProviderError, StateUnavailableError
from router.ledger import SqliteLedger
from router.limits import ProviderGate, readable_seconds
from router.logger import get_logger
from router.money import dollars, usd
from router.plan import Plan, ProviderPlan
from router.policy import rule_for
from router.redact import redact
from router.redis_link import Down, Late, RedisLink
from router.state import ProviderHandle, State, Ticket, record_failure
from router.state_scripts import ADMIT, FINISH, IMPORT, SYNC
from router.types import ProviderState, Skip, SkipKind

__all__ = ["RedisHandle", "RedisState", "RedisTicket", "from_nano", "to_nano"]

_log = get_logger("router.money")  # state_unavailable, state_recovered, ...
_cd_log = get_logger("router.providers")

Sleep = Callable[[float], Awaitable[None]]

_ZERO = Decimal(0)
_ONE = Decimal(1)
# Money in Redis: whole nano-dollars.
_NANO_EXP = 9
# How long a settled attempt's marker stays (a retried settle counts once within it).
MARKER_S = 600.0
# The background check: at most this long between two syncs while Redis answers,
# and between two reconnection tries while it does not.
SYNC_S = 1.0
RETRY_S = 0.25
# A full max_concurrency is looked at again after this long, doubling up to the max.
CONCURRENCY_POLL_S = 0.005
CONCURRENCY_POLL_MAX_S = 0.05

# Ticket modes.
_NEW, _SHARED, _LOCAL = 0, 1, 2


def to_nano(amount: Decimal) -> int:
    """``amount`` dollars in whole nano-dollars, rounded up (never under-counts)."""
    return int(amount.scaleb(_NANO_EXP).to_integral_value(ROUND_CEILING))


def from_nano(n: int) -> Decimal:
    """Whole nano-dollars as dollars, without trailing zeros (``0.00009``, ``0``)."""
    d = Decimal(n).scaleb(-_NANO_EXP).normalize()
    return d.quantize(_ONE) if d.as_tuple().exponent > 0 else d  # type: ignore[operator]


def display_url(url: str) -> str:
    """Where Redis is, for messages: scheme, host, port and database, never userinfo."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return redact(f"unix://{parts.path}")
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return redact(f"{parts.scheme}://{host}{port}{parts.path}")


def _period_id(period: str, wall: float) -> str:
    if period == "total":
        return "total"
    start = datetime.fromtimestamp(period_bounds(period, wall)[0], UTC)
    return start.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


class RedisHandle:
    """One provider in the Redis state: its keys, its limits, and a local gate that
    holds this process's view (cooldown, failures, Retry-After, in flight) and
    admits on its own when Redis is unavailable."""

    __slots__ = ("conc_key", "gate", "key", "name", "plan", "probing")

    def __init__(self, plan: ProviderPlan, prefix: str, gate: ProviderGate) -> None:
        self.name = plan.name
        self.plan = plan
        self.key = f"{prefix}:p:{plan.name}"
        self.conc_key = f"{prefix}:c:{plan.name}"
        self.gate = gate
        self.probing = False  # some process holds the half-open probe (last sync)

    def __repr__(self) -> str:
        return f"<RedisHandle {self.name}>"


@dataclass(slots=True)
class _Cost:
    """A settled cost Redis has not confirmed yet (added when it answers again)."""

    id: str
    nano: int
    budgets: tuple[str, ...]
    spent_keys: tuple[str, ...]
    handle: RedisHandle


class RedisTicket(Ticket):
    """One attempt's hold on the Redis state (or, while Redis is unavailable, on this
    process's fallback)."""

    __slots__ = (
        "amount",
        "budgets",
        "cost",
        "dirty",
        "done",
        "err",
        "handle",
        "id",
        "mode",
        "probe",
        "route",
        "running",
        "sent",
        "slot",
        "state",
        "verdict",
    )

    def __init__(
        self,
        state: RedisState,
        handle: RedisHandle,
        route: str,
        budgets: tuple[str, ...],
        amount: Decimal,
        est_in: int,
        max_tokens: int,
    ) -> None:
        self.est_in = est_in
        self.max_tokens = max_tokens
        self.reserved = amount
        self.state = state
        self.handle = handle
        self.route = route
        self.budgets = budgets
        self.amount = to_nano(amount)
        self.id = uuid4().hex
        self.mode = _NEW
        self.probe = False  # this attempt holds the half-open probe
        self.slot = False  # this attempt holds its provider slot (counted in flight)
        self.cost: int | None = None  # the settled cost, nano-dollars
        self.done = False  # settled or released: nothing more to bill or give back
        self.verdict: str = ""  # '', 'ok' or 'fail', not yet sent
        self.err: ProviderError | None = None
        self.dirty = False  # something to send (FINISH)
        self.running = False  # a FINISH task is running for this ticket
        self.sent = False  # the settle or release has gone to Redis

    def __repr__(self) -> str:
        mode = ("new", "shared", "local")[self.mode]
        return f"<RedisTicket {self.handle.name} {dollars(self.reserved)} {mode}>"

    def admit(self, tokens: int, wait_s: float) -> Awaitable[Skip | Refusal | None]:
        return self.state.admit(self, tokens, wait_s)

    def free_slot(self) -> None:
        if self.slot:
            self.slot = False
            gate = self.handle.gate
            if self.mode == _LOCAL:
                gate.release()
            else:
                gate.in_flight -= 1

    async def settle(self, cost: Decimal) -> None:
        self.settle_now(cost)

    def settle_now(self, cost: Decimal) -> bool:
        if self.done:
            raise RuntimeError(f"{self!r} settled or released twice")
        if cost < 0:
            raise ValueError(f"negative cost {cost}")
        self.done = True
        self.cost = to_nano(cost)
        self.state.settled(self)
        return True

    def release(self) -> None:
        self.free_slot()
        if not self.done:
            self.done = True
            self.state.released(self)
        if self.mode == _LOCAL and self.probe and self.handle.gate.probing:
            self.handle.gate.probing = False  # the probe ended without a verdict

    def succeeded(self) -> None:
        if self.mode == _LOCAL:
            self.handle.gate.succeeded()
            return
        gate = self.handle.gate
        if self.probe or gate.failures or gate.cooldown_until:
            self.verdict = "ok"
            gate.failures = 0
            gate.cooldown_until = 0.0
            self.state.send(self)

    def failed(self, err: ProviderError) -> None:
        if self.mode == _LOCAL:
            record_failure(self.handle.gate, err)
            return
        self.verdict = "fail"
        self.err = err
        if err.retry_after:  # known here at once; the others learn it from Redis
            gate = self.handle.gate
            gate.not_before = max(gate.not_before, self.state.clock() + err.retry_after)
        self.state.send(self)


class RedisState(State):
    """Budgets, limits and cooldowns shared through Redis (see the module docstring).

    Args:
        plan: a plan whose ``settings.state.backend`` is redis.
        clock, sleep: the monotonic clock and sleep of waits (tests drive them).
        wall: Unix epoch seconds (UTC): which budget period a cost belongs to.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if plan.state is None:
            raise ValueError("RedisState needs settings.state.backend: redis")
        settings: StateSettings = plan.state.settings
        if plan.state.url is None:
            raise StateUnavailableError(
                f"settings.state.backend is redis but environment variable"
                f" {settings.url_env} is not set: set it to the Redis URL"
            )
        self._url = plan.state.url
        self.where = display_url(self._url.get_secret_value())
        self.settings = settings
        self._prefix = "{" + settings.key_prefix + "}"
        self._res = f"{self._prefix}:res"
        self._leases = f"{self._prefix}:leases"
        self._reserved = f"{self._prefix}:reserved"
        self._timeout_s = settings.timeout_ms / 1000
        self._lease_ms = round(settings.lease_s * 1000)
        self._sync_s = min(SYNC_S, settings.lease_s / 3)
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._budgets: dict[str, BudgetConfig] = dict(plan.budgets)
        self._matching: dict[tuple[str, str], tuple[str, ...]] = {}
        # Per budget period: the current one's bounds (epoch seconds) and its key part.
        self._periods: dict[str, tuple[float, float, str]] = {}
        self._handles: dict[str, RedisHandle] = {}
        self.link = RedisLink(
            self._url,
            self.where,
            settings,
            {"admit": ADMIT, "finish": FINISH, "sync": SYNC},
            clock,
            self._wake_syncer,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._syncer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Tickets holding something in Redis whose lease this process renews.
        self._live: dict[str, RedisTicket] = {}
        # Costs settled that Redis has not confirmed, oldest first.
        self._pending: list[_Cost] = []
        # Per budget, in nano-dollars: settled spend and reservations as Redis last
        # reported them, costs not yet in Redis, and this process's fallback holds.
        self._spent: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._unsynced: dict[str, int] = {}
        self._local_held: dict[str, int] = {}
        self._reserved_total = 0  # this process's reservations (nano-dollars)
        self._closed = False
        self._reconciling = asyncio.Lock()

    def __repr__(self) -> str:
        state = "unavailable" if self.down is not None else "up"
        return f"<RedisState {self.where} prefix={self.settings.key_prefix!r} {state}>"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and read the current spend. Redis not answering does not fail the
        start: the state starts unavailable (logged) and reconnects on its own."""
        await self.connect()
        with contextlib.suppress(Down):
            await self.link.warm()
            await self._sync()
        self._syncer = asyncio.create_task(self._sync_loop())

    async def connect(self) -> None:
        """Create the client (no round trip yet); raises StateUnavailableError naming
        the ``[redis]`` extra when it is not installed."""
        self.link.connect()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._syncer is not None:
            self._syncer.cancel()
            await asyncio.gather(self._syncer, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.flush()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending:
            _log.error(
                "state_close_unsynced",
                redis=self.where,
                costs=len(self._pending),
                cost_usd=usd(from_nano(sum(c.nano for c in self._pending))),
                error=str(self.down) if self.down is not None else None,
            )
        await self.link.aclose()

    async def flush(self) -> None:
        """Wait until every settle sent so far has its answer, and the costs held while
        Redis was unavailable are in Redis (if it answers)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._pending and self.down is None:
            with contextlib.suppress(Down):
                await self._reconcile()

    # -- providers -------------------------------------------------------------------

    def provider(self, plan: ProviderPlan) -> RedisHandle:
        gate = ProviderGate(plan.name, plan.limits, plan.cooldown, self._clock, self._sleep)
        handle = RedisHandle(plan, self._prefix, gate)
        self._handles[plan.name] = handle
        return handle

    def provider_state(self, handle: ProviderHandle) -> ProviderState:
        assert isinstance(handle, RedisHandle)
        state = handle.gate.state()
        if self.down is None and handle.probing != state.probing:
            state = replace(state, probing=handle.probing)
        return state

    # -- one attempt -----------------------------------------------------------------

    def begin(
        self,
        handle: ProviderHandle,
        *,
        route: str,
        model: str,
        amount: Decimal,
        max_cost_usd: Decimal | None,
        est_in: int,
        max_tokens: int,
    ) -> RedisTicket | Skip | Refusal:
        h: RedisHandle = handle  # type: ignore[assignment]  # this state's own handles
        if amount < 0:
            raise ValueError(f"negative reservation {usd(amount)}")
        if max_cost_usd is not None and amount > max_cost_usd:
            return Refusal(
                f"routes.{route}.max_cost_usd", max_cost_usd, _ZERO, _ZERO, amount, max_cost=True
            )
        gate = h.gate
        if self.down is None and gate.cooldown_until:
            left = gate.cooldown_until - self._clock()
            if left > 0:  # known here (a verdict or the last sync): no round trip
                return Skip(SkipKind.COOLDOWN, f"cooling down for {left:.1f}s more")
        budgets = self._matching.get((route, h.name))
        if budgets is None:
            budgets = tuple(
                name
                for name, c in self._budgets.items()
                if (c.provider is None or c.provider == h.name)
                and (c.route is None or c.route == route)
            )
            self._matching[(route, h.name)] = budgets
        return RedisTicket(self, h, route, budgets, amount, est_in, max_tokens)

    @property
    def down(self) -> StateUnavailableError | None:
        """Why Redis is unavailable; None while it answers."""
        return self.link.down

    def _wake_syncer(self) -> None:
        self._wake.set()

    def clock(self) -> float:
        """The monotonic clock of waits (the one the router was given)."""
        return self._clock()

    def _spent_key(self, name: str, wall: float) -> str:
        period = self._budgets[name].period
        known = self._periods.get(period)
        if known is None or not known[0] <= wall < known[1]:
            start, end = period_bounds(period, wall)
            known = self._periods[period] = (start, end, _period_id(period, wall))
        return f"{self._prefix}:spent:{name}:{known[2]}"

    async def admit(self, t: RedisTicket, tokens: int, wait_s: float) -> Skip | Refusal | None:
        """:meth:`RedisTicket.admit`: one ADMIT round trip, then the wait it names."""
        start = self._clock()
        poll = CONCURRENCY_POLL_S
        while (down := self.down) is None:
            left = wait_s - (self._clock() - start)
            try:
                reply = await self._admit_shared(t, tokens, left)
            except Down as exc:
                down = exc.error
                break
            except Late:
                return Skip(
                    SkipKind.DEADLINE,
                    f"the shared state did not answer within this attempt's {left:.3f}s",
                )
            if int(reply[0]) == 6 and left > poll:
                # max_concurrency is full in some process: no queue spans processes,
                # so look again shortly (nothing is held meanwhile).
                await self._sleep(poll)
                poll = min(poll * 2, CONCURRENCY_POLL_MAX_S)
                continue
            return await self._admitted(t, reply, tokens, left)
        return await self._admit_local(t, tokens, wait_s - (self._clock() - start), down)

    async def _admit_shared(self, t: RedisTicket, tokens: int, wait_s: float) -> list[Any]:
        h = t.handle
        lim = h.plan.limits
        wall = self._wall()
        budgets = t.budgets if t.amount else ()
        keys = [self._res, self._leases, self._reserved, h.key, h.conc_key]
        args: list[Any] = [
            t.id,
            self._lease_ms,
            t.amount,
            max(math.floor(wait_s * 1000), 0),
            lim.requests_per_minute or 0,
            lim.tokens_per_minute or 0,
            tokens,
            lim.max_concurrency or 0,
            len(budgets),
        ]
        for name in budgets:
            keys.append(self._spent_key(name, wall))
            args += [name, to_nano(self._budgets[name].limit_usd)]
        # The attempt may hold something from here on (the reply may be lost): renew
        # and give back under its id.
        self._live[t.id] = t
        t.mode = _SHARED
        try:
            reply: list[Any] = await self._run("admit", keys, args, min(self._timeout_s, wait_s))
        except (Down, Late):
            t.mode = _NEW
            self._live.pop(t.id, None)  # what a lost reply reserved expires with its lease
            raise
        return reply

    async def _admitted(
        self, t: RedisTicket, reply: list[Any], tokens: int, wait_s: float
    ) -> Skip | Refusal | None:
        code = int(reply[0])
        h = t.handle
        if code != 0:
            t.mode = _NEW
            self._live.pop(t.id, None)
            return self._refused(t, code, reply, tokens, wait_s)
        wait = int(reply[1]) / 1000
        t.probe = bool(reply[2])
        h.gate.failures = int(reply[3])
        t.slot = True
        h.gate.in_flight += 1
        if t.amount:
            self._reserved_total += t.amount
        elif not t.probe and not h.plan.limits.max_concurrency:
            self._live.pop(t.id, None)  # holds nothing with a lease
        if wait > 0:
            await self._sleep(wait)
        return None

    def _refused(
        self, t: RedisTicket, code: int, reply: list[Any], tokens: int, wait_s: float
    ) -> Skip | Refusal:
        lim = t.handle.plan.limits
        if code == 1:
            left = int(reply[1])
            if left < 0:
                return Skip(SkipKind.COOLDOWN, "cooling down: a probe call is in flight")
            t.handle.gate.cooldown_until = self._clock() + left / 1000
            return Skip(SkipKind.COOLDOWN, f"cooling down for {left / 1000:.1f}s more")
        if code == 2:
            return Skip(
                SkipKind.RETRY_AFTER,
                f"provider asked to wait {readable_seconds(int(reply[1]) / 1000)}"
                " (Retry-After), past this attempt's share",
            )
        if code == 3:
            return Skip(
                SkipKind.TOKENS,
                f"request of ~{tokens} tokens exceeds tokens_per_minute={lim.tokens_per_minute}",
            )
        if code in (4, 5):
            what, kind = ("requests", SkipKind.RATE) if code == 4 else ("tokens", SkipKind.TOKENS)
            return Skip(
                kind,
                f"{what}_per_minute limit would need {int(reply[1]) / 1000:.2f}s,"
                f" only {max(wait_s, 0):.2f}s left",
            )
        if code == 6:
            return Skip(SkipKind.CONCURRENCY, f"max_concurrency={lim.max_concurrency} reached")
        name = t.budgets[int(reply[1]) - 1]
        spent, held = int(reply[2]), int(reply[3])
        self._spent[name], self._held[name] = spent, held
        return Refusal(
            name, self._budgets[name].limit_usd, from_nano(spent), from_nano(held), t.reserved
        )

    async def _admit_local(
        self, t: RedisTicket, tokens: int, wait_s: float, down: StateUnavailableError
    ) -> Skip | Refusal | None:
        """Redis is unavailable: refuse a paid step (closed), or admit on this
        process's own limits and budget account (local; free steps in both)."""
        if t.amount and self.settings.on_unavailable == "closed":
            return Refusal("state", _ZERO, _ZERO, _ZERO, t.reserved, state_error=down)
        gate = t.handle.gate
        skip = gate.unavailable()
        if skip is not None:
            return skip
        t.probe = gate.probing
        for name in t.budgets if t.amount else ():
            limit = to_nano(self._budgets[name].limit_usd)
            spent = self._spent.get(name, 0) + self._unsynced.get(name, 0)
            held = self._held.get(name, 0) + self._local_held.get(name, 0)
            if spent + held + t.amount > limit:
                if t.probe:
                    gate.probing = False
                return Refusal(
                    name,
                    self._budgets[name].limit_usd,
                    from_nano(spent),
                    from_nano(held),
                    t.reserved,
                )
        reason = await gate.take(tokens, wait_s)
        if reason is not None:
            if t.probe:
                gate.probing = False
            return reason
        t.mode = _LOCAL
        t.slot = True
        if t.amount:
            for name in t.budgets:
                self._local_held[name] = self._local_held.get(name, 0) + t.amount
            self._reserved_total += t.amount
        return None

    def _free_local(self, t: RedisTicket) -> None:
        if t.amount:
            for name in t.budgets:
                self._local_held[name] -= t.amount
            self._reserved_total -= t.amount

    # -- the end of an attempt -------------------------------------------------------

    def settled(self, t: RedisTicket) -> None:
        cost = t.cost
        assert cost is not None
        if t.mode == _LOCAL:
            self._free_local(t)
            if cost:
                self._queue_cost(t, cost)
            return
        self.send(t)

    def released(self, t: RedisTicket) -> None:
        if t.mode == _LOCAL:
            self._free_local(t)
        elif t.mode == _SHARED:
            self.send(t)

    def send(self, t: RedisTicket) -> None:
        """Send what ``t`` has to tell Redis (a FINISH), in the background."""
        if t.mode != _SHARED:
            return
        t.dirty = True
        if not t.running:
            t.running = True
            task = asyncio.get_running_loop().create_task(self._finish(t))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, t: RedisTicket) -> None:
        try:
            while t.dirty:
                t.dirty = False
                await self._finish_once(t)
        finally:
            t.running = False

    async def _finish_once(self, t: RedisTicket) -> None:
        h = t.handle
        verdict, err = t.verdict, t.err
        t.verdict, t.err = "", None
        holds = t.id in self._live
        bill = -2  # the verdict only: the attempt goes on, keeping what it holds
        if t.done and not t.sent:
            t.sent = True
            bill = t.cost if t.cost else -1
            if holds:
                self._live.pop(t.id, None)
                self._reserved_total -= t.amount
            elif bill == -1:
                bill = -2  # nothing held, nothing to bill
        if bill == -2 and not verdict:
            return
        wall = self._wall()
        spent_keys = [self._spent_key(n, wall) for n in t.budgets] if bill > 0 else []
        rule = rule_for(err.kind) if err is not None else None
        args: list[Any] = [
            t.id,
            bill,
            round(MARKER_S * 1000),
            verdict,
            int(rule is not None and rule.counts_failure),
            int(rule is not None and rule.cooldown_now),
            round((err.retry_after or 0) * 1000) if err is not None else 0,
            h.plan.cooldown.failures,
            round(h.plan.cooldown.seconds * 1000),
        ]
        keys = [self._res, self._leases, self._reserved, h.key, h.conc_key, *spent_keys]
        try:
            reply = await self._run("finish", keys, args, self._timeout_s)
        except Down:
            if bill > 0:
                self._queue_cost(t, bill, tuple(spent_keys))
            return
        if bill > 0 and int(reply[0]) == 1:
            for name in t.budgets:
                self._spent[name] = self._spent.get(name, 0) + bill
        h.gate.failures = int(reply[2])
        if int(reply[1]):
            self._cooldown_started(h, t.probe, err)

    def _cooldown_started(self, h: RedisHandle, probe: bool, err: ProviderError | None) -> None:
        seconds = h.plan.cooldown.seconds
        h.gate.cooldown_until = self._clock() + seconds
        rule = rule_for(err.kind) if err is not None else None
        if rule is not None and rule.cooldown_now:
            why = "its key was rejected (cools down at once)"
        elif probe:
            why = "the probe call after a cooldown failed"
        else:
            why = f"{h.plan.cooldown.failures} consecutive failures"
        from router.errors import short_error

        _cd_log.warning(
            "cooldown_started",
            provider=h.name,
            seconds=seconds,
            reason=why,
            error=None if err is None else short_error(err),
            shared=True,
        )

    def _queue_cost(self, t: RedisTicket, nano: int, keys: tuple[str, ...] = ()) -> None:
        if not keys:
            wall = self._wall()
            keys = tuple(self._spent_key(n, wall) for n in t.budgets)
        self._pending.append(_Cost(t.id, nano, t.budgets, keys, t.handle))
        for name in t.budgets:
            self._unsynced[name] = self._unsynced.get(name, 0) + nano

    # -- Redis -----------------------------------------------------------------------

    async def _run(
        self, script: str, keys: Sequence[str], args: Sequence[Any], timeout_s: float
    ) -> Any:
        return await self.link.run(script, keys, args, timeout_s)

    async def _sync_loop(self) -> None:
        while True:
            self._wake.clear()
            interval = self._sync_s if self.down is None else RETRY_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            with contextlib.suppress(Down):
                await self._sync()

    async def _sync(self) -> None:
        """One SYNC: renew leases, reclaim expired ones, read spend and health; the
        first after an outage also adds the costs held meanwhile."""
        handles = list(self._handles.values())
        index = {h.name: i + 1 for i, h in enumerate(handles)}
        ids: list[str] = []
        slots: list[Any] = []
        for tid, t in list(self._live.items()):
            if t.amount:
                ids.append(tid)
            if (t.slot or t.probe) and t.handle.name in index:
                slots += [index[t.handle.name], tid]
        wall = self._wall()
        names = list(self._budgets)
        keys = [
            self._res,
            self._leases,
            self._reserved,
            *(h.key for h in handles),
            *(h.conc_key for h in handles),
            *(self._spent_key(n, wall) for n in names),
        ]
        args = [self._lease_ms, len(handles), len(ids), *ids, len(slots) // 2, *slots, *names]
        reply = await self._run("sync", keys, args, self._timeout_s)
        if self.link.recovered():
            _log.warning("state_recovered", redis=self.where, pending=len(self._pending))
        budgets, providers = reply
        for name, (spent, held) in zip(names, budgets, strict=True):
            self._spent[name], self._held[name] = int(spent), int(held)
        now = self._clock()
        for h, (until, failures, probe, nb) in zip(handles, providers, strict=True):
            gate = h.gate
            gate.cooldown_until = now + int(until) / 1000 if int(until) else 0.0
            gate.failures = int(failures)
            gate.not_before = now + int(nb) / 1000 if int(nb) else 0.0
            h.probing = bool(probe)
        if self._pending:
            await self._reconcile()

    async def _reconcile(self) -> None:
        """Add the costs settled while Redis did not answer (each once: a cost whose
        settle did land is recognised by its id)."""
        async with self._reconciling:
            if not self._pending:
                return
            while self._pending:
                c = self._pending[0]
                keys = [self._res, self._leases, self._reserved, c.handle.key, c.handle.conc_key]
                args = [c.id, c.nano, round(MARKER_S * 1000), "", 0, 0, 0, 1, 0]
                reply = await self._run("finish", [*keys, *c.spent_keys], args, self._timeout_s)
                self._pending.pop(0)
                for name in c.budgets:
                    self._unsynced[name] -= c.nano
                    if int(reply[0]) == 1:
                        self._spent[name] = self._spent.get(name, 0) + c.nano
            _log.info("state_reconciled", redis=self.where)

    # -- money -----------------------------------------------------------------------

    async def prepare(self, plan: Plan) -> Callable[[], None]:
        budgets = dict(plan.budgets)

        def install() -> None:
            self._budgets = budgets
            self._matching.clear()

        return install

    def spend(self) -> list[BudgetStatus]:
        """Each budget in its current period: Redis's figures as of the last round trip
        (at most a second old), plus this process's costs Redis has not confirmed."""
        wall = self._wall()
        out = []
        for name, c in self._budgets.items():
            spent = from_nano(self._spent.get(name, 0) + self._unsynced.get(name, 0))
            held = from_nano(self._held.get(name, 0) + self._local_held.get(name, 0))
            start = period_bounds(c.period, wall)[0]
            out.append(
                BudgetStatus(
                    name=name,
                    period=c.period,
                    period_start=None
                    if c.period == "total"
                    else datetime.fromtimestamp(start, UTC),
                    limit_usd=c.limit_usd,
                    spent_usd=spent,
                    reserved_usd=held,
                    remaining_usd=max(c.limit_usd - spent - held, _ZERO),
                    provider=c.provider,
                    route=c.route,
                )
            )
        return out

    async def read_spend(self) -> list[BudgetStatus]:
        """:meth:`spend` after a round trip now (``router spend``).

        Raises:
            StateUnavailableError: Redis did not answer.
        """
        try:
            await self._sync()
        except Down as exc:
            raise exc.error from None
        return self.spend()

    def ledger_status(self) -> LedgerStatus:
        return LedgerStatus(
            pending=len(self._pending) + len(self._tasks),
            write_failures=self.link.failures,
            error=str(self.down) if self.down is not None else None,
        )

    @property
    def reserved_usd(self) -> Decimal:
        return from_nano(self._reserved_total)

    # -- migration -------------------------------------------------------------------

    async def import_sqlite(self, path: Path) -> dict[str, Decimal] | None:
        """Add a SQLite ledger's current-period total of every budget to Redis, once
        per ledger file (``path``, absolute): the amounts added, or None when this
        file was imported before.

        Raises:
            LedgerError: the file cannot be read as a ledger.
            StateUnavailableError: Redis did not answer.
        """
        ledger = SqliteLedger(path, read_only=True)
        await ledger.open()
        wall = self._wall()
        amounts: dict[str, Decimal] = {}
        try:
            for name, c in self._budgets.items():
                start = period_bounds(c.period, wall)[0]
                amounts[name] = await ledger.totals(start, provider=c.provider, route=c.route)
        finally:
            await ledger.close()
        marker = f"{self._prefix}:imported:{path}"
        keys = [marker, *(self._spent_key(n, wall) for n in amounts)]
        record = ",".join(f"{n}={usd(a)}" for n, a in amounts.items())
        args = [record, *(to_nano(a) for a in amounts.values())]
        try:
            done = await self.link.eval_once(IMPORT, keys, args, max(self._timeout_s, 5.0))
        except Down as exc:
            raise exc.error from None
        return amounts if int(done) else None
