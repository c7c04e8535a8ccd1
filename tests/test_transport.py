"""router.transport against a real local HTTP/1.1 server (tests/upstream.py)."""

from __future__ import annotations

import asyncio
import gc
import gzip
import inspect
import json
import logging
import re
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import httpx_sse
import pytest

from router import transport as transport_module
from router.errors import (
    InvalidResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ServerError,
)
from router.transport import Transport, map_httpx_error
from router.types import WireRequest
from tests.hostile import HOSTILE, PARSER_FAULTS
from tests.upstream import (
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

# Not shaped like any known key, so router.redact cannot be what hides it.
CANARY = "CANARY7f3a9e1c5b2d4f6a8e0c"
HEADERS = {"authorization": f"Bearer {CANARY}", "x-api-key": CANARY}
MB = 1024 * 1024
# Allowed lateness of a timeout (docs/routing.md: a deadline is overshot by under 50 ms).
SLACK_S = 0.05

POST = WireRequest("POST", "/v1/chat/completions", {"model": "m", "messages": []})


def make(url: str, **kwargs: Any) -> Transport:
    options: dict[str, Any] = {
        "headers": HEADERS,
        "connect_timeout_s": 1.0,
        "max_connections": None,
        "max_response_bytes": MB,
    }
    options.update(kwargs)
    return Transport("prov", url, **options)


@pytest.fixture
async def transport(upstream: Upstream) -> AsyncIterator[Transport]:
    t = make(upstream.url)
    await t.start()
    yield t
    await t.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_no_canary(*things: object) -> None:
    for thing in things:
        assert CANARY not in str(thing)
        assert CANARY not in repr(thing)


async def timed(coro: Awaitable[Any]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        await coro
    except BaseException as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


async def exchange(t: Transport, mode: str, timeout_s: float = 0.5) -> None:
    """One request: ``send`` reads the whole body; ``stream`` reads it as SSE events."""
    if mode == "send":
        await t.send(POST, model="m", timeout_s=timeout_s)
        return
    async with t.stream(POST, model="m", read_timeout_s=timeout_s) as resp:
        async for _ in resp.sse():
            pass


# ------------------------------------------------------------------- pooling


async def test_sequential_sends_reuse_one_connection(
    upstream: Upstream, transport: Transport
) -> None:
    """The seed's CRIT-1: many calls, one TCP connection."""
    for _ in range(50):
        resp = await transport.send(POST, model="m", timeout_s=2)
        assert resp.status == 200
    assert len(upstream.requests) == 50
    assert upstream.connections_opened == 1
    assert transport.pool_stats() == {"total": 1, "idle": 1, "active": 0}


async def test_requests_carry_default_headers_and_json(upstream: Upstream) -> None:
    """Auth headers from the constructor and the request's own headers are both sent."""
    async with make(upstream.url) as t:
        req = WireRequest("POST", "/v1/messages", {"a": 1}, {"anthropic-version": "2023-06-01"})
        await t.send(req, model="m", timeout_s=2)
    seen = upstream.requests[0]
    assert seen.method == "POST"
    assert seen.target == "/v1/messages"
    assert seen.headers["x-api-key"] == CANARY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.json() == {"a": 1}


BUILT = [
    POST,
    WireRequest(
        "POST", "/v1/messages", {"a": "é", "n": [1, 2.5, None]}, {"anthropic-version": "1"}
    ),
    WireRequest("POST", "/chat"),  # no body
    WireRequest("GET", "/models?limit=5"),
    WireRequest("POST", "/x", {"a": 1}, {"Content-Type": "application/json; charset=utf-8"}),
]


@pytest.mark.parametrize("base", ["", "/api?api-version=2024-06"])
async def test_requests_are_built_as_httpx_build_request_would(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch, base: str
) -> None:
    """The transport builds each httpx.Request itself (build_request's merging was a
    tenth of a send): method, URL, headers in the same order, body and timeouts are
    what ``client.build_request`` makes, and ``build_request`` is never called."""
    sent: list[httpx.Request] = []
    build_request = httpx.AsyncClient.build_request
    inner = transport_module._AiohttpBackend.handle_async_request

    async def capture(self: Any, request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return await inner(self, request)

    def refuse(*args: Any, **kwargs: Any) -> httpx.Request:
        raise AssertionError("client.build_request called on the hot path")

    monkeypatch.setattr(transport_module._AiohttpBackend, "handle_async_request", capture)
    monkeypatch.setattr(httpx.AsyncClient, "build_request", refuse)
    async with make(upstream.url + base, connect_timeout_s=1.0) as t:
        for req in BUILT:
            await t.send(req, model="m", timeout_s=2.0)
    # The reference: a plain client with the same headers, given the URL the transport
    # resolved (tests above check that URL) and the timeouts send() sets.
    reference = httpx.AsyncClient(headers=HEADERS)
    for req, got in zip(BUILT, sent, strict=True):
        want = build_request(
            reference,
            req.method,
            got.url,
            json=req.json,
            headers=req.headers or None,
            timeout=httpx.Timeout(2.0, connect=1.0),
        )
        assert got.method == want.method
        assert got.headers.raw == want.headers.raw
        assert got.content == want.content
        assert got.extensions == want.extensions
    await reference.aclose()


async def test_base_url_path_is_kept(upstream: Upstream) -> None:
    """A request path is appended to base_url's path, with or without slashes."""
    async with make(upstream.url + "/api/v1") as t:
        await t.send(WireRequest("GET", "/models"), model="m", timeout_s=2)
        await t.send(WireRequest("GET", "chat"), model="m", timeout_s=2)
    assert [r.target for r in upstream.requests] == ["/api/v1/models", "/api/v1/chat"]


async def test_base_url_query_is_kept(upstream: Upstream) -> None:
    """A query on base_url (Azure-style api-version) goes on every request without one."""
    async with make(upstream.url + "/api?api-version=2024-06") as t:
        await t.send(WireRequest("POST", "/chat"), model="m", timeout_s=2)
        await t.send(WireRequest("GET", "/models?limit=5"), model="m", timeout_s=2)
    assert [r.target for r in upstream.requests] == [
        "/api/chat?api-version=2024-06",
        "/api/models?limit=5",
    ]


async def test_aclose_closes_the_connection(upstream: Upstream) -> None:
    """aclose() closes pooled connections (the server sees it) and is idempotent."""
    t = make(upstream.url)
    await t.send(POST, model="m", timeout_s=2)
    assert upstream.open_connections == 1
    await t.aclose()
    await upstream.wait_until(lambda: upstream.disconnects == 1)
    assert upstream.open_connections == 0
    await t.aclose()
    assert "closed" in repr(t)
    with pytest.raises(ProviderConnectionError, match="transport is closed") as info:
        await t.send(POST, model="m", timeout_s=1)
    assert info.value.retryable is False


async def test_cookies_set_by_the_upstream_are_not_sent_back(
    upstream: Upstream, transport: Transport
) -> None:
    """The client keeps no cookie jar: nothing one response sets rides on later calls."""
    upstream.queue(reply(200, b"{}", {"set-cookie": "lb=node7; Path=/"}), reply(200, b"{}"))
    await transport.send(POST, model="m", timeout_s=2)
    await transport.send(POST, model="m", timeout_s=2)
    assert "cookie" not in upstream.requests[1].headers


async def test_pool_is_capped_by_max_connections(upstream: Upstream) -> None:
    """Ten concurrent calls share max_connections=2 sockets; all succeed."""
    upstream.handler = lambda request: stream([b'{"ok":1}'], 0.05, headers={"content-type": "x"})
    async with make(upstream.url, max_connections=2) as t:
        results = await asyncio.gather(*(t.send(POST, model="m", timeout_s=3) for _ in range(10)))
    assert [r.body for r in results] == [b'{"ok":1}'] * 10
    assert upstream.connections_opened == 2


# ------------------------------------------------------------------ timeouts


async def test_hang_before_headers_times_out_within_budget(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(hang_before_headers())
    exc, elapsed = await timed(transport.send(POST, model="m", timeout_s=0.2))
    assert isinstance(exc, ProviderTimeoutError)
    assert 0.2 <= elapsed < 0.2 + SLACK_S
    assert exc.status is None
    assert exc.retryable
    assert str(exc) == "prov/m: no response within 0.2s"
    await upstream.wait_until(lambda: upstream.disconnects == 1)


async def test_hang_mid_body_times_out_within_budget(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(hang_mid_body(100))
    exc, elapsed = await timed(transport.send(POST, model="m", timeout_s=0.2))
    assert isinstance(exc, ProviderTimeoutError)
    assert 0.2 <= elapsed < 0.2 + SLACK_S
    assert "response body not complete within 0.2s" in str(exc)


async def test_slow_drip_is_cut_at_the_total_budget(
    upstream: Upstream, transport: Transport
) -> None:
    """One byte every 20 ms never trips a read timeout; the total cap still holds."""
    upstream.queue(drip(b"x" * 1000, 1, 0.02))
    exc, elapsed = await timed(transport.send(POST, model="m", timeout_s=0.3))
    assert isinstance(exc, ProviderTimeoutError)
    assert 0.3 <= elapsed < 0.3 + SLACK_S
    await upstream.wait_until(lambda: upstream.disconnects == 1)
    assert transport.pool_stats()["active"] == 0


async def test_zero_budget_fails_without_sending(upstream: Upstream, transport: Transport) -> None:
    with pytest.raises(ProviderTimeoutError, match="no time left"):
        await transport.send(POST, model="m", timeout_s=0)
    assert upstream.requests == []


async def test_pool_is_usable_after_a_timeout(upstream: Upstream, transport: Transport) -> None:
    upstream.queue(hang_before_headers(), reply(200, b"fine"))
    with pytest.raises(ProviderTimeoutError):
        await transport.send(POST, model="m", timeout_s=0.1)
    resp = await transport.send(POST, model="m", timeout_s=2)
    assert resp.body == b"fine"
    assert transport.pool_stats() == {"total": 1, "idle": 1, "active": 0}


# ------------------------------------------------------------ connection faults


async def test_reset_is_a_connection_error(upstream: Upstream, transport: Transport) -> None:
    upstream.queue(reset())
    with pytest.raises(ProviderConnectionError) as info:
        await transport.send(POST, model="m", timeout_s=2)
    assert info.value.retryable
    assert info.value.status is None
    assert "127.0.0.1" in str(info.value)


async def test_close_without_answer_is_a_connection_error(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(close())
    with pytest.raises(ProviderConnectionError, match=r"broke HTTP/1\.1|lost"):
        await transport.send(POST, model="m", timeout_s=2)


async def test_connection_refused_is_a_connection_error() -> None:
    port = free_port()
    async with make(f"http://127.0.0.1:{port}") as t:
        with pytest.raises(ProviderConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
            await t.send(POST, model="m", timeout_s=2)


# --------------------------------------------------------------------- bodies


async def test_html_502_is_returned_raw(upstream: Upstream, transport: Transport) -> None:
    """Decoding an error body is the adapter's job: the transport returns it as is."""
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    upstream.queue(reply(502, page, {"content-type": "text/html", "x-request-id": "r1"}))
    resp = await transport.send(POST, model="m", timeout_s=2)
    assert (resp.status, resp.body) == (502, page)
    assert resp.headers["x-request-id"] == "r1"
    assert resp.headers["Content-Type"] == "text/html"  # case-insensitive


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_cap_is_refused_and_releases_the_connection(
    upstream: Upstream, transport: Transport, chunked: bool
) -> None:
    big = b"x" * (10 * MB)
    if chunked:
        upstream.queue(stream([big[i : i + MB] for i in range(0, len(big), MB)]))
    else:
        upstream.queue(reply(200, big))
    upstream.queue(reply(200, b"after"))
    exc, elapsed = await timed(transport.send(POST, model="m", timeout_s=5))
    assert isinstance(exc, InvalidResponseError)
    assert str(exc) == f"prov/m HTTP 200: response body exceeds {MB} bytes"
    assert exc.retryable is False
    assert elapsed < 1.0
    assert transport.pool_stats()["active"] == 0
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b"after"
    await upstream.wait_until(lambda: upstream.disconnects == 1)  # the oversized one


async def test_body_at_the_cap_is_read(upstream: Upstream, transport: Transport) -> None:
    upstream.queue(reply(200, b"y" * MB))
    assert len((await transport.send(POST, model="m", timeout_s=2)).body) == MB


async def test_gzip_body_is_decoded_and_the_cap_counts_decoded_bytes(
    upstream: Upstream, transport: Transport
) -> None:
    """A compression bomb cannot get past the cap; a normal gzip body is decoded."""
    upstream.queue(
        reply(200, gzip.compress(b'{"a":1}'), {"content-encoding": "gzip"}),
        reply(200, gzip.compress(b"0" * (5 * MB)), {"content-encoding": "gzip"}),
    )
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b'{"a":1}'
    with pytest.raises(InvalidResponseError, match="exceeds"):
        await transport.send(POST, model="m", timeout_s=2)


async def test_undecodable_gzip_is_an_invalid_response(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(reply(200, b"not gzip at all", {"content-encoding": "gzip"}))
    with pytest.raises(InvalidResponseError, match="could not be decoded") as info:
        await transport.send(POST, model="m", timeout_s=2)
    assert info.value.status == 200


@pytest.mark.parametrize("end", ["close", "reset"])
async def test_a_body_cut_short_is_a_connection_error(
    upstream: Upstream, transport: Transport, end: Literal["close", "reset"]
) -> None:
    upstream.queue(stream([b'{"a":', b"1"], end=end, headers={"content-type": "text/plain"}))
    with pytest.raises(ProviderConnectionError, match="while reading the response body") as info:
        await transport.send(POST, model="m", timeout_s=2)
    assert info.value.retryable
    assert transport.pool_stats()["active"] == 0


async def test_a_plain_body_is_read_from_aiohttp_and_an_encoded_one_through_httpx(
    upstream: Upstream, transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a Content-Encoding, httpx has nothing to decode: the body is read from
    aiohttp's buffer (the same bytes, in any chunking). With one, httpx decodes it."""
    httpx_reads: list[str | None] = []
    aiter_bytes = httpx.Response.aiter_bytes

    def counted(self: httpx.Response, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        httpx_reads.append(self.headers.get("content-encoding"))
        return aiter_bytes(self, chunk_size)

    monkeypatch.setattr(httpx.Response, "aiter_bytes", counted)
    parts = [b'{"choices":', b" [1, 2, 3]", b"}"]
    upstream.queue(
        reply(200, b'{"a":1}'),
        stream(parts, headers={"content-type": "application/json"}),
        reply(200, gzip.compress(b'{"b":2}'), {"content-encoding": "gzip"}),
    )
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b'{"a":1}'
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b"".join(parts)
    assert httpx_reads == []
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b'{"b":2}'
    assert httpx_reads == ["gzip"]
    assert transport.pool_stats() == {"total": 1, "idle": 1, "active": 0}


async def test_without_aiohttp_s_buffer_a_plain_body_is_read_through_httpx(
    upstream: Upstream, transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should httpx-aiohttp stop exposing aiohttp's response, bodies are still read whole."""
    init = transport_module._AiohttpStream.__init__

    def without_buffer(self: Any, inner: Any, request: httpx.Request) -> None:
        init(self, inner, request)
        self._content = None

    monkeypatch.setattr(transport_module._AiohttpStream, "__init__", without_buffer)
    upstream.queue(reply(200, b'{"a":1}'), reply(200, b"x" * (2 * MB)))
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b'{"a":1}'
    with pytest.raises(InvalidResponseError, match="exceeds"):
        await transport.send(POST, model="m", timeout_s=2)


async def test_a_send_leaves_no_reference_cycles(upstream: Upstream, transport: Transport) -> None:
    """What a call allocates is freed by reference counting, not left to the cyclic
    collector (whose collections every call would otherwise pay for)."""
    upstream.queue(*(reply(200, b'{"a":1}') for _ in range(4)))
    upstream.queue(stream([b"data: 1\n\n"]))
    await transport.send(POST, model="m", timeout_s=2)  # the connection opened, warm
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            await transport.send(POST, model="m", timeout_s=2)
        async with transport.stream(POST, model="m") as resp:
            assert [data async for _, data in resp.sse()] == ["1"]
        gc.collect()
        leftovers = [type(o).__module__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not [m for m in leftovers if m.split(".")[0] in ("httpx", "aiohttp", "router")]


async def test_recorded_response_is_returned_unchanged(
    upstream: Upstream, transport: Transport
) -> None:
    """A replayed real 429: status, headers and body come back byte for byte."""
    meta = "anthropic/anthropic-messages-429-rate-limit-retry-after.meta.json"
    try:
        status, headers, body = load_recording(meta)
    except FileNotFoundError:
        pytest.skip("recorded fixture not available")
    upstream.queue(replay(meta))
    resp = await transport.send(POST, model="m", timeout_s=2)
    assert (resp.status, resp.body) == (status, body)
    assert resp.headers["retry-after"] == "7"
    assert resp.headers["request-id"] == dict(headers)["request-id"]


# ------------------------------------------------------------------ redirects


@pytest.mark.parametrize("mode", ["send", "stream"])
@pytest.mark.parametrize("status", [301, 307])
@pytest.mark.parametrize("where", ["same-origin path", "same origin", "other host", "other port"])
async def test_a_redirect_is_never_followed(
    upstream: Upstream,
    upstream_factory: Callable[..., Awaitable[Upstream]],
    caplog: pytest.LogCaptureFixture,
    mode: str,
    status: int,
    where: str,
) -> None:
    """An LLM API does not redirect a POST: a redirect is an InvalidResponseError (not
    retryable) naming its status, whatever its target; the target is never contacted
    and its Location (here carrying the key) appears in no error and no log record,
    with the root logger at DEBUG."""
    caplog.set_level(logging.DEBUG)  # the root logger: httpx's and aiohttp's included
    other = await upstream_factory(host="127.0.0.2" if where == "other host" else "127.0.0.1")
    base = {"same-origin path": "", "same origin": upstream.url}.get(where, other.url)
    location = f"{base}/v1/chat/completions?api_key={CANARY}"
    upstream.queue(reply(status, b"", {"location": location}), reply(200, b"followed"))
    async with make(upstream.url) as t:
        with pytest.raises(InvalidResponseError) as info:
            await exchange(t, mode)
    err = info.value
    assert f"HTTP {status} redirect not followed" in str(err)
    assert (err.status, err.retryable) == (status, False)
    assert len(upstream.requests) == 1
    assert other.requests == [] and other.connections_opened == 0
    assert_no_canary(err, err.args, "".join(traceback.format_exception(err)))
    logged = [r.getMessage() for r in caplog.records]
    assert logged, "nothing was logged: the capture is not at DEBUG"
    assert not [line for line in logged if CANARY in line or "api_key" in line]


async def test_redirect_without_location_is_a_plain_response(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(reply(302, b"moved"))
    resp = await transport.send(POST, model="m", timeout_s=2)
    assert (resp.status, resp.body) == (302, b"moved")


# --------------------------------------------------------------- cancellation


@pytest.mark.parametrize("behaviour", [hang_before_headers, hang_mid_body])
async def test_cancelling_the_caller_releases_the_pool_slot(
    upstream: Upstream, transport: Transport, behaviour: Callable[[], Any]
) -> None:
    upstream.queue(behaviour(), reply(200, b"next"))
    task = asyncio.create_task(transport.send(POST, model="m", timeout_s=30))
    await upstream.wait_until(lambda: len(upstream.requests) == 1)
    await asyncio.sleep(0.01)  # let the response headers (if any) arrive
    assert transport.pool_stats()["active"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.pool_stats()["active"] == 0
    await upstream.wait_until(lambda: upstream.disconnects == 1)
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b"next"


async def test_cancelling_a_stream_releases_the_pool_slot(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(stream([b"data: 1\n\n", b"data: 2\n\n"], [0, 30]), reply(200, b"next"))
    got: list[str] = []

    async def consume() -> None:
        async with transport.stream(POST, model="m") as resp:
            async for _event, data in resp.sse():
                got.append(data)

    task = asyncio.create_task(consume())
    await upstream.wait_until(lambda: got == ["1"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.pool_stats()["active"] == 0
    await upstream.wait_until(lambda: upstream.disconnects == 1)
    assert (await transport.send(POST, model="m", timeout_s=2)).body == b"next"


# --------------------------------------------------------------- mock handler


def mock_handler(
    seen: list[tuple[str, str, bytes]], delay_s: float = 0.0
) -> Callable[[str, str, bytes], Awaitable[tuple[int, Mapping[str, str], bytes]]]:
    async def handler(method: str, path: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        seen.append((method, path, body))
        await asyncio.sleep(delay_s)
        return 200, {"content-type": "application/json", "x-mock": "1"}, b'{"ok":true}'

    return handler


async def test_mock_handler_goes_through_the_client() -> None:
    seen: list[tuple[str, str, bytes]] = []
    async with make("mock://local", handler=mock_handler(seen)) as t:
        resp = await t.send(POST, model="m", timeout_s=1)
        assert "in-process handler" in repr(t)
    assert (resp.status, resp.body, resp.headers["x-mock"]) == (200, b'{"ok":true}', "1")
    assert seen[0][:2] == ("POST", "/v1/chat/completions")
    assert json.loads(seen[0][2]) == POST.json


async def test_mock_handler_honours_the_timeout() -> None:
    async with make("mock://local", handler=mock_handler([], delay_s=10)) as t:
        exc, elapsed = await timed(t.send(POST, model="m", timeout_s=0.1))
    assert isinstance(exc, ProviderTimeoutError)
    assert elapsed < 0.1 + SLACK_S


async def test_mock_handler_can_simulate_network_failures() -> None:
    async def refuse(method: str, path: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        raise ConnectionRefusedError("refused by the mock")

    async def stall(method: str, path: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        raise TimeoutError

    async with make("mock://local", handler=refuse) as t:
        with pytest.raises(ProviderConnectionError, match="refused by the mock"):
            await t.send(POST, model="m", timeout_s=1)
    async with make("mock://local", handler=stall) as t:
        with pytest.raises(ProviderTimeoutError):
            await t.send(POST, model="m", timeout_s=1)


async def test_mock_handler_stream() -> None:
    async def sse(method: str, path: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        return 200, {"content-type": "text/event-stream"}, b"data: a\n\ndata: b\n\n"

    async with make("mock://local", handler=sse) as t, t.stream(POST, model="m") as resp:
        assert [d async for _e, d in resp.sse()] == ["a", "b"]


# ------------------------------------------------------------------ streaming

SSE_BODY = (
    'event: message_start\r\ndata: {"id": 1}\r\n\r\n'
    ": comment line\n"
    "data: first line\ndata: second é€ line\n\n"
    "event: ping\rdata: {}\r\r"
    "data: [DONE]\n\n"
).encode()
SSE_EVENTS = [
    ("message_start", '{"id": 1}'),
    ("message", "first line\nsecond é€ line"),
    ("ping", "{}"),
    ("message", "[DONE]"),
]


async def drain_sse(transport: Transport, into: list[str] | None = None) -> None:
    """Open a stream and read every SSE event (appending the data to ``into``)."""
    async with transport.stream(POST, model="m") as resp:
        async for _event, data in resp.sse():
            if into is not None:
                into.append(data)


async def read_sse(transport: Transport) -> list[tuple[str, str]]:
    async with transport.stream(POST, model="m") as resp:
        assert resp.status == 200
        return [event async for event in resp.sse()]


async def test_sse_split_at_every_byte_boundary(upstream: Upstream, transport: Transport) -> None:
    """Every two-piece split of the body (mid-CRLF, mid-UTF-8 character) yields the same events."""
    for cut in range(1, len(SSE_BODY)):
        upstream.queue(stream([SSE_BODY[:cut], SSE_BODY[cut:]], [0, 0.001]))
        assert await read_sse(transport) == SSE_EVENTS, cut
    assert upstream.connections_opened == 1


@pytest.mark.parametrize("size", [1, 2, 3, 5])
async def test_sse_in_tiny_chunks(upstream: Upstream, transport: Transport, size: int) -> None:
    pieces = [SSE_BODY[i : i + size] for i in range(0, len(SSE_BODY), size)]
    upstream.queue(stream(pieces))
    assert await read_sse(transport) == SSE_EVENTS


async def test_sse_of_a_recorded_stream(upstream: Upstream, transport: Transport) -> None:
    """A real recorded SSE body, served in 7-byte chunks, parses like the whole body."""
    meta = "anthropic/anthropic-messages-200-sse-wire.meta.json"
    try:
        _, _, body = load_recording(meta)
    except FileNotFoundError:
        pytest.skip("recorded fixture not available")
    upstream.queue(replay(meta), replay(meta, chunk_size=7))
    whole = await read_sse(transport)
    assert len(whole) > 3
    assert whole[0][0] == "message_start"
    assert await read_sse(transport) == whole
    assert whole == [(e.event, e.data) for e in parse_sse_reference(body)]


def parse_sse_reference(body: bytes) -> list[httpx_sse.ServerSentEvent]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return list(httpx_sse.EventSource(response).iter_sse())


async def test_lines_for_ndjson(upstream: Upstream, transport: Transport) -> None:
    """lines() splits on \\n only (U+2028 inside a JSON string is not a line end)."""
    rows = [{"n": i, "t": "a\u2028b é"} for i in range(20)]
    body = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\r\n\n" for r in rows)
    body = body.rstrip(b"\n")  # last line without a line end
    upstream.queue(stream([body[i : i + 5] for i in range(0, len(body), 5)]))
    async with transport.stream(POST, model="m") as resp:
        assert [json.loads(line) async for line in resp.lines()] == rows


async def test_error_status_in_stream_mode_reads_the_body(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(reply(429, b'{"error":{"message":"slow down"}}', {"retry-after": "3"}))
    async with transport.stream(POST, model="m") as resp:
        assert resp.status == 429
        assert resp.headers["retry-after"] == "3"
        assert await resp.read() == b'{"error":{"message":"slow down"}}'


async def test_stream_over_the_cap_is_refused(upstream: Upstream) -> None:
    upstream.queue(stream([b"data: " + b"x" * 4000 + b"\n"] * 3))  # one endless line
    async with make(upstream.url, max_response_bytes=10_000) as t:
        with pytest.raises(InvalidResponseError, match="exceeds 10000 bytes"):
            await drain_sse(t)
        assert t.pool_stats()["active"] == 0


async def test_stream_with_wrong_content_type_is_invalid(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(reply(200, b"<html>oops</html>", {"content-type": "text/html"}))
    with pytest.raises(InvalidResponseError, match="not an event stream") as info:
        await drain_sse(transport)
    assert info.value.status == 200
    assert info.value.retryable is False


async def test_stream_cut_mid_way_is_a_connection_error(
    upstream: Upstream, transport: Transport
) -> None:
    upstream.queue(stream([b"data: 1\n\n", b"data: 2\n\n"], [0, 0.01], end="reset"))
    got: list[str] = []
    with pytest.raises(ProviderConnectionError):
        await drain_sse(transport, got)
    assert got == ["1", "2"]


async def test_stream_read_timeout_between_chunks(upstream: Upstream, transport: Transport) -> None:
    upstream.queue(stream([b"data: 1\n\n", b"data: 2\n\n"], [0, 5]))
    async with transport.stream(POST, model="m", read_timeout_s=0.1) as resp:
        events = resp.sse()
        assert await anext(events) == ("message", "1")
        exc, elapsed = await timed(anext(events))
    assert isinstance(exc, ProviderTimeoutError)
    assert elapsed < 0.1 + SLACK_S
    assert f"no data from 127.0.0.1:{upstream.port} for 0.1s while reading the stream" in str(exc)


async def test_stream_connection_refused() -> None:
    async with make(f"http://127.0.0.1:{free_port()}") as t:
        with pytest.raises(ProviderConnectionError, match="cannot connect"):
            async with t.stream(POST, model="m"):
                pass


# ------------------------------------------------------------- error mapping


def exported_httpx_exceptions() -> list[type[Exception]]:
    classes = [c for _, c in inspect.getmembers(httpx, inspect.isclass) if issubclass(c, Exception)]
    return [*classes, httpx_sse.SSEError]


def instance(cls: type[Exception]) -> Exception:
    """An instance of any httpx exception class, carrying the canary in its message."""
    request = httpx.Request("POST", "https://api.example.com/v1/x?key=" + CANARY)
    text = f"boom {CANARY} at https://api.example.com/v1?key={CANARY}"
    if issubclass(cls, httpx.HTTPStatusError):
        return cls(text, request=request, response=httpx.Response(503, request=request))
    if issubclass(cls, httpx.StreamError) and cls is not httpx.StreamError:
        return cls()  # the subclasses have fixed messages
    if issubclass(cls, httpx.RequestError):
        return cls(text, request=request)
    return cls(text)


# What each exported class means; a new httpx class fails here until it is decided.
EXPECTED: dict[str, tuple[type[ProviderError], bool]] = {
    "CloseError": (ProviderConnectionError, True),
    "ConnectError": (ProviderConnectionError, True),
    "ConnectTimeout": (ProviderTimeoutError, True),
    "CookieConflict": (InvalidResponseError, False),
    "DecodingError": (InvalidResponseError, True),
    "HTTPError": (ProviderConnectionError, True),
    "HTTPStatusError": (ServerError, True),
    "InvalidURL": (ProviderConnectionError, False),
    "LocalProtocolError": (ProviderConnectionError, False),
    "NetworkError": (ProviderConnectionError, True),
    "PoolTimeout": (ProviderTimeoutError, True),
    "ProtocolError": (ProviderConnectionError, True),
    "ProxyError": (ProviderConnectionError, True),
    "ReadError": (ProviderConnectionError, True),
    "ReadTimeout": (ProviderTimeoutError, True),
    "RemoteProtocolError": (ProviderConnectionError, True),
    "RequestError": (ProviderConnectionError, True),
    "RequestNotRead": (ProviderConnectionError, False),
    "ResponseNotRead": (ProviderConnectionError, False),
    "SSEError": (InvalidResponseError, False),
    "StreamClosed": (ProviderConnectionError, False),
    "StreamConsumed": (ProviderConnectionError, False),
    "StreamError": (ProviderConnectionError, False),
    "TimeoutException": (ProviderTimeoutError, True),
    "TooManyRedirects": (InvalidResponseError, False),
    "TransportError": (ProviderConnectionError, True),
    "UnsupportedProtocol": (ProviderConnectionError, False),
    "WriteError": (ProviderConnectionError, True),
    "WriteTimeout": (ProviderTimeoutError, True),
}


def test_expected_table_covers_every_exported_class() -> None:
    assert sorted(c.__name__ for c in exported_httpx_exceptions()) == sorted(EXPECTED)


@pytest.mark.parametrize("cls", exported_httpx_exceptions(), ids=lambda c: c.__name__)
def test_every_httpx_exception_is_mapped(cls: type[Exception]) -> None:
    """Each class is caught by the transport and becomes the ProviderError it means."""
    exc = instance(cls)
    assert isinstance(exc, transport_module._HTTPX_ERRORS)
    err = map_httpx_error(
        exc,
        provider="prov",
        model="m",
        host="api.example.com",
        timeout_s=1.5,
        connect_timeout_s=0.5,
        secrets=(CANARY,),
    )
    error_type, retryable = EXPECTED[cls.__name__]
    assert type(err) is error_type
    assert err.retryable is retryable
    assert err.provider == "prov"
    assert err.model == "m"
    assert_no_canary(err)
    assert "?key=" not in str(err)


def test_connect_failures_are_told_apart() -> None:
    request = httpx.Request("GET", "https://api.example.com/")
    kw: dict[str, Any] = {"provider": "p", "model": "m", "host": "api.example.com:443"}
    refused = map_httpx_error(httpx.ConnectError("[Errno 111] refused", request=request), **kw)
    slow = map_httpx_error(
        httpx.ConnectTimeout("", request=request), connect_timeout_s=0.5, timeout_s=2, **kw
    )
    assert str(refused) == "p/m: cannot connect to api.example.com:443: [Errno 111] refused"
    assert str(slow) == "p/m: connect to api.example.com:443 timed out after 0.5s"
    # A connect (or pool) timeout sent nothing; a read timeout came after the request.
    read = map_httpx_error(httpx.ReadTimeout("", request=request), timeout_s=2, **kw)
    pool = map_httpx_error(httpx.PoolTimeout("", request=request), timeout_s=2, **kw)
    assert isinstance(slow, ProviderTimeoutError) and isinstance(read, ProviderTimeoutError)
    assert isinstance(pool, ProviderTimeoutError)
    assert (slow.sent, pool.sent, read.sent) == (False, False, True)


def test_mapping_refuses_foreign_exceptions() -> None:
    with pytest.raises(TypeError):
        map_httpx_error(ValueError("x"), provider="p", model="m", host="h")


# What each aiohttp exception class means, once translated by the aiohttp backend; a
# new aiohttp class fails test_every_aiohttp_exception_is_translated until decided.
EXPECTED_AIOHTTP: dict[str, tuple[type[ProviderError], bool]] = {
    # client_exceptions: everything under ClientError
    "ClientError": (ProviderConnectionError, True),
    "ClientConnectionError": (ProviderConnectionError, True),
    "ClientConnectionResetError": (ProviderConnectionError, True),
    "ClientOSError": (ProviderConnectionError, True),
    "ClientConnectorError": (ProviderConnectionError, True),
    "ClientConnectorDNSError": (ProviderConnectionError, True),
    "UnixClientConnectorError": (ProviderConnectionError, True),
    "ClientProxyConnectionError": (ProviderConnectionError, True),
    "ClientSSLError": (ProviderConnectionError, True),
    "ClientConnectorSSLError": (ProviderConnectionError, True),
    "ClientConnectorCertificateError": (ProviderConnectionError, True),
    "ConnectionTimeoutError": (ProviderTimeoutError, True),
    "SocketTimeoutError": (ProviderTimeoutError, True),
    "ServerTimeoutError": (ProviderTimeoutError, True),
    "ServerConnectionError": (ProviderConnectionError, True),
    "ServerDisconnectedError": (ProviderConnectionError, True),
    "ServerFingerprintMismatch": (ProviderConnectionError, True),
    "ClientResponseError": (ProviderConnectionError, True),
    "ClientHttpProxyError": (ProviderConnectionError, True),
    "ContentTypeError": (ProviderConnectionError, True),
    "TooManyRedirects": (ProviderConnectionError, True),  # never: aiohttp follows none for us
    "WSServerHandshakeError": (ProviderConnectionError, True),
    "ClientPayloadError": (ProviderConnectionError, True),
    "UploadAbortedError": (ProviderConnectionError, True),
    "InvalidURL": (ProviderConnectionError, False),
    "InvalidUrlClientError": (ProviderConnectionError, False),
    "InvalidUrlRedirectClientError": (ProviderConnectionError, False),
    "NonHttpUrlClientError": (ProviderConnectionError, False),
    "NonHttpUrlRedirectClientError": (ProviderConnectionError, False),
    "RedirectClientError": (ProviderConnectionError, True),
    # http_exceptions: the HTTP parser's errors, which can surface while a body is read
    "HttpProcessingError": (ProviderConnectionError, True),
    "BadHttpMessage": (ProviderConnectionError, True),
    "HttpBadRequest": (ProviderConnectionError, True),
    "PayloadEncodingError": (ProviderConnectionError, True),
    "ContentEncodingError": (ProviderConnectionError, True),
    "TransferEncodingError": (ProviderConnectionError, True),
    "ContentLengthError": (ProviderConnectionError, True),
    "DecompressSizeError": (ProviderConnectionError, True),
    "LineTooLong": (ProviderConnectionError, True),
    "InvalidHeader": (ProviderConnectionError, True),
    "BadStatusLine": (ProviderConnectionError, True),
    "BadHttpMethod": (ProviderConnectionError, True),
    "InvalidURLError": (ProviderConnectionError, True),
}


def aiohttp_classes() -> list[type[BaseException]]:
    """Every exception class aiohttp's client can raise (ClientError and the parser's)."""
    from aiohttp import client_exceptions, http_exceptions

    found: list[type[BaseException]] = []
    for module, root in (
        (client_exceptions, client_exceptions.ClientError),
        (http_exceptions, http_exceptions.HttpProcessingError),
    ):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, root) and cls.__module__ == module.__name__ and cls not in found:
                found.append(cls)
    return found


def aiohttp_instance(cls: type[BaseException]) -> BaseException:
    """An instance of an aiohttp exception whose request info carries the canary key."""
    from types import SimpleNamespace

    from aiohttp import RequestInfo
    from aiohttp import client_exceptions as ce
    from aiohttp import http_exceptions as he
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    url = URL(f"https://api.example.com/v1?key={CANARY}")
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {CANARY}"}))
    info = RequestInfo(url, "POST", headers, url)
    key = SimpleNamespace(host="api.example.com", port=443, ssl=True, is_ssl=True)
    if issubclass(cls, ce.ClientResponseError):
        return cls(info, (), status=400, message="bad response")
    if issubclass(cls, ce.UnixClientConnectorError):
        return cls("/run/api.sock", key, OSError(2, "No such file"))
    if issubclass(cls, ce.ClientConnectorCertificateError):
        return cls(key, ValueError("certificate verify failed"))
    if issubclass(cls, ce.ClientConnectorError):
        return cls(key, OSError(111, "Connect call failed"))
    if issubclass(cls, ce.ServerFingerprintMismatch):
        return cls(b"a", b"b", "api.example.com", 443)
    if issubclass(cls, ce.InvalidURL | ce.NonHttpUrlClientError):
        return cls(url)
    if cls is he.HttpProcessingError:
        return cls(code=400, message="bad chunk")
    if issubclass(cls, he.LineTooLong):
        return cls("header line", "8190", "9000")
    return cls("boom")


def test_every_aiohttp_exception_is_translated() -> None:
    """The transport turns each aiohttp exception into the httpx one it means.

    The translation drops the aiohttp exception itself (its request_info holds the
    request headers, so the key), keeping only its class name and message.
    """
    classes = aiohttp_classes()
    assert sorted(c.__name__ for c in classes) == sorted(EXPECTED_AIOHTTP)
    request = httpx.Request("POST", "https://api.example.com/v1")
    for cls in classes:
        source = aiohttp_instance(cls)
        for raised in (source, httpx.ConnectTimeout("wrapped")):  # raw, or as httpx-aiohttp
            raised.__cause__ = source if raised is not source else None
            translated = transport_module._from_aiohttp(raised, request)
            assert isinstance(translated, transport_module._HTTPX_ERRORS), cls
            assert translated.__cause__ is None and translated.__context__ is None
            assert cls.__name__ in str(translated)
            err = map_httpx_error(
                translated, provider="prov", model="m", host="api.example.com", secrets=(CANARY,)
            )
            error_type, retryable = EXPECTED_AIOHTTP[cls.__name__]
            assert (type(err), err.retryable) == (error_type, retryable), cls
            assert_no_canary(translated, err)


def test_aiohttp_translation_leaves_other_exceptions_alone() -> None:
    request = httpx.Request("GET", "https://api.example.com/")
    assert transport_module._from_aiohttp(ValueError("x"), request) is None
    assert transport_module._from_aiohttp(httpx.ReadTimeout("t"), request) is None


# ------------------------------------------------------------------ secrets


async def test_no_error_or_repr_ever_shows_a_header_value(
    upstream: Upstream, upstream_factory: Callable[..., Awaitable[Upstream]]
) -> None:
    """Trigger every failure path with a canary key in the headers; it shows up nowhere."""
    other = await upstream_factory(host="127.0.0.2")
    upstream.queue(
        hang_before_headers(),
        hang_mid_body(10),
        drip(b"x" * 100, 1, 0.01),
        reset(),
        close(),
        reply(200, b"x" * (MB + 1)),
        reply(302, b"", {"location": f"{other.url}/?k={CANARY}"}),
        reply(200, b"garbage", {"content-encoding": "gzip"}),
        reply(200, b"<html/>", {"content-type": "text/html"}),
        stream([b"data: 1\n\n"], end="reset"),
    )
    upstream.handler = lambda request: reply(302, b"", {"location": "/loop"})
    errors: list[BaseException] = []
    async with make(upstream.url) as t:
        assert_no_canary(t)
        for _ in range(6):
            exc, _ = await timed(t.send(POST, model="m", timeout_s=0.1))
            assert exc is not None
            errors.append(exc)
        exc, _ = await timed(t.send(POST, model="m", timeout_s=2))  # cross-host redirect
        errors.append(exc)  # type: ignore[arg-type]
        exc, _ = await timed(t.send(POST, model="m", timeout_s=2))  # bad gzip
        errors.append(exc)  # type: ignore[arg-type]
        for _ in range(2):  # wrong content type; reset mid-stream
            try:
                async with t.stream(POST, model="m") as resp:
                    assert_no_canary(resp)
                    async for _event in resp.sse():
                        pass
            except ProviderError as e:
                errors.append(e)
        exc, _ = await timed(t.send(POST, model="m", timeout_s=2))  # redirect loop
        errors.append(exc)  # type: ignore[arg-type]
        assert_no_canary(t)
    async with make(f"http://127.0.0.1:{free_port()}") as refused:
        exc, _ = await timed(refused.send(POST, model="m", timeout_s=1))
        errors.append(exc)  # type: ignore[arg-type]
    kinds = {type(e).__name__ for e in errors}
    assert kinds == {"ProviderTimeoutError", "ProviderConnectionError", "InvalidResponseError"}
    assert len(errors) == 12
    for err in errors:
        assert isinstance(err, ProviderError), err
        assert_no_canary(err, err.detail, err.args)
        cause = err.__cause__ or err.__context__
        while cause is not None:  # the chained httpx errors do not carry it either
            assert_no_canary(cause)
            cause = cause.__cause__ or cause.__context__
    assert_no_canary(t)


@pytest.mark.parametrize("mode", ["send", "stream"])
# Not "chunk_size_mid_stream": aiohttp (3.14) loses a parse error in a chunk-size line
# after the first chunk, and the read waits (past read_timeout_s too) until the caller's
# own bound; the router's idle timeout ends it (tests/faults/test_hostile_upstream.py).
@pytest.mark.parametrize("fault", [f for f in PARSER_FAULTS if f != "chunk_size_mid_stream"])
async def test_a_parser_error_quoting_the_key_chains_no_foreign_exception(
    upstream: Upstream, mode: str, fault: str
) -> None:
    """The upstream echoes the Authorization header where aiohttp's parser quotes raw
    bytes in its error (a header line over 8 KB, an invalid header line, the status
    line, a chunk-size line). The ProviderError chains no foreign exception (its
    ``__cause__`` and ``__context__`` are empty): it keeps a redacted summary of the
    cause instead, and its formatted traceback shows no byte of the key."""
    upstream.queue(HOSTILE[fault]())
    async with make(upstream.url) as t:
        with pytest.raises(ProviderError) as info:
            await exchange(t, mode)
    err = info.value
    assert upstream.requests[0].headers["authorization"] == f"Bearer {CANARY}"  # it was sent
    assert err.__cause__ is None and err.__context__ is None
    text = "".join(traceback.format_exception(err))
    assert err.cause_summary is not None and err.cause_summary.startswith("httpx."), err
    assert err.cause_summary in text  # the summary is shown in the traceback instead
    for piece in (CANARY, CANARY[:12], CANARY[-12:]):
        assert piece not in text + repr(err) + str(err.args) + err.detail, text


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {CANARY}\r\nx-evil: 1",
        f"Bearer {CANARY}\n",  # an env var read with its newline
        f"Bearer {CANARY} ",  # h11 would quote this one in its error
        f" {CANARY}",
        f"{CANARY}\x00",
        f"{CANARY}é",
    ],
    ids=["crlf", "newline", "trailing-space", "leading-space", "nul", "non-ascii"],
)
def test_bad_header_value_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(ValueError, match="'authorization'") as info:
        Transport(
            "p",
            "https://api.example.com",
            headers={"authorization": value},
            connect_timeout_s=1,
            max_connections=None,
            max_response_bytes=MB,
        )
    assert CANARY not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"https://user:{CANARY}@api.example.com", "credentials"),
        ("ftp://api.example.com", "http:// or https://"),
    ],
)
def test_bad_base_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Transport(
            "p", url, headers={}, connect_timeout_s=1, max_connections=None, max_response_bytes=MB
        )
    assert CANARY not in str(info.value)


async def test_repr_shows_host_and_pool_state_only(upstream: Upstream) -> None:
    t = make(upstream.url + "/v1?api-version=2024&key=" + CANARY)
    where = f"prov http://127.0.0.1:{upstream.port}"
    assert repr(t) == f"<Transport {where}: not started>"
    await t.start()
    await t.send(POST, model="m", timeout_s=2)
    assert repr(t) == f"<Transport {where}: 1/100 connections, 0 active>"
    await t.aclose()
    assert_no_canary(t)


def test_constructing_needs_no_event_loop() -> None:
    """Nothing loop-bound is made before start(): construction works outside a loop."""
    t = make("https://api.example.com")
    assert "not started" in repr(t)


# ------------------------------------------------------------------- boundary


def test_httpx_is_imported_only_by_the_transport() -> None:
    root = Path(__file__).resolve().parents[1] / "router"
    pattern = re.compile(r"^\s*(import|from)\s+httpx(_sse)?\b", re.MULTILINE)
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "transport.py" and pattern.search(p.read_text())
    ]
    assert offenders == []
