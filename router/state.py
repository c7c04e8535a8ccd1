"""The router's state seam: everything that decides admission or money.

The chain walk (router.call, router.streaming) decides nothing about money or
provider health by itself: it asks a :class:`State`. Per attempt it calls
:meth:`State.begin` — cooldown check (taking the half-open probe), then a
worst-case budget reservation — and gets back a :class:`Ticket`, or the
:class:`~router.types.Skip` / :class:`~router.budget.Refusal` that says why the
step is skipped. The ticket then takes the provider slot (:meth:`Ticket.admit`:
Retry-After "not before", request and token rate, concurrency), records the
attempt's verdict (:meth:`Ticket.succeeded`, :meth:`Ticket.failed`) and gives
everything back (:meth:`Ticket.free_slot`, :meth:`Ticket.settle`,
:meth:`Ticket.release`, all safe to call more than once).

:class:`LocalState` is the in-process implementation: a
:class:`~router.limits.ProviderGate` per provider and one
:class:`~router.budget.BudgetBook` over the configured ledger (memory or
SQLite). A shared backend implements the same two classes; nothing in the
chain walk changes: :class:`~router.state_redis.RedisState` keeps all of it in
Redis for several processes (``settings.state.backend: redis``; chosen by
:func:`open_state`). See docs/operations.md, "State backends", and
docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Protocol

from router.budget import (
    BudgetBook,
    BudgetStatus,
    LedgerStatus,
    Refusal,
    Reservation,
    worst_case_usd,
)
from router.config import HedgeBudget
from router.deadline import Clock
from router.errors import ProviderError
from router.latency import LatencyBook, Observed
from router.ledger import open_ledger
from router.limits import ProviderGate
from router.plan import Plan, ProviderPlan
from router.policy import rule_for
from router.types import ProviderState, Skip

__all__ = [
    "LocalState",
    "LocalTicket",
    "ProviderHandle",
    "Refusal",
    "State",
    "Ticket",
    "open_state",
    "record_failure",
    "worst_case_usd",
]

Sleep = Callable[[float], Awaitable[None]]


class ProviderHandle(Protocol):
    """What a State hands out for one provider (opaque to the chain walk)."""

    @property
    def name(self) -> str: ...


class Ticket(ABC):
    """One attempt's hold on the State: its budget reservation and, once admitted,
    its provider slot.

    The chain walk reads the three figures the reservation was sized for (the
    attempt's reported usage is checked against them, router.billing) and
    calls the methods below. :meth:`free_slot` and :meth:`release` are
    idempotent, and release after a settle frees only what is still held;
    :meth:`settle` bills once (a second settle is a bug and raises, never a
    second charge).
    """

    __slots__ = ("est_in", "max_tokens", "reserved")

    def __init__(self, est_in: int, max_tokens: int, reserved: Decimal) -> None:
        self.est_in = est_in  # input tokens reserved for, the provider's overhead included
        self.max_tokens = max_tokens  # the output cap the request was sent with
        self.reserved = reserved  # the worst-case amount reserved

    @abstractmethod
    def admit(self, tokens: int, wait_s: float) -> Awaitable[Skip | Refusal | None]:
        """Take the provider slot for ``tokens``, waiting at most ``wait_s``: None when
        admitted, else why the attempt is skipped (nothing is held for it then). A
        State whose reservation needs a round trip (a shared one) may reserve here
        rather than in :meth:`State.begin`, and refuse with a Refusal."""

    def admit_now(self) -> bool:
        """Take the provider slot at once when nothing needs waiting for or accounting:
        True when admitted (as :meth:`admit` returning None), False to go through
        :meth:`admit`, nothing held. The default declines; a State whose admission
        can be synchronous saves the chain walk a coroutine per attempt."""
        return False

    def settle_now(self, cost: Decimal) -> bool:
        """:meth:`settle`, synchronously when the State can: True when settled, False
        (the default, nothing done) to await :meth:`settle`."""
        return False

    @abstractmethod
    def free_slot(self) -> None:
        """Give back the provider slot (the response is read; money is still held)."""

    @abstractmethod
    async def settle(self, cost: Decimal) -> None:
        """Replace the reservation by the billed cost (once; see BudgetBook.settle)."""

    @abstractmethod
    def release(self) -> None:
        """Give back whatever is still held, without billing (the attempt is over)."""

    @abstractmethod
    def succeeded(self) -> None:
        """The provider gave a valid answer: it is healthy (ends a cooldown probe)."""

    @abstractmethod
    def failed(self, err: ProviderError) -> None:
        """The attempt failed with ``err``: count it towards a cooldown as the outcome
        policy says for its kind (router.policy) and honour its Retry-After
        (``err.retry_after``, seconds) for later attempts."""


class State(ABC):
    """Admission and money for one Router, across reloads.

    Implementations must keep the promises the router documents: a reservation
    is atomic across every matching budget and never lets ``spent + reserved``
    pass a limit; settled cost counts at once; one half-open probe after a
    cooldown; a wait for admission never exceeds the caller's allowance.
    """

    # -- lifecycle -------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Open what the state needs (the ledger, a connection), in the router's loop."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close it; money settled but not yet recorded durably is written or reported."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every cost settled so far is recorded durably."""

    # -- providers -------------------------------------------------------------------

    @abstractmethod
    def provider(self, plan: ProviderPlan) -> ProviderHandle:
        """The handle for a provider built from ``plan``. Called when a provider's
        runtime is built (start, or a reload that added or changed it); a provider
        whose plan is unchanged by a reload keeps its handle, and so its state."""

    @abstractmethod
    def provider_state(self, handle: ProviderHandle) -> ProviderState:
        """A snapshot (cooldown, in flight, Retry-After, headroom); may be read from
        another thread."""

    # -- one attempt -----------------------------------------------------------------

    @abstractmethod
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
    ) -> Ticket | Skip | Refusal:
        """Start an attempt: a Skip when the provider is cooling down (this call may
        take the half-open probe), a Refusal when ``amount`` does not fit the route's
        ``max_cost_usd`` or a budget, else a Ticket holding the reservation."""

    # -- money -----------------------------------------------------------------------

    @abstractmethod
    async def prepare(self, plan: Plan) -> Callable[[], None]:
        """Get a reloaded plan's budgets ready (may wait); return the synchronous step
        that installs them. Spend is never reset or lost by a reload."""

    @abstractmethod
    def spend(self) -> list[BudgetStatus]:
        """Per budget: limit, spent, reserved and remaining for the current period."""

    @abstractmethod
    def ledger_status(self) -> LedgerStatus:
        """Costs waiting to be recorded, failed writes, the current write error."""

    @property
    @abstractmethod
    def reserved_usd(self) -> Decimal:
        """Money reserved by attempts in flight (0 when idle)."""

    # -- hedging and pools (router.hedge, router.pool) -----------------------------------
    # Concrete, in-process by default. The walk only writes through observe(),
    # started(), ended(), note_attempt() and take_hedge(), and reads observed(): a
    # shared backend overrides these to share latencies, pool health, load and hedge
    # budgets across processes (observed() then returns its merged view).

    _latency: LatencyBook | None = None

    def observed(self, handle: ProviderHandle) -> Observed:
        """What calls that hedge or use a pool have seen of the provider lately: recent
        latencies and failures, attempts in flight (router.latency). Read it only."""
        book = self._latency
        if book is None:
            book = self._latency = LatencyBook(time.monotonic)
        return book.get(handle.name)

    def observe(
        self, handle: ProviderHandle, latency_s: float, ttft_s: float | None, ok: bool
    ) -> None:
        """An attempt of a call that hedges or uses a pool ended with a verdict: its
        latency (and time to first token) and whether it succeeded."""
        self.observed(handle).add(latency_s, ttft_s, ok)

    def started(self, handle: ProviderHandle) -> None:
        """An attempt of a call that hedges or uses a pool is in flight (least_busy)."""
        self.observed(handle).in_flight += 1

    def ended(self, handle: ProviderHandle) -> None:
        """That attempt is over, however it ended."""
        self.observed(handle).in_flight -= 1

    def note_attempt(self, handle: ProviderHandle, budget: HedgeBudget) -> None:
        """An attempt of a hedging call was sent to the provider: the base its
        ``hedge_budget`` ratio is counted against."""
        self.observed(handle).note_attempt(self._hedge_now(), budget)

    def take_hedge(self, handle: ProviderHandle, budget: HedgeBudget) -> bool:
        """Whether a slow attempt on the provider may start a hedge now, within its
        ``hedge_budget``; True counts the hedge."""
        return self.observed(handle).take_hedge(self._hedge_now(), budget)

    def _hedge_now(self) -> float:
        book = self._latency
        return book.clock() if book is not None else time.monotonic()


