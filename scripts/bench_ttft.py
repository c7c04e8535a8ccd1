"""Time to first delta: through ``router.stream()`` vs a raw httpx + httpx-sse client.

Starts an in-process streaming upstream on 127.0.0.1 (OpenAI-shaped SSE: a first
chunk with text at once, then a few more, usage and ``[DONE]``), then measures,
run after run, alternating the two (and which goes first) so drift hits both alike:

- raw: ``httpx.AsyncClient.stream()`` + ``httpx_sse`` until the first event with
  text, parsed with ``json.loads`` (what a hand-written client does; proxy
  environment lookups off, as in the router's transport);
- router: from calling ``router.stream(...)`` (render, reservation, admission,
  request, SSE parsing, adapter) to the first delta out of ``async for``.

Both read every stream to its end, so both reuse one keep-alive connection.
The router's overhead on time to first token is reported two ways: the
difference of the medians, and the median of the paired differences (each
router run minus the raw run just before it), which shrugs off machine load.

Run: ``python scripts/bench_ttft.py [-n 200] [--warmup 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import httpx_sse

from router import Router, load_config
from router.logging import configure


def _event(doc: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def _chunk(text: str | None = None, finish: str | None = None) -> dict[str, object]:
    delta = {} if text is None else {"content": text}
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE = {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}
FIRST = _event(_chunk("HOLD."))
REST = (
    b"".join(_event(_chunk(t)) for t in (" The", " series", " is", " flat."))
    + _event(_chunk(finish="stop"))
    + _event({"id": "chatcmpl-bench", "choices": [], "usage": USAGE})
    + b"data: [DONE]\n\n"
)
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Upstream(asyncio.Protocol):
    """Keep-alive HTTP/1.1: every request gets the same SSE stream (first chunk at once)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            assert self.transport is not None
            self.transport.write(HEAD + _chunked(FIRST))
            self.transport.write(_chunked(REST) + b"0\r\n\r\n")


YAML = """\
version: 1
settings: {{ledger: {{backend: memory}}}}
providers:
  up:
    kind: openai
    base_url: {url}/v1
    models: {{m: {{price: {{input_per_mtok: 1, output_per_mtok: 4}}}}}}
routes:
  r:
    prompt: "Price series for {{{{ ticker }}}}: hold or trade?"
    max_tokens: 64
    fallback: [up/m]
"""


async def _raw(client: httpx.AsyncClient, body: dict[str, object]) -> float:
    t0 = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        async for sse in httpx_sse.EventSource(resp).aiter_sse():
            if sse.data == "[DONE]":
                continue
            doc = json.loads(sse.data)
            choices = doc.get("choices") or []
            if first is None and choices and choices[0]["delta"].get("content"):
                first = time.perf_counter() - t0
    assert first is not None
    return first


async def _routed(router: Router) -> float:
    t0 = time.perf_counter()
    first = None
    async with router.stream("r", {"ticker": "ACME"}) as stream:
        async for _delta in stream:
            if first is None:
                first = time.perf_counter() - t0
    assert first is not None
    assert stream.completion is not None
    return first


def _ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1000


async def main(runs: int, warmup: int) -> None:
    configure(level="warning")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "providers.yaml").write_text(YAML.format(url=url))
        config = load_config(Path(tmp) / "providers.yaml", env={})
    router = Router(config)
    body = router.render("r", {"ticker": "ACME"})
    raw_body: dict[str, object] = {
        "model": "m",
        "messages": [{"role": m.role, "content": m.content} for m in body],
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw: list[float] = []
    routed: list[float] = []
    async with router, httpx.AsyncClient(base_url=url, trust_env=False) as client:
        for i in range(warmup + runs):
            if i % 2:  # alternate which goes first, so neither always follows the other
                r = await _raw(client, raw_body)
                s = await _routed(router)
            else:
                s = await _routed(router)
                r = await _raw(client, raw_body)
            if i >= warmup:
                raw.append(r)
                routed.append(s)
    server.close()
    await server.wait_closed()
    overhead = statistics.median(routed) - statistics.median(raw)
    paired = statistics.median(s - r for s, r in zip(routed, raw, strict=True))
    print(f"runs: {runs} each (after {warmup} warm-up), one keep-alive connection each")
    print(
        f"raw httpx + httpx-sse: median {statistics.median(raw) * 1000:.3f} ms,"
        f" p90 {_ms(raw, 0.9):.3f} ms"
    )
    print(
        f"router.stream():       median {statistics.median(routed) * 1000:.3f} ms,"
        f" p90 {_ms(routed, 0.9):.3f} ms"
    )
    print(f"router TTFT overhead: difference of medians {overhead * 1000:.3f} ms,")
    print(f"                      median of paired differences {paired * 1000:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.warmup))
