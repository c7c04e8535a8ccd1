"""A programmable HTTP/1.1 upstream on 127.0.0.1 for tests and the fault-injection suite.

It runs in the test's own event loop (``asyncio.start_server``), speaks keep-alive
HTTP/1.1 (Content-Length and chunked responses; no pipelining), and does, per
request, whatever *behaviour* it is given::

    async with Upstream() as up:                    # or the ``upstream`` fixture
        up.queue(reply(200, b'{"ok": true}'))        # next request, any path
        up.queue(hang_before_headers(), path="/v1/chat/completions")
        up.route("/v1/models", reply(200, b"[]"))     # every request to a path
        up.handler = lambda request: reset()          # the fallback hook
        ... point a client at up.url ...
        assert up.connections_opened == 1 and up.disconnects == 0

Choice of behaviour per request: the path's queue, then the shared queue (both
consumed in order), then ``route()``, then ``handler(request)``, then a 200 "ok".

Behaviours: :func:`reply`, :func:`hang_before_headers`, :func:`hang_mid_body`,
:func:`reset`, :func:`close`, :func:`drip`, :func:`stream`, :func:`replay`. A
custom one is any ``async def (exchange: Exchange) -> bool`` (True keeps the
connection open for the next request) wrapped in :class:`Behaviour`.

Counters: ``requests`` (every :class:`Request` seen), ``connections_opened``,
``disconnects`` (connections the client closed), ``server_closes`` (connections
this server closed or reset), ``open_connections`` (open now).

Fixtures (import them into a conftest or test module): ``upstream`` (one started
server) and ``upstream_factory`` (``await make(host="127.0.0.2")`` for more; all
closed at teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import pytest_asyncio

# Where recorded exchanges are looked up (tests/fixtures/INDEX.md lists them).
FIXTURE_DIRS = (Path(__file__).parent / "fixtures",)
# Headers a replay drops: the server recomputes framing, and bodies are stored decoded.
_FRAMING = frozenset({"content-length", "transfer-encoding", "content-encoding", "connection"})
_MAX_HEAD = 64 * 1024

HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | None


@dataclass(slots=True)
class Request:
    """One request as the server saw it."""

    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    conn: int  # which connection (1 = the first opened)
    at: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Conn:
    number: int
    closed_by: Literal["client", "server"] | None = None
    requests: int = 0


class Exchange:
    """What a behaviour works with: the request, and ways to answer or misbehave."""

    def __init__(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
    ) -> None:
        self.request = request
        self.reader = reader
        self.writer = writer
        self._conn = conn

    @property
    def client_gone(self) -> bool:
        return self._conn.closed_by == "client"

    def _gone(self) -> None:
        if self._conn.closed_by is None:
            self._conn.closed_by = "client"

    async def head(
        self,
        status: int,
        headers: HeaderInput = None,
        *,
        length: int | None = None,
        chunked: bool = False,
        close: bool = False,
    ) -> bool:
        """Send the status line and headers. False if the client is gone."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in _pairs(headers)]
        if chunked:
            lines.append("transfer-encoding: chunked")
        elif length is not None:
            lines.append(f"content-length: {length}")
        if close:
            lines.append("connection: close")
        return await self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def write(self, data: bytes) -> bool:
        """Write and drain. False if the client is gone."""
        if self.client_gone or self.writer.is_closing():
            self._gone()
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self._gone()
            return False
        return True

    async def chunk(self, data: bytes) -> bool:
        """Write one chunk of a chunked body (empty data ends the body)."""
        return await self.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def pause(self, seconds: float) -> bool:
        """Wait, noticing a client that closes meanwhile. False if the client is gone."""
        if seconds <= 0:
            return not self.client_gone
        try:
            async with asyncio.timeout(seconds):
                data = await self.reader.read(65536)
        except TimeoutError:
            return True
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self._gone()
            return False
        return True  # unexpected bytes (no pipelining here): ignored

    async def wait_disconnect(self) -> None:
        """Block until the client closes the connection (or the server shuts down)."""
        while await self.pause(3600):
            pass

    def abort(self) -> None:
        """Reset the connection (TCP RST)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


BehaviourFn = Callable[[Exchange], Awaitable[bool]]


@dataclass(slots=True)
class Behaviour:
    """One way to answer a request. ``run`` returns True to keep the connection open."""

    label: str
    run: BehaviourFn

    def __repr__(self) -> str:
        return f"<{self.label}>"


def _pairs(headers: HeaderInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _has(headers: list[tuple[str, str]], name: str) -> bool:
    return any(k.lower() == name for k, _ in headers)


def _with_type(headers: HeaderInput, default: str) -> list[tuple[str, str]]:
    pairs = _pairs(headers)
    if not _has(pairs, "content-type"):
        pairs.append(("content-type", default))
    return pairs


def _bytes(body: bytes | str | Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


# ----------------------------------------------------------------------- behaviours


def reply(
    status: int = 200,
    body: bytes | str | Any = b"",
    headers: HeaderInput = None,
    *,
    chunked: bool = False,
    close: bool = False,
) -> Behaviour:
    """A complete response (Content-Length, or chunked); dicts/lists are sent as JSON.
    Content-Type defaults to application/json. ``close`` ends the connection after it."""
    data = _bytes(body)
    pairs = _with_type(headers, "application/json")

    async def run(ex: Exchange) -> bool:
        if chunked:
            ok = await ex.head(status, pairs, chunked=True, close=close)
            ok = ok and (not data or await ex.chunk(data)) and await ex.chunk(b"")
        else:
            ok = await ex.head(status, pairs, length=len(data), close=close) and await ex.write(
                data
            )
        return ok and not close

    return Behaviour(f"reply {status} {len(data)}B", run)


def hang_before_headers() -> Behaviour:
    """Read the request, then send nothing until the client gives up."""

    async def run(ex: Exchange) -> bool:
        await ex.wait_disconnect()
        return False

    return Behaviour("hang before headers", run)


def hang_mid_body(
    partial: bytes | int = 16,
    *,
    status: int = 200,
    headers: HeaderInput = None,
    total: int | None = None,
) -> Behaviour:
    """Send headers promising ``total`` bytes (default: more than ``partial``), then
    ``partial`` bytes (or that many), then nothing until the client gives up."""
    data = b"x" * partial if isinstance(partial, int) else partial
    length = total if total is not None else len(data) + 1024
    pairs = _with_type(headers, "application/json")

    async def run(ex: Exchange) -> bool:
        if await ex.head(status, pairs, length=length) and await ex.write(data):
            await ex.wait_disconnect()
        return False

    return Behaviour(f"hang mid-body after {len(data)}B", run)


def reset() -> Behaviour:
    """Abort the connection (TCP RST) without answering."""

    async def run(ex: Exchange) -> bool:
        ex.abort()
        return False

    return Behaviour("reset", run)


def close() -> Behaviour:
    """Close the connection cleanly (FIN) without answering."""

    async def run(ex: Exchange) -> bool:
        return False

    return Behaviour("close", run)


def drip(
    body: bytes | str,
    bytes_per_interval: int = 1,
    interval_s: float = 1.0,
    *,
    status: int = 200,
    headers: HeaderInput = None,
) -> Behaviour:
    """Send headers (with the full Content-Length), then the body a few bytes at a time."""
    data = _bytes(body)
    pairs = _with_type(headers, "application/json")

    async def run(ex: Exchange) -> bool:
        if not await ex.head(status, pairs, length=len(data)):
            return False
        for i in range(0, len(data), bytes_per_interval):
            if (i and not await ex.pause(interval_s)) or not await ex.write(
                data[i : i + bytes_per_interval]
            ):
                return False
        return True

    return Behaviour(f"drip {len(data)}B by {bytes_per_interval}B/{interval_s}s", run)


StreamEnd = Literal["complete", "close", "reset", "hang"]


def stream(
    chunks: Sequence[bytes | str],
    delays: float | Sequence[float] = 0.0,
    *,
    status: int = 200,
    headers: HeaderInput = None,
    end: StreamEnd = "complete",
) -> Behaviour:
    """A chunked body (an SSE or NDJSON stream). ``delays`` is the wait before each
    chunk (one number for all). ``end``: "complete" sends the last chunk; "close",
    "reset" and "hang" stop mid-stream in that way. Content-Type defaults to SSE."""
    parts = [_bytes(c) for c in chunks]
    waits = [delays] * len(parts) if isinstance(delays, int | float) else list(delays)
    if len(waits) != len(parts):
        raise ValueError("one delay per chunk")
    pairs = _with_type(headers, "text/event-stream")

    async def run(ex: Exchange) -> bool:
        if not await ex.head(status, pairs, chunked=True):
            return False
        for wait, part in zip(waits, parts, strict=True):
            if not await ex.pause(wait) or (part and not await ex.chunk(part)):
                return False
        if end == "complete":
            return await ex.chunk(b"")
        if end == "reset":
            ex.abort()
        elif end == "hang":
            await ex.wait_disconnect()
        return False

    return Behaviour(f"stream {len(parts)} chunks, end={end}", run)


def _find(path: str | Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for root in FIXTURE_DIRS:
        if (root / p).exists():
            return root / p
    raise FileNotFoundError(f"fixture {path} not in {[str(d) for d in FIXTURE_DIRS]}")


def load_recording(
    meta_path: str | Path, body_path: str | Path | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """status, headers (framing dropped) and body of a recorded exchange."""
    meta_file = _find(meta_path)
    meta = json.loads(meta_file.read_text())
    resp = meta["response"]
    body_file = _find(body_path) if body_path else meta_file.parent / resp["body_file"]
    headers = [
        (name, value)
        for name, values in resp.get("headers", {}).items()
        if name.lower() not in _FRAMING
        for value in (values if isinstance(values, list) else [values])
    ]
    return int(resp["status"]), headers, body_file.read_bytes()


def replay(
    meta_path: str | Path,
    body_path: str | Path | None = None,
    *,
    chunk_size: int | None = None,
    delay_s: float = 0.0,
) -> Behaviour:
    """Serve a recorded status, headers and body (from tests/fixtures; ``meta_path`` may
    be relative to it, e.g. "openai/<id>.meta.json"). The body is
    sent with Content-Length, or chunked in ``chunk_size`` pieces ``delay_s`` apart."""
    status, headers, body = load_recording(meta_path, body_path)
    if chunk_size is None:
        behaviour = reply(status, body, headers)
    else:
        pieces = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
        behaviour = stream(pieces, delay_s, status=status, headers=headers)
    behaviour.label = f"replay {Path(meta_path).name}"
    return behaviour


# --------------------------------------------------------------------------- server


class Upstream:
    """The server. See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        handler: Callable[[Request], Behaviour] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # Fallback behaviour chooser, after the queues and routes.
        self.handler = handler
        # Every request seen, in arrival order.
        self.requests: list[Request] = []
        # One-shot behaviours: shared and per path.
        self._queue: deque[Behaviour] = deque()
        self._path_queues: dict[str, deque[Behaviour]] = {}
        # Standing behaviour per path.
        self._routes: dict[str, Behaviour] = {}
        self._conns: list[_Conn] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    # -- configuration

    def queue(self, *behaviours: Behaviour, path: str | None = None) -> Upstream:
        """Answer the next requests (to ``path``, or to any path) with these, in order."""
        q = self._queue if path is None else self._path_queues.setdefault(path, deque())
        q.extend(behaviours)
        return self

    def route(self, path: str, behaviour: Behaviour) -> Upstream:
        """Answer every request to ``path`` with this (when nothing is queued)."""
        self._routes[path] = behaviour
        return self

    # -- counters

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connections_opened(self) -> int:
        return len(self._conns)

    @property
    def disconnects(self) -> int:
        """Connections the client closed (or reset)."""
        return sum(1 for c in self._conns if c.closed_by == "client")

    @property
    def server_closes(self) -> int:
        """Connections this server closed or reset (a behaviour, or ``connection: close``)."""
        return sum(1 for c in self._conns if c.closed_by == "server")

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._conns if c.closed_by is None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
        """Poll until ``predicate()`` is true; AssertionError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.002)

    # -- lifecycle

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=_MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        """Stop listening, cancel every handler (hanging ones too), close every connection."""
        if self._server is not None:
            self._server.close()
        for conn in self._conns:
            if conn.closed_by is None:
                conn.closed_by = "server"
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Upstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"<Upstream {self.url} requests={len(self.requests)} conns={self.connections_opened}"
            f" open={self.open_connections} disconnects={self.disconnects}>"
        )

    # -- serving

    def _choose(self, request: Request) -> Behaviour:
        q = self._path_queues.get(request.path)
        if q:
            return q.popleft()
        if self._queue:
            return self._queue.popleft()
        if request.path in self._routes:
            return self._routes[request.path]
        if self.handler is not None:
            return self.handler(request)
        return reply(200, b"ok", {"content-type": "text/plain"})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn = _Conn(number=len(self._conns) + 1)
        self._conns.append(conn)
        try:
            while True:
                request = await self._read_request(reader, conn)
                if request is None:
                    return
                self.requests.append(request)
                conn.requests += 1
                exchange = Exchange(request, reader, writer, conn)
                keep = await self._choose(request).run(exchange)
                if exchange.client_gone:
                    return
                if not keep or request.headers.get("connection", "").lower() == "close":
                    conn.closed_by = "server"
                    return
        except asyncio.CancelledError:
            # Only aclose() cancels these tasks; ending quietly keeps asyncio's server
            # callback from logging the cancellation as an error.
            if conn.closed_by is None:
                conn.closed_by = "server"
        except (ConnectionError, OSError):
            if conn.closed_by is None:
                conn.closed_by = "client"
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.close()

    async def _read_request(self, reader: asyncio.StreamReader, conn: _Conn) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            conn.closed_by = "client"  # closed while idle (or mid-request)
            return None
        except asyncio.LimitOverrunError:
            conn.closed_by = "server"
            return None
        line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = line.split(" ", 2)
        headers: dict[str, str] = {}
        for h in header_lines:
            if not h:
                continue
            name, _, value = h.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self._read_chunked(reader)
            else:
                body = await reader.readexactly(int(headers.get("content-length", "0")))
        except asyncio.IncompleteReadError:
            conn.closed_by = "client"
            return None
        return Request(method, target, headers, body, conn.number)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)


# ------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A started Upstream on 127.0.0.1 (random port), closed after the test."""
    async with Upstream() as server:
        yield server


@pytest_asyncio.fixture
async def upstream_factory() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    """``await make(host=..., handler=...)`` starts another Upstream; all closed after the test."""
    servers: list[Upstream] = []

    async def make(**kwargs: Any) -> Upstream:
        server = await Upstream(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.aclose()
