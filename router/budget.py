"""Money: exact cost from reported usage, and budgets enforced before sending.

Cost is :class:`~decimal.Decimal` arithmetic on the usage the provider reported
and the model's YAML prices (:func:`cost_usd`); nothing is estimated from
characters once a response has arrived.

Budgets are enforced with *reservations* (:class:`BudgetBook`). Before an
attempt is sent the router reserves its worst case (:func:`worst_case_usd`)
against every budget that matches the call's route and provider, atomically:
all of them or none. A budget admits a reservation only while
``spent + reserved + amount <= limit``, so concurrent calls cannot overspend
it. When the response arrives the reservation is *settled* to the real cost,
which is added to ``spent`` and recorded durably in the ledger; when the call
fails before anything was billed it is *released*. Reservations are in memory
(one process, one event loop); settled spend is in the ledger
(:mod:`router.ledger`), and start-up loads the current period's spend from it.

Periods are UTC: ``day`` is the calendar day, ``month`` the calendar month,
``total`` never resets. See docs/money.md for the worked examples and the
exact guarantees.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from router.config import BudgetConfig, Price
from router.errors import LedgerError
from router.ledger import Ledger
from router.types import Usage

__all__ = [
    "BudgetBook",
    "BudgetStatus",
    "Refusal",
    "Reservation",
    "cost_usd",
    "worst_case_usd",
]

log = structlog.get_logger("router.budget")

_ZERO = Decimal(0)
# Prices are per million tokens.
_PER_MTOK = -6


def cost_usd(usage: Usage, price: Price) -> Decimal:
    """The exact cost of one response, from the usage the provider reported.

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
    return total.scaleb(_PER_MTOK)


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


