"""The spend ledger: where settled costs are kept, one interface and its backends.

Reservations live in memory, per process (:mod:`router.budget`); *settled* spend
lives here. A backend answers two questions: "record this cost, durably" and
"how much was spent since this instant, for this scope". That is all a
:class:`~router.budget.BudgetBook` needs at start-up and after every call, and
all a backend shared by several processes (Redis, for instance) must provide.

Backends:

- :class:`MemoryLedger` forgets on exit (tests, demos, throwaway processes).
- :class:`SqliteLedger` is the default: an embedded SQLite file in WAL mode with
  ``synchronous=FULL``; :meth:`SqliteLedger.record` returns only once the row
  is committed and the WAL is fsynced, so a settled cost survives ``kill -9``
  and power loss (see docs/money.md, "Durability"). One process at a time may
  have a file open for writing (an OS lock, held while it is open): budgets
  are enforced in each process's memory, so a second process would spend the
  whole limit again.

The :class:`~router.budget.BudgetBook` calls ``record`` from one background
writer, never on a call's path: a slow or stalled disk does not delay answers.

Costs are :class:`~decimal.Decimal` throughout and stored as exact decimal
text, never as a float.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from router.config import LedgerSettings
from router.errors import LedgerError

if sys.platform != "win32":
    import fcntl

__all__ = ["Ledger", "MemoryLedger", "SqliteLedger", "open_ledger"]

_T = TypeVar("_T")
# The lock file's descriptor is not inherited by child processes (0 where unknown).
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class Ledger(Protocol):
    """What a spend ledger backend provides. All timestamps are Unix epoch seconds (UTC)."""

    async def open(self) -> None:
        """Open (and create or migrate) the store; raise LedgerError naming the cause."""
        ...

    async def totals(
        self, since_epoch: float, *, provider: str | None = None, route: str | None = None
    ) -> Decimal:
        """Spend recorded at or after ``since_epoch`` for that scope (None = any)."""
        ...

    async def record(
        self, *, ts: float, route: str, provider: str, model: str, cost: Decimal
    ) -> None:
        """Add one settled cost; durable before it returns."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release the store. Idempotent."""
        ...


@dataclass(slots=True, frozen=True)
class _Entry:
    ts: float
    route: str
    provider: str
    model: str
    cost: Decimal


class MemoryLedger:
    """A ledger in a list: nothing survives the process. For tests and demos."""

    def __init__(self) -> None:
        # Every recorded cost, in recording order.
        self.entries: list[_Entry] = []

    async def open(self) -> None:
        return None

    async def totals(
        self, since_epoch: float, *, provider: str | None = None, route: str | None = None
    ) -> Decimal:
        return sum(
            (
                e.cost
                for e in self.entries
                if e.ts >= since_epoch
                and (provider is None or e.provider == provider)
                and (route is None or e.route == route)
            ),
            Decimal(0),
        )

    async def record(
        self, *, ts: float, route: str, provider: str, model: str, cost: Decimal
    ) -> None:
        self.record_now(ts, route, provider, model, cost)

    def record_now(self, ts: float, route: str, provider: str, model: str, cost: Decimal) -> None:
        """:meth:`record`, synchronously: a list append cannot wait or fail, so the
        BudgetBook records a settled cost at once instead of waking its writer."""
        self.entries.append(_Entry(ts, route, provider, model, cost))

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<MemoryLedger entries={len(self.entries)}>"


# --- SQLite -----------------------------------------------------------------------

# PRAGMA user_version of the schema this code writes. A migration bumps it; a file
# with a higher version was written by newer code and is refused, not guessed at.
SCHEMA_VERSION = 1
# PRAGMA application_id marking a file as this router's ledger ("LLMR").
APPLICATION_ID = 0x4C4C4D52

# One statement each: executescript() would COMMIT the open transaction first.
_SCHEMA = (
    """CREATE TABLE spend (
        id       INTEGER PRIMARY KEY,
        ts       REAL    NOT NULL,  -- Unix epoch seconds (UTC) when the cost was settled
        route    TEXT    NOT NULL,
        provider TEXT    NOT NULL,
        model    TEXT    NOT NULL,
        cost     TEXT    NOT NULL   -- exact decimal USD, e.g. '0.00032935'; never a float
    )""",
    # Period queries are "ts >= start [AND provider = ?] [AND route = ?]"; the index
    # covers them, so a total reads the index alone.
    "CREATE INDEX spend_ts ON spend (ts, provider, route, cost)",
    f"PRAGMA application_id={APPLICATION_ID}",
    f"PRAGMA user_version={SCHEMA_VERSION}",
)
_COLUMNS = ("id", "ts", "route", "provider", "model", "cost")
_INSERT = "INSERT INTO spend (ts, route, provider, model, cost) VALUES (?, ?, ?, ?, ?)"


