"""The test upstream itself (tests/upstream.py), driven by a raw socket client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.upstream import (
    FIXTURE_DIRS,
    Upstream,
    close,
    drip,
    hang_before_headers,
    hang_mid_body,
    load_recording,
    replay,
    reply,
    reset,
    stream,
)


class RawClient:
    """A minimal HTTP/1.1 client on one connection, so the server is tested on its own."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: Upstream) -> RawClient:
        return cls(*await asyncio.open_connection(server.host, server.port))

    async def request(
        self, method: str = "POST", path: str = "/", body: bytes = b"", extra: str = ""
    ) -> None:
        head = f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode()
        status_line, *lines = head.split("\r\n")
        headers = {}
        for line in lines:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            await self.reader.readexactly(2)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def test_keep_alive_serves_many_requests_on_one_connection(upstream: Upstream) -> None:
    upstream.queue(reply(201, {"a": 1}), reply(404, b"nope", {"content-type": "text/plain"}))
    c = await RawClient.connect(upstream)
    await c.request(path="/one", body=b'{"x":1}')
    assert await c.response() == (
        201,
        {"content-type": "application/json", "content-length": "8"},
        b'{"a": 1}',
    )
    await c.request("GET", "/two?q=1")
    status, _, body = await c.response()
    assert (status, body) == (404, b"nope")
    await c.close()
    await upstream.wait_until(lambda: upstream.disconnects == 1)
    assert upstream.connections_opened == 1
    assert [(r.method, r.target, r.path, r.body) for r in upstream.requests] == [
        ("POST", "/one", "/one", b'{"x":1}'),
        ("GET", "/two?q=1", "/two", b""),
    ]
    assert upstream.requests[0].headers["host"] == "x"


async def test_chunked_request_body_is_read(upstream: Upstream) -> None:
    c = await RawClient.connect(upstream)
    c.writer.write(
        b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    )
    assert (await c.response())[2] == b"ok"
    assert upstream.requests[0].body == b"abcde"
    await c.close()


async def test_behaviour_choice_order(upstream: Upstream) -> None:
    """Path queue, then shared queue, then route, then handler, then the default 200."""
    upstream.queue(reply(201), path="/a")
    upstream.queue(reply(202))
    upstream.route("/a", reply(203))
    upstream.handler = lambda request: reply(204) if request.path == "/h" else reply(299)
    c = await RawClient.connect(upstream)
    statuses = []
    for path in ["/b", "/a", "/a", "/a", "/h"]:
        await c.request(path=path)
        statuses.append((await c.response())[0])
    assert statuses == [202, 201, 203, 203, 204]
    upstream.handler = None
    await c.request(path="/z")
    assert (await c.response())[:1] == (200,)
    await c.close()


async def test_close_after_reply_is_counted_as_a_server_close(upstream: Upstream) -> None:
    upstream.queue(reply(200, b"bye", close=True))
    c = await RawClient.connect(upstream)
    await c.request()
    _, headers, _ = await c.response()
    assert headers["connection"] == "close"
    assert await c.reader.read() == b""
    await upstream.wait_until(lambda: upstream.server_closes == 1)
    assert upstream.disconnects == 0
    await c.close()


async def test_reset_and_close_end_the_connection_without_an_answer(upstream: Upstream) -> None:
    upstream.queue(reset())
    c = await RawClient.connect(upstream)
    await c.request()
    with pytest.raises(ConnectionResetError):
        await c.reader.read()
    await c.close()
    upstream.queue(close())
    c = await RawClient.connect(upstream)
    await c.request()
    assert await c.reader.read() == b""
    await c.close()
    assert upstream.server_closes == 2


async def test_hangs_notice_the_client_leaving(upstream: Upstream) -> None:
    upstream.queue(hang_before_headers(), hang_mid_body(b"partial", total=100))
    for _ in range(2):
        c = await RawClient.connect(upstream)
        await c.request()
        await asyncio.sleep(0.02)
        await c.close()
    await upstream.wait_until(lambda: upstream.disconnects == 2)
    assert upstream.open_connections == 0