class LocalTicket(Ticket):
    """:class:`LocalState`'s ticket: a gate slot and a BudgetBook reservation."""

    __slots__ = ("admitted", "book", "gate", "probe", "reservation", "settled")

    def __init__(
        self,
        gate: ProviderGate,
        book: BudgetBook,
        reservation: Reservation,
        probe: bool,
        est_in: int,
        max_tokens: int,
        reserved: Decimal,
    ) -> None:
        self.est_in = est_in
        self.max_tokens = max_tokens
        self.reserved = reserved
        self.gate = gate
        self.book = book
        self.reservation = reservation
        self.probe = probe  # this attempt is the half-open probe after a cooldown
        self.admitted = False  # holds a gate slot
        self.settled = False

    def admit_now(self) -> bool:
        # No rate, token or concurrency limit and no Retry-After: nothing to wait for.
        if self.gate.take_now():
            self.admitted = True
            return True
        return False

    async def admit(self, tokens: int, wait_s: float) -> Skip | None:
        gate = self.gate
        if gate.take_now():  # nothing to wait for or account: no coroutine for the gate
            self.admitted = True
            return None
        reason = await gate.take(tokens, wait_s)
        if reason is None:
            self.admitted = True
        elif gate.probing:
            gate.probing = False  # the probe never went out; let another call try
        return reason

    def free_slot(self) -> None:
        if self.admitted:
            self.admitted = False
            self.gate.release()

    async def settle(self, cost: Decimal) -> None:
        self.settle_now(cost)

    def settle_now(self, cost: Decimal) -> bool:
        self.settled = True
        self.book.settle_now(self.reservation, cost)  # queues the ledger write: no wait
        return True

    def release(self) -> None:
        self.free_slot()
        if not self.settled:
            self.settled = True
            self.book.release(self.reservation)
        if self.probe and self.gate.probing:
            self.gate.probing = False  # the probe ended without a verdict

    def succeeded(self) -> None:
        self.gate.succeeded()

    def failed(self, err: ProviderError) -> None:
        record_failure(self.gate, err)


