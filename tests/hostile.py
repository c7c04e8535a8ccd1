"""A hostile upstream: answers that echo the request's credential into the parts of
HTTP/1.1 a client's *parser* reads, where an error message quotes raw bytes.

Each behaviour reads the credential the request carried (``authorization``, else
``x-api-key``) and puts it in one place: a header line longer than the client's
limit (8 KB), an invalid header line, the status line, a chunk-size line (before the
first chunk, or after some text of a stream was delivered), a redirect's Location,
or the request-id header. Used by tests/test_transport.py, tests/test_secrets.py and
the fault suite (tests/faults/test_hostile_upstream.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.upstream import Behaviour, Exchange, reply, stream

# Longer than aiohttp's (and h11's) header-line limit of 8190 bytes.
LONG = 9000


def credential(ex: Exchange) -> str:
    """The credential the request carried, exactly as sent."""
    headers = ex.request.headers
    return headers.get("authorization") or headers.get("x-api-key") or ""


def raw(label: str, make: Callable[[bytes], bytes]) -> Behaviour:
    """Write ``make(credential)`` as the whole response and close the connection."""

    async def run(ex: Exchange) -> bool:
        await ex.write(make(credential(ex).encode("latin-1")))
        return False

    return Behaviour(label, run)


def delta_chunk(text: str) -> bytes:
    """One chunk (chunked framing included) holding an OpenAI SSE text delta."""
    event = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    data = b"data: " + json.dumps(event).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
)


def long_header_line() -> Behaviour:
    return raw(
        "header line over 8 KB echoing the key",
        lambda k: (
            b"HTTP/1.1 200 OK\r\nx-echo: " + k + b"x" * LONG + b"\r\ncontent-length: 2\r\n\r\n{}"
        ),
    )


def long_header_line_key_at_cut() -> Behaviour:
    """The key starts just before the point where a parser cuts its quote of the line."""
    return raw(
        "header line over 8 KB, key at the quote's cut",
        lambda k: (
            b"HTTP/1.1 200 OK\r\nx-echo: " + b"y" * 80 + k + b"x" * LONG + b"\r\n"
            b"content-length: 2\r\n\r\n{}"
        ),
    )


def bad_header_line() -> Behaviour:
    return raw(
        "invalid header line echoing the key",
        lambda k: b"HTTP/1.1 200 OK\r\nx-echo\x01: " + k + b"\r\ncontent-length: 2\r\n\r\n{}",
    )


def bad_status_line() -> Behaviour:
    return raw(
        "status line echoing the key",
        lambda k: b"HTTP/1.1 2" + k + b" OK\r\ncontent-length: 2\r\n\r\n{}",
    )


def bad_chunk_size() -> Behaviour:
    """A chunk-size line that is the key, as the first line of the body."""
    return raw("chunk-size line echoing the key", lambda k: _JSON_HEAD + k + b"\r\n{}\r\n")


def bad_chunk_size_mid_stream() -> Behaviour:
    """An event stream that delivers text, then a chunk-size line echoing the key."""

    async def run(ex: Exchange) -> bool:
        k = credential(ex).encode("latin-1")
        if await ex.write(_SSE_HEAD + delta_chunk("Hello")):
            await ex.pause(0.05)
            await ex.write(b"zz" + k + b"\r\n" + b"x" * 40 + b"\r\n")
        return False

    return Behaviour("stream, then a chunk-size line echoing the key", run)


def redirect_with_key() -> Behaviour:
    """A same-origin 307 whose Location carries the key in its query string."""

    async def run(ex: Exchange) -> bool:
        k = credential(ex).rpartition(" ")[2]  # the key itself, without "Bearer "
        target = ex.request.path + "?api_key=" + k
        await ex.head(307, {"location": target}, length=0)
        return True

    return Behaviour("same-origin redirect with the key in Location", run)


def request_id_echo() -> Behaviour:
    """A 500 whose request-id header is the key, padded far past any sane length."""

    async def run(ex: Exchange) -> bool:
        body = json.dumps({"error": {"message": "internal error"}}).encode()
        rid = "req_" + credential(ex).replace(" ", "_") + "z" * 4000
        await ex.head(
            500, {"content-type": "application/json", "x-request-id": rid}, length=len(body)
        )
        return await ex.write(body)

    return Behaviour("500 with the key as its request id", run)


# Every hostile answer, by name. A factory per name: a Behaviour is stateless, but
# building one per use keeps the tests independent.
HOSTILE: dict[str, Callable[[], Behaviour]] = {
    "long_header": long_header_line,
    "long_header_at_cut": long_header_line_key_at_cut,
    "bad_header": bad_header_line,
    "status_line": bad_status_line,
    "chunk_size": bad_chunk_size,
    "chunk_size_mid_stream": bad_chunk_size_mid_stream,
    "redirect": redirect_with_key,
    "request_id": request_id_echo,
}
# The parser-error answers alone (no redirect, no request id).
PARSER_FAULTS = [
    "long_header",
    "long_header_at_cut",
    "bad_header",
    "status_line",
    "chunk_size",
    "chunk_size_mid_stream",
]


def ok_reply() -> Behaviour:
    """What a redirect's target would answer: a valid OpenAI completion."""
    return reply(
        200,
        {
            "id": "chatcmpl-ok",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "followed"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        },
    )


def ok_stream() -> Behaviour:
    """A valid OpenAI event stream: two text deltas, the finish, usage, [DONE]."""

    def event(delta: dict[str, str], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-ok",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    usage = {
        "id": "chatcmpl-ok",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    return stream(
        [
            event({"role": "assistant", "content": "fol"}),
            event({"content": "lowed"}),
            event({}, "stop"),
            b"data: " + json.dumps(usage).encode() + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )
