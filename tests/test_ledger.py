"""The spend ledger: exact, durable, and loud when its file is bad."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from router.config import LedgerPlan
from router.errors import LedgerError, RouterError
from router.ledger import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Ledger,
    MemoryLedger,
    NoLedger,
    SqliteLedger,
    open_ledger,
)

REPO = Path(__file__).resolve().parents[1]
T0 = 1_773_446_400.0  # 2026-03-14 00:00:00 UTC


@pytest.fixture(params=["memory", "sqlite"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    led: Ledger = MemoryLedger() if request.param == "memory" else SqliteLedger(tmp_path / "l.db")
    await led.open()
    yield led
    await led.close()


async def _fill(led: Ledger) -> None:
    await led.record(ts=T0, route="analysis", provider="openai", model="m", cost=Decimal("0.5"))
    await led.record(ts=T0 + 10, route="analysis", provider="anthropic", model="m", cost=Decimal(1))
    await led.record(ts=T0 + 20, route="chat", provider="openai", model="m", cost=Decimal("0.25"))


async def test_totals_by_time_and_scope(ledger: Ledger) -> None:
    """totals() sums what was recorded at or after `since`, for a provider and/or route."""
    await _fill(ledger)
    assert await ledger.totals(0) == Decimal("1.75")
    assert await ledger.totals(T0 + 10) == Decimal("1.25")  # at-or-after
    assert await ledger.totals(T0 + 21) == 0
    assert await ledger.totals(0, provider="openai") == Decimal("0.75")
    assert await ledger.totals(0, route="analysis") == Decimal("1.5")
    assert await ledger.totals(0, provider="openai", route="chat") == Decimal("0.25")
    assert await ledger.totals(0, provider="nobody") == 0


async def test_sums_are_exact_decimals(ledger: Ledger) -> None:
    """Ten thousand sub-micro costs add up exactly (a float ledger would drift)."""
    tiny = Decimal("0.0000001")
    for start in range(0, 10_000, 1000):
        await asyncio.gather(
            *(
                ledger.record(ts=T0 + i, route="r", provider="p", model="m", cost=tiny)
                for i in range(start, start + 1000)
            )
        )
    assert await ledger.totals(0) == Decimal("0.001")


async def test_sqlite_file_layout(tmp_path: Path) -> None:
    """WAL journal, versioned schema, our application id, costs stored as decimal text."""
    path = tmp_path / "spend.sqlite3"
    led = SqliteLedger(path)
    await led.open()
    await led.record(ts=T0, route="r", provider="p", model="m", cost=Decimal("1E-7"))
    await led.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert conn.execute("SELECT typeof(cost), cost FROM spend").fetchall() == [
            ("text", "0.0000001")
        ]
        plan = " ".join(
            str(r[-1])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT cost FROM spend WHERE ts >= ? AND provider = ?",
                (0, "p"),
            )
        )
        assert "COVERING INDEX spend_ts" in plan
    finally:
        conn.close()


async def test_sqlite_connection_is_synchronous_full(tmp_path: Path) -> None:
    """Every commit fsyncs the WAL (synchronous=FULL is per connection, so ask ours)."""
    led = SqliteLedger(tmp_path / "l.db")
    await led.open()
    try:
        conn = led._connection()
        level = await led._run(lambda: conn.execute("PRAGMA synchronous").fetchone()[0])
        assert level == 2  # FULL
    finally:
        await led.close()


async def test_sqlite_restart_sees_earlier_spend(tmp_path: Path) -> None:
    """A second ledger on the same file, opened after the first closed, sees its rows."""
    path = tmp_path / "l.db"
    first = SqliteLedger(path)
    await first.open()
    await _fill(first)
    await first.close()
    second = SqliteLedger(path)
    await second.open()
    try:
        assert await second.totals(0) == Decimal("1.75")
        await second.record(ts=T0 + 30, route="r", provider="p", model="m", cost=Decimal(1))
        assert await second.totals(0) == Decimal("2.75")
    finally:
        await second.close()


async def test_concurrent_records_are_group_committed(tmp_path: Path) -> None:
    """A burst of concurrent records all land, in far fewer transactions than rows."""
    led = SqliteLedger(tmp_path / "l.db")
    await led.open()
    try:
        await asyncio.gather(
            *(
                led.record(ts=T0 + i, route="r", provider="p", model="m", cost=Decimal("0.01"))
                for i in range(200)
            )
        )
        assert led.committed == 200
        assert led.transactions < 20
        assert await led.totals(0) == Decimal(2)
    finally:
        await led.close()


async def test_cancelled_recorder_still_gets_its_row(tmp_path: Path) -> None:
    """Cancelling the caller while its row is being written does not lose the cost."""
    led = SqliteLedger(tmp_path / "l.db")
    await led.open()
    try:
        task = asyncio.create_task(
            led.record(ts=T0, route="r", provider="p", model="m", cost=Decimal("0.3"))
        )
        await asyncio.sleep(0)  # the row is queued and the write has started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await led.close()  # waits for the in-flight write
    again = SqliteLedger(tmp_path / "l.db")
    await again.open()
    try:
        assert await again.totals(0) == Decimal("0.3")
    finally:
        await again.close()


async def test_record_after_close_is_a_ledger_error(tmp_path: Path) -> None:
    """Writing to a closed ledger fails loudly, naming the file."""
    led = SqliteLedger(tmp_path / "l.db")
    await led.open()
    await led.close()
    await led.close()  # idempotent
    with pytest.raises(LedgerError, match=r"l\.db.*not open"):
        await led.record(ts=T0, route="r", provider="p", model="m", cost=Decimal(1))


# --- bad files ---------------------------------------------------------------------


async def _open_fails(path: Path, match: str, *, busy_timeout_s: float = 5.0) -> LedgerError:
    led = SqliteLedger(path, busy_timeout_s=busy_timeout_s)
    with pytest.raises(LedgerError, match=match) as info:
        await led.open()
    err = info.value
    assert isinstance(err, RouterError)
    assert err.path == str(path)
    assert str(path) in str(err)
    # A failed open leaves nothing running; the ledger can still be closed.
    await led.close()
    return err


async def _make_ledger(path: Path, rows: int) -> None:
    led = SqliteLedger(path)
    await led.open()
    for i in range(0, rows, 500):
        await asyncio.gather(
            *(
                led.record(ts=T0 + i + k, route="r" * 50, provider="p", model="m", cost=Decimal(1))
                for k in range(500)
            )
        )
    await led.close()


async def test_garbage_file_is_refused(tmp_path: Path) -> None:
    """A file that is not SQLite at all gives LedgerError with the path, not zero spend."""
    path = tmp_path / "spend.sqlite3"
    path.write_bytes(os.urandom(8192))
    await _open_fails(path, "not an SQLite database")


async def test_text_file_is_refused(tmp_path: Path) -> None:
    """Someone's notes where the ledger should be: refused, and left untouched."""
    path = tmp_path / "spend.sqlite3"
    path.write_text("budget notes\n" * 200)
    await _open_fails(path, "not an SQLite database")
    assert path.read_text() == "budget notes\n" * 200