def record_failure(gate: ProviderGate, err: ProviderError) -> None:
    """Count ``err`` on ``gate`` as the outcome policy says for its kind, and honour
    its Retry-After."""
    rule = rule_for(err.kind)
    retry_after = err.retry_after
    if rule.counts_failure or rule.cooldown_now:
        gate.failed(rule, retry_after, err)
    else:
        if retry_after:
            gate.failed(rule, retry_after)
        gate.reset_probe()  # the outcome said nothing about the provider's health


class LocalState(State):
    """In-process state: a ProviderGate per provider, one BudgetBook over the ledger.

    Per process and per event loop: two routers (or two processes) each keep
    their own limits, cooldowns and reservations; only settled spend is shared,
    through a ledger file (which admits one process, see router.ledger).

    Args:
        plan: the budgets and the ledger to open.
        clock, sleep: the monotonic clock and sleep the gates use (tests drive them).
    """

    def __init__(
        self, plan: Plan, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.book = BudgetBook(plan.budgets, open_ledger(plan.ledger))
        self._latency = LatencyBook(clock)
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<LocalState {self.book!r}>"

    async def start(self) -> None:
        await self.book.start()

    async def aclose(self) -> None:
        await self.book.aclose()

    async def flush(self) -> None:
        await self.book.flush()

    def provider(self, plan: ProviderPlan) -> ProviderGate:
        return ProviderGate(plan.name, plan.limits, plan.cooldown, self._clock, self._sleep)

    def provider_state(self, handle: ProviderHandle) -> ProviderState:
        assert isinstance(handle, ProviderGate)
        return handle.state()

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
    ) -> LocalTicket | Skip | Refusal:
        gate: ProviderGate = handle  # type: ignore[assignment]  # this state's own handles
        skip = gate.unavailable()
        if skip is not None:
            return skip
        probe = gate.probing
        reservation = self.book.reserve(
            route=route,
            provider=gate.name,
            model=model,
            amount=amount,
            max_cost_usd=max_cost_usd,
        )
        if isinstance(reservation, Refusal):
            if probe:
                gate.probing = False
            return reservation
        return LocalTicket(gate, self.book, reservation, probe, est_in, max_tokens, amount)

    async def prepare(self, plan: Plan) -> Callable[[], None]:
        return await self.book.prepare(plan.budgets)

    def spend(self) -> list[BudgetStatus]:
        return self.book.spend()

    def ledger_status(self) -> LedgerStatus:
        return self.book.ledger_status()

    @property
    def reserved_usd(self) -> Decimal:
        return self.book.reserved_total


def open_state(plan: Plan, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> State:
    """The State ``plan`` asks for: :class:`LocalState`, or the shared Redis state
    when ``settings.state.backend`` is redis (router.state_redis, imported only then)."""
    if plan.state is None:
        return LocalState(plan, clock=clock, sleep=sleep)
    from router.state_redis import RedisState

    return RedisState(plan, clock=clock, sleep=sleep)
