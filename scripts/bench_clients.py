"""One benchmark client per process: drive N calls at concurrency C, report figures.

Run by scripts/bench.py, one process per (client, concurrency) cell, so that each
client's CPU time, memory and imports are its own::

    python scripts/bench_clients.py run CLIENT --url URL -c 32 -n 3000 [--config YAML]
    python scripts/bench_clients.py startup router|litellm [--config YAML]

``run`` prints one JSON object: CPU µs per call ((user+sys)/N from getrusage,
warm-up excluded), calls/s, p50/p99 latency, peak RSS. ``startup`` prints the
time and memory of importing the library and loading its configuration.

Every client sends the same request (same messages, max_tokens and temperature)
to the same upstream and reads the same reply; see docs/performance.md.

Only the standard library is imported at module level: each client imports just
what it uses, so its memory and start-up are its own.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

# The call every client makes: what the bench route's templates render to.
TICKER = "ACME"
PRICES = [101.5, 102.25, 99.75, 100.0, 103.5, 104.25, 102.0, 101.0, 100.5, 99.0]
SYSTEM = "You are a terse market analyst. Answer BUY, SELL or HOLD with one reason."
PROMPT = "Analyse {ticker}: closing prices, oldest first: {prices}. Horizon: 5 days."
MAX_TOKENS = 64
TEMPERATURE = 0.2
API_KEY = "sk-bench-0123456789abcdefghijklmnop"  # not a real key; the upstream ignores it


def messages() -> list[dict[str, str]]:
    prompt = PROMPT.format(ticker=TICKER, prices=", ".join(str(p) for p in PRICES))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def payload() -> dict[str, Any]:
    """The request body the router builds for the bench route (same keys, same order)."""
    return {
        "model": "x",
        "messages": messages(),
        "max_tokens": MAX_TOKENS,
        "temperature": TEMPERATURE,
    }


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc (ru_maxrss as fallback)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def quiet_litellm() -> None:
    """LiteLLM with its telemetry, callbacks and console logging off (so it pays for none)."""
    import logging

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "aiohttp"):
        logging.getLogger(name).setLevel(logging.ERROR)


def configure_litellm(litellm: Any) -> None:
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    litellm.turn_off_message_logging = True


def litellm_router(litellm: Any, url: str) -> Any:
    return litellm.Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {
                    "model": "openai/x",
                    "api_base": url + "/v1",
                    "api_key": API_KEY,
                },
            }
        ],
        num_retries=0,
    )


def quiet_router() -> None:
    """The router's structlog events at level warning: info events cost a no-op call."""
    from router.logging import configure

    configure(level="warning", stream=sys.stderr)


# --------------------------------------------------------------------- clients
#
# Each factory is ``async def make(args) -> (call, close)``: ``call()`` makes one
# request and returns something non-empty, ``close()`` releases everything.