def _usd(amount: Decimal) -> str:
    """Dollars for a human: exact, with at least cents ('$0.00032935', '$5.00')."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return f"${amount:f}"


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
            f"<budget {self.name!r} {self.config.period} limit={_usd(self.config.limit_usd)}"
            f" spent={_usd(self.spent)} reserved={_usd(self.reserved)}>"
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
            f"<Reservation {_usd(self.amount)} {self.route} {self.provider}/{self.model}"
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

    @property
    def reason(self) -> str:
        """One line naming the budget and its figures (for Attempt.reason and errors)."""
        left = max(self.limit_usd - self.spent_usd - self.reserved_usd, _ZERO)
        return (
            f"budget {self.budget!r}: needs {_usd(self.requested_usd)}, {_usd(left)} left"
            f" (limit {_usd(self.limit_usd)}, spent {_usd(self.spent_usd)},"
            f" reserved {_usd(self.reserved_usd)})"
        )


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


class BudgetBook:
    """Every budget's live state, and the only way to spend against them.

    Bound to one event loop: :meth:`reserve` is synchronous, so the check and the
    update of every matching budget happen with no await in between, which is
    what makes concurrent calls unable to overspend.

    Args:
        budgets: ``config.budgets``, by name.
        ledger: where settled spend is recorded and read back at start.
        clock: Unix epoch seconds (UTC); injectable for tests.
    """

    def __init__(
        self,
        budgets: Mapping[str, BudgetConfig],
        ledger: Ledger,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._budgets = tuple(_Budget(name, cfg) for name, cfg in budgets.items())
        self._ledger = ledger
        self._clock = clock
        # The budgets that apply to a (route, provider) pair, computed once per pair.
        self._matching: dict[tuple[str, str], tuple[_Budget, ...]] = {}
        # Sum and count of outstanding reservations, budgeted or not (leak checks).
        self._reserved_total = _ZERO
        self._outstanding = 0
        # True between a successful start() and aclose().
        self._started = False

    def __repr__(self) -> str:
        return (
            f"<BudgetBook budgets={len(self._budgets)} outstanding={self._outstanding}"
            f" reserved={_usd(self._reserved_total)} ledger={self._ledger!r}>"
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
                try:
                    b.spent = await self._ledger.totals(
                        b.start, provider=b.config.provider, route=b.config.route
                    )
                except LedgerError:
                    raise
                except Exception as exc:
                    raise LedgerError(
                        f"spend ledger {self._ledger!r}: cannot load spend for budget"
                        f" {b.name!r}: {type(exc).__name__}: {exc}"
                    ) from exc
        except BaseException:
            await self._ledger.close()
            raise
        self._started = True

    async def aclose(self) -> None:
        """Close the ledger. Outstanding reservations are simply dropped."""
        self._started = False
        await self._ledger.close()

    async def prepare(self, budgets: Mapping[str, BudgetConfig]) -> Callable[[], None]:
        """Get a reloaded config's budgets ready; return the synchronous step that installs them.

        A budget whose name, period and scope are unchanged keeps its live state
        (spend and outstanding reservations); a changed limit applies from the
        install. Any other budget loads its period's spend from the ledger now,
        so a reload never resets spend. Spend settled during this await is in
        the ledger, but not yet in a new budget's figure (a new budget's first
        moments may undercount by what settles during the load; documented).
        """
        current = {b.name: b for b in self._budgets}
        now = self._clock()
        plan: list[tuple[_Budget, BudgetConfig]] = []
        for name, cfg in budgets.items():
            b = current.get(name)
            same_scope = b is not None and (b.config.period, b.config.provider, b.config.route) == (
                cfg.period,
                cfg.provider,
                cfg.route,
            )
            if b is None or not same_scope:
                b = _Budget(name, cfg)
                b.roll(now)
                b.spent = await self._ledger.totals(b.start, provider=cfg.provider, route=cfg.route)
            plan.append((b, cfg))

        def install() -> None:
            for b, cfg in plan:
                b.config = cfg
            self._budgets = tuple(b for b, _ in plan)
            self._matching.clear()

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
            raise ValueError(f"negative reservation {amount}")
        if max_cost_usd is not None and amount > max_cost_usd:
            return Refusal(f"routes.{route}.max_cost_usd", max_cost_usd, _ZERO, _ZERO, amount)
        budgets = self._budgets_for(route, provider)
        if budgets:
            now = self._clock()
            for b in budgets:
                b.roll(now)
                if amount and b.spent + b.reserved + amount > b.config.limit_usd:
                    return Refusal(b.name, b.config.limit_usd, b.spent, b.reserved, amount)
            for b in budgets:
                b.reserved += amount
        self._reserved_total += amount
        self._outstanding += 1
        return Reservation(amount, route, provider, model, budgets)

    def _free(self, r: Reservation) -> None:
        r.done = True
        for b in r.budgets:
            b.reserved -= r.amount
        self._reserved_total -= r.amount
        self._outstanding -= 1

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Replace the reservation by the real cost: in memory now, in the ledger durably.

        ``actual`` is recorded as billed even when it exceeds the reservation
        (the input estimate was low); the budget can then end above its limit
        by that estimate error, and further reservations are refused. The cost
        counts in the period in which it is settled.

        Raises:
            RuntimeError: the reservation was already settled or released.
            LedgerError: the ledger could not record it. The cost still counts
                in memory, so this process keeps enforcing the budget with it.
        """
        if reservation.done:
            raise RuntimeError(f"{reservation!r} settled or released twice")
        if actual < 0:
            raise ValueError(f"negative cost {actual}")
        self._free(reservation)
        now = self._clock()
        for b in reservation.budgets:
            b.roll(now)
            b.spent += actual
        if actual > reservation.amount:
            log.warning(
                "settled_above_reservation",
                route=reservation.route,
                provider=reservation.provider,
                model=reservation.model,
                reserved_usd=str(reservation.amount),
                cost_usd=str(actual),
            )
        await self._ledger.record(
            ts=now,
            route=reservation.route,
            provider=reservation.provider,
            model=reservation.model,
            cost=actual,
        )

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