async def test_hang_mid_body_sends_headers_and_part(upstream: Upstream) -> None:
    upstream.queue(hang_mid_body(b"partial", total=100))
    c = await RawClient.connect(upstream)
    await c.request()
    head = await c.reader.readuntil(b"\r\n\r\n")
    assert b"content-length: 100" in head
    assert await c.reader.readexactly(7) == b"partial"
    await c.close()


async def test_drip_paces_the_body(upstream: Upstream) -> None:
    upstream.queue(drip(b"abcdef", 2, 0.03))
    c = await RawClient.connect(upstream)
    start = time.monotonic()
    await c.request()
    assert (await c.response())[2] == b"abcdef"
    assert time.monotonic() - start >= 0.06  # two pauses
    await c.close()


@pytest.mark.parametrize("end", ["complete", "close", "reset"])
async def test_stream_sends_chunks_and_ends_as_told(upstream: Upstream, end: str) -> None:
    upstream.queue(stream([b"data: 1\n\n", "data: 2\n\n"], [0, 0.01], end=end))  # type: ignore[arg-type]
    c = await RawClient.connect(upstream)
    await c.request()
    head = await c.reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert b"content-type: text/event-stream" in head
    rest = b""
    try:
        while chunk := await c.reader.read(65536):
            rest += chunk
            if end == "complete" and rest.endswith(b"0\r\n\r\n"):
                break
    except ConnectionResetError:
        assert end == "reset"
    assert b"data: 1" in rest
    assert rest.endswith(b"0\r\n\r\n") == (end == "complete")
    await c.close()


def test_stream_needs_one_delay_per_chunk() -> None:
    with pytest.raises(ValueError, match="one delay per chunk"):
        stream([b"a", b"b"], [0.1])


def shared_fixture(name: str) -> str:
    if not any((d / name).exists() for d in FIXTURE_DIRS):
        pytest.skip("recorded fixture not available")
    return name


async def test_replay_serves_a_recording_without_its_framing(upstream: Upstream) -> None:
    meta = shared_fixture("anthropic/anthropic-messages-429-rate-limit-retry-after.meta.json")
    status, headers, body = load_recording(meta)
    assert status == 429
    names = {k.lower() for k, _ in headers}
    assert "retry-after" in names
    assert not names & {"content-length", "transfer-encoding", "content-encoding"}
    upstream.queue(replay(meta), replay(meta, chunk_size=50))
    c = await RawClient.connect(upstream)
    for _ in range(2):
        await c.request()
        got_status, got_headers, got_body = await c.response()
        assert (got_status, got_body) == (429, body)
        assert got_headers["retry-after"] == "7"
    await c.close()


async def test_replay_accepts_absolute_paths(upstream: Upstream, tmp_path: Path) -> None:
    meta = {"response": {"status": 503, "headers": {"X-A": ["1", "2"]}, "body_file": "b.txt"}}
    (tmp_path / "m.meta.json").write_text(json.dumps(meta))
    (tmp_path / "b.txt").write_bytes(b"down")
    status, headers, body = load_recording(tmp_path / "m.meta.json")
    assert (status, headers, body) == (503, [("X-A", "1"), ("X-A", "2")], b"down")
    with pytest.raises(FileNotFoundError):
        load_recording("nope/missing.meta.json")


async def test_aclose_cancels_hanging_handlers() -> None:
    server = await Upstream().start()
    server.queue(hang_before_headers())
    c = await RawClient.connect(server)
    await c.request()
    await server.wait_until(lambda: len(server.requests) == 1)
    start = time.monotonic()
    await server.aclose()
    assert time.monotonic() - start < 0.5
    assert await c.reader.read() == b""
    assert server.open_connections == 0
    await c.close()


async def test_factory_serves_other_loopback_hosts(
    upstream_factory: Callable[..., Awaitable[Upstream]],
) -> None:
    other = await upstream_factory(host="127.0.0.2")
    assert other.url.startswith("http://127.0.0.2:")
    c = await RawClient.connect(other)
    await c.request()
    assert (await c.response())[2] == b"ok"
    await c.close()
