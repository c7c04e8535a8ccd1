"""The ledger never costs an answer, a deadline or a settled cost: one writer process per
file, durable writes in the background and in order, failures counted and failed closed."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from router.budget import BudgetBook, Refusal, Reservation
from router.config import BudgetConfig
from router.errors import LedgerError
from router.ledger import MemoryLedger, SqliteLedger
from router.router import Router
from router.types import SkipKind
from tests.logs import capture_logs
from tests.routerkit import write_config
from tests.test_budget import Clock, utc
from tests.test_cli import cli

D = Decimal
REPO = Path(__file__).resolve().parents[1]


def _budget(limit: str, period: str = "day") -> BudgetConfig:
    return BudgetConfig(limit_usd=D(limit), period=period)  # type: ignore[arg-type]


def _reserve(book: BudgetBook, amount: str = "0.1") -> Reservation | Refusal:
    return book.reserve(route="r", provider="p", model="m", amount=D(amount))


async def _until(check: object, timeout_s: float = 5.0) -> None:
    """Poll ``check()`` until it is true (fails the test after ``timeout_s``)."""
    end = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, "condition never became true"
        await asyncio.sleep(0.005)


# --- item: one writer process per ledger file -----------------------------------------

HOLDER = """\
import asyncio, sys
from pathlib import Path
from router.ledger import SqliteLedger
from router.types import SkipKind

async def main():
    ledger = SqliteLedger(Path(sys.argv[1]))
    await ledger.open()
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await ledger.close()

