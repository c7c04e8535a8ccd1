"""Budgets across reloads: reservations follow a budget by its identity, and the file
watcher only loads a file that has stopped changing."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from router.budget import BudgetBook, Refusal, Reservation, worst_case_usd
from router.config import BudgetConfig
from router.errors import BudgetExceededError
from router.estimate import estimate_tokens
from router.ledger import MemoryLedger
from router.router import Router
from router.types import Completion
from tests.logs import capture_logs
from tests.routerkit import write_config
from tests.test_budget import Clock, utc

D = Decimal


def _budget(limit: str, period: str = "day", **scope: str) -> BudgetConfig:
    return BudgetConfig(limit_usd=D(limit), period=period, **scope)  # type: ignore[arg-type]


async def _book(budgets: dict[str, BudgetConfig], ledger: MemoryLedger | None = None) -> BudgetBook:
    book = BudgetBook(budgets, ledger or MemoryLedger(), clock=Clock(utc(2026, 3, 14, 12)))
    await book.start()
    return book


def _reserve(book: BudgetBook, amount: str = "0.1", provider: str = "openai") -> object:
    return book.reserve(route="analysis", provider=provider, model="m", amount=D(amount))


async def _reload(book: BudgetBook, budgets: dict[str, BudgetConfig]) -> None:
    install = await book.prepare(budgets)
    install()


# --- the book ------------------------------------------------------------------------


async def test_a_rescoped_budget_keeps_the_reservations_in_flight() -> None:
    """10 reservations fill a 10-call budget; re-scoping it (day -> month, then to one
    provider) must not start it from zero reserved: the 11th is still refused, and the
    10 settle into the budget that is live when they settle."""
    book = await _book({"cap": _budget("1", "day")})
    held = [_reserve(book) for _ in range(10)]
    assert all(isinstance(r, Reservation) for r in held)
    assert isinstance(_reserve(book), Refusal)
    await _reload(book, {"cap": _budget("1", "month")})
    assert isinstance(_reserve(book), Refusal)
    (status,) = book.spend()
    assert status.reserved_usd == D("1.0")
    await _reload(book, {"cap": _budget("1", "month", provider="openai")})
    assert isinstance(_reserve(book), Refusal)
    for r in held:
        assert isinstance(r, Reservation)
        await book.settle(r, D("0.1"))
    (status,) = book.spend()
    assert (status.spent_usd, status.reserved_usd) == (D("1.0"), 0)
    assert isinstance(_reserve(book), Refusal)


async def test_a_budget_removed_and_re_added_still_counts_its_open_reservations() -> None:
    book = await _book({"cap": _budget("1")})
    held = [_reserve(book) for _ in range(10)]
    await _reload(book, {})
    assert book.reserved_total == D("1.0")  # removed, still counted until settled
    await _reload(book, {"cap": _budget("1")})
    assert isinstance(_reserve(book), Refusal)
    for r in held[:5]:
        assert isinstance(r, Reservation)
        await book.settle(r, D("0.1"))
    (status,) = book.spend()
    assert (status.spent_usd, status.reserved_usd) == (D("0.5"), D("0.5"))


async def test_a_new_budget_counts_what_settles_while_the_reload_reads_the_ledger() -> None:
    """A budget added by a reload loads its spend from the ledger; what settles during
    that read (or is not yet written) is counted too, not lost until the next restart."""
    gate = asyncio.Event()

    class SlowReads(MemoryLedger):
        slow = False

        async def totals(self, since_epoch: float, **kw: str | None) -> Decimal:
            total = await super().totals(since_epoch, **kw)  # type: ignore[arg-type]
            if self.slow:
                await asyncio.wait_for(gate.wait(), 5)
            return total

    ledger = SlowReads()
    book = await _book({"a": _budget("10")}, ledger)
    ledger.slow = True
    first, second = _reserve(book, "0.3"), _reserve(book, "0.4")
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    await book.settle(first, D("0.3"))
    await book.flush()
    prepare = asyncio.create_task(book.prepare({"a": _budget("10"), "b": _budget("0.5")}))
    await asyncio.sleep(0.01)
    await book.settle(second, D("0.4"))  # settles while the reload reads the ledger
    gate.set()
    (await prepare)()
    spent = {s.name: s.spent_usd for s in book.spend()}
    assert spent == {"a": D("0.7"), "b": D("0.7")}
    assert isinstance(_reserve(book, "0.01"), Refusal)  # b is over its limit


# --- through the router --------------------------------------------------------------

PAID = """\
providers:
  paid:
    kind: mock
    mock: {{latency_s: 0.3, reply: "short answer"}}
    models: {{m: {{price: {{input_per_mtok: 3, output_per_mtok: 15}}}}}}
