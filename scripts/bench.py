"""Benchmark: the router against bare httpx and LiteLLM, side by side, one upstream.

Run from the repository root (not a test; takes a few minutes)::

    .venv/bin/python scripts/bench.py            # the full grid, C = 1, 32, 256
    .venv/bin/python scripts/bench.py --quick    # a smaller, faster run
    .venv/bin/python scripts/bench.py --profile  # also profile router.complete at C=32
    .venv/bin/python scripts/bench.py --redis    # only the shared-state (Redis) section
    .venv/bin/python scripts/bench.py --tail     # only tail latency, hedging on and off

What it does (details and results: docs/performance.md):

1. Creates ``.bench-venv`` (gitignored) with the project installed editable plus
   litellm, matplotlib, pyinstrument and uvloop, so that none of them becomes a
   dependency of the project, and re-runs itself there.
2. Starts the upstream (scripts/bench_upstream.py) in its own process: a minimal
   HTTP/1.1 server on 127.0.0.1 that answers an OpenAI-shaped chat.completion.
3. For each concurrency C and each client, starts one process
   (scripts/bench_clients.py) that makes N calls at concurrency C after a warm-up
   and reports its CPU per call (user+sys from getrusage over N), calls/s,
   p50/p99 latency and peak RSS. The upstream's own CPU per request is read
   before and after each cell, to show it is not the bottleneck.
4. Measures import + config load (time and RSS) of the router and of LiteLLM.
5. Prints a table, writes bench-results/bench-<time>.json (and latest.json) and
   the chart docs/performance.png.

Cells run one after another. On a shared machine, CPU per call is the stable
figure; a cell whose client was starved of CPU (client CPU below 85% of wall time
at C >= 32, where a client is CPU-bound) is run again, up to ``--retries`` times,
and the least disturbed run is kept; every run is in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
VENV = ROOT / ".bench-venv"
RESULTS = ROOT / "bench-results"
CHART = ROOT / "docs" / "performance.png"
TAIL_CHART = ROOT / "docs" / "performance-tail.png"  # --tail: latency with and without hedging
# What the bench venv holds besides the project itself (never project dependencies).
BENCH_REQUIREMENTS = ["litellm", "matplotlib", "pyinstrument", "uvloop", "httpx-aiohttp"]

# Dummy keys for every provider of the example providers.yaml (startup figures).
EXAMPLE_KEYS = {
    "OPENAI_API_KEY": "sk-bench-openai-000000000000000000000000",
    "ANTHROPIC_API_KEY": "sk-ant-bench-0000000000000000000000000",
    "DEEPSEEK_API_KEY": "sk-bench-deepseek-0000000000000000000000",
    "XAI_API_KEY": "xai-bench-000000000000000000000000000000",
}

# The router's connection pool (the only one): labels and file names carry it.
POOL = "aiohttp"

BENCH_YAML = """\
# Written by scripts/bench.py: one provider (the local upstream), one route, one step.
version: 1
settings:
  ledger: {ledger}
  log: {{level: warning}}
providers:
  local:
    kind: openai
    base_url: http://127.0.0.1:{port}/v1
    api_key_env: BENCH_API_KEY
    models:
      x: {{price: {{input_per_mtok: 1.25, output_per_mtok: 10.0}}}}
budgets:
  daily_total: {{limit_usd: 1000000}}
routes:
  bench:
    system: "You are a terse market analyst. Answer BUY, SELL or HOLD with one reason."
    prompt: >-
      Analyse {{{{ ticker }}}}: closing prices, oldest first:
      {{{{ prices | join(', ') }}}}. Horizon: 5 days.
    vars: {{ticker: str, prices: "list[float]"}}
    max_tokens: 64
    temperature: 0.2
    fallback: [local/x]
"""


# The clients, in table order: (label, kind, options).
def client_specs(default_backend: str) -> list[tuple[str, str, dict[str, str]]]:
    """Labels: ``httpx:aiohttp`` is the router's HTTP stack (httpx over aiohttp's pool) as
    an app would use it; ``transport:aiohttp`` / ``router:aiohttp`` run on aiohttp's pool
    (the only one); ``+sqlite`` the SQLite ledger (the other router cells use the memory
    ledger)."""
    return [
        ("httpx", "httpx", {}),
        ("httpx:aiohttp", "httpx-aiohttp", {}),
        ("transport:aiohttp", "transport", {}),
        ("router:aiohttp", "router", {"config": "aiohttp-memory"}),
        (f"router:{default_backend}+sqlite", "router", {"config": f"{default_backend}-sqlite"}),
        ("litellm", "litellm", {}),
    ]


# ---------------------------------------------------------------------- the venv


def _stamp() -> str:
    text = (ROOT / "pyproject.toml").read_text() + "\n".join(BENCH_REQUIREMENTS) + sys.version
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_venv(argv: list[str]) -> None:
    """Re-run this script inside .bench-venv, creating or updating it first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    stamp = VENV / f".stamp-{_stamp()}"
    if not stamp.exists():
        if not python.exists():
            print(f"creating {VENV.relative_to(ROOT)} ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        print("installing the project and the benchmark's tools into it ...", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-e", str(ROOT), *BENCH_REQUIREMENTS],
            check=True,
        )
        for old in VENV.glob(".stamp-*"):
            old.unlink()
        stamp.touch()
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


