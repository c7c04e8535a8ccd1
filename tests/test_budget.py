"""Budgets: reserve the worst case before sending, settle the real cost, never overspend."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.budget import BudgetBook, Refusal, Reservation, period_bounds, worst_case_usd
from router.config import BudgetConfig, Price
from router.errors import LedgerError
from router.ledger import Ledger, MemoryLedger, SqliteLedger
from tests.logs import capture_logs

D = Decimal
PRICE = Price(input_per_mtok=D(3), output_per_mtok=D(15))


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


class Clock:
    """An injectable UTC clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _budget(limit: str, period: str = "day", **scope: str) -> BudgetConfig:
    return BudgetConfig(limit_usd=D(limit), period=period, **scope)  # type: ignore[arg-type]


async def _book(
    budgets: dict[str, BudgetConfig], ledger: Ledger | None = None, clock: Clock | None = None
) -> BudgetBook:
    book = BudgetBook(
        budgets,
        ledger if ledger is not None else MemoryLedger(),
        clock=clock or Clock(utc(2026, 3, 14, 12)),
    )
    await book.start()
    return book


def _reserve(book: BudgetBook, amount: str, route: str = "analysis", provider: str = "openai"):  # type: ignore[no-untyped-def]
    return book.reserve(route=route, provider=provider, model="m", amount=D(amount))


# --- reserve / settle / release ------------------------------------------------------


async def test_reserve_settle_release_accounting() -> None:
    """Reserved money is held until settled (becomes spent) or released (vanishes)."""
    book = await _book({"daily": _budget("1")})
    a = _reserve(book, "0.4")
    b = _reserve(book, "0.4")
    assert isinstance(a, Reservation)
    assert isinstance(b, Reservation)
    (s,) = book.spend()
    assert (s.spent_usd, s.reserved_usd, s.remaining_usd) == (0, D("0.8"), D("0.2"))
    await book.settle(a, D("0.1"))
    book.release(b)
    (s,) = book.spend()
    assert (s.spent_usd, s.reserved_usd, s.remaining_usd) == (D("0.1"), 0, D("0.9"))
    assert book.reserved_total == 0
    assert book.outstanding == 0


async def test_refusal_names_the_budget_and_its_figures() -> None:
    """A reservation that does not fit is refused with the budget's name and numbers."""
    book = await _book({"daily": _budget("1")})
    held = _reserve(book, "0.7")
    assert isinstance(held, Reservation)
    r = _reserve(book, "0.5")
    assert r == Refusal("daily", D(1), D(0), D("0.7"), D("0.5"))
    assert isinstance(r, Refusal)
    assert r.reason == (
        "budget 'daily': needs $0.50, $0.30 left (limit $1.00, spent $0.00, reserved $0.70)"
    )


async def test_exact_fit_is_admitted() -> None:
    """spent + reserved + amount == limit still fits; one cent more does not."""
    book = await _book({"daily": _budget("1")})
    assert isinstance(_reserve(book, "0.5"), Reservation)
    assert isinstance(_reserve(book, "0.5"), Reservation)
    assert isinstance(_reserve(book, "0.01"), Refusal)


async def test_free_calls_pass_an_exhausted_budget() -> None:
    """A zero worst case (a free model) is admitted even when the money is gone,
    so a chain can still fall back to it."""
    book = await _book({"daily": _budget("0")})
    assert isinstance(_reserve(book, "0.01"), Refusal)
    free = _reserve(book, "0")
    assert isinstance(free, Reservation)
    await book.settle(free, D(0))


async def test_budgets_match_by_scope() -> None:
    """Global budgets match every call; provider/route budgets only their own."""
    book = await _book(
        {
            "global": _budget("100"),
            "openai": _budget("100", provider="openai"),
            "analysis": _budget("100", route="analysis"),
            "openai-analysis": _budget("100", provider="openai", route="analysis"),
        }
    )
    r = _reserve(book, "1", route="chat", provider="anthropic")
    assert isinstance(r, Reservation)
    assert [b.name for b in r.budgets] == ["global"]
    r = _reserve(book, "1", route="chat", provider="openai")
    assert isinstance(r, Reservation)
    assert [b.name for b in r.budgets] == ["global", "openai"]
    r = _reserve(book, "1", route="analysis", provider="openai")
    assert isinstance(r, Reservation)
    assert [b.name for b in r.budgets] == ["global", "openai", "analysis", "openai-analysis"]


