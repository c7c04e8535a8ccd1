"""Money: exact cost from reported usage, and budgets enforced before sending.

Cost is :class:`~decimal.Decimal` arithmetic on the usage the provider reported
and the model's YAML prices (:func:`cost_usd`); nothing is estimated from
characters once a response has arrived.

Budgets are enforced with *reservations* (:class:`BudgetBook`). Before an
attempt is sent the router reserves its worst case (:func:`worst_case_usd`)
against every budget that matches the call's route and provider, atomically:
all of them or none. A budget admits a reservation only while
``spent + reserved + amount <= limit``, so concurrent calls in this process
cannot overspend it (a ledger file admits one process, see :mod:`router.ledger`).
When the response arrives the reservation is *settled* to the real cost, which
is added to ``spent`` at once and written durably to the ledger in the
background, in settlement order (ledger I/O never delays an answer; the
memory ledger, which cannot wait or fail, is written during the settle); when the
call fails before anything was billed it is *released*. Reservations are in
memory (one process, one event loop); settled spend is in the ledger
(:mod:`router.ledger`), and start-up loads the current period's spend from it.
A ledger that cannot write makes the book refuse paid reservations until it
writes again (fail closed); the costs it could not write yet stay counted in
memory and are retried in order.

Periods are UTC: ``day`` is the calendar day, ``month`` the calendar month,
``total`` never resets. See docs/money.md for the worked examples and the
exact guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from router.config import BudgetConfig, Price
from router.errors import LedgerError, StateUnavailableError
from router.ledger import Ledger, MemoryLedger, NoLedger
from router.logger import get_logger
from router.money import dollars, usd
from router.types import SkipKind, Usage

__all__ = [
    "BudgetBook",
    "BudgetStatus",
    "LedgerStatus",
    "Refusal",
    "Reservation",
    "SettledCost",
    "cost_usd",
    "worst_case_usd",
]

log = get_logger("router.money")

_ZERO = Decimal(0)
# How long aclose() waits for the ledger to write the costs still pending.
CLOSE_TIMEOUT_S = 5.0
# After a failed ledger write, the first retry waits this long; each further failure
# doubles the wait, up to _RETRY_CAP times it.
RETRY_S = 1.0
_RETRY_CAP = 5
# Most settled costs handed to the ledger in one write.
_BATCH = 500
# Prices are per million tokens.
_PER_MTOK = -6


def cost_usd(usage: Usage, price: Price) -> Decimal:
    """The exact cost of one response, from the usage the provider reported (tokens,
    and server-side tool calls at the model's ``price.per_call``).

    ``usage.input_tokens`` counts every prompt token, cached or not (the adapters
    normalise every provider to that convention); the cached and cache-write
    parts are billed at their own prices and the rest at the input price.
    ``output_tokens`` includes reasoning tokens, billed at the output price::

        ((input - cached - cache_write) * input_price
         + cached * cached_input_price + cache_write * cache_write_price
         + output * output_price) / 1_000_000

    A missing cached or cache-write price means the input price. The result is
    exact (Decimal, no rounding) for any realistic price and token count.

    Raises:
        ValueError: the usage is inconsistent (a negative count, or cache parts
            larger than the input they are part of); billing a guess would be
            worse than failing loudly.
    """
    cached = usage.cached_input_tokens
    written = usage.cache_write_tokens
    uncached = usage.input_tokens - cached - written
    if uncached < 0 or cached < 0 or written < 0 or usage.output_tokens < 0:
        raise ValueError(f"inconsistent usage: {usage!r}")
    cached_price = price.input_per_mtok
    if price.cached_input_per_mtok is not None:
        cached_price = price.cached_input_per_mtok
    write_price = price.input_per_mtok
    if price.cache_write_per_mtok is not None:
        write_price = price.cache_write_per_mtok
    total = uncached * price.input_per_mtok + usage.output_tokens * price.output_per_mtok
    if cached:
        total += cached * cached_price
    if written:
        total += written * write_price
    cost = total.scaleb(_PER_MTOK)
    if usage.server_tool_calls:
        cost += server_calls_usd(usage.server_tool_calls, price)
    return cost


def server_calls_usd(calls: Mapping[str, int], price: Price) -> Decimal:
    """The cost of server-side tool calls: each at the model's ``price.per_call`` for
    its tool (a tool without a per-call price costs nothing: the loader requires one
    for every tool a model is given)."""
    total = Decimal(0)
    for name, count in calls.items():
        if count < 0:
            raise ValueError(f"inconsistent usage: {count} {name} calls")
        total += count * price.per_call.get(name, _ZERO)  # type: ignore[call-overload]
    return total


def worst_case_usd(input_tokens: int, max_tokens: int, price: Price) -> Decimal:
    """The most one attempt may cost: estimated input plus ``max_tokens`` of output.

    The input side uses the highest input-side price the model has (the cache
    write price when it is above the input price, as Anthropic's is), since the
    provider may write the whole prompt to its cache.
    """
    if input_tokens < 0 or max_tokens < 0:
        raise ValueError("token counts must be >= 0")
    input_price = price.input_per_mtok
    if price.cache_write_per_mtok is not None and price.cache_write_per_mtok > input_price:
        input_price = price.cache_write_per_mtok
    if price.cached_input_per_mtok is not None and price.cached_input_per_mtok > input_price:
        input_price = price.cached_input_per_mtok
    return (input_tokens * input_price + max_tokens * price.output_per_mtok).scaleb(_PER_MTOK)


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The UTC period containing ``now``: (start, end) as epoch seconds.

    ``total`` is (0, +inf): it never rolls over.
    """
    if period == "total":
        return 0.0, float("inf")
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    elif period == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        end = start.replace(year=year, month=month)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return start.timestamp(), end.timestamp()


class _Budget:
    """Live state of one budget in the current period."""

    __slots__ = ("config", "end", "name", "reserved", "spent", "start")

    def __init__(self, name: str, config: BudgetConfig) -> None:
        self.name = name
        self.config = config
        # Settled spend in the current period (from the ledger at start, then ours).
        self.spent = _ZERO
        # Sum of this budget's outstanding reservations (carried across a rollover:
        # they will settle in the new period).
        self.reserved = _ZERO
        # The current period, epoch seconds [start, end).
        self.start = 0.0
        self.end = float("-inf")

    def roll(self, now: float) -> None:
        """Move to the period containing ``now`` if it has ended (spent restarts at 0)."""
        if now >= self.end:
            self.start, self.end = period_bounds(self.config.period, now)
            self.spent = _ZERO

    def matches(self, route: str, provider: str) -> bool:
        c = self.config
        return (c.provider is None or c.provider == provider) and (
            c.route is None or c.route == route
        )

    def __repr__(self) -> str:
        return (
            f"<budget {self.name!r} {self.config.period} limit={dollars(self.config.limit_usd)}"
            f" spent={dollars(self.spent)} reserved={dollars(self.reserved)}>"
        )


@dataclass(slots=True, eq=False)
class Reservation:
    """A worst-case amount held against budgets until it is settled or released.

    Opaque to the router: pass it back to :meth:`BudgetBook.settle` or
    :meth:`BudgetBook.release`, exactly once.
    """

    amount: Decimal
    route: str
    provider: str
    model: str
    # The budgets holding ``amount``; empty when no budget matches the call.
    budgets: tuple[_Budget, ...]
    # True once settled or released; the amount is no longer held.
    done: bool = False

    def __repr__(self) -> str:
        names = ",".join(b.name for b in self.budgets) or "-"
        state = " done" if self.done else ""
        return (
            f"<Reservation {dollars(self.amount)} {self.route} {self.provider}/{self.model}"
            f" budgets={names}{state}>"
        )


@dataclass(slots=True, frozen=True)
class Refusal:
    """Why a reservation was refused: the first budget that could not take it."""

    budget: str
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    requested_usd: Decimal
    # Set when the refusal is not about money left but a ledger that cannot write.
    ledger_error: LedgerError | None = None
    # The route's own max_cost_usd refused it (not a budget).
    max_cost: bool = False
    # Set when the shared state (Redis) cannot be reached and paid steps are refused.
    state_error: StateUnavailableError | None = None

    @property
    def kind(self) -> SkipKind:
        """The skip kind the router records for this refusal."""
        if self.ledger_error is not None:
            return SkipKind.LEDGER
        if self.state_error is not None:
            return SkipKind.STATE
        return SkipKind.MAX_COST if self.max_cost else SkipKind.BUDGET

    @property
    def reason(self) -> str:
        """One line naming the budget and its figures (for Attempt.reason and errors)."""
        if self.ledger_error is not None:
            return (
                f"budget ledger cannot record spend, paid steps are refused until it"
                f" writes again ({self.ledger_error})"
            )
        if self.state_error is not None:
            return f"shared state unavailable, paid steps are refused ({self.state_error})"
        left = max(self.limit_usd - self.spent_usd - self.reserved_usd, _ZERO)
        return (
            f"budget {self.budget!r}: needs {dollars(self.requested_usd)}, {dollars(left)} left"
            f" (limit {dollars(self.limit_usd)}, spent {dollars(self.spent_usd)},"
            f" reserved {dollars(self.reserved_usd)})"
        )


@dataclass(slots=True, frozen=True)
class SettledCost:
    """One settled cost on its way to the ledger (or reported as not written)."""

    ts: float  # Unix epoch seconds (UTC) of the settlement
    route: str
    provider: str
    model: str
    cost: Decimal


def _ledger_path(ledger: Ledger) -> str | None:
    """A file ledger's path (for LedgerError.path); None for one in memory."""
    path = getattr(ledger, "path", None)
    return None if path is None else str(path)


def _identity(name: str, config: BudgetConfig) -> tuple[str, str, str | None, str | None]:
    """What makes a budget the same budget across reloads (its limit may change)."""
    return name, config.period, config.provider, config.route


@dataclass(slots=True, frozen=True)
class BudgetStatus:
    """One budget in its current period (what ``router.spend()`` reports)."""

    name: str
    period: str
    period_start: datetime | None  # None for ``total``
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal  # limit - spent - reserved, never below 0
    provider: str | None
    route: str | None


@dataclass(slots=True, frozen=True)
class LedgerStatus:
    """The spend ledger's write state (what ``router.ledger_status()`` reports)."""

    pending: int  # settled costs not yet confirmed written
    write_failures: int  # failed writes since start (each failing retry counts)
    error: str | None  # the last write's error while the ledger is failing; None when it writes


class BudgetBook:
    """Every budget's live state, and the only way to spend against them.

    Bound to one event loop: :meth:`reserve` is synchronous, so the check and the
    update of every matching budget happen with no await in between, which is
    what makes concurrent calls unable to overspend (within this process: each
    process keeps its own reservations, which is why a ledger file is refused to
    a second process, see :class:`~router.ledger.SqliteLedger`).

    Settled costs count in memory at once and are written to the ledger by one
    background task, in settlement order; a failed write is retried (the cost
    stays counted and queued) and, until a write succeeds again, paid
    reservations are refused with the ledger's error.

    Args:
        budgets: ``config.budgets``, by name.
        ledger: where settled spend is recorded and read back at start.
        clock: Unix epoch seconds (UTC); injectable for tests.
        retry_s: the wait before retrying a failed ledger write (doubling after
            each further failure, up to 5 times this).
    """

    def __init__(
        self,
        budgets: Mapping[str, BudgetConfig],
        ledger: Ledger,
        *,
        clock: Callable[[], float] = time.time,
        retry_s: float = RETRY_S,
    ) -> None:
        self._budgets = tuple(_Budget(name, cfg) for name, cfg in budgets.items())
        self._ledger = ledger
        # The memory ledger and no ledger (exactly: a subclass may wait or fail) are
        # written at the settle itself, when nothing is queued before the cost: no
        # writer wake-up.
        self._record_now = (
            ledger.record_now if type(ledger) is MemoryLedger or type(ledger) is NoLedger else None
        )
        self._clock = clock
        self._retry_s = retry_s
        # The budgets that apply to a (route, provider) pair, computed once per pair.
        self._matching: dict[tuple[str, str], tuple[_Budget, ...]] = {}
        # Sum and count of outstanding reservations, budgeted or not (leak checks).
        self._reserved_total = _ZERO
        self._outstanding = 0
        # The outstanding reservations themselves: a reload re-attaches them to the
        # budgets that are live after it (an ordered set).
        self._open: dict[Reservation, None] = {}
        # True between a successful start() and aclose().
        self._started = False
        # Settled costs not yet written to the ledger, oldest first. A batch being
        # written stays here until the write has succeeded.
        self._queue: deque[SettledCost] = deque()
        # Held while a batch is written, and while a reload reads the ledger: so
        # "in the ledger" and "in the queue" never overlap and never miss a cost.
        self._io = asyncio.Lock()
        # Set when the queue has something to write; set when it is empty.
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._writer: asyncio.Task[None] | None = None
        # How many queued costs (from the front) are being written right now.
        self._in_flight = 0
        # Set by aclose(): a failed write then ends the wait instead of backing off.
        self._closing = False
        # Cuts the writer's back-off short (aclose() retries a failing ledger at once).
        self._retry_now = asyncio.Event()
        # Costs settled while a reload reads the ledger (see prepare()).
        self._tracking: list[SettledCost] | None = None
        # The last write's error while the ledger is failing; None when it writes.
        self.ledger_error: LedgerError | None = None
        # Failed ledger writes since start (each retry that fails counts).
        self.write_failures = 0

    def __repr__(self) -> str:
        return (
            f"<BudgetBook budgets={len(self._budgets)} outstanding={self._outstanding}"
            f" reserved={dollars(self._reserved_total)} pending_writes={len(self._queue)}"
            f" ledger={self._ledger!r}>"
        )

    async def start(self) -> None:
        """Open the ledger and load each budget's spend in its current period.

        Raises:
            LedgerError: the ledger cannot be opened or read (with its path and
                the cause); spend is never silently taken as zero.
        """
        await self._ledger.open()
        now = self._clock()
        try:
            for b in self._budgets:
                b.roll(now)
                b.spent = await self._load(b)
        except BaseException:
            await self._ledger.close()
            raise
        self._started = True
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _load(self, b: _Budget) -> Decimal:
        """A budget's spend in its current period, as the ledger has it."""
        try:
            return await self._ledger.totals(
                b.start, provider=b.config.provider, route=b.config.route
            )
        except LedgerError:
            raise
        except Exception as exc:
            raise LedgerError(
                f"spend ledger {self._ledger!r}: cannot load spend for budget"
                f" {b.name!r}: {type(exc).__name__}: {exc}"
            ) from exc

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> list[SettledCost]:
        """Write the settled costs still pending (waiting at most ``timeout_s``; a
        ledger that is failing gets one immediate retry, not the whole wait), then
        close the ledger. Outstanding reservations are simply dropped.

        Returns:
            The costs the ledger did not confirm in time, oldest first (also logged
            at error as ``ledger_unwritten``, with each row, for reconciliation;
            ``maybe_written`` counts the first rows that were being written when
            the wait ran out, which the ledger may still have committed).
        """
        self._started = False
        deadline = time.monotonic() + timeout_s
        self._closing = True
        self._retry_now.set()
        if self._writer is not None:
            if self._queue:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), timeout_s)
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        unwritten = list(self._queue)
        in_flight, self._in_flight = self._in_flight, 0
        self._queue.clear()
        if unwritten:
            log.error(
                "ledger_unwritten",
                ledger=repr(self._ledger),
                rows=len(unwritten),
                # The first rows were being written when the wait ran out: the ledger
                # may still have committed them (check it before re-entering them).
                maybe_written=in_flight,
                cost_usd=usd(sum((c.cost for c in unwritten), _ZERO)),
                error=str(self.ledger_error) if self.ledger_error is not None else None,
                entries=[
                    {
                        "ts": c.ts,
                        "route": c.route,
                        "provider": c.provider,
                        "model": c.model,
                        "cost_usd": usd(c.cost),
                    }
                    for c in unwritten
                ],
            )
        # The ledger finishes its own in-flight write before closing; bounded too.
        closing = asyncio.ensure_future(self._ledger.close())
        try:
            await asyncio.wait_for(asyncio.shield(closing), max(deadline - time.monotonic(), 0.05))
        except TimeoutError:
            log.error("ledger_close_timeout", ledger=repr(self._ledger), timeout_s=timeout_s)
        return unwritten

    async def flush(self) -> None:
        """Wait until every cost settled so far is written (tests, shutdown hooks)."""
        await self._drained.wait()

    @property
    def pending_writes(self) -> int:
        """Settled costs not yet confirmed written by the ledger."""
        return len(self._queue)

    def ledger_status(self) -> LedgerStatus:
        """Pending writes, failed writes and the current write error."""
        err = self.ledger_error
        return LedgerStatus(
            len(self._queue), self.write_failures, None if err is None else str(err)
        )

    async def _write_loop(self) -> None:
        """The one writer: hands queued costs to the ledger in order, retries failures."""
        failures = 0
        while True:
            if not self._queue:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            async with self._io:
                batch = [self._queue[i] for i in range(min(len(self._queue), _BATCH))]
                self._in_flight = len(batch)
                results = await self._record(batch)
                self._in_flight = 0
                for _ in batch:
                    self._queue.popleft()
                failed = [c for c, r in zip(batch, results, strict=True) if r is not None]
                self._queue.extendleft(reversed(failed))
            errors = [r for r in results if isinstance(r, BaseException)]
            if not errors:
                failures = 0
                if self.ledger_error is not None:
                    log.warning(
                        "ledger_recovered", ledger=repr(self._ledger), pending=len(self._queue)
                    )
                    self.ledger_error = None
                continue
            first = errors[0]
            if isinstance(first, KeyboardInterrupt | SystemExit):
                raise first
            # Anything else (a backend's own cancellation included: this task was not
            # cancelled, or gather would have raised) is a failed write, retried.
            error = (
                first
                if isinstance(first, LedgerError)
                else LedgerError(
                    f"spend ledger {self._ledger!r}: cannot record spend:"
                    f" {type(first).__name__}: {first}",
                    path=_ledger_path(self._ledger),
                )
            )
            repeated = self.ledger_error is not None and str(self.ledger_error) == str(error)
            self.ledger_error = error
            self.write_failures += 1
            failures += 1
            wait = min(self._retry_s * 2 ** (failures - 1), self._retry_s * _RETRY_CAP)
            # At error when the ledger starts failing (or fails differently); the
            # retries of the same failure are counted (write_failures), not logged.
            (log.debug if repeated else log.error)(
                "ledger_write_failed",
                ledger=repr(self._ledger),
                error=str(error),
                failed_rows=len(failed),
                pending=len(self._queue),
                pending_usd=usd(sum((c.cost for c in self._queue), _ZERO)),
                retry_in_s=wait,
            )
            if self._closing:
                self._drained.set()  # one last try failed: aclose() reports the rest
                return
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), wait)

    async def _record(self, batch: list[SettledCost]) -> list[BaseException | None]:
        """Hand ``batch`` to the ledger: per cost, None or what its write raised."""
        record = self._ledger.record
        if len(batch) > 1 and self._record_now is None:
            # All at once: a file ledger writes what arrives together in one transaction.
            return await asyncio.gather(
                *(
                    record(ts=c.ts, route=c.route, provider=c.provider, model=c.model, cost=c.cost)
                    for c in batch
                ),
                return_exceptions=True,
            )
        # One cost (the usual case at moderate rates), or the memory ledger, whose
        # writes never wait: awaited in turn here, without the task gather makes per
        # cost (~3-8 us each), with the same outcomes.
        results: list[BaseException | None] = []
        for c in batch:
            try:
                await record(
                    ts=c.ts, route=c.route, provider=c.provider, model=c.model, cost=c.cost
                )
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this writer was cancelled, as gather would have raised
                results.append(exc)  # the backend's own cancellation: a failed write
            except BaseException as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    async def prepare(self, budgets: Mapping[str, BudgetConfig]) -> Callable[[], None]:
        """Get a reloaded config's budgets ready; return the synchronous step that installs them.

        A budget keeps its live state (spend) when its identity — name, period and
        scope — is unchanged; a changed limit applies from the install. Any other
        budget loads its period's spend from the ledger now, plus every cost
        settled but not yet written (and every cost settled while this reads), so
        a reload never resets or loses spend. At the install every outstanding
        reservation is counted in each new budget it matches, whichever budgets
        admitted it: re-scoping a budget, or removing and re-adding it, while
        calls are in flight keeps their money reserved until they settle.
        """
        current = {_identity(b.name, b.config): b for b in self._budgets}
        now = self._clock()
        plan: list[tuple[_Budget, BudgetConfig]] = []
        fresh: list[_Budget] = []
        for name, cfg in budgets.items():
            b = current.get(_identity(name, cfg))
            if b is None:
                b = _Budget(name, cfg)
                b.roll(now)
                fresh.append(b)
            plan.append((b, cfg))
        # What is in the ledger, and what is not yet: read with no write in progress,
        # then follow what settles until the install.
        pending: list[SettledCost] = []
        tracked: list[SettledCost] = []
        if fresh:
            async with self._io:
                pending = list(self._queue)
                self._tracking = tracked
                try:
                    for b in fresh:
                        b.spent = await self._load(b)
                except BaseException:
                    self._tracking = None
                    raise

        def install() -> None:
            if self._tracking is tracked:
                self._tracking = None
            for b in fresh:
                b.spent += sum(
                    (
                        c.cost
                        for c in (*pending, *tracked)
                        if c.ts >= b.start and b.matches(c.route, c.provider)
                    ),
                    _ZERO,
                )
            for b, cfg in plan:
                b.config = cfg
            self._budgets = tuple(b for b, _ in plan)
            self._matching.clear()
            for b in self._budgets:
                b.reserved = _ZERO
            for r in self._open:
                r.budgets = self._budgets_for(r.route, r.provider)
                for b in r.budgets:
                    b.reserved += r.amount

        return install

    def _budgets_for(self, route: str, provider: str) -> tuple[_Budget, ...]:
        key = (route, provider)
        found = self._matching.get(key)
        if found is None:
            found = tuple(b for b in self._budgets if b.matches(route, provider))
            self._matching[key] = found
        return found

    def reserve(
        self,
        *,
        route: str,
        provider: str,
        model: str,
        amount: Decimal,
        max_cost_usd: Decimal | None = None,
    ) -> Reservation | Refusal:
        """Hold ``amount`` against every matching budget, or refuse without holding any.

        Synchronous and atomic on the event loop. A budget admits the amount while
        ``spent + reserved + amount <= limit``; a zero amount (a free model) is
        always admitted, so a chain can fall back to it when money is gone.

        Args:
            route, provider, model: the attempt; budgets match on route and provider.
            amount: the attempt's worst-case cost (:func:`worst_case_usd`).
            max_cost_usd: the route's per-call cap, checked first; refused with
                budget name ``routes.<route>.max_cost_usd``.

        Returns:
            A Reservation to settle or release, or the Refusal of the first
            budget that cannot take it.
        """
        if not self._started:
            raise RuntimeError("BudgetBook.reserve() before start()")
        if amount < 0:
            raise ValueError(f"negative reservation {usd(amount)}")
        if max_cost_usd is not None and amount > max_cost_usd:
            return Refusal(
                f"routes.{route}.max_cost_usd", max_cost_usd, _ZERO, _ZERO, amount, max_cost=True
            )
        if amount and self.ledger_error is not None:
            # Fail closed: spend that cannot be recorded durably is not made.
            return Refusal("ledger", _ZERO, _ZERO, _ZERO, amount, self.ledger_error)
        budgets = self._matching.get((route, provider))
        if budgets is None:
            budgets = self._budgets_for(route, provider)
        if budgets:
            now = self._clock()
            for b in budgets:
                if now >= b.end:
                    b.roll(now)
                if amount and b.spent + b.reserved + amount > b.config.limit_usd:
                    return Refusal(b.name, b.config.limit_usd, b.spent, b.reserved, amount)
            for b in budgets:
                b.reserved += amount
        self._reserved_total += amount
        self._outstanding += 1
        reservation = Reservation(amount, route, provider, model, budgets)
        self._open[reservation] = None
        return reservation

    def _free(self, r: Reservation) -> None:
        r.done = True
        self._open.pop(r, None)
        for b in r.budgets:
            b.reserved -= r.amount
        self._reserved_total -= r.amount
        self._outstanding -= 1

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Replace the reservation by the real cost: in memory now, in the ledger soon.

        Returns without waiting for the ledger: the cost counts in every matching
        budget at once (admission stays exact) and is queued for the background
        writer, which records costs in settlement order and retries a failed
        write (see :attr:`ledger_error`). Nothing here waits for a disk, so a
        paid answer is never delayed or lost by the ledger.

        ``actual`` is recorded as billed even when it exceeds the reservation
        (the input estimate was low); the budget can then end above its limit
        by that estimate error, and further reservations are refused. The cost
        counts in the period in which it is settled.

        Raises:
            RuntimeError: the reservation was already settled or released.
        """
        self.settle_now(reservation, actual)

    def settle_now(self, reservation: Reservation, actual: Decimal) -> None:
        """:meth:`settle`, synchronously: nothing in it waits (the ledger write is
        queued), and the router's own ticket saves a coroutine per call with it."""
        if reservation.done:
            raise RuntimeError(f"{reservation!r} settled or released twice")
        if actual < 0:
            raise ValueError(f"negative cost {actual}")
        self._free(reservation)
        now = self._clock()
        for b in reservation.budgets:
            if now >= b.end:
                b.roll(now)
            b.spent += actual
        if actual > reservation.amount:
            log.warning(
                "settled_above_reservation",
                route=reservation.route,
                provider=reservation.provider,
                model=reservation.model,
                reserved_usd=usd(reservation.amount),
                cost_usd=usd(actual),
            )
        tracking = self._tracking  # a reload reading the ledger: it sees this cost too
        record_now = self._record_now
        if (
            record_now is not None
            and not self._queue
            and self._writer is not None
            and not self._io.locked()
        ):
            # Written before the settle returns, in order (nothing queued before it, no
            # reload reading): pending stays 0 and flush() has nothing to wait for. No
            # SettledCost is built unless something tracks it.
            record_now(now, reservation.route, reservation.provider, reservation.model, actual)
            if tracking is not None:
                tracking.append(self._settled(reservation, now, actual))
            return
        cost = self._settled(reservation, now, actual)
        if tracking is not None:
            tracking.append(cost)
        self._queue.append(cost)
        self._drained.clear()
        self._wake.set()
        if self._writer is None:
            log.error(
                "ledger_closed_settle",
                route=cost.route,
                provider=cost.provider,
                model=cost.model,
                cost_usd=usd(cost.cost),
            )

    @staticmethod
    def _settled(reservation: Reservation, now: float, actual: Decimal) -> SettledCost:
        return SettledCost(now, reservation.route, reservation.provider, reservation.model, actual)

    def release(self, reservation: Reservation) -> None:
        """Give the reservation back without recording anything (nothing was billed).

        Idempotent: releasing a settled or released reservation does nothing, so
        ``finally: book.release(r)`` after a settle is safe.
        """
        if not reservation.done:
            self._free(reservation)

    def spend(self) -> list[BudgetStatus]:
        """Each budget in its current period, in config order."""
        now = self._clock()
        out = []
        for b in self._budgets:
            b.roll(now)
            c = b.config
            out.append(
                BudgetStatus(
                    name=b.name,
                    period=c.period,
                    period_start=None
                    if c.period == "total"
                    else datetime.fromtimestamp(b.start, UTC),
                    limit_usd=c.limit_usd,
                    spent_usd=b.spent,
                    reserved_usd=b.reserved,
                    remaining_usd=max(c.limit_usd - b.spent - b.reserved, _ZERO),
                    provider=c.provider,
                    route=c.route,
                )
            )
        return out

    @property
    def reserved_total(self) -> Decimal:
        """Sum of outstanding reservations, budgeted or not: 0 when idle."""
        return self._reserved_total

    @property
    def outstanding(self) -> int:
        """How many reservations are neither settled nor released."""
        return self._outstanding