# ------------------------------------------------------------------ the upstream


class Upstream:
    """The upstream server process; stops when this object is closed (or we exit)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "bench_upstream.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"upstream did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, float]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /__stats HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            data = b""
            while b"}" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)


# ----------------------------------------------------------------------- running


def run_client(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_clients.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"client {args} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


def run_cell(
    upstream: Upstream,
    label: str,
    kind: str,
    options: dict[str, str],
    concurrency: int,
    n: int,
    configs: dict[str, Path],
    retries: int,
    profile: Path | None = None,
) -> dict[str, Any]:
    args = ["run", kind, "--url", upstream.url, "-c", str(concurrency), "-n", str(n)]
    args += ["--label", label]
    if "config" in options:
        args += ["--config", str(configs[options["config"]])]
    if profile is not None:
        args += ["--profile", str(profile)]
    runs = []
    for _attempt in range(1 + retries):
        before = upstream.stats()
        result = run_client(args)
        after = upstream.stats()
        served = after["requests"] - before["requests"]
        result["upstream_us_per_request"] = (
            (after["cpu_s"] - before["cpu_s"]) / served * 1e6 if served else float("nan")
        )
        result["upstream_busy"] = (after["cpu_s"] - before["cpu_s"]) / max(
            after["wall_s"] - before["wall_s"], 1e-9
        )
        result["client_busy"] = result["cpu_s"] / result["wall_s"]
        runs.append(result)
        if concurrency < 32 or result["client_busy"] >= 0.85 or profile is not None:
            break
        print(
            f"  {label} C={concurrency}: client had {result['client_busy']:.0%} of a CPU"
            " (machine busy?); running the cell again",
            flush=True,
        )
    best = max(runs, key=lambda r: r["client_busy"])
    best["runs"] = [
        {k: r[k] for k in ("cpu_us_per_call", "calls_per_s", "client_busy")} for r in runs
    ]
    return best


def startup(which: str, config: Path | None, repeat: int) -> dict[str, Any]:
    args = ["startup", which] + (["--config", str(config)] if config else [])
    env = EXAMPLE_KEYS if which == "router" else None
    runs = [run_client(args, env) for _ in range(repeat)]
    result = dict(min(runs, key=lambda r: r["import_and_load_s"]))
    result["import_and_load_s_median"] = statistics.median(r["import_and_load_s"] for r in runs)
    result["import_and_load_s_all"] = [r["import_and_load_s"] for r in runs]
    return result


# ------------------------------------------------------------------------ output


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("httpx", "httpx_aiohttp", "aiohttp", "litellm", "pydantic", "jinja2"):
        try:
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
        except Exception:
            versions[name] = None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
        "versions": versions,
    }


def table(cells: list[dict[str, Any]]) -> str:
    head = (
        f"{'C':>4}  {'client':<24} {'CPU us/call':>11} {'calls/s':>9} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'RSS MiB':>8} {'upstr us/req':>12} {'upstr busy':>10} {'failed':>6}"
    )
    lines = [head, "-" * len(head)]
    last_c = None
    for c in cells:
        if last_c is not None and c["concurrency"] != last_c:
            lines.append("")
        last_c = c["concurrency"]
        lines.append(
            f"{c['concurrency']:>4}  {c['client']:<24} {c['cpu_us_per_call']:>11.0f}"
            f" {c['calls_per_s']:>9.0f} {c['p50_ms']:>8.2f} {c['p99_ms']:>8.2f}"
            f" {c['peak_rss_mib']:>8.1f} {c['upstream_us_per_request']:>12.1f}"
            f" {c['upstream_busy']:>10.0%} {c['failed']:>6}"
        )
    return "\n".join(lines)


def ratios(cells: list[dict[str, Any]], default_backend: str) -> list[dict[str, Any]]:
    """Per C: router vs its HTTP stack as an app uses it (the target) and vs its
    ``Transport.send`` alone, LiteLLM vs router (default backend)."""
    out = []
    for conc in sorted({c["concurrency"] for c in cells}):
        by = {c["client"]: c for c in cells if c["concurrency"] == conc}
        row: dict[str, Any] = {"concurrency": conc}
        for backend in (POOL,):
            r = by.get(f"router:{backend}")
            for key, base in (("stack", f"httpx:{backend}"), ("transport", f"transport:{backend}")):
                b = by.get(base)
                if r and b:
                    row[f"router_over_{key}_cpu:{backend}"] = (
                        r["cpu_us_per_call"] / b["cpu_us_per_call"]
                    )
        r, lite = by.get(f"router:{default_backend}"), by.get("litellm")
        if r and lite:
            row["router_over_litellm_calls_per_s"] = r["calls_per_s"] / lite["calls_per_s"]
            row["litellm_over_router_cpu"] = lite["cpu_us_per_call"] / r["cpu_us_per_call"]
        h = by.get("httpx")
        if r and h:
            row["router_over_httpx_cpu"] = r["cpu_us_per_call"] / h["cpu_us_per_call"]
        out.append(row)
    return out


def chart(cells: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = list(dict.fromkeys(c["client"] for c in cells))
    concs = sorted({c["concurrency"] for c in cells})
    by = {(c["client"], c["concurrency"]): c for c in cells}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    width = 0.8 / len(clients)
    colors = plt.get_cmap("tab10").colors
    for ax, key, label, log in (
        (axes[0], "cpu_us_per_call", "client CPU per call, µs (lower is better)", True),
        (axes[1], "calls_per_s", "calls per second (higher is better)", True),
    ):
        for i, client in enumerate(clients):
            xs, ys = [], []
            for j, conc in enumerate(concs):
                cell = by.get((client, conc))
                if cell is not None:
                    xs.append(j + (i - (len(clients) - 1) / 2) * width)
                    ys.append(cell[key])
            bars = ax.bar(xs, ys, width, label=client, color=colors[i % len(colors)])
            ax.bar_label(bars, fmt="%.0f", fontsize=6, rotation=90, padding=2)
        ax.set_xticks(range(len(concs)), [f"C = {c}" for c in concs])
        ax.set_title(label, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------- main


def tail(n: int, chart: bool = True) -> None:
    """The tail-latency section: N calls at concurrency 32 on heavy-tailed upstreams,
    without hedging and with hedge.after_s 0.2; a table, JSON, and TAIL_CHART."""
    import asyncio

    import bench_tail  # this folder is on sys.path when run as a script

    rows = [
        asyncio.run(bench_tail.run_tail(n, 32, None)),
        asyncio.run(bench_tail.run_tail(n, 32, 0.2)),
    ]
    print(bench_tail.tail_table(rows), flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"tail-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "runs": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}", flush=True)
    if chart:
        bench_tail.tail_chart(rows, TAIL_CHART)
        print(f"wrote {TAIL_CHART.relative_to(ROOT)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (N=1000, LiteLLM 400)")
    parser.add_argument("--grid", default="1,32,256", help="concurrencies (default 1,32,256)")
    parser.add_argument("-n", type=int, default=None, help="calls per cell (default 3000)")
    parser.add_argument("--litellm-n", type=int, default=None, help="LiteLLM calls per cell")
    parser.add_argument("--clients", default=None, help="comma-separated labels to run")
    parser.add_argument("--retries", type=int, default=2, help="re-runs of a starved cell")
    parser.add_argument("--profile", action="store_true", help="profile router.complete, C=32")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--no-venv", action="store_true", help="run in this interpreter")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="only the Redis state section (scripts/bench_redis.py), in this interpreter",
    )
    parser.add_argument("--redis-c", type=int, default=32, help="its concurrency (default 32)")
    parser.add_argument(
        "--tail",
        action="store_true",
        help="only the tail-latency table: hedging on heavy-tailed upstreams (bench_tail.py)",
    )
    parser.add_argument("--tail-n", type=int, default=2000, help="calls per tail run")
    args = parser.parse_args()
    if args.redis:
        sys.path[:0] = [str(ROOT), str(SCRIPTS)]  # this checkout's router, then the section
        from bench_redis import run as run_redis

        RESULTS.mkdir(exist_ok=True)
        figures = run_redis(args.n or 3000, args.redis_c)
        (RESULTS / "redis-latest.json").write_text(json.dumps(figures, indent=2))
        return
    if not args.no_venv:
        ensure_venv(sys.argv[1:])
    if args.tail:
        tail(args.tail_n, chart=not args.no_chart)
        return
    n = args.n or (1000 if args.quick else 3000)
    litellm_n = args.litellm_n or (400 if args.quick else 1000)
    grid = [int(c) for c in args.grid.split(",")]

    default_backend = POOL
    specs = client_specs(default_backend)
    if args.clients:
        wanted = args.clients.split(",")
        specs = [s for s in specs if s[0] in wanted]

    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    info = machine()
    print(
        f"{info['date']}  {info['cpu']} x{info['cpus']}  Python {info['python']}"
        f"  load {info['load_avg_at_start'][0]:.2f}  default transport: {default_backend}",
        flush=True,
    )
    upstream = Upstream()
    started = time.monotonic()
    try:
        workdir = RESULTS / "run"
        workdir.mkdir(exist_ok=True)
        configs: dict[str, Path] = {}
        for backend in (POOL,):
            for ledger in ("memory", "sqlite"):
                path = workdir / f"bench-{backend}-{ledger}.yaml"
                spend = workdir / f"spend-{backend}.sqlite3"
                for old in workdir.glob(f"spend-{backend}.sqlite3*"):
                    old.unlink()
                ledger_yaml = (
                    "{backend: memory}"
                    if ledger == "memory"
                    else f"{{backend: sqlite, path: {spend.name}}}"
                )
                path.write_text(
                    BENCH_YAML.format(backend=backend, ledger=ledger_yaml, port=upstream.port)
                )
                configs[f"{backend}-{ledger}"] = path

        print("import + config load ...", flush=True)
        startups = {
            "router": startup("router", ROOT / "providers.yaml", 5),
            "litellm": startup("litellm", None, 3),
        }
        for name, s in startups.items():
            print(
                f"  {name:8s} import+load {s['import_and_load_s']:.3f} s"
                f" (median {s['import_and_load_s_median']:.3f} s), construct"
                f" {s['construct_s'] * 1000:.1f} ms, RSS {s['rss_mib']:.1f} MiB"
                f" (interpreter alone {s['baseline_rss_mib']:.1f} MiB)",
                flush=True,
            )
            if s["backend_import_s"]:
                print(
                    f"           start() adds the aiohttp backend: {s['backend_import_s']:.3f} s,"
                    f" RSS then {s['rss_with_backend_mib']:.1f} MiB",
                    flush=True,
                )

        cells = []
        for conc in grid:
            for label, kind, options in specs:
                calls = litellm_n if kind == "litellm" else n
                cell = run_cell(upstream, label, kind, options, conc, calls, configs, args.retries)
                cells.append(cell)
                print(
                    f"  C={conc:<4} {label:<24} {cell['cpu_us_per_call']:8.0f} us/call"
                    f" {cell['calls_per_s']:8.0f} calls/s  p50 {cell['p50_ms']:.2f} ms"
                    f"  p99 {cell['p99_ms']:.2f} ms  upstream {cell['upstream_us_per_request']:.1f}"
                    f" us/req",
                    flush=True,
                )

        profile: dict[str, Any] | None = None
        if args.profile:
            print("profiling router.complete at C=32 ...", flush=True)
            text_path = RESULTS / f"profile-router-c32-{stamp}.txt"
            label = f"router:{default_backend}"
            prof = run_cell(
                upstream,
                label,
                "router",
                {"config": f"{default_backend}-memory"},
                32,
                n,
                configs,
                0,
                profile=text_path,
            )
            own = run_cell(
                upstream,
                "router-no-http",
                "router-no-http",
                {"config": f"{default_backend}-memory"},
                32,
                max(n, 5000),
                configs,
                0,
            )
            profile = {
                "pyinstrument_text": str(text_path.relative_to(ROOT)),
                "profiled_cpu_us_per_call": prof["cpu_us_per_call"],
                "router_only_cpu_us_per_call": own["cpu_us_per_call"],
            }
            print(
                f"  router without HTTP (its own cost): {own['cpu_us_per_call']:.1f} us/call;"
                f" pyinstrument tree: {text_path.relative_to(ROOT)}",
                flush=True,
            )
    finally:
        upstream.close()

    elapsed = time.monotonic() - started
    rows = ratios(cells, default_backend)
    print()
    print(table(cells))
    print()
    for row in rows:
        parts = [f"C={row['concurrency']}:"]
        for key, value in row.items():
            if key != "concurrency":
                parts.append(f"{key} {value:.2f}")
        print("  ".join(parts))
    for name, s in startups.items():
        print(
            f"startup {name}: import+load {s['import_and_load_s']:.3f} s"
            f" (median of {len(s['import_and_load_s_all'])}:"
            f" {s['import_and_load_s_median']:.3f} s), RSS {s['rss_mib']:.1f} MiB"
        )
    print(f"total time {elapsed:.0f} s")

    result = {
        "machine": info,
        "default_transport": default_backend,
        "n": n,
        "litellm_n": litellm_n,
        "grid": grid,
        "startup": startups,
        "cells": cells,
        "ratios": rows,
        "profile": profile,
        "elapsed_s": elapsed,
    }
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    if not args.no_chart:
        title = (
            f"{info['date']} · {info['cpu']} ×{info['cpus']} · Python {info['python']} ·"
            f" N={n} (LiteLLM {litellm_n}) per cell · upstream: scripts/bench_upstream.py"
        )
        chart(cells, CHART, title)
        print(f"wrote {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