asyncio.run(main())
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another live process with the ledger open for writing."""
    path = tmp_path / "spend.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    yield path, proc
    assert proc.stdin is not None
    if not proc.stdin.closed:
        proc.stdin.close()
    proc.wait(timeout=10)
    proc.stdout.close()


async def test_a_second_process_on_the_same_ledger_is_refused_at_start(
    holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    """Two processes would each enforce the whole budget (2x the limit): the second one
    is refused at start, with why and what to do; once the first exits, it starts."""
    path, proc = holder
    write_config(
        tmp_path,
        "settings: {ledger: {backend: sqlite, path: spend.sqlite3}}\n"
        "providers: {m: {kind: mock, models: {x: {}}}}\n"
        "budgets: {all: {limit_usd: 5}}\n"
        "routes: {r: {prompt: hi, fallback: [m/x]}}\n",
    )
    router = Router.from_yaml(tmp_path / "providers.yaml")
    with pytest.raises(LedgerError) as info:
        await router.start()
    text = str(info.value)
    assert str(path) in text and info.value.path == str(path)
    assert "another process" in text and "one router process per ledger file" in text
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    async with Router.from_yaml(tmp_path / "providers.yaml") as router:
        assert (await router.complete("r")).text


def test_router_spend_reads_the_ledger_beside_a_running_router(
    holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    """``router spend`` only reads: the writer's lock does not stop it, and it shows the
    spend the file holds (here: none yet, from a file another process created)."""
    write_config(
        tmp_path,
        "settings: {ledger: {backend: sqlite, path: spend.sqlite3}}\n"
        "providers: {m: {kind: mock, models: {x: {}}}}\n"
        "budgets: {all: {limit_usd: 5, period: total}}\n"
        "routes: {r: {prompt: hi, fallback: [m/x]}}\n",
    )
    r = cli("spend", "--config", str(tmp_path / "providers.yaml"), "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert '"spent_usd": "0"' in r.out


async def test_a_read_only_ledger_sees_spend_and_refuses_to_record(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite3"
    missing = SqliteLedger(path, read_only=True)
    await missing.open()
    assert await missing.totals(0.0) == 0 and not path.exists()  # nothing created
    await missing.close()
    writer = SqliteLedger(path)
    await writer.open()
    await writer.record(ts=1.0, route="r", provider="p", model="m", cost=D("0.25"))
    reader = SqliteLedger(path, read_only=True)
    await reader.open()  # beside the writer
    assert await reader.totals(0.0) == D("0.25")
    with pytest.raises(LedgerError, match="read-only"):
        await reader.record(ts=2.0, route="r", provider="p", model="m", cost=D("1"))
    await reader.close()
    await writer.close()


async def test_the_same_process_can_reopen_its_ledger_after_closing_it(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite3"
    first = SqliteLedger(path)
    await first.open()
    second = SqliteLedger(path)
    with pytest.raises(LedgerError, match="another process"):
        await second.open()  # a second writer in this process is refused the same way
    await first.close()
    await second.open()
    await second.record(ts=1.0, route="r", provider="p", model="m", cost=D("0.5"))
    await second.close()
    third = SqliteLedger(path)
    await third.open()
    assert await third.totals(0.0) == D("0.5")
    await third.close()


# --- item: ledger I/O is outside the deadline -----------------------------------------


class StalledLedger(MemoryLedger):
    """Records wait until the test lets them through (a stalled disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def record(self, **row: object) -> None:  # type: ignore[override]
        await self.gate.wait()
        await super().record(**row)  # type: ignore[arg-type]


async def _book(ledger: MemoryLedger, limit: str = "1", retry_s: float = 0.01) -> BudgetBook:
    book = BudgetBook(
        {"daily": _budget(limit)}, ledger, clock=Clock(utc(2026, 3, 14, 12)), retry_s=retry_s
    )
    await book.start()
    return book


async def test_settle_does_not_wait_for_the_ledger_and_writes_in_order() -> None:
    ledger = StalledLedger()
    book = await _book(ledger)
    held = [_reserve(book, "0.1") for _ in range(5)]
    for i, r in enumerate(held):
        assert isinstance(r, Reservation)
        # Returns at once although the disk is stalled; admission stays exact.
        await asyncio.wait_for(book.settle(r, D(f"0.0{i + 1}")), 0.1)
    (status,) = book.spend()
    assert status.spent_usd == D("0.15") and status.reserved_usd == 0
    assert book.pending_writes == 5 and ledger.entries == []
    ledger.gate.set()
    await book.flush()
    assert [e.cost for e in ledger.entries] == [D(f"0.0{i}") for i in range(1, 6)]
    assert book.pending_writes == 0
    await book.aclose()


async def test_aclose_waits_for_pending_writes_bounded_and_reports_what_it_could_not_write() -> (
    None
):
    ledger = StalledLedger()
    book = await _book(ledger)
    r = _reserve(book, "0.1")
    assert isinstance(r, Reservation)
    await book.settle(r, D("0.07"))
    started = time.monotonic()
    with capture_logs() as logs:
        unwritten = await book.aclose(timeout_s=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert [(w.route, w.cost) for w in unwritten] == [("r", D("0.07"))]
    (event,) = [e for e in logs if e["event"] == "ledger_unwritten"]
    assert event["log_level"] == "error"
    assert event["rows"] == 1 and event["cost_usd"] == "0.07"
    assert event["maybe_written"] == 1  # it was being written when the wait ran out


async def test_a_locked_sqlite_ledger_does_not_delay_the_answer(tmp_path: Path) -> None:
    """Another connection holds SQLite's write lock while a call is answered: the answer
    arrives in its deadline (the old code waited for the lock: 1 s call, 3 s+), and the
    cost is written once the lock is free."""
    write_config(
        tmp_path,
        "settings: {ledger: {backend: sqlite, path: spend.sqlite3}}\n"
        "providers:\n"
        "  p:\n"
        "    kind: mock\n"
        "    mock: {latency_s: 0.05}\n"
        "    models: {m: {price: {input_per_mtok: 3, output_per_mtok: 15}}}\n"
        "budgets: {daily: {limit_usd: 10, period: day}}\n"
        "routes: {r: {prompt: hi, fallback: [p/m], deadline_s: 1.0}}\n",
    )
    async with Router.from_yaml(tmp_path / "providers.yaml") as router:
        other = sqlite3.connect(tmp_path / "spend.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            result = await router.complete("r")
            elapsed = time.monotonic() - started
            assert elapsed < 0.5, f"{elapsed:.2f} s"
            assert router.spend()[0].spent_usd == result.cost_usd > 0
        finally:
            other.rollback()
        await router.state.flush()
        other.close()
    ledger = SqliteLedger(tmp_path / "spend.sqlite3")
    await ledger.open()
    assert await ledger.totals(0.0) == result.cost_usd
    await ledger.close()


# --- item: a failing settle keeps the answer and fails closed -------------------------


class FlakyLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.tries = 0

    async def record(self, **row: object) -> None:  # type: ignore[override]
        self.tries += 1
        if self.failing:
            raise LedgerError("spend ledger 'x': cannot record spend: disk full", path="x")
        await super().record(**row)  # type: ignore[arg-type]


async def test_a_failing_write_is_logged_counted_and_refuses_paid_reservations_until_it_heals() -> (
    None
):
    ledger = FlakyLedger()
    book = await _book(ledger, limit="10")
    r = _reserve(book, "0.5")
    assert isinstance(r, Reservation)
    with capture_logs() as logs:
        await book.settle(r, D("0.4"))  # does not raise: the answer was paid for
        await _until(lambda: book.ledger_error is not None)
    assert book.spend()[0].spent_usd == D("0.4")
    failed = [e for e in logs if e["event"] == "ledger_write_failed"]
    assert failed and failed[0]["log_level"] == "error" and "disk full" in failed[0]["error"]
    assert book.write_failures >= 1
    refused = _reserve(book, "0.1")
    assert isinstance(refused, Refusal) and refused.ledger_error is not None
    assert "disk full" in refused.reason
    assert refused.kind is SkipKind.LEDGER
    free = _reserve(book, "0")
    assert isinstance(free, Reservation)  # a free step still runs
    book.release(free)
    ledger.failing = False
    await _until(lambda: book.ledger_error is None)
    assert [e.cost for e in ledger.entries] == [D("0.4")]  # written once it healed
    assert isinstance(_reserve(book, "0.1"), Reservation)
    await book.aclose()


PAID_SQLITE = """\
settings: {ledger: {backend: sqlite, path: spend.sqlite3}}
providers:
  p:
    kind: mock
    models: {m: {price: {input_per_mtok: 3, output_per_mtok: 15}}}
  free:
    kind: mock
    models: {f: {}}
budgets: {daily: {limit_usd: 10, period: day}}
routes:
  r: {prompt: hi, fallback: [p/m]}
  with_free: {prompt: hi, fallback: [p/m, free/f]}
"""


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_deleted_or_replaced_ledger_file_keeps_the_answer_and_fails_closed(
    tmp_path: Path, how: str
) -> None:
    """The ledger file is deleted (or replaced) under a running router: the next answer is
    still returned, the write failure is detected (not written into an unlinked file),
    logged at error and counted in stats, and paid calls get a LedgerError."""
    write_config(tmp_path, PAID_SQLITE)
    path = tmp_path / "spend.sqlite3"
    async with Router.from_yaml(tmp_path / "providers.yaml") as router:
        router.state.book._retry_s = 0.01
        await router.complete("r")
        await router.state.flush()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.unlink(f"{path}{suffix}")
        if how == "replaced":
            sqlite3.connect(path).close()
        with capture_logs() as logs:
            answer = await router.complete("r")  # paid for: the caller gets it
            assert answer.cost_usd > 0
            await _until(lambda: router.ledger_status().error is not None)
        errors = [e for e in logs if e["event"] == "ledger_write_failed"]
        assert errors and errors[0]["log_level"] == "error"
        assert how in errors[0]["error"]
        ledger_stats = router.stats()["ledger"]
        assert ledger_stats["write_failures"] >= 1 and ledger_stats["pending"] == 1
        assert how in ledger_stats["error"]
        with pytest.raises(LedgerError, match=how) as info:
            await router.complete("r")
        assert info.value.path == str(path)
        # A free fallback still answers.
        assert (await router.complete("with_free")).provider == "free"
        spent = router.spend()[0].spent_usd
        assert spent > answer.cost_usd  # both paid answers still count in memory
        with capture_logs() as logs:
            await router.aclose()
    (unwritten,) = [e for e in logs if e["event"] == "ledger_unwritten"]
    # The paid answer, and the free one's $0 row: reported for reconciliation.
    assert unwritten["rows"] == 2 and unwritten["cost_usd"] == str(answer.cost_usd)
