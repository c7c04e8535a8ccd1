"""Calls in flight, so that ``Router.aclose()`` can end every one of them promptly.

A call registers its task for as long as it is waiting inside the router
(``complete()``, a stream's ``async with`` and each read of its deltas):
:meth:`InFlight.track`. ``aclose()`` cancels exactly those tasks, once each,
and the call turns that cancellation into :class:`~router.errors.RouterClosedError`
with :meth:`Tracked.closed_by_router` — the way ``asyncio.timeout`` turns its own
cancellation into ``TimeoutError``: by counting cancel requests
(``Task.cancelling()``/``uncancel()``), so that a cancellation of the caller's
own (before, during or after the close) still raises ``CancelledError``.

A task outside the router (an app holding an open stream while it does its own
work) is never cancelled: its stream is settled by the close, and its next read
raises RouterClosedError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

from router.errors import RouterError
from router.logger import get_logger

_log = get_logger()

# How long aclose() waits for cancelled calls to unwind (release their slots and
# reservations, bill what their streams generated) before it closes the ledger.
UNWIND_TIMEOUT_S = 5.0


class Tracked:
    """One task's stay inside the router (a context manager; see :meth:`InFlight.track`)."""

    __slots__ = ("_cancelling", "_inflight", "_task")

    def __init__(self, inflight: InFlight) -> None:
        self._inflight = inflight
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - the router runs in tasks only
            raise RuntimeError("the router must be called from an asyncio task")
        self._task = task
        # Cancel requests already pending on entry belong to the caller.
        self._cancelling = task.cancelling()

    def __enter__(self) -> Tracked:
        tasks = self._inflight._tasks
        tasks[self._task] = tasks.get(self._task, 0) + 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        inflight = self._inflight
        task = self._task
        depth = inflight._tasks[task] - 1
        if depth:
            inflight._tasks[task] = depth
            return
        del inflight._tasks[task]
        if task in inflight._cancelled:
            # The close's cancel request never surfaced here (the call ended first, or
            # something swallowed it): take it back, so it cannot hit the caller later.
            inflight._cancelled.discard(task)
            task.uncancel()
        if not inflight._tasks and inflight._idle is not None:
            inflight._idle.set()

    def closed_by_router(self) -> bool:
        """Call from ``except CancelledError``: True when the close cancelled this call and
        the caller did not (then the cancellation is taken back and the caller should
        raise RouterClosedError); False means the CancelledError is the caller's."""
        inflight = self._inflight
        task = self._task
        if task not in inflight._cancelled:
            return False
        inflight._cancelled.discard(task)
        return task.uncancel() <= self._cancelling


class InFlight:
    """The tasks waiting inside one Router, and the streams it has open."""

    __slots__ = ("_cancelled", "_idle", "_streams", "_tasks", "closed")

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[object], int] = {}
        # Tasks cancelled by close() whose cancellation has not been taken back yet.
        self._cancelled: set[asyncio.Task[object]] = set()
        # Open streams (a provider is talking): stream -> how to end it at close.
        self._streams: dict[object, Callable[[], Awaitable[None]]] = {}
        self._idle: asyncio.Event | None = None
        self.closed = False

    def track(self) -> Tracked:
        """``with inflight.track() as t:`` around a call's await inside the router."""
        return Tracked(self)

    def open_stream(self, stream: object, end: Callable[[], Awaitable[None]]) -> None:
        """A stream is open; ``end()`` settles it should the router close first."""
        self._streams[stream] = end

    def stream_ended(self, stream: object) -> None:
        self._streams.pop(stream, None)

    @property
    def count(self) -> int:
        """Tasks waiting inside the router now."""
        return len(self._tasks)

    async def close(self, timeout_s: float = UNWIND_TIMEOUT_S) -> int:
        """End every call in flight; return how many had not unwound within ``timeout_s``.

        Cancels each task waiting inside the router (once), waits for them to unwind,
        then ends the open streams nobody is reading.
        """
        self.closed = True
        for task in list(self._tasks):
            if task not in self._cancelled:
                self._cancelled.add(task)
                task.cancel()
        left = 0
        if self._tasks:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
            except TimeoutError:
                left = len(self._tasks)
            finally:
                self._idle = None
        for end in list(self._streams.values()):
            try:
                await end()
            except Exception as exc:  # one stream's settle must not stop the close
                _log.error(
                    "aclose_stream_not_settled",
                    error_type=type(exc).__name__,
                    error=str(exc) if isinstance(exc, RouterError) else None,  # redacted
                )
        self._streams.clear()
        return left
