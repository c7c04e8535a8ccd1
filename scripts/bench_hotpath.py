"""The router's hot path against its own transport: CPU µs per call, quick and local.

A small harness for work on the router's per-call cost (docs/performance.md,
"Where the router's time goes"), lighter than scripts/bench.py: no extra venv,
no LiteLLM, no plot. It starts the benchmark upstream (scripts/bench_upstream.py)
in a subprocess, then runs ``httpx-aiohttp`` (the router's HTTP stack as an app
uses it: ``post(json=...)``, ``.json()``), ``transport`` (``Transport.send``
alone) and ``router`` cells (scripts/bench_clients.py, one process per cell) at
each concurrency, interleaved, several rounds, and prints min and median CPU µs
per call, the median CPU the cyclic garbage collector took, and the router's
ratios to both bases (of the minimums, then of the medians). Other processes may
be running: the minimum of several interleaved runs is the figure to trust.

``--tree DIR`` (repeatable) measures the ``router`` package of another checkout
too (e.g. ``git worktree add /tmp/base <commit>``), interleaved with this one,
for before/after figures from the same minutes of the same machine::

    python scripts/bench_hotpath.py                      # C = 1 and 32, 5 rounds
    python scripts/bench_hotpath.py -c 32 -r 7 --tree /tmp/base
    python scripts/bench_hotpath.py -c 32 --profile out.txt   # needs pyinstrument
    python scripts/bench_hotpath.py -c 32 --cells transport,router --gc-freeze
    python scripts/bench_hotpath.py -c 32 --cells router-no-http,busywork,router-no-http+busy

Run it with the project's venv; it imports nothing of the router itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import BENCH_YAML  # this folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The same route as scripts/bench.py (one step, templates, a budget) on the memory ledger.
YAML = BENCH_YAML.replace("{ledger}", "{{backend: memory}}")
# The baseline: the same HTTP stack (httpx over aiohttp's pool) as an app would use it.
APP = "httpx-aiohttp"


def _upstream() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "bench_upstream.py"), "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise SystemExit(f"upstream did not start: {line!r}")
    return proc, int(line[1])


def _cell(
    tree: Path,
    client: str,
    c: int,
    n: int,
    url: str,
    config: Path,
    profile: str | None,
    freeze: bool = False,
) -> tuple[float, float]:
    """(CPU µs per call, of which the cyclic garbage collector's) of one cell."""
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_API_KEY": "unused"}
    cmd = [
        sys.executable,
        str(HERE / "bench_clients.py"),
        "run",
        client,
        "--url",
        url,
        "-c",
        str(c),
        "-n",
        str(n),
        "--config",
        str(config),
    ]
    if profile:
        cmd += ["--profile", profile]
    if freeze:
        cmd.append("--gc-freeze")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{client} C={c} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise SystemExit(f"{client} C={c}: {result['failed']} calls failed")
    return float(result["cpu_us_per_call"]), float(result["gc_cpu_us_per_call"])


def _other_cells(
    args: argparse.Namespace,
    trees: list[Path],
    concurrencies: list[int],
    url: str,
    config: Path,
    runs: dict[tuple[str, str, int], list[float]],
    gcs: dict[tuple[str, str, int], list[float]],
) -> None:
    """``--cells``: the given clients per tree, interleaved over the rounds; a table."""
    kinds = args.cells.split(",")
    variants = (False, True) if args.gc_freeze else (False,)
    for r in range(args.rounds):
        for c in concurrencies:
            for tree in trees:
                for kind in kinds:
                    for freeze in variants:
                        us, gc_us = _cell(tree, kind, c, args.n, url, config, None, freeze)
                        label = kind + ("+freeze" if freeze else "")
                        runs.setdefault((tree.name, label, c), []).append(us)
                        gcs.setdefault((tree.name, label, c), []).append(gc_us)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"CPU us/call, {args.rounds} interleaved rounds of N = {args.n} (min / median)")
    print("[gc: median CPU us per call in the cyclic garbage collector]")
    for (tree_name, label, c), values in runs.items():
        print(
            f"{tree_name:>12}  C={c:<3} {label:<28} {min(values):6.1f} /"
            f" {statistics.median(values):6.1f}  (max {max(values):6.1f})"
            f" [gc {statistics.median(gcs[(tree_name, label, c)]):.1f}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--concurrency", type=int, action="append", help="default 1, 32")
    parser.add_argument("-n", type=int, default=3000, help="calls per cell")
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("--tree", action="append", default=[], help="another checkout")
    parser.add_argument("--profile", help="write a pyinstrument profile of one router cell")
    parser.add_argument(
        "--cells",
        help="instead: these scripts/bench_clients.py clients, per tree, e.g."
        " router-no-http,busywork,router-no-http+busy",
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="with --cells: each also after gc.freeze()"
    )
    args = parser.parse_args()
    concurrencies = args.concurrency or [1, 32]
    trees = [ROOT, *(Path(t).resolve() for t in args.tree)]
    upstream, port = _upstream()
    url = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "bench.yaml"
            config.write_text(YAML.format(port=port))
            if args.profile:
                us, _ = _cell(ROOT, "router", concurrencies[-1], args.n, url, config, args.profile)
                print(f"profiled router C={concurrencies[-1]}: {us:.0f} us/call -> {args.profile}")
                return
            runs: dict[tuple[str, str, int], list[float]] = {}
            gcs: dict[tuple[str, str, int], list[float]] = {}
            if args.cells:
                _other_cells(args, trees, concurrencies, url, config, runs, gcs)
                return
            for r in range(args.rounds):
                for c in concurrencies:
                    # The app's client (it imports nothing of the router) once per round,
                    # then each tree's transport and router.
                    us, gc_us = _cell(ROOT, APP, c, args.n, url, config, None)
                    runs.setdefault(("", APP, c), []).append(us)
                    gcs.setdefault(("", APP, c), []).append(gc_us)
                    for tree in trees:
                        for client in ("transport", "router"):
                            us, gc_us = _cell(tree, client, c, args.n, url, config, None)
                            runs.setdefault((tree.name, client, c), []).append(us)
                            gcs.setdefault((tree.name, client, c), []).append(gc_us)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        upstream.terminate()
        upstream.wait()
    print(f"CPU us/call, {args.rounds} interleaved rounds of N = {args.n} (min / median)")
    print("ratios: router / the app's httpx-aiohttp client, router / Transport.send alone")
    print("[gc: median CPU us per call in the cyclic garbage collector]")
    for c in concurrencies:
        a = runs[("", APP, c)]
        a_med = statistics.median(a)
        gc_a = statistics.median(gcs[("", APP, c)])
        print(f"{APP:>12}  C={c:<3} {min(a):6.0f} / {a_med:6.0f} [gc {gc_a:.1f}]")
        for tree in trees:
            t = runs[(tree.name, "transport", c)]
            rt = runs[(tree.name, "router", c)]
            t_med, rt_med = statistics.median(t), statistics.median(rt)
            gc_t = statistics.median(gcs[(tree.name, "transport", c)])
            gc_rt = statistics.median(gcs[(tree.name, "router", c)])
            print(
                f"{tree.name:>12}  C={c:<3} transport {min(t):6.0f} / {t_med:6.0f} [gc {gc_t:.1f}]"
                f"   router {min(rt):6.0f} / {rt_med:6.0f} [gc {gc_rt:.1f}]"
                f"   router/app {min(rt) / min(a):.2f} (medians {rt_med / a_med:.2f})"
                f"   router/transport {min(rt) / min(t):.2f} (medians {rt_med / t_med:.2f})"
            )


if __name__ == "__main__":
    main()