async def test_reservation_is_all_or_nothing() -> None:
    """When a later budget refuses, the earlier ones hold nothing for that call."""
    book = await _book({"global": _budget("10"), "openai": _budget("1", provider="openai")})
    r = _reserve(book, "2")
    assert isinstance(r, Refusal)
    assert r.budget == "openai"
    assert [s.reserved_usd for s in book.spend()] == [0, 0]
    assert book.reserved_total == 0
    # the same amount on another provider only touches the global budget
    assert isinstance(_reserve(book, "2", provider="anthropic"), Reservation)


async def test_route_max_cost_is_a_per_call_cap() -> None:
    """The route's max_cost_usd refuses a call whose worst case is above it."""
    book = await _book({})
    r = book.reserve(
        route="analysis", provider="p", model="m", amount=D("0.2"), max_cost_usd=D("0.1")
    )
    assert isinstance(r, Refusal)
    assert r.budget == "routes.analysis.max_cost_usd"
    ok = book.reserve(
        route="analysis", provider="p", model="m", amount=D("0.1"), max_cost_usd=D("0.1")
    )
    assert isinstance(ok, Reservation)


async def test_unbudgeted_calls_are_still_recorded() -> None:
    """Spend of a provider no budget covers still reaches the ledger (complete reports)."""
    ledger = MemoryLedger()
    book = await _book({"openai": _budget("1", provider="openai")}, ledger)
    r = _reserve(book, "5", provider="ollama")
    assert isinstance(r, Reservation)
    assert r.budgets == ()
    assert book.reserved_total == D(5)
    await book.settle(r, D("0.25"))
    await book.flush()
    assert await ledger.totals(0, provider="ollama") == D("0.25")
    assert book.spend()[0].spent_usd == 0


async def test_settle_above_reservation_records_the_real_cost() -> None:
    """A provider that billed more than our worst case: the real figure is recorded and
    counted, a warning is logged, and the budget then refuses further spending."""
    ledger = MemoryLedger()
    book = await _book({"daily": _budget("1")}, ledger)
    r = _reserve(book, "0.9")
    assert isinstance(r, Reservation)
    with capture_logs() as logs:
        await book.settle(r, D("1.05"))
    assert logs[0]["event"] == "settled_above_reservation"
    assert logs[0]["log_level"] == "warning"
    await book.flush()
    assert await ledger.totals(0) == D("1.05")
    (s,) = book.spend()
    assert (s.spent_usd, s.remaining_usd) == (D("1.05"), 0)
    assert isinstance(_reserve(book, "0.01"), Refusal)


async def test_double_settle_is_an_error_release_after_settle_is_not() -> None:
    """Settling twice would count a cost twice: refused. Releasing after is a no-op."""
    book = await _book({"daily": _budget("1")})
    r = _reserve(book, "0.5")
    assert isinstance(r, Reservation)
    await book.settle(r, D("0.1"))
    book.release(r)
    book.release(r)
    with pytest.raises(RuntimeError, match="twice"):
        await book.settle(r, D("0.1"))
    assert book.spend()[0].spent_usd == D("0.1")
    assert book.reserved_total == 0


async def test_reserve_before_start_is_refused() -> None:
    """Spend is unknown until the ledger is loaded; reserving then is a bug."""
    book = BudgetBook({"daily": _budget("1")}, MemoryLedger())
    with pytest.raises(RuntimeError, match="before start"):
        _reserve(book, "0.1")


class _BrokenLedger(MemoryLedger):
    async def record(self, **kwargs: object) -> None:  # type: ignore[override]
        raise LedgerError("spend ledger 'x': cannot record spend: disk full", path="x")


async def test_ledger_failure_on_settle_still_counts_in_memory() -> None:
    """If the ledger cannot record, settle does not raise (the answer was paid for): this
    process keeps counting the money as spent (it was), so enforcement stays correct,
    and the book reports the failure (see tests/test_ledger_safety.py)."""
    book = await _book({"daily": _budget("1")}, _BrokenLedger())
    r = _reserve(book, "0.5")
    assert isinstance(r, Reservation)
    await book.settle(r, D("0.4"))
    assert book.spend()[0].spent_usd == D("0.4")
    assert book.reserved_total == 0
    for _ in range(100):
        if book.ledger_error is not None:
            break
        await asyncio.sleep(0.001)
    assert book.ledger_error is not None and "disk full" in str(book.ledger_error)
    assert (await book.aclose(timeout_s=0.01))[0].cost == D("0.4")


async def test_corrupt_ledger_fails_start_never_zero(tmp_path: Path) -> None:
    """A budget on a garbage ledger file does not start with zero spend: LedgerError."""
    path = tmp_path / "spend.sqlite3"
    path.write_bytes(b"\x00garbage" * 1000)
    book = BudgetBook({"daily": _budget("1")}, SqliteLedger(path))
    with pytest.raises(LedgerError, match="not an SQLite database") as info:
        await book.start()
    assert info.value.path == str(path)
    with pytest.raises(RuntimeError):
        _reserve(book, "0.1")


class _UnreadableLedger(MemoryLedger):
    closed = False

    async def totals(self, since_epoch: float, **kwargs: object) -> D:  # type: ignore[override]
        raise OSError("I/O error reading spend")

    async def close(self) -> None:
        self.closed = True


async def test_unreadable_spend_fails_start_and_closes_the_ledger() -> None:
    """Any failure to load spend is a LedgerError naming the budget; nothing is left open."""
    ledger = _UnreadableLedger()
    book = BudgetBook({"daily": _budget("1")}, ledger)
    with pytest.raises(LedgerError, match=r"budget 'daily'.*I/O error"):
        await book.start()
    assert ledger.closed


# --- concurrency ---------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    return MemoryLedger() if request.param == "memory" else SqliteLedger(tmp_path / "spend.db")


async def test_200_concurrent_calls_on_a_budget_for_50(any_ledger: Ledger) -> None:
    """200 concurrent calls, a budget that fits exactly 50 worst cases: exactly 50 are
    admitted while all are outstanding, the other 150 are refused naming the budget,
    and settled spend ends at or below the limit."""
    worst = worst_case_usd(1200, 1000, PRICE)  # $0.0186
    limit = worst * 50
    book = await _book({"trading-day": BudgetConfig(limit_usd=limit)}, any_ledger)
    all_tried = asyncio.Event()
    tried = 0
    rng = random.Random(5)
    results: list[Reservation | Refusal] = []

    async def call() -> None:
        nonlocal tried
        await asyncio.sleep(0)
        r = book.reserve(route="analysis", provider="openai", model="m", amount=worst)
        results.append(r)
        tried += 1
        if tried == 200:
            all_tried.set()
        await all_tried.wait()  # every reservation is outstanding at this point
        if isinstance(r, Reservation):
            await asyncio.sleep(rng.random() / 1000)
            await book.settle(r, worst * D(rng.randint(0, 1000)) / 1000)

    await asyncio.gather(*(call() for _ in range(200)))
    granted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, Refusal)]
    assert len(granted) == 50
    assert len(refused) == 150
    assert all(r.budget == "trading-day" and "trading-day" in r.reason for r in refused)
    (s,) = book.spend()
    assert s.spent_usd <= limit
    assert book.reserved_total == 0
    await book.flush()
    assert await any_ledger.totals(0) == s.spent_usd
    await book.aclose()


_call = st.tuples(
    st.integers(min_value=0, max_value=5000),  # estimated input tokens
    st.integers(min_value=1, max_value=4000),  # max_tokens
    st.integers(min_value=0, max_value=1000),  # actual cost, permille of the reservation
    st.booleans(),  # the call fails before billing (released)
    st.integers(min_value=0, max_value=3),  # event-loop turns before settling
)


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(_call, min_size=1, max_size=80),
    limit_cents=st.integers(min_value=0, max_value=60),
)
def test_concurrent_calls_never_overspend(
    calls: list[tuple[int, int, int, bool, int]], limit_cents: int
) -> None:
    """Any mix of concurrent calls (random max_tokens, random real cost never above the
    reservation, random failures and interleavings) keeps settled spend within the
    limit; every refusal names the budget and was justified by its own figures."""
    limit = D(limit_cents) / 100

    async def scenario() -> None:
        ledger = MemoryLedger()
        book = await _book({"day": BudgetConfig(limit_usd=limit)}, ledger)

        async def call(inp: int, max_tokens: int, permille: int, fails: bool, turns: int) -> None:
            worst = worst_case_usd(inp, max_tokens, PRICE)
            r = book.reserve(route="analysis", provider="openai", model="m", amount=worst)
            if isinstance(r, Refusal):
                assert r.budget == "day"
                assert "'day'" in r.reason
                assert r.spent_usd + r.reserved_usd + r.requested_usd > r.limit_usd
                return
            for _ in range(turns):
                await asyncio.sleep(0)
            if fails:
                book.release(r)
            else:
                await book.settle(r, worst * permille / 1000)
            assert book.spend()[0].spent_usd <= limit

        await asyncio.gather(*(call(*c) for c in calls))
        (s,) = book.spend()
        assert s.spent_usd <= limit
        assert s.reserved_usd == 0
        assert book.reserved_total == 0
        assert book.outstanding == 0
        await book.flush()
        assert await ledger.totals(0) == s.spent_usd
        await book.aclose()

    asyncio.run(scenario())


# --- restart -------------------------------------------------------------------------


async def test_restart_loads_settled_spend(tmp_path: Path) -> None:
    """Spend settled by one BudgetBook on an SQLite file is there for the next one,
    per budget scope, and limits the next one's reservations."""
    path = tmp_path / "spend.sqlite3"
    budgets = {
        "daily": _budget("1"),
        "openai": _budget("0.5", provider="openai"),
        "chat": _budget("10", route="chat"),
    }
    first = await _book(budgets, SqliteLedger(path))
    for amount, provider, route in [
        ("0.3", "openai", "analysis"),
        ("0.1", "anthropic", "analysis"),
        ("0.05", "openai", "chat"),
    ]:
        r = _reserve(first, amount, route=route, provider=provider)
        assert isinstance(r, Reservation)
        await first.settle(r, D(amount))
    before = first.spend()
    await first.aclose()

    second = await _book(budgets, SqliteLedger(path))
    after = second.spend()
    assert [(s.name, s.spent_usd) for s in after] == [
        ("daily", D("0.45")),
        ("openai", D("0.35")),
        ("chat", D("0.05")),
    ]
    assert after == before
    refused = _reserve(second, "0.2", provider="openai")
    assert isinstance(refused, Refusal)
    assert refused.budget == "openai"
    await second.aclose()


# --- periods -------------------------------------------------------------------------


def test_period_bounds_are_utc_calendar_periods() -> None:
    """day = UTC calendar day, month = UTC calendar month (December rolls the year)."""
    t = utc(2026, 3, 14, 15, 30)
    assert period_bounds("day", t) == (utc(2026, 3, 14), utc(2026, 3, 15))
    assert period_bounds("month", t) == (utc(2026, 3, 1), utc(2026, 4, 1))
    assert period_bounds("month", utc(2026, 12, 31, 23, 59)) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert period_bounds("day", utc(2028, 2, 28, 23)) == (utc(2028, 2, 28), utc(2028, 2, 29))
    assert period_bounds("total", t) == (0.0, float("inf"))
    start, _end = period_bounds("day", utc(2026, 3, 15))  # a boundary belongs to the new day
    assert start == utc(2026, 3, 15)