async def test_corrupt_pages_are_refused(tmp_path: Path) -> None:
    """A real ledger with damaged pages fails at open (quick_check), not mid-trading."""
    path = tmp_path / "spend.sqlite3"
    await _make_ledger(path, 2000)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for n in range(2, len(data) // page, 3):  # scribble over every third page
        data[n * page + 100 : n * page + 400] = os.urandom(300)
    path.write_bytes(bytes(data))
    await _open_fails(path, "corrupt")


async def test_truncated_file_is_refused(tmp_path: Path) -> None:
    """A ledger cut short (a bad copy, a full disk) is refused."""
    path = tmp_path / "spend.sqlite3"
    await _make_ledger(path, 2000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    await _open_fails(path, "corrupt")


async def test_foreign_database_is_refused(tmp_path: Path) -> None:
    """A valid SQLite file of someone else's schema is not mistaken for an empty ledger."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, qty INTEGER)")
    conn.commit()
    conn.close()
    await _open_fails(path, "not a spend ledger")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A ledger written by a newer router version is not guessed at."""
    path = tmp_path / "l.db"
    await _make_ledger(path, 0)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    await _open_fails(path, "newer than this router")


async def test_wrong_columns_are_refused(tmp_path: Path) -> None:
    """Our application id but a different spend table: wrong schema, refused."""
    path = tmp_path / "l.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE spend (ts REAL, cost REAL)")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.commit()
    conn.close()
    await _open_fails(path, "wrong schema")


@pytest.fixture
def locker() -> Iterator[list[sqlite3.Connection]]:
    held: list[sqlite3.Connection] = []
    yield held
    for conn in held:
        conn.rollback()
        conn.close()


async def test_locked_ledger_is_refused(tmp_path: Path, locker: list[sqlite3.Connection]) -> None:
    """Another connection holding an exclusive lock on a ledger: LedgerError at open."""
    path = tmp_path / "l.db"
    await _make_ledger(path, 10)
    other = sqlite3.connect(path, isolation_level=None)
    locker.append(other)
    other.execute("BEGIN EXCLUSIVE")
    await _open_fails(path, "locked by another connection", busy_timeout_s=0.05)


async def test_locked_plain_database_is_refused(
    tmp_path: Path, locker: list[sqlite3.Connection]
) -> None:
    """Same for a fresh file another process holds exclusively in rollback-journal mode."""
    path = tmp_path / "l.db"
    other = sqlite3.connect(path, isolation_level=None)
    locker.append(other)
    other.execute("CREATE TABLE x (a)")
    other.execute("BEGIN EXCLUSIVE")
    await _open_fails(path, "locked by another connection", busy_timeout_s=0.05)


async def test_missing_folder_is_refused(tmp_path: Path) -> None:
    """A path whose folder does not exist: LedgerError naming it (no folder is created)."""
    await _open_fails(tmp_path / "nope" / "l.db", "cannot open")
    assert not (tmp_path / "nope").exists()


def test_open_ledger_builds_the_configured_backend(tmp_path: Path) -> None:
    """`memory` gives a MemoryLedger; `sqlite` a file at the plan's path; no plan (a
    config without budgets) a NoLedger, which opens and creates nothing."""
    assert isinstance(open_ledger(LedgerPlan("memory", None)), MemoryLedger)
    led = open_ledger(LedgerPlan("sqlite", tmp_path / "spend.db"))
    assert isinstance(led, SqliteLedger)
    assert led.path == tmp_path / "spend.db"
    assert isinstance(open_ledger(None), NoLedger)


async def test_no_ledger_keeps_nothing_and_reads_zero() -> None:
    led = NoLedger()
    await led.open()
    await led.record(ts=1.0, route="r", provider="p", model="m", cost=Decimal(1))
    assert await led.totals(0.0) == Decimal(0)
    await led.close()


# --- kill -9 ------------------------------------------------------------------------

_SETTLER = textwrap.dedent(
    """
    import asyncio, sys
    from decimal import Decimal
    from pathlib import Path
    from router.budget import BudgetBook
    from router.config import BudgetConfig
    from router.ledger import SqliteLedger

    async def main():
        budgets = {"all": BudgetConfig(limit_usd=Decimal(10**9), period="total")}
        book = BudgetBook(budgets, SqliteLedger(Path(sys.argv[1])))
        await book.start()

        async def one(i):
            r = book.reserve(route="r", provider="p", model="m", amount=Decimal("0.01"))
            cost = Decimal(i % 997 + 1).scaleb(-8)
            await book.settle(r, cost)
            await book.flush()  # settle() queues the write; flush() waits until it is durable
            print(cost, flush=True)  # only once written

        i = 0
        while True:  # bursts of concurrent settlements, until killed
            await asyncio.gather(*(one(i + k) for k in range(8)))
            i += 8

    asyncio.run(main())
    """
)


async def test_kill_9_loses_no_settled_spend(tmp_path: Path) -> None:
    """A process killed with SIGKILL mid-burst: every settlement it reported written is on disk."""
    path = tmp_path / "spend.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SETTLER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(printed) < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line.decode())
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=10)
    assert len(printed) >= 400, err.decode()[-2000:]
    # Lines printed before the kill but not yet read are in the pipe; a cut-off
    # last line (no newline) was never fully reported, so it is not counted.
    lines = printed + rest.decode().splitlines(keepends=True)
    reported = [Decimal(x) for x in lines if x.endswith("\n")]
    assert proc.returncode == -signal.SIGKILL

    led = SqliteLedger(path)
    await led.open()
    try:
        on_disk = await led.totals(0)
    finally:
        await led.close()
    assert on_disk >= sum(reported)
    # and nothing invented: at most one unreported burst of 8 (each <= 997e-8).
    assert on_disk - sum(reported) <= 8 * Decimal("997E-8")
