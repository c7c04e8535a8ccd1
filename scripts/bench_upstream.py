"""The benchmark's upstream: a minimal keep-alive HTTP/1.1 server on 127.0.0.1.

It answers every request with the same OpenAI-shaped ``chat.completion`` JSON
(with ``usage``), so every client in scripts/bench.py talks to the same thing.
It is built to cost as little CPU as possible per request, so that it is not
what is being measured: an ``asyncio.Protocol`` (no streams, no tasks per
request) on uvloop when it is installed (the bench venv has it), parsing only
the request line's end, ``Content-Length`` and the blank line, and writing one
pre-built response. Pipelined requests are answered in order.

``GET /__stats`` returns ``{"requests": N, "cpu_s": user+sys, "wall_s": ...}`` of
this process, so the driver can show the server's own CPU per request next to
the clients' (the evidence that the upstream is not the bottleneck); it is not
counted as a request.

Run: ``python scripts/bench_upstream.py [--port 0]``; it prints ``PORT <n>`` on
stdout once it listens, and exits on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time

# The reply body: what a real chat.completion looks like, usage included.
REPLY = json.dumps(
    {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion",
        "created": 1764000000,
        "model": "x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "HOLD. The series is flat; no edge either way.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 61, "completion_tokens": 12, "total_tokens": 73},
    },
    separators=(",", ":"),
).encode()

_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(REPLY)).encode() + b"\r\n"
    b"\r\n" + REPLY
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

_state = {"requests": 0}
_T0 = time.monotonic()


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _stats_response() -> bytes:
    body = json.dumps(
        {"requests": _state["requests"], "cpu_s": _cpu(), "wall_s": time.monotonic() - _T0}
    ).encode()
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Http(asyncio.Protocol):
    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            lower = head.lower()  # header names are case-insensitive
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                break
            if head.startswith(b"GET /__stats"):
                out.append(_stats_response())
            elif head.startswith(b"POST "):
                _state["requests"] += 1
                out.append(_RESPONSE)
            else:
                out.append(_NOT_FOUND)
            buf = buf[total:]
        self._buf = buf
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # The driver holds our stdin: when it goes away, so do we.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(0, 1) else None)
    print(f"PORT {bound}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(_serve(args.port))
    else:
        uvloop.run(_serve(args.port))


if __name__ == "__main__":
    main()
