"""The Redis section of the benchmark (``scripts/bench.py --redis``): what shared
state costs per call.

Starts a ``redis-server`` of its own on a free loopback port (nothing persisted),
then measures, in this interpreter:

1. **Latency** of one attempt's state round trips, one attempt at a time:
   admission + reservation (the ADMIT script: cooldown, budget, requests and
   tokens per minute, a concurrency slot) and the settle (FINISH), p50/p99 over N.
2. **Added CPU per call** at concurrency C (default 32): ``router.complete`` on
   the in-process mock provider (no network, a priced model under a budget and
   limits), with ``settings.state`` local and then redis; the difference of this
   process's CPU per call (user+sys), and the Redis server's own CPU per call
   (``INFO cpu``), reported apart.

Prints one line per figure and returns them as a dict (bench.py stores it in its
JSON). Run: ``python scripts/bench.py --redis [-n 3000] [--redis-c 32]``.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

YAML = """\
version: 1
settings:
  ledger: {{backend: memory}}
  log: {{level: error}}
  {state}
providers:
  mock:
    kind: mock
    mock: {{reply: "HOLD", latency_s: 0}}
    models:
      m: {{price: {{input_per_mtok: 1.25, output_per_mtok: 10.0}}}}
    limits: {{requests_per_minute: 100000000, tokens_per_minute: 1000000000,
              max_concurrency: 10000}}
budgets:
  daily_total: {{limit_usd: 1000000, period: day}}
routes:
  bench: {{prompt: "Analyse ACME: HOLD or not?", max_tokens: 64, fallback: [mock/m]}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/_server.sh installs it)")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")


def _server_cpu(port: int) -> float:
    import redis

    client = redis.Redis(port=port)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def _latency(config: Path, n: int) -> dict[str, float]:
    from router.plan import load_config
    from router.state_redis import RedisState

    plan = load_config(config)
    state = RedisState(plan)
    await state.start()
    handle = state.provider(plan.providers["mock"])
    admit: list[float] = []
    settle: list[float] = []
    try:
        for i in range(n + 200):
            t0 = time.perf_counter()
            ticket = state.begin(
                handle,
                route="bench",
                model="m",
                amount=Decimal("0.00065"),
                max_cost_usd=None,
                est_in=20,
                max_tokens=64,
            )
            assert not isinstance(ticket, tuple), ticket
            skip = await ticket.admit(84, 5.0)  # type: ignore[union-attr]
            assert skip is None, skip
            t1 = time.perf_counter()
            ticket.settle_now(Decimal("0.0004"))  # type: ignore[union-attr]
            ticket.release()  # type: ignore[union-attr]
            await state.flush()  # the FINISH round trip has its answer
            t2 = time.perf_counter()
            if i >= 200:  # after the warm-up
                admit.append(t1 - t0)
                settle.append(t2 - t1)
    finally:
        await state.aclose()
    both = [a + s for a, s in zip(admit, settle, strict=True)]
    return {
        "admit_p50_ms": statistics.median(admit) * 1000,
        "admit_p99_ms": _pct(admit, 0.99) * 1000,
        "settle_p50_ms": statistics.median(settle) * 1000,
        "settle_p99_ms": _pct(settle, 0.99) * 1000,
        "admit_settle_p50_ms": statistics.median(both) * 1000,
        "admit_settle_p99_ms": _pct(both, 0.99) * 1000,
    }


async def _cpu_per_call(config: Path, n: int, conc: int) -> float:
    from router import Router

    async with Router.from_yaml(config) as router:

        async def worker(count: int) -> None:
            for _ in range(count):
                await router.complete("bench")

        await asyncio.gather(*(worker(50) for _ in range(conc)))  # warm-up
        await router.state.flush()
        before = _cpu()
        per = n // conc
        await asyncio.gather(*(worker(per) for _ in range(conc)))
        await router.state.flush()
        return (_cpu() - before) / (per * conc)


def run(n: int = 3000, conc: int = 32) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, port = _start_redis(folder)
        try:
            os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            local = folder / "local.yaml"
            local.write_text(YAML.format(state=""))
            shared = folder / "redis.yaml"
            shared.write_text(
                YAML.format(state="state: {backend: redis, url_env: BENCH_REDIS_URL}")
            )
            latency = asyncio.run(_latency(shared, n))
            cpu_local = asyncio.run(_cpu_per_call(local, n, conc))
            server_before = _server_cpu(port)
            cpu_redis = asyncio.run(_cpu_per_call(shared, n, conc))
            server = (_server_cpu(port) - server_before) / (n // conc * conc)
        finally:
            proc.kill()
            proc.wait()
    result = {
        **latency,
        "n": n,
        "concurrency": conc,
        "cpu_us_per_call_local": cpu_local * 1e6,
        "cpu_us_per_call_redis": cpu_redis * 1e6,
        "added_cpu_us_per_call": (cpu_redis - cpu_local) * 1e6,
        "redis_server_cpu_us_per_call": server * 1e6,
    }
    print(
        f"redis state, loopback, N={n}: admission+reservation p50"
        f" {result['admit_p50_ms']:.3f} ms p99 {result['admit_p99_ms']:.3f} ms;"
        f" settle p50 {result['settle_p50_ms']:.3f} ms p99 {result['settle_p99_ms']:.3f} ms;"
        f" both p50 {result['admit_settle_p50_ms']:.3f} ms"
        f" p99 {result['admit_settle_p99_ms']:.3f} ms",
        flush=True,
    )
    print(
        f"C={conc}: CPU per call {result['cpu_us_per_call_local']:.0f} us local,"
        f" {result['cpu_us_per_call_redis']:.0f} us redis: +{result['added_cpu_us_per_call']:.0f}"
        f" us per call in the app (redis-server: {result['redis_server_cpu_us_per_call']:.0f}"
        " us per call)",
        flush=True,
    )
    return result