routes:
  r:
    prompt: "Summarise {{{{ ticker }}}} for the desk."
    max_tokens: 200
    fallback: [paid/m]
budgets:
  cap: {{limit_usd: {limit}, period: {period}}}
"""


def _worst(router: Router) -> Decimal:
    messages = router.render("r", {"ticker": "ACME"})
    return worst_case_usd(
        estimate_tokens(messages), 200, router.plan.providers["paid"].models["m"].price
    )


async def test_ten_calls_in_flight_on_a_ten_call_budget_survive_a_rescoping_reload(
    tmp_path: Path,
) -> None:
    """The case in point: 10 calls in flight fill the budget; a reload changes its period;
    10 more calls must all be refused (the old code admitted them: 200% of the limit)."""
    path = write_config(tmp_path, PAID.format(limit=1, period="day"))
    async with Router.from_yaml(path) as router:
        worst = _worst(router)
    limit = worst * 10
    path = write_config(tmp_path, PAID.format(limit=limit, period="day"))
    async with Router.from_yaml(path) as router:
        first = [asyncio.create_task(router.complete("r", {"ticker": "A"})) for _ in range(10)]
        await asyncio.sleep(0.05)
        path.write_text(path.read_text().replace("period: day", "period: month"))
        report = await router.reload()
        assert report.budgets_changed
        second = await asyncio.gather(
            *(router.complete("r", {"ticker": "B"}) for _ in range(10)), return_exceptions=True
        )
        done = await asyncio.gather(*first)
        assert all(isinstance(c, Completion) for c in done)
        assert all(isinstance(e, BudgetExceededError) for e in second), second
        (status,) = router.spend()
        assert status.spent_usd == sum(c.cost_usd for c in done) <= limit
        assert status.reserved_usd == 0


# --- the watcher ---------------------------------------------------------------------

WATCHED = """\
version: 1
settings:
  ledger: {backend: memory}
providers:
  paid:
    kind: mock
    models: {m: {price: {input_per_mtok: 3, output_per_mtok: 15}}}
routes:
  r:
    prompt: "hi {{ who }}"
    fallback: [paid/m]