def test_periods_ignore_the_local_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine set to UTC+14 still starts the budget day at 00:00 UTC."""
    import time

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    try:
        assert period_bounds("day", utc(2026, 3, 14, 20)) == (utc(2026, 3, 14), utc(2026, 3, 15))
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_day_rollover_restarts_spend() -> None:
    """At 00:00 UTC the day budget's spend restarts at zero; the month's does not."""
    clock = Clock(utc(2026, 3, 14, 23, 59, 59))
    book = await _book({"day": _budget("1"), "month": _budget("5", period="month")}, clock=clock)
    r = _reserve(book, "0.8")
    assert isinstance(r, Reservation)
    await book.settle(r, D("0.8"))
    assert isinstance(_reserve(book, "0.5"), Refusal)

    clock.now = utc(2026, 3, 15)
    day, month = book.spend()
    assert (day.spent_usd, day.period_start) == (0, datetime(2026, 3, 15, tzinfo=UTC))
    assert (month.spent_usd, month.period_start) == (D("0.8"), datetime(2026, 3, 1, tzinfo=UTC))
    assert isinstance(_reserve(book, "0.5"), Reservation)


async def test_month_rollover_restarts_spend() -> None:
    """At the first of the month 00:00 UTC (here also a new year) the month restarts."""
    clock = Clock(utc(2026, 12, 31, 23, 0))
    book = await _book(
        {"month": _budget("5", period="month"), "ever": _budget("100", period="total")},
        clock=clock,
    )
    r = _reserve(book, "4")
    assert isinstance(r, Reservation)
    await book.settle(r, D(4))
    assert isinstance(_reserve(book, "2"), Refusal)
    clock.now = utc(2027, 1, 1, 0, 0, 1)
    month, ever = book.spend()
    assert (month.spent_usd, month.period_start) == (0, datetime(2027, 1, 1, tzinfo=UTC))
    assert (ever.spent_usd, ever.period_start) == (D(4), None)
    assert isinstance(_reserve(book, "2"), Reservation)


async def test_reservation_across_midnight_counts_where_it_settles() -> None:
    """Reserved before midnight, settled after: the reservation keeps holding money
    across the boundary, and the cost counts in the new day (ledger row included)."""
    ledger = MemoryLedger()
    clock = Clock(utc(2026, 3, 14, 23, 59, 59))
    book = await _book({"day": _budget("1")}, ledger, clock)
    r = _reserve(book, "0.6")
    assert isinstance(r, Reservation)
    clock.now = utc(2026, 3, 15, 0, 0, 2)
    (s,) = book.spend()
    assert (s.spent_usd, s.reserved_usd) == (0, D("0.6"))  # still held in the new day
    assert isinstance(_reserve(book, "0.5"), Refusal)
    await book.settle(r, D("0.3"))
    (s,) = book.spend()
    assert (s.spent_usd, s.reserved_usd) == (D("0.3"), 0)
    await book.flush()
    assert ledger.entries[0].ts == utc(2026, 3, 15, 0, 0, 2)


async def test_restart_loads_only_the_current_period(tmp_path: Path) -> None:
    """A restart on a new day loads that day's spend only; the month keeps both days."""
    path = tmp_path / "spend.sqlite3"
    budgets = {"day": _budget("1"), "month": _budget("5", period="month")}
    clock = Clock(utc(2026, 3, 14, 23, 59))
    book = await _book(budgets, SqliteLedger(path), clock)
    for t, amount in [(utc(2026, 3, 14, 23, 59), "0.7"), (utc(2026, 3, 15, 0, 1), "0.2")]:
        clock.now = t
        r = _reserve(book, amount)
        assert isinstance(r, Reservation)
        await book.settle(r, D(amount))
    await book.aclose()

    later = await _book(budgets, SqliteLedger(path), Clock(utc(2026, 3, 15, 9)))
    day, month = later.spend()
    assert (day.spent_usd, month.spent_usd) == (D("0.2"), D("0.9"))
    await later.aclose()
    next_month = await _book(budgets, SqliteLedger(path), Clock(utc(2026, 4, 1)))
    assert [s.spent_usd for s in next_month.spend()] == [0, 0]
    await next_month.aclose()


class _CancelsOnce(MemoryLedger):
    """A backend whose first write ends in its own CancelledError (not the writer's)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def record(self, **kwargs: object) -> None:  # type: ignore[override]
        self.calls += 1
        if self.calls == 1:
            raise asyncio.CancelledError
        await super().record(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("costs", [1, 3])
async def test_a_ledgers_own_cancellation_is_a_failed_write_then_retried(costs: int) -> None:
    """One cost is written without gather's task, several with it: either way a
    CancelledError raised by the backend itself (the writer was not cancelled) is a
    failed write, reported and retried, and the writer lives on to record every cost."""
    ledger = _CancelsOnce()
    book = BudgetBook(
        {"daily": _budget("1")}, ledger, clock=Clock(utc(2026, 3, 14, 12)), retry_s=0.001
    )
    await book.start()
    reservations = [_reserve(book, "0.1") for _ in range(costs)]
    for r in reservations:
        assert isinstance(r, Reservation)
        await book.settle(r, D("0.05"))
    await asyncio.wait_for(book.flush(), 5)
    assert book.write_failures == 1
    assert len(ledger.entries) == costs
    assert book.ledger_error is None
    assert await book.aclose() == []


async def test_memory_ledger_records_at_settle_without_waking_the_writer() -> None:
    """The memory ledger's write cannot wait or fail: a settle records it at once, so
    nothing is pending and the background writer is not woken (a task step per call);
    the costs are in the ledger in settlement order."""
    ledger = MemoryLedger()
    book = await _book({"daily": _budget("1")}, ledger)
    for amount in ("0.1", "0.2"):
        r = _reserve(book, "0.5")
        assert isinstance(r, Reservation)
        book.settle_now(r, D(amount))
        # No await since the settle: the writer has not run, yet the cost is recorded.
        assert book.ledger_status().pending == 0
        assert book.pending_writes == 0
    assert [e.cost for e in ledger.entries] == [D("0.1"), D("0.2")]
    # flush() has nothing to wait for.
    await asyncio.wait_for(book.flush(), 0.5)
    assert book.spend()[0].spent_usd == D("0.3")
    await book.aclose()
    assert len(ledger.entries) == 2
