"""The one place that does HTTP: pooled clients, timeouts, body caps, error mapping.

A :class:`Transport` is one provider's connection pool: one ``httpx.AsyncClient``
created inside the running loop (:meth:`Transport.start`, or the first request)
and closed by :meth:`Transport.aclose`. It knows nothing of providers: it sends
a :class:`~router.types.WireRequest` and hands back status, headers and body
bytes. Decoding them is the adapters' job. (An import-linter contract in
pyproject.toml checks that it imports no adapter, config or router module.)

Under the client sits aiohttp's connection pool (through httpx-aiohttp): the
httpx client code sends requests (built here as its ``build_request`` would, with
the per-call merging left out: :meth:`Transport._request`), decodes bodies (one
without a Content-Encoding is read from aiohttp's buffer directly: :class:`_RawBody`)
and maps errors, and aiohttp's exceptions are first translated into the httpx ones they mean
(:func:`_from_aiohttp`, applied in one place: :func:`_translated`). It is the
only pool: httpcore's (the client's own) was dropped, as under a thousand queued
requests its pool assignment starved the event loop for seconds past every
deadline, and a call cancelled while its connection was being opened stranded
that connection in the pool.
docs/performance.md has the measurements.

What it guarantees:

- ``send()`` never takes longer than its ``timeout_s``, body included: httpx's
  per-phase timeouts name the phase, and ``asyncio.timeout`` around the whole
  exchange stops a server that drips one byte at a time.
- A response body larger than ``max_response_bytes`` is not read past the cap;
  the connection is closed rather than left half-read.
- Redirects are never followed: an LLM API does not redirect a POST, so a 3xx
  with a Location is an :class:`~router.errors.InvalidResponseError` naming its
  status (never its Location, which may carry anything), and the auth headers
  go nowhere but base_url.
- Every httpx exception becomes a :class:`~router.errors.ProviderError` in one
  function, :func:`map_httpx_error`, most specific class first. The foreign
  exception is not chained to it (a parser's message may quote raw bytes of a
  header line that echoes the key): a redacted summary is kept instead
  (:func:`~router.errors.sever_foreign`).
- A cancelled caller closes its response, so the pool slot is freed.
- Header values (keys live there) appear in no error, message or repr. Requests go
  to base_url's host, directly or through the one proxy the transport is given
  (a :class:`~router.proxy.Proxy`, chosen at load: proxy environment variables
  are not read here). An https upstream is reached through an HTTP ``CONNECT``
  tunnel, so the proxy sees the host name only; a plain http one is sent to the
  proxy in absolute form. Proxy credentials travel only as the
  ``Proxy-Authorization`` header, which is scrubbed like a key; a proxy's 407
  is a non-retryable error naming the proxy, never its credentials.
- No cookies are kept: what one response sets is never sent with a later request.

This is the only module in ``router/`` that imports ``httpx``, ``httpx_sse``,
``httpx_aiohttp`` or ``aiohttp`` (the last two on first use, to keep ``import
router`` light).
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import httpx
from httpx_sse import EventSource, SSEError

from router.errors import (
    InvalidResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    sever_foreign,
    status_error,
)
from router.proxy import Proxy
from router.redact import redact_foreign
from router.types import WireRequest

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "KEEPALIVE_EXPIRY_S",
    "Handler",
    "RawResponse",
    "StreamResponse",
    "Transport",
    "map_httpx_error",
]

_T = TypeVar("_T")

# Pool size when the YAML sets no ``max_concurrency`` for a provider: httpx's own
# default, enough for the concurrency the router is benchmarked at per provider.
DEFAULT_MAX_CONNECTIONS: Final = 100
# Idle pooled connections are kept this long (httpx's default): long enough to reuse
# a connection between calls a few seconds apart, short enough to close before most
# servers and load balancers drop idle connections on their side.
KEEPALIVE_EXPIRY_S: Final = 5.0

# An in-process upstream for the offline ``mock`` provider:
# (method, path, request body) -> (status, headers, body). It may sleep; it may
# raise ConnectionError or TimeoutError to simulate a network failure.
Handler = Callable[[str, str, bytes], Awaitable[tuple[int, Mapping[str, str], bytes]]]

# The roots of every exception class httpx and httpx-sse export: ``except _HTTPX_ERRORS``
# catches all of them (tests/test_transport.py proves it for each exported class).
_HTTPX_ERRORS: Final = (httpx.HTTPError, httpx.InvalidURL, httpx.CookieConflict, httpx.StreamError)

# A header value h11 accepts: visible ASCII, inner spaces and tabs, nothing else, no
# whitespace at either end. Checked once at construction: h11 quotes a rejected value
# (a key, with a stray space or newline from an env var) in its error message.
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers httpx.Request adds to a request with a JSON body, unless it has them.
_AUTO_HEADERS: Final = frozenset({"host", "content-length", "content-type", "transfer-encoding"})
_JSON_TYPE: Final = (b"Content-Type", b"application/json")
_PROXY_AUTH: Final = "Proxy-Authorization"


def _json_body(value: Any) -> bytes:
    """A JSON body exactly as httpx encodes ``json=`` (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# Shortest header value scrubbed from error text: shorter ones are not secrets and
# would mangle ordinary words.
_MIN_SCRUB_LEN = 8


@dataclass(slots=True)
class RawResponse:
    """A complete response: status, headers and the body bytes (not decoded).

    ``headers`` is case-insensitive (an ``httpx.Headers``); look names up in lower case.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one httpx exception class becomes a ProviderError."""

    exc: type[Exception]
    error: type[ProviderError]
    # None keeps the error type's default (timeouts and connection errors retry).
    retryable: bool | None
    # Placeholders: {host} {phase} {timeout} {connect} {why}.
    message: str
    # False: it failed before a connection was had, so the request never left
    # (ProviderTimeoutError.sent: nothing to bill).
    sent: bool = True


# Most specific first: the first rule whose class matches wins.
# fmt: off
_RULES: Final[tuple[_Rule, ...]] = (
    # httpx-sse's SSEError is a TransportError, so it must come before the transport rules.
    _Rule(SSEError, InvalidResponseError, False,
          "not an event stream: {why}"),
    _Rule(httpx.ConnectTimeout, ProviderTimeoutError, None,
          "connect to {host} timed out after {connect}", sent=False),
    _Rule(httpx.PoolTimeout, ProviderTimeoutError, None,
          "no free pooled connection to {host} within {timeout}", sent=False),
    _Rule(httpx.WriteTimeout, ProviderTimeoutError, None,
          "sending the request to {host} stalled for {timeout}"),
    _Rule(httpx.ReadTimeout, ProviderTimeoutError, None,
          "no data from {host} for {timeout} while {phase}"),
    _Rule(httpx.TimeoutException, ProviderTimeoutError, None,
          "timed out after {timeout} while {phase}: {why}"),
    _Rule(httpx.ConnectError, ProviderConnectionError, None,
          "cannot connect to {host}: {why}"),
    _Rule(httpx.ReadError, ProviderConnectionError, None,
          "connection to {host} lost while {phase}: {why}"),
    _Rule(httpx.WriteError, ProviderConnectionError, None,
          "connection to {host} lost while sending the request: {why}"),
    _Rule(httpx.CloseError, ProviderConnectionError, None,
          "closing the connection to {host} failed: {why}"),
    _Rule(httpx.NetworkError, ProviderConnectionError, None,
          "network error with {host} while {phase}: {why}"),
    _Rule(httpx.RemoteProtocolError, ProviderConnectionError, None,
          "{host} broke HTTP/1.1 while {phase}: {why}"),
    # We sent something invalid: the same request will fail the same way.
    _Rule(httpx.LocalProtocolError, ProviderConnectionError, False,
          "invalid request for {host}: {why}"),
    _Rule(httpx.ProtocolError, ProviderConnectionError, None,
          "HTTP protocol error with {host} while {phase}: {why}"),
    _Rule(httpx.ProxyError, ProviderConnectionError, None,
          "proxy error reaching {host}: {why}"),
    # A base_url with a scheme httpx cannot speak: a config problem, not a network one.
    _Rule(httpx.UnsupportedProtocol, ProviderConnectionError, False,
          "unsupported URL scheme for {host}: {why}"),
    _Rule(httpx.TransportError, ProviderConnectionError, None,
          "transport error with {host} while {phase}: {why}"),
    _Rule(httpx.DecodingError, InvalidResponseError, None,
          "response body could not be decoded: {why}"),
    _Rule(httpx.TooManyRedirects, InvalidResponseError, False,
          "too many redirects from {host}"),
    _Rule(httpx.RequestError, ProviderConnectionError, None,
          "request to {host} failed while {phase}: {why}"),
    # Our own misuse of a response stream (read twice, read after close): not retryable.
    _Rule(httpx.StreamError, ProviderConnectionError, False,
          "response stream unusable: {why}"),
    _Rule(httpx.InvalidURL, ProviderConnectionError, False,
          "invalid request URL for {host}: {why}"),
    _Rule(httpx.CookieConflict, InvalidResponseError, False,
          "conflicting cookies from {host}: {why}"),
    # Last, for anything httpx may add later. (HTTPStatusError, never raised here as we
    # do not call raise_for_status, is mapped by its status before these rules.)
    _Rule(httpx.HTTPError, ProviderConnectionError, None,
          "HTTP error with {host} while {phase}: {why}"),
)
# fmt: on


def _secs(seconds: float | None) -> str:
    return "an unlimited time" if seconds is None else f"{seconds:.3g}s"


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Foreign error text made safe: URL query strings, quoted raw bytes, header values
    and any piece of a key out (see :func:`router.redact.redact_foreign`)."""
    return redact_foreign(text, secrets)


def map_httpx_error(
    exc: Exception,
    *,
    provider: str,
    model: str,
    host: str,
    phase: str = "waiting for the response",
    timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
    status: int | None = None,
    secrets: tuple[str, ...] = (),
) -> ProviderError:
    """Turn an httpx (or httpx-sse) exception into the ProviderError it means.

    The result does not chain ``exc``: it carries a redacted summary of it
    (``cause_summary``). Raise it outside the ``except`` block that caught ``exc``,
    so that ``exc`` is not its ``__context__`` either.

    Args:
        exc: the exception caught.
        provider: the provider's name, for the error.
        model: the model asked for.
        host: ``host:port`` of the upstream (never a path or query).
        phase: what was going on, e.g. "reading the response body".
        timeout_s: the attempt's timeout, named in timeout messages.
        connect_timeout_s: the connect timeout, named in connect-timeout messages.
        status: the HTTP status when the response had started (body-phase errors).
        secrets: header values to scrub from the exception's own text.
    """
    why = _scrub(str(exc), secrets) or type(exc).__name__
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return sever_foreign(
            status_error(code)(
                "unexpected HTTP status", provider=provider, model=model, status=code
            ),
            exc,
            secrets,
        )
    for rule in _RULES:
        if isinstance(exc, rule.exc):
            message = rule.message.format(
                host=host,
                phase=phase,
                timeout=_secs(timeout_s),
                connect=_secs(connect_timeout_s),
                why=why,
            )
            keep_status = status if rule.error is InvalidResponseError else None
            error = rule.error(
                message,
                provider=provider,
                model=model,
                status=keep_status,
                retryable=rule.retryable,
            )
            if not rule.sent and isinstance(error, ProviderTimeoutError):
                error.sent = False
            return sever_foreign(error, exc, secrets)
    # Not an httpx exception at all: a bug in the caller of this function.
    raise TypeError(f"not an httpx exception: {type(exc).__name__}") from exc


# ------------------------------------------------------------------------ helpers


class _NoCookies(httpx.Cookies):
    """A cookie jar that never stores a cookie."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.AsyncClient):
    """httpx's client without cookies.

    LLM APIs authenticate by header; a cookie one response sets (a load balancer's,
    a bot-management one) must not ride along on later calls, possibly of other
    routes. Keeping no jar also skips httpx's per-response cookie parsing, about a
    tenth of the transport's CPU per call (see docs/performance.md).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise AttributeError("the router's HTTP client keeps no cookies")


def _hostport(url: httpx.URL) -> str:
    return f"{url.host}:{url.port}" if url.port is not None else url.host


def _check_headers(name: str, headers: Mapping[str, str]) -> None:
    for key, value in headers.items():
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(f"provider {name!r}: header name {key!r} is not a valid HTTP token")
        if not _HEADER_VALUE.fullmatch(value):
            # Never quote the value: it is likely a key.
            raise ValueError(
                f"provider {name!r}: the value of header {key!r} has a character not allowed"
                " in HTTP headers (control character, non-ASCII, or whitespace at an end)"
            )


def _mock_transport(handler: Handler) -> httpx.AsyncBaseTransport:
    """Wrap an in-process handler so it runs behind the same client code as the network."""

    async def handle(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        try:
            status, headers, content = await handler(request.method, request.url.path, body)
        except ConnectionError as exc:
            raise httpx.ConnectError(f"mock: {exc}", request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"mock: {exc}", request=request) from exc
        return httpx.Response(status, headers=dict(headers), content=content)

    return httpx.MockTransport(handle)


# ------------------------------------------------------------------ the aiohttp pool
#
# httpx-aiohttp's AiohttpTransport runs the exchange on aiohttp (its C HTTP parser and
# its connection pool) behind the httpx client API, so everything above the pool (the
# request building, decoding, the body cap, the timeouts, error mapping) is httpx's
# client code and ours. Its own exception mapping is too coarse for us (it
# turns a reset or a refused connection into ConnectTimeout, and lets aiohttp's parser
# errors through), so :class:`_AiohttpBackend` translates every aiohttp exception into
# the httpx exception that means the same thing, and map_httpx_error does the rest.


@functools.cache
def _aiohttp_rules() -> tuple[tuple[type[BaseException], type[Exception]], ...]:
    """aiohttp exception class -> httpx class, most specific first (imported on first use)."""
    import aiohttp  # imported on first use: `import router` stays light
    from aiohttp.http_exceptions import HttpProcessingError

    # Newer aiohttp only (3.13+): the request body could not be sent whole.
    upload_aborted = getattr(aiohttp, "UploadAbortedError", None)
    rules: list[tuple[type[BaseException], type[Exception]]] = [
        (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # sock_connect, or pool wait
        (aiohttp.SocketTimeoutError, httpx.ReadTimeout),  # sock_read: no data for that long
        (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
        (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
        (aiohttp.ClientHttpProxyError, httpx.ProxyError),
        (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS, certificate
        (aiohttp.ServerFingerprintMismatch, httpx.ConnectError),
        # Closed before the whole response: h11 calls these RemoteProtocolError too.
        (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut short, bad chunking
        (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # unparseable status or headers
        (HttpProcessingError, httpx.RemoteProtocolError),  # parser error while reading a body
        (aiohttp.ClientOSError, httpx.ReadError),  # reset, broken pipe
        (aiohttp.ClientConnectionError, httpx.ReadError),
        (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
        (aiohttp.InvalidURL, httpx.InvalidURL),
    ]
    if upload_aborted is not None:
        rules.append((upload_aborted, httpx.WriteError))
    rules.append((aiohttp.ClientError, httpx.TransportError))  # anything aiohttp adds later
    return tuple(rules)


def _from_aiohttp(exc: BaseException, request: httpx.Request) -> Exception | None:
    """The httpx exception an aiohttp one means, or None if ``exc`` is not aiohttp's.

    httpx-aiohttp re-raises some aiohttp errors as (wrongly chosen) httpx ones, with the
    aiohttp error as ``__cause__``: that cause is what is translated. The result keeps the
    aiohttp class name and message but not the aiohttp exception itself, which carries
    the request headers (the key) in its ``request_info``.
    """
    rules = _aiohttp_rules()
    roots = tuple(src for src, _ in rules)
    source = exc.__cause__ if isinstance(exc, httpx.HTTPError) else exc
    if source is None or not isinstance(source, roots):
        return None
    for src, dst in rules:
        if isinstance(source, src):
            # Query strings out (a URL in the message may carry ``?key=``).
            message = _scrub(f"{type(source).__name__}: {source}", ())
            if issubclass(dst, httpx.RequestError):
                return dst(message, request=request)
            return dst(message)
    return None  # pragma: no cover - ClientError, the last rule, catches everything


async def _translated(step: Awaitable[_T], request: httpx.Request) -> _T:
    """Await one step of an aiohttp exchange; an aiohttp exception comes out as the
    httpx one it means (:func:`_from_aiohttp`). The one place they are translated."""
    translated: Exception | None = None
    try:
        return await step
    except Exception as exc:
        translated = _from_aiohttp(exc, request)
        if translated is None:
            raise
    # Raised outside the except block, so the aiohttp exception is not its context.
    raise translated


class _AiohttpStream(httpx.AsyncByteStream):
    """A response body read from aiohttp, its errors translated to httpx ones."""

    __slots__ = ("_content", "_inner", "_request")

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request
        # aiohttp's buffer of the raw body, for :class:`_RawBody` (None should a later
        # httpx-aiohttp stop keeping the aiohttp response there: httpx then reads it).
        self._content: Any = getattr(getattr(inner, "_aiohttp_response", None), "content", None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._inner)
        while (chunk := await _translated(anext(chunks, None), self._request)) is not None:
            yield chunk

    async def aclose(self) -> None:
        await _translated(self._inner.aclose(), self._request)


class _RawBody:
    """A whole response body read straight from aiohttp's buffer: ``async for chunk in``.

    What ``response.aiter_bytes()`` yields for a body without a Content-Encoding (the
    same bytes, maybe in other chunks), without httpx's five layers of async
    generators (its decoder and chunker, the client's stream, ours, httpx-aiohttp's)
    around each chunk. aiohttp's read timeout and the caller's deadline bound it as
    they bound those; aiohttp's errors are translated as they are there
    (:func:`_translated`). See :meth:`Transport._read` for when it is used.
    """

    __slots__ = ("_content", "_request")

    def __init__(self, stream: _AiohttpStream) -> None:
        self._content = stream._content
        self._request = stream._request

    def __aiter__(self) -> _RawBody:
        return self

    async def __anext__(self) -> bytes:
        chunk: bytes = await _translated(self._content.readany(), self._request)
        if not chunk:  # b"" only at the end of the body
            raise StopAsyncIteration
        return chunk


# The key of the response extension that gives Transport._read the _AiohttpStream under
# httpx's own wrapper of it.
_RAW_STREAM: Final = "router.aiohttp_stream"
# What a closed response's stream is replaced with (see _close).
_CLOSED_STREAM: Final = httpx.ByteStream(b"")


def _raw_body(response: httpx.Response) -> _RawBody | None:
    """The body of ``response`` to read from aiohttp directly, or None to read it
    through httpx: when httpx would not decode it (no Content-Encoding) and nothing
    has read it yet."""
    stream = response.extensions.get(_RAW_STREAM)
    if (
        stream is None
        or stream._content is None
        or response.is_stream_consumed
        or response.is_closed
        or "content-encoding" in response.headers
    ):
        return None
    response.is_stream_consumed = True  # read once, as httpx would insist
    return _RawBody(stream)


async def _close(response: httpx.Response) -> None:
    """Close a response (its connection goes back to the pool) and unlink it from its stream.

    httpx's client wraps a response's stream in one that points back at the response:
    a reference cycle per call, which holds the request, both responses (httpx's and
    aiohttp's) and their headers, about 40 objects, until the cyclic garbage collector
    finds them. Unlinked, they are freed at once when the call drops them, and the
    collector runs about 30 times less often (docs/performance.md). A closed response
    is never read again: httpx raises ``StreamClosed`` before touching its stream.
    """
    try:
        await response.aclose()
    finally:
        response.stream = _CLOSED_STREAM


class _AiohttpBackend(httpx.AsyncBaseTransport):
    """httpx-aiohttp's AiohttpTransport with every aiohttp exception translated."""

    __slots__ = ("_inner",)

    def __init__(self, limits: httpx.Limits, proxy: Proxy | None) -> None:
        from httpx_aiohttp import AiohttpTransport  # imported on first use

        via = None
        if proxy is not None:
            # Credentials as a header of the CONNECT request (https upstreams), never in
            # the URL: aiohttp quotes the proxy URL in its errors.
            auth = {} if proxy.authorization is None else {_PROXY_AUTH: proxy.authorization}
            via = httpx.Proxy(proxy.url, headers=auth)
        # HTTP/1.1 only; no connect retries (the router decides retries, under its
        # deadline). Its SSL context honours SSL_CERT_FILE/SSL_CERT_DIR for the CA bundle.
        inner = AiohttpTransport(limits=limits, http1=True, http2=False, retries=0, proxy=via)
        inner.client = functools.partial(_aiohttp_session, limits, inner.ssl_context)
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await _translated(self._inner.handle_async_request(request), request)
        stream = _AiohttpStream(cast(httpx.AsyncByteStream, response.stream), request)
        response.stream = stream
        response.extensions[_RAW_STREAM] = stream
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def pool_counts(self) -> tuple[int, int]:
        """(open connections, idle ones) in aiohttp's connector.

        aiohttp has no public pool statistics: this reads the connector's idle
        queues and in-use set (stable since aiohttp 3.0), and reports an empty pool
        rather than fail should they change. Reads only, and may run on another
        thread (a metrics scrape through Router.provider_states): it iterates
        copies (``list()`` of a dict or deque is one step under the GIL), never
        the loop's live containers.
        """
        session: Any = self._inner.client
        connector: Any = getattr(session, "connector", None)
        if connector is None:  # no request sent yet (the session is made on the first)
            return 0, 0
        queues = list(getattr(connector, "_conns", {}).values())
        idle = sum(1 for conns in queues for proto, _ in list(conns) if proto.is_connected())
        return idle + len(getattr(connector, "_acquired", ())), idle


def _aiohttp_session(limits: httpx.Limits, ssl_context: Any) -> Any:
    """The aiohttp session under the transport, made on the first request (inside the loop).

    As httpx-aiohttp would make it, but with no cookie jar (see :class:`_Client`) and
    not reading proxy variables itself (``trust_env=False``, aiohttp's default): the
    proxy, if any, is the one the transport was given (router.proxy chose it).
    """
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=limits.max_connections or 0,
        keepalive_timeout=limits.keepalive_expiry,
        ssl=ssl_context,
    )
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
    )