class SqliteLedger:
    """Spend in an SQLite file (stdlib ``sqlite3``): WAL mode, ``synchronous=FULL``.

    All SQLite work runs on one dedicated thread, off the event loop: a commit
    waits for an fsync, which must not stall every other call. Records that
    arrive while a commit is in progress are written together in the next
    transaction (group commit), so a burst of N settlements costs about two
    fsyncs, not N. Each :meth:`record` still returns only after its own row is
    committed.

    Only one process may have a ledger file open for writing: :meth:`open` takes
    an exclusive OS lock (``flock``) on ``<file>-lock`` beside it and holds it
    until :meth:`close`; a second opener — another process, or a second ledger
    object on the same file — gets a LedgerError saying so. The lock is released
    by the OS when the process dies, so a crash leaves nothing to clean up.

    Before each write the file is checked to still be the one opened (same
    device and inode): a ledger deleted or replaced under a running router
    fails its writes with LedgerError instead of writing into an unlinked file.

    Args:
        path: the SQLite file; created (with its schema) when missing.
        busy_timeout_s: how long to wait for another connection's write lock
            before failing with LedgerError.
        read_only: only read spend (``router spend`` beside a running router):
            no lock is taken, nothing is created, :meth:`record` is refused. A
            missing file reads as no spend.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.read_only = read_only
        # A read-only ledger whose file does not exist: nothing was ever recorded.
        self._absent = False
        # The one-writer lock file and its descriptor while open (see open()).
        self.lock_path = self.path.with_name(self.path.name + "-lock")
        self._lock_fd: int | None = None
        # (st_dev, st_ino) of the file as opened: a write checks it is still there.
        self._identity: tuple[int, int] | None = None
        # The connection; used only on the worker thread. None until open().
        self._conn: sqlite3.Connection | None = None
        # The one worker thread that owns the connection.
        self._executor: ThreadPoolExecutor | None = None
        # Rows waiting for the next commit, each with the future its recorder awaits.
        self._pending: list[tuple[tuple[float, str, str, str, str], asyncio.Future[None]]] = []
        # The task committing pending rows; None when nothing is being written.
        self._flusher: asyncio.Task[None] | None = None
        # Rows committed, and the transactions that committed them, since creation.
        self.committed = 0
        self.transactions = 0

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return (
            f"<SqliteLedger {str(self.path)!r} {state} committed={self.committed}"
            f" pending={len(self._pending)}>"
        )

    def _error(self, what: str, exc: BaseException | None = None) -> LedgerError:
        cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        return LedgerError(f"spend ledger {str(self.path)!r}: {what}{cause}", path=str(self.path))

    async def _run(self, fn: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise self._error("not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- open / close

    async def open(self) -> None:
        if self._conn is not None or self._absent:
            return
        if self.read_only and not self.path.exists():
            self._absent = True
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-ledger")
        try:
            self._conn = await self._run(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _lock(self) -> None:
        """Take the one-writer lock, or raise LedgerError naming who holds it."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._error("cannot open", exc) from exc
        if sys.platform == "win32":  # no flock: one process per file is on the operator
            self._lock_fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
                holder = f" (pid {pid})"
            os.close(fd)
            raise self._error(
                f"another process{holder} has this ledger open for writing (lock"
                f" {str(self.lock_path)!r}). Budgets are enforced in each process's memory,"
                " so two processes on one ledger would each spend the whole limit. Run one"
                " router process per ledger file (give each worker its own"
                " settings.ledger.path and budgets), or stop the other process first"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    def _check_file(self) -> None:
        """The file at ``path`` is still the one opened (not deleted, not replaced)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise self._error(
                "the ledger file was deleted while the router was running; restart the"
                " router to create a new one (the costs not written are logged when it"
                " closes)"
            ) from None
        except OSError as exc:
            raise self._error("cannot check the ledger file", exc) from exc
        if (st.st_dev, st.st_ino) != self._identity or st.st_nlink == 0:
            raise self._error(
                "the ledger file was replaced by another file while the router was"
                " running; restart the router to use the new file"
            )

    def _open_sync(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect()
        self._lock()
        try:
            conn = self._connect()
            st = os.stat(self.path)
        except BaseException:
            self._unlock()
            raise
        self._identity = (st.st_dev, st.st_ino)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro" if self.read_only else self.path,
                uri=self.read_only,
                timeout=self.busy_timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # opened and used on the one worker thread
            )
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc
        try:
            self._prepare(conn)
        except LedgerError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(_describe(exc), exc) from exc
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Reading the header first makes a non-database file fail here, clearly.
        conn.execute("PRAGMA schema_version").fetchone()
        if self.read_only:
            self._check_schema(conn, create=False)
            return
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise self._error(f"cannot use WAL journal mode (got {mode!r})")
        # FULL in WAL mode: the WAL is fsynced at every commit (survives power loss).
        conn.execute("PRAGMA synchronous=FULL")
        # Take the write lock now: a database locked by another writer fails at
        # open, not at the first settlement.
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._check_schema(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        problems = conn.execute("PRAGMA quick_check").fetchall()
        if problems != [("ok",)]:
            detail = "; ".join(str(p[0]) for p in problems[:3])
            raise self._error(f"file is corrupt ({detail})")

    def _check_schema(self, conn: sqlite3.Connection, *, create: bool = True) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and app_id == 0 and not tables and create:
            for statement in _SCHEMA:
                conn.execute(statement)
            return
        if app_id != APPLICATION_ID:
            raise self._error(
                f"not a spend ledger (application_id {app_id}, tables {sorted(tables)})"
            )
        if version > SCHEMA_VERSION:
            raise self._error(
                f"schema version {version} is newer than this router's {SCHEMA_VERSION}"
            )
        if version != SCHEMA_VERSION:
            raise self._error(f"unknown schema version {version}")
        columns = tuple(r[1] for r in conn.execute("PRAGMA table_info(spend)"))
        if columns != _COLUMNS:
            raise self._error(f"wrong schema: table spend has columns {columns}")

    async def close(self) -> None:
        self._absent = False
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._executor is None:
            return
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await self._run(conn.close)
        finally:
            self._unlock()
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- queries

    async def totals(
        self, since_epoch: float, *, provider: str | None = None, route: str | None = None
    ) -> Decimal:
        sql = "SELECT cost FROM spend WHERE ts >= ?"
        args: list[object] = [since_epoch]
        if provider is not None:
            sql += " AND provider = ?"
            args.append(provider)
        if route is not None:
            sql += " AND route = ?"
            args.append(route)

        if self._absent:
            return Decimal(0)

        def query() -> Decimal:
            conn = self._connection()
            try:
                # Summed in Decimal: SQLite's SUM() would turn text into floats.
                return sum((Decimal(c) for (c,) in conn.execute(sql, args)), Decimal(0))
            except sqlite3.Error as exc:
                raise self._error(f"cannot read spend: {_describe(exc)}", exc) from exc
            except ArithmeticError as exc:
                raise self._error("a stored cost is not a decimal number", exc) from exc

        return await self._run(query)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise self._error("not open")
        return self._conn

    # -- writes

    async def record(
        self, *, ts: float, route: str, provider: str, model: str, cost: Decimal
    ) -> None:
        if self.read_only:
            raise self._error("opened read-only: cannot record spend")
        if self._conn is None:
            raise self._error("not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        # str(Decimal) is exact; format "f" avoids exponents like '1E-7' in the file.
        self._pending.append(((ts, route, provider, model, format(cost, "f")), fut))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        # shield: a caller cancelled while waiting still gets its row written (the
        # money was spent); the flusher owns the write, the caller only waits.
        await asyncio.shield(fut)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                rows = [row for row, _ in batch]
                try:
                    await self._run(partial(self._write, rows))
                except BaseException as exc:
                    err = exc if isinstance(exc, LedgerError) else self._error("write failed", exc)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self.committed += len(rows)
                self.transactions += 1
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flusher = None

    def _write(self, rows: list[tuple[float, str, str, str, str]]) -> None:
        conn = self._connection()
        self._check_file()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._error(f"cannot record spend: {_describe(exc)}", exc) from exc


def _describe(exc: sqlite3.Error) -> str:
    """A short human cause for the common SQLite failures."""
    text = str(exc).lower()
    if "not a database" in text:
        return "file is not an SQLite database"
    if "locked" in text or "busy" in text:
        return "database is locked by another connection"
    if "malformed" in text or "corrupt" in text:
        return "file is corrupt"
    return "SQLite error"


def open_ledger(settings: LedgerSettings, base_dir: Path, *, read_only: bool = False) -> Ledger:
    """Build the ledger the YAML asks for (not yet opened).

    Args:
        settings: ``settings.ledger`` from providers.yaml.
        base_dir: the YAML file's folder; a relative ``path`` is taken from there.
        read_only: for reading spend beside a running router (see SqliteLedger).
    """
    if settings.backend == "memory":
        return MemoryLedger()
    return SqliteLedger(Path(base_dir) / Path(settings.path).expanduser(), read_only=read_only)