"""
BUDGETS = "budgets:\n  cap: {limit_usd: 5, period: day}\n"


async def test_the_watcher_never_loads_a_half_written_file(tmp_path: Path) -> None:
    """A writer puts the first half of a new file (itself valid YAML: everything before
    ``budgets:``), pauses for several polls, then writes the rest. The watcher must wait
    until the file is stable: at no moment may the router run without the budget."""
    path = tmp_path / "providers.yaml"
    path.write_text(WATCHED + BUDGETS)
    async with Router.from_yaml(path, watch=True, watch_interval_s=0.01) as router:
        seen: list[set[str]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                seen.append({s.name for s in router.spend()})
                await asyncio.sleep(0.002)

        sampler = asyncio.create_task(sample())
        with capture_logs() as logs:
            new = WATCHED.replace("hi {{ who }}", "hello {{ who }}") + BUDGETS
            half = new[: new.index("budgets:")]
            path.write_text(half)
            await asyncio.sleep(0.08)  # a slow writer: 8 polls see the half file
            path.write_text(new)
            for _ in range(300):
                if router.config.routes["r"].prompt.startswith("hello"):
                    break
                await asyncio.sleep(0.01)
        stop.set()
        await sampler
    assert router.config.routes["r"].prompt.startswith("hello")
    assert all(names == {"cap"} for names in seen), "the router ran without its budget"
    reloads = [e for e in logs if e["event"] == "reload"]
    assert len(reloads) == 1, reloads


async def test_a_reload_that_removes_budgets_routes_or_providers_warns_naming_them(
    tmp_path: Path,
) -> None:
    two = WATCHED.replace(
        "routes:",
        "  other:\n    kind: mock\n    models: {x: {}}\nroutes:\n"
        "  s:\n    prompt: hi\n    fallback: [other/x]",
    )
    path = tmp_path / "providers.yaml"
    path.write_text(two + BUDGETS)
    async with Router.from_yaml(path) as router:
        path.write_text(WATCHED)
        with capture_logs() as logs:
            report = await router.reload()
    warned = [e for e in logs if e["event"] == "reload_removed"]
    assert len(warned) == 1, logs
    (w,) = warned
    assert w["log_level"] == "warning"
    assert w["budgets_removed"] == ["cap"] and w["all_budgets_removed"] is True
    assert w["routes_removed"] == ["s"] and w["providers_removed"] == ["other"]
    assert report.budgets_removed == ["cap"]


# --- any interleaving ----------------------------------------------------------------

_VARIANTS: list[dict[str, BudgetConfig]] = [
    {"cap": _budget("1", "day")},
    {"cap": _budget("1", "month")},
    {"renamed": _budget("1", "total")},
    {"cap": _budget("1", "total", route="analysis")},
    {"cap": _budget("1", "day", provider="openai")},
    {},  # removed: calls run unbudgeted until a later reload re-adds one
]
_op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(min_value=1, max_value=40)),
    st.tuples(st.just("settle"), st.integers(min_value=0, max_value=50), st.integers(0, 1000)),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=50)),
    st.tuples(st.just("reload"), st.integers(min_value=0, max_value=len(_VARIANTS) - 1)),
    st.tuples(st.just("install")),
    st.tuples(st.just("turn")),
)


class _SlowTotals(MemoryLedger):
    """Reads yield to the loop a few times, so settlements land during a reload's read."""

    async def totals(self, since_epoch: float, **kw: str | None) -> Decimal:
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().totals(since_epoch, **kw)  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=60))
def test_no_interleaving_of_calls_and_reloads_commits_more_than_the_limit(
    ops: list[tuple[object, ...]],
) -> None:
    """Reserve, settle (never above the reservation), release and reload (re-scoped,
    renamed, removed and re-added budgets of the same $1 limit over every call) in any
    order, reloads overlapping settlements: whenever a budget is live, what was settled
    plus what is still reserved never exceeds the limit, and the live budget's spent
    and reserved are exactly the settled and open amounts. (No call starts while no
    budget exists: it would be unlimited by design.)"""

    async def scenario() -> None:
        book = await _book(dict(_VARIANTS[0]), _SlowTotals())
        live = _VARIANTS[0]
        open_: list[Reservation] = []
        settled = D(0)
        reloading: asyncio.Task[object] | None = None
        next_live: dict[str, BudgetConfig] = live

        async def install() -> None:
            nonlocal reloading, live
            if reloading is not None:
                (await reloading)()  # type: ignore[operator]
                reloading = None
                live = next_live

        for op in ops:
            kind = op[0]
            if kind == "reserve" and live:  # (with no budget, nothing would be limited)
                r = _reserve(book, str(D(op[1]) / 100))  # type: ignore[arg-type]
                if isinstance(r, Reservation):
                    open_.append(r)
            elif kind in ("settle", "release") and open_:
                r = open_.pop(op[1] % len(open_))  # type: ignore[call-overload]
                if kind == "release":
                    book.release(r)
                else:
                    cost = r.amount * op[2] / 1000  # type: ignore[operator]
                    await book.settle(r, cost)
                    settled += cost
            elif kind == "reload" and reloading is None:
                next_live = _VARIANTS[op[1]]  # type: ignore[index]
                reloading = asyncio.create_task(book.prepare(dict(next_live)))
            elif kind == "install":
                await install()
            await asyncio.sleep(0)
            if live and reloading is None:
                (status,) = book.spend()
                held = sum((r.amount for r in open_), D(0))
                assert status.reserved_usd == held
                assert status.spent_usd + held <= D(1)
        await install()
        if live:
            (status,) = book.spend()
            assert status.spent_usd == settled
        await book.aclose()

    asyncio.run(scenario())