# ---------------------------------------------------------------------- transport


class Transport:
    """One provider's HTTP client: a connection pool, timeouts, a body cap.

    Args:
        name: the provider's name; used only as a label in errors and repr.
        base_url: the API root; request paths are appended to it. ``mock://local``
            (any URL) when ``handler`` is given.
        headers: sent with every request (auth lives here); never shown anywhere.
        connect_timeout_s: cap on opening a connection (also capped by each call's timeout).
        max_connections: pool size; None means :data:`DEFAULT_MAX_CONNECTIONS`.
        max_response_bytes: largest body read (decoded bytes); larger is an error.
        handler: an in-process upstream instead of the network (the ``mock`` provider).
        proxy: the proxy to send requests through; None connects directly.
    """

    __slots__ = (
        "_base",
        "_base_query",
        "_client",
        "_closed",
        "_connect_timeout_s",
        "_handler",
        "_headers",
        "_host",
        "_limits",
        "_max_bytes",
        "_pool_transport",
        "_prefix",
        "_proxy",
        "_secrets",
        "_urls",
        "_where",
        "name",
    )

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        max_connections: int | None,
        max_response_bytes: int,
        handler: Handler | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        base = httpx.URL(base_url)
        if handler is None and base.scheme not in ("http", "https"):
            raise ValueError(f"provider {name!r}: base_url must be http:// or https://")
        if base.userinfo:
            raise ValueError(f"provider {name!r}: base_url must not carry credentials")
        _check_headers(name, headers)
        # A query on base_url (e.g. "?api-version=...") is kept and added to every request.
        base_query = base.query
        base = base.copy_with(query=None)
        if not base.raw_path.endswith(b"/"):
            base = base.copy_with(raw_path=base.raw_path + b"/")
        self.name = name
        # The API root, ending in "/", that every request path is appended to.
        self._base = base
        # base_url's query string (bytes, maybe empty), for requests that have none.
        self._base_query = base_query
        # host[:port] for messages and repr: never the path or the query.
        self._host = _hostport(base)
        # Default headers, handed to the client at start (auth; never displayed).
        self._headers = dict(headers)
        self._proxy = None if handler is not None else proxy
        # Where requests go, as messages name it: host[:port], and the proxy if any.
        self._where = self._host
        if self._proxy is not None:
            self._where += f" via proxy {self._proxy.hostport}"
            if self._proxy.authorization is not None and base.scheme == "http":
                # An http upstream is sent to the proxy itself (absolute form): the
                # proxy reads its credentials from the request.
                self._headers[_PROXY_AUTH] = self._proxy.authorization
        # Header values long enough to be secrets, scrubbed from foreign error text.
        secrets = [*self._headers.values()]
        if self._proxy is not None and self._proxy.authorization is not None:
            secrets.append(self._proxy.authorization)
        self._secrets = tuple(dict.fromkeys(v for v in secrets if len(v) >= _MIN_SCRUB_LEN))
        self._connect_timeout_s = connect_timeout_s
        self._max_bytes = max_response_bytes
        self._limits = httpx.Limits(
            max_connections=max_connections or DEFAULT_MAX_CONNECTIONS,
            # Keep every connection warm: a new TLS handshake costs more than an idle socket.
            max_keepalive_connections=max_connections or DEFAULT_MAX_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        self._handler = handler
        # The pooled client; None until start() (it must be made inside the running loop).
        self._client: httpx.AsyncClient | None = None
        # The aiohttp pool (for pool_stats); None for a handler.
        self._pool_transport: _AiohttpBackend | None = None
        # True after aclose(): the transport cannot be used again.
        self._closed = False
        # Request path -> absolute URL, so each path is parsed and merged once.
        self._urls: dict[str, httpx.URL] = {}
        # The headers every JSON request starts with (Host, then the client's), made
        # with the client; None when the YAML's headers set one httpx would add itself.
        self._prefix: list[tuple[bytes, bytes]] | None = None

    # -- lifecycle

    async def start(self) -> None:
        """Create the pooled client inside the running event loop (idempotent)."""
        self._ensure_client()

    def _ensure_client(self, model: str = "-") -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        if self._closed:
            raise ProviderConnectionError(
                "transport is closed", provider=self.name, model=model, retryable=False
            )
        if self._handler is not None:
            transport = _mock_transport(self._handler)
        else:
            transport = self._pool_transport = _AiohttpBackend(self._limits, self._proxy)
        # Passing a transport also means httpx reads no proxy variables: the proxy is
        # the one this transport was given (chosen at load, router.proxy).
        self._client = _Client(
            headers=self._headers,
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(None),  # always set per call
        )
        if not _AUTO_HEADERS.intersection(self._client.headers.keys()):
            self._prefix = [(b"Host", self._base.netloc), *self._client.headers.raw]
        return self._client

    async def aclose(self) -> None:
        """Close the client and every pooled connection. Safe to call twice."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def pool_counts(self) -> tuple[int, int]:
        """(open connections, idle ones) in the pool now; (0, 0) before start, after
        close and for an in-process handler. Reads only (Router.provider_states)."""
        pool_transport = self._pool_transport
        if self._client is None or pool_transport is None:
            return 0, 0
        return pool_transport.pool_counts()

    def pool_stats(self) -> dict[str, int]:
        """Connections in the pool now: ``total``, ``idle`` and ``active`` (in use)."""
        total, idle = self.pool_counts()
        return {"total": total, "idle": idle, "active": total - idle}

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._client is None:
            state = "not started"
        elif self._pool_transport is None:
            state = "in-process handler"
        else:
            s = self.pool_stats()
            state = f"{s['total']}/{self._limits.max_connections} connections, {s['active']} active"
        via = "" if self._proxy is None else f" via {self._proxy.display()}"
        return f"<Transport {self.name} {self._base.scheme}://{self._host}{via}: {state}>"

    # -- requests

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            # Always under base_url: an absolute or "//host" path cannot change the host.
            suffix = httpx.URL(path).raw_path.lstrip(b"/")
            url = self._base.copy_with(raw_path=self._base.raw_path + suffix)
            if self._base_query and not url.query:
                url = url.copy_with(query=self._base_query)
            if len(self._urls) < 256:  # a provider uses a handful of paths
                self._urls[path] = url
        return url

    def display_url(self, path: str) -> str:
        """Where a request path goes, for messages: ``scheme://host[:port]/path``, with
        base_url's path and without any query string (a query may carry a key)."""
        url = self._url(path)
        return f"{url.scheme}://{self._host}{url.path}"

    def _map(
        self,
        exc: Exception,
        model: str,
        phase: str,
        timeout_s: float | None,
        status: int | None = None,
    ) -> ProviderError:
        connect = (
            self._connect_timeout_s
            if timeout_s is None
            else min(self._connect_timeout_s, timeout_s)
        )
        return map_httpx_error(
            exc,
            provider=self.name,
            model=model,
            host=self._where,
            phase=phase,
            timeout_s=timeout_s,
            connect_timeout_s=connect,
            status=status,
            secrets=self._secrets,
        )

    def _proxy_refused(self, model: str) -> ProviderConnectionError:
        """A 407 from the proxy: its credentials are missing or wrong (not retried)."""
        assert self._proxy is not None
        source = self._proxy.source
        return ProviderConnectionError(
            f"proxy {self._proxy.hostport} refused the request to {self._host}: HTTP 407"
            f" Proxy Authentication Required; check the credentials in {source}",
            provider=self.name,
            model=model,
            retryable=False,
        )

    def _too_big(self, model: str, status: int) -> InvalidResponseError:
        return InvalidResponseError(
            f"response body exceeds {self._max_bytes} bytes",
            provider=self.name,
            model=model,
            status=status,
            retryable=False,
        )

    async def _read(self, response: httpx.Response, model: str, limit: int) -> bytes:
        """Read a whole body, counting decoded bytes; over ``limit`` is an error.

        A body without a Content-Encoding on aiohttp's pool is read from aiohttp's
        buffer directly (:class:`_RawBody`: the same bytes, the same errors, about a
        tenth of the transport's CPU per call less); any other through httpx, which
        decodes it.
        """
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_big(model, response.status_code)  # fail before reading a byte
        chunks: list[bytes] = []
        total = 0
        source = _raw_body(response)
        async for chunk in response.aiter_bytes() if source is None else source:
            total += len(chunk)
            if total > limit:
                raise self._too_big(model, response.status_code)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _request(
        self, client: httpx.AsyncClient, req: WireRequest, timeout: httpx.Timeout
    ) -> httpx.Request:
        """The ``httpx.Request`` that ``client.build_request`` would make for ``req``
        (tests/test_transport.py checks they are the same, header order included).

        ``build_request`` merges the client's headers, cookies and query into every
        request and ``httpx.Request`` then adds ``Host`` and the body's headers one by
        one: a tenth of the transport's CPU per call. Here the URL is already
        absolute (:meth:`_url`), the client keeps no cookies or query, and a JSON
        body's headers are the ones made once at start (:attr:`_prefix`, ``Host``
        first) followed by its ``Content-Length`` and ``Content-Type``.
        """
        extensions = {"timeout": timeout.as_dict()}
        url = self._url(req.path)
        prefix = self._prefix
        if req.json is not None and not req.headers and prefix is not None:
            body = _json_body(req.json)
            request = httpx.Request(
                req.method,
                url,
                headers=[*prefix, (b"Content-Length", str(len(body)).encode()), _JSON_TYPE],
                stream=httpx.ByteStream(body),
                extensions=extensions,
            )
            request.read()  # the body is known, as for a Request built with content
            return request
        # Anything else (no body, headers of its own): httpx adds the headers it needs.
        headers: httpx.Headers = client.headers
        if req.headers:
            headers = httpx.Headers(headers)
            headers.update(req.headers)
        return httpx.Request(req.method, url, json=req.json, headers=headers, extensions=extensions)

    async def _open(
        self, client: httpx.AsyncClient, request: httpx.Request, model: str
    ) -> httpx.Response:
        """Send a request; return the streaming response. A redirect is an error.

        An LLM API does not redirect a POST: following one would send the key and the
        prompt somewhere base_url does not name, and httpx would log the target URL
        (which may carry anything). The Location is never read into the error.
        """
        response = await client.send(request, stream=True)
        if response.status_code == 407 and self._proxy is not None:
            await response.aclose()
            raise self._proxy_refused(model)
        if response.has_redirect_location:
            status = response.status_code
            await _close(response)
            raise InvalidResponseError(
                f"HTTP {status} redirect not followed: an LLM API does not redirect its"
                " requests; check base_url (scheme, host and path)",
                provider=self.name,
                model=model,
                status=status,
                retryable=False,
            )
        return response

    async def send(self, req: WireRequest, *, model: str, timeout_s: float) -> RawResponse:
        """Send one request and read the whole response within ``timeout_s`` seconds.

        Any status is returned as a RawResponse (decoding errors is the adapter's job).

        Raises:
            ProviderTimeoutError: nothing, or not all of it, arrived within ``timeout_s``.
            ProviderConnectionError: the connection failed (refused, reset, protocol error).
            InvalidResponseError: the body is over the cap, undecodable, or a redirect
                led to another host.
        """
        client = self._client if self._client is not None else self._ensure_client(model)
        if timeout_s <= 0:
            unsent = ProviderTimeoutError(
                "no time left to send the request", provider=self.name, model=model
            )
            unsent.sent = False
            raise unsent
        timeout = httpx.Timeout(timeout_s, connect=min(self._connect_timeout_s, timeout_s))
        response: httpx.Response | None = None
        # The error to raise, built inside the except blocks and raised after them, so
        # that no foreign exception is its __context__ (see map_httpx_error).
        failure: ProviderError | None = None
        try:
            async with asyncio.timeout(timeout_s):
                request = self._request(client, req, timeout)
                response = await self._open(client, request, model)
                try:
                    body = await self._read(response, model, self._max_bytes)
                finally:
                    await _close(response)
        except TimeoutError:
            what = "no response" if response is None else "response body not complete"
            failure = ProviderTimeoutError(
                f"{what} within {_secs(timeout_s)}", provider=self.name, model=model
            )
        except _HTTPX_ERRORS as exc:
            phase = "waiting for the response" if response is None else "reading the response body"
            status = None if response is None else response.status_code
            failure = self._map(exc, model, phase, timeout_s, status)
        if failure is not None:
            raise failure
        assert response is not None  # set whenever nothing failed
        return RawResponse(response.status_code, response.headers, body)

    def stream(
        self,
        req: WireRequest,
        *,
        model: str,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
    ) -> _StreamContext:
        """Open a streamed response: ``async with transport.stream(req, model=m) as resp:``.

        The total time of a stream is the caller's to bound (cancel the task, or wrap it
        in ``asyncio.timeout``); cancelling closes the response and frees its connection.

        Args:
            req: the request.
            model: the model asked for, for errors.
            connect_timeout_s: cap on connecting (default: the transport's).
            read_timeout_s: cap on the wait for the headers and between two chunks
                (default: none).
        """
        connect = self._connect_timeout_s if connect_timeout_s is None else connect_timeout_s
        timeout = httpx.Timeout(read_timeout_s, connect=connect, pool=connect)
        return _StreamContext(self, req, model, timeout)


class _StreamContext:
    """The async context manager behind :meth:`Transport.stream`."""

    __slots__ = ("_model", "_req", "_response", "_timeout", "_transport")

    def __init__(
        self, transport: Transport, req: WireRequest, model: str, timeout: httpx.Timeout
    ) -> None:
        self._transport = transport
        self._req = req
        self._model = model
        self._timeout = timeout
        # The open response between __aenter__ and __aexit__.
        self._response: httpx.Response | None = None

    async def __aenter__(self) -> StreamResponse:
        t = self._transport
        client = t._client if t._client is not None else t._ensure_client(self._model)
        req = self._req
        failure: ProviderError | None = None
        try:
            request = t._request(client, req, self._timeout)
            response = self._response = await t._open(client, request, self._model)
        except _HTTPX_ERRORS as exc:
            failure = t._map(exc, self._model, "waiting for the response", self._timeout.read)
        if failure is not None:
            raise failure  # outside the except block: the httpx error is not its context
        return StreamResponse(t, response, self._model, self._timeout.read)

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        failure: ProviderError | None = None
        try:
            await _close(response)
        except _HTTPX_ERRORS as close_exc:
            if exc is None:  # do not mask the error that ended the stream
                failure = self._transport._map(close_exc, self._model, "closing the stream", None)
        if failure is not None:
            raise failure


class _CountingText:
    """What httpx-sse's EventSource reads from: the response's text, bytes counted.

    EventSource needs only ``headers`` and ``aiter_text()``; counting here caps the
    stream before httpx-sse buffers a line, however long the server makes it.
    """

    __slots__ = ("_stream", "headers")

    def __init__(self, stream: StreamResponse) -> None:
        self._stream = stream
        self.headers = stream.headers

    async def aiter_text(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # SSE is UTF-8
        async for chunk in self._stream._chunks():
            text = decoder.decode(chunk)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


class StreamResponse:
    """An open streamed response. Read it once: ``read()``, ``sse()`` or ``lines()``.

    Attributes:
        status: the HTTP status.
        headers: case-insensitive response headers.
    """

    __slots__ = (
        "_model",
        "_read_timeout_s",
        "_received",
        "_response",
        "_transport",
        "headers",
        "on_chunk",
        "status",
    )

    def __init__(
        self,
        transport: Transport,
        response: httpx.Response,
        model: str,
        read_timeout_s: float | None,
    ) -> None:
        self._transport = transport
        self._response = response
        self._model = model
        # The per-chunk read timeout, named in timeout errors.
        self._read_timeout_s = read_timeout_s
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers
        # Decoded body bytes received so far, against the transport's cap.
        self._received = 0
        # Called on every body chunk received, before it is parsed: keep-alives
        # (SSE comments, ping events) included. The router's idle timer hangs here.
        self.on_chunk: Callable[[], None] | None = None

    def __repr__(self) -> str:
        name, status, received = self._transport.name, self.status, self._received
        return f"<StreamResponse {name} HTTP {status}, {received} bytes read>"

    async def _chunks(self) -> AsyncIterator[bytes]:
        """The body's decoded chunks, counted against the cap, httpx errors mapped."""
        limit = self._transport._max_bytes
        failure: ProviderError | None = None
        try:
            async for chunk in self._response.aiter_bytes():
                self._received += len(chunk)
                if self._received > limit:
                    raise self._transport._too_big(self._model, self.status)
                if self.on_chunk is not None:
                    self.on_chunk()
                yield chunk
        except _HTTPX_ERRORS as exc:
            failure = self._transport._map(
                exc, self._model, "reading the stream", self._read_timeout_s, self.status
            )
        if failure is not None:
            raise failure

    async def read(self) -> bytes:
        """The whole body (for an error status), capped like :meth:`Transport.send`."""
        t = self._transport
        failure: ProviderError
        try:
            return await t._read(self._response, self._model, t._max_bytes - self._received)
        except _HTTPX_ERRORS as exc:
            failure = t._map(
                exc, self._model, "reading the response body", self._read_timeout_s, self.status
            )
        raise failure

    async def sse(self) -> AsyncIterator[tuple[str, str]]:
        """Server-sent events as ``(event, data)``; ``event`` is "message" when unnamed."""
        # EventSource reads only .headers and .aiter_text(); see _CountingText.
        source = EventSource(cast(httpx.Response, _CountingText(self)))
        events = source.aiter_sse()
        failure: ProviderError | None = None
        try:
            async for sse in events:
                yield sse.event, sse.data
        except SSEError as exc:
            failure = self._transport._map(
                exc, self._model, "reading the stream", self._read_timeout_s, self.status
            )
        finally:
            await events.aclose()
        if failure is not None:
            raise failure

    async def lines(self) -> AsyncIterator[str]:
        """Non-empty lines of a newline-delimited body (NDJSON), without the line end."""
        pending = b""
        async for chunk in self._chunks():
            if b"\n" not in chunk:
                pending += chunk
                continue
            *complete, rest = (pending + chunk).split(b"\n")
            pending = rest
            for line in complete:
                if line.strip():
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if pending.strip():
            yield pending.rstrip(b"\r").decode("utf-8", errors="replace")