async def make_httpx(args: Any) -> tuple[Any, Any]:
    """(a) bare httpx: one AsyncClient, the same pool size as the router's transport."""
    import httpx

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    client = httpx.AsyncClient(
        limits=limits, timeout=30.0, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    url = args.url + "/v1/chat/completions"
    body = payload()

    async def call() -> Any:
        response = await client.post(url, json=body)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    return call, client.aclose


async def make_httpx_aiohttp(args: Any) -> tuple[Any, Any]:
    """(b) the router's own HTTP stack as an app would use it: an httpx client over
    aiohttp's pool (httpx-aiohttp), the same pool size: ``post(json=...)``,
    ``raise_for_status()``, ``response.json()`` and take the text."""
    import httpx
    from httpx_aiohttp import HttpxAiohttpClient

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    client = HttpxAiohttpClient(
        limits=limits, timeout=30.0, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    url = args.url + "/v1/chat/completions"
    body = payload()

    async def call() -> Any:
        response = await client.post(url, json=body)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    return call, client.aclose


async def make_transport(args: Any) -> tuple[Any, Any]:
    """(b) the router's Transport alone: send, read the body bytes."""
    from router.transport import Transport
    from router.types import WireRequest

    transport = Transport(
        "local",
        args.url + "/v1",
        headers={"Authorization": f"Bearer {API_KEY}"},
        connect_timeout_s=5.0,
        max_connections=None,
        max_response_bytes=8 * 1024 * 1024,
    )
    await transport.start()
    request = WireRequest("POST", "/chat/completions", payload())

    async def call() -> Any:
        raw = await transport.send(request, model="x", timeout_s=30.0)
        if raw.status != 200:
            raise RuntimeError(f"HTTP {raw.status}")
        return raw.body

    return call, transport.aclose


async def _router(args: Any) -> Any:
    from router import Router, load_config

    quiet_router()
    config = load_config(args.config, env={"BENCH_API_KEY": API_KEY})
    router = Router(config)
    await router.start()
    return router


async def make_router(args: Any) -> tuple[Any, Any]:
    """(c) ``router.complete`` on a one-step route with templates (``--config``)."""
    router = await _router(args)
    variables = {"ticker": TICKER, "prices": PRICES}

    async def call() -> Any:
        result = await router.complete("bench", variables)
        return result.text

    return call, router.aclose


async def make_router_no_http(args: Any) -> tuple[Any, Any]:
    """The router's own cost: ``router.complete`` with each transport swapped for one
    that answers at once with the upstream's reply bytes (no HTTP at all).

    Reaches into the router's internals (the providers of its current config
    generation); a measuring tool only.
    """
    from bench_upstream import REPLY

    from router.transport import RawResponse

    router = await _router(args)
    headers = {"content-type": "application/json", "content-length": str(len(REPLY))}

    class Instant:
        async def send(self, req: Any, *, model: str, timeout_s: float) -> Any:
            return RawResponse(200, headers, REPLY)

        async def aclose(self) -> None:
            return None

    gen = getattr(router, "_gen", router)
    for provider in getattr(gen, "providers", getattr(router, "_providers", {})).values():
        await provider.transport.aclose()
        provider.transport = Instant()
    variables = {"ticker": TICKER, "prices": PRICES}

    async def call() -> Any:
        result = await router.complete("bench", variables)
        return result.text

    return call, router.aclose


# Unrelated Python work, about as long as an HTTP exchange: parsing a JSON document
# and walking it. Run between the router's calls (``router-no-http+busy``) it shows
# what the router's own code costs when other code runs between its calls, as HTTP
# does in the real cell (docs/performance.md, "The fourth round").
_BUSY_DOC = None


def busywork() -> int:
    import json

    global _BUSY_DOC
    if _BUSY_DOC is None:
        _BUSY_DOC = json.dumps({f"k{i}": [i, str(i) * 5, {"a": i * 1.5}] for i in range(300)})
    total = 0
    for key, value in json.loads(_BUSY_DOC).items():
        total += len(key) + value[0] + len(value[1])
    return total


async def make_busywork(args: Any) -> tuple[Any, Any]:
    """The unrelated work alone (the base of ``router-no-http+busy``)."""

    async def call() -> Any:
        return busywork()

    async def close() -> None:
        return None

    return call, close


async def make_router_no_http_busy(args: Any) -> tuple[Any, Any]:
    """``router-no-http`` with :func:`busywork` done in each call, where HTTP would be."""
    call, close = await make_router_no_http(args)

    async def busy_call() -> Any:
        busywork()
        return await call()

    return busy_call, close


async def make_litellm(args: Any) -> tuple[Any, Any]:
    """(d) LiteLLM ``Router.acompletion`` pointed at the same upstream."""
    quiet_litellm()
    import litellm

    configure_litellm(litellm)
    router = litellm_router(litellm, args.url)
    msgs = messages()

    async def call() -> Any:
        response = await router.acompletion(
            model="bench", messages=msgs, max_tokens=MAX_TOKENS, temperature=TEMPERATURE
        )
        return response.choices[0].message.content

    async def close() -> None:
        closer = getattr(litellm, "close_litellm_async_clients", None)
        if closer is not None:
            await closer()

    return call, close


CLIENTS = {
    "httpx": make_httpx,
    "httpx-aiohttp": make_httpx_aiohttp,
    "transport": make_transport,
    "router": make_router,
    "router-no-http": make_router_no_http,
    "router-no-http+busy": make_router_no_http_busy,
    "busywork": make_busywork,
    "litellm": make_litellm,
}


# ----------------------------------------------------------------------- driving


async def _batch(call: Any, n: int, concurrency: int, latencies: list[float] | None) -> int:
    """Make ``n`` calls with ``concurrency`` workers; return the number that failed."""
    import asyncio

    left = n
    failed = 0
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal left, failed
        while left > 0:
            left -= 1
            start = clock()
            try:
                if not await call():
                    raise RuntimeError("empty answer")
            except Exception as exc:
                failed += 1
                if failed <= 3:
                    print(f"call failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if latencies is not None:
                latencies.append(clock() - start)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    return failed


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


class _GcSeen:
    """What the cyclic garbage collector did, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]  # per generation
        self.collected = 0  # objects freed
        self.cpu_s = 0.0
        self._started = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        self.collections[info["generation"]] += 1
        self.collected += info["collected"]
        self.cpu_s += time.process_time() - self._started


async def _run(args: Any) -> dict[str, Any]:
    import gc

    call, close = await CLIENTS[args.client](args)
    gc_seen = _GcSeen()

    try:
        warmup = args.warmup if args.warmup is not None else max(2 * args.concurrency, 200)
        await _batch(call, warmup, args.concurrency, None)
        gc.collect()
        if args.gc_freeze:
            gc.freeze()  # what an app may do once it has started (docs/performance.md)
        gc.callbacks.append(gc_seen.on_gc)
        latencies: list[float] = []
        profiler = None
        if args.profile:
            from pyinstrument import Profiler  # in the bench venv only

            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()
        cpu0, t0 = _cpu_s(), time.perf_counter()
        failed = await _batch(call, args.n, args.concurrency, latencies)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
        gc.callbacks.remove(gc_seen.on_gc)
        profile_text = None
        if profiler is not None:
            profiler.stop()
            profile_text = profiler.output_text(unicode=True, color=False, show_all=True)
    finally:
        await close()
    latencies.sort()
    _, peak = _rss_mib()
    return {
        "client": args.label or args.client,
        "kind": args.client,
        "concurrency": args.concurrency,
        "n": args.n,
        "failed": failed,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_us_per_call": cpu / args.n * 1e6,
        "calls_per_s": args.n / wall,
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "peak_rss_mib": peak,
        # The cyclic garbage collector during the N calls: collections of each
        # generation per 1,000 calls, objects it freed and its CPU, per call.
        "gc_per_1000_calls": [c * 1000 / args.n for c in gc_seen.collections],
        "gc_collected_per_call": gc_seen.collected / args.n,
        "gc_cpu_us_per_call": gc_seen.cpu_s / args.n * 1e6,
        "profile": profile_text,
    }


def startup(which: str, config: str | None) -> dict[str, Any]:
    """Time and memory of importing a library and loading its configuration."""
    rss0, _ = _rss_mib()
    if which == "router":
        t0 = time.perf_counter()
        import router

        t1 = time.perf_counter()
        cfg = router.load_config(config or "providers.yaml")
        t2 = time.perf_counter()
        router.Router(cfg)
        t3 = time.perf_counter()
        rss_loaded, _ = _rss_mib()
        # What Router.start() adds: aiohttp's pool, imported on first use.
        import httpx_aiohttp  # noqa: F401

        extra_s = time.perf_counter() - t3
    else:
        quiet_litellm()
        t0 = time.perf_counter()
        import litellm

        t1 = time.perf_counter()
        configure_litellm(litellm)
        t2 = time.perf_counter()
        litellm_router(litellm, "http://127.0.0.1:9")
        t3 = time.perf_counter()
        rss_loaded, _ = _rss_mib()
        extra_s = 0.0
    rss, peak = _rss_mib()
    return {
        "library": which,
        "import_s": t1 - t0,
        "load_s": t2 - t1,  # router: load_config(); litellm: its settings (no file to load)
        "construct_s": t3 - t2,  # Router(config) / litellm.Router(model_list)
        "import_and_load_s": t2 - t0,
        "total_s": t3 - t0,
        "baseline_rss_mib": rss0,
        "rss_mib": rss_loaded,  # after import + load + construction
        "backend_import_s": extra_s,  # router: importing the aiohttp backend at start()
        "rss_with_backend_mib": rss,
        "peak_rss_mib": peak,
        "modules": len(sys.modules),
    }


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="One benchmark client (see scripts/bench.py).")
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run")
    run.add_argument("client", choices=sorted(CLIENTS))
    run.add_argument("--url", required=True)
    run.add_argument("-c", "--concurrency", type=int, default=32)
    run.add_argument("-n", type=int, default=3000)
    run.add_argument("--warmup", type=int, default=None)
    run.add_argument("--config", help="providers.yaml for the router clients")
    run.add_argument("--label", help="name to report (default: the client kind)")
    run.add_argument("--profile", help="write a pyinstrument profile of the timed part here")
    run.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() after the warm-up (an app's tuning)"
    )
    st = sub.add_parser("startup")
    st.add_argument("library", choices=["router", "litellm"])
    st.add_argument("--config")
    args = parser.parse_args()
    if args.mode == "startup":
        result = startup(args.library, args.config)
    else:
        import asyncio

        result = asyncio.run(_run(args))
        profile = result.pop("profile")
        if args.profile and profile:
            with open(args.profile, "w") as f:
                f.write(profile)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
