"""Tail latency with and without hedging, against heavy-tailed loopback upstreams.

Two OpenAI-shaped upstreams on 127.0.0.1 answer each request after 50 ms with
probability 0.95 and after 3 s otherwise, independently per request (seeded). Each
bills like a provider: a request it answered costs its reported usage; a request
whose client went away first costs its prompt (input billed). A route
``[a/m, b/m]`` is called N times at concurrency C under one deadline, once
without hedging and once with ``hedge: {after_s: ...}``. Reported per run:
p50/p90/p99/max latency, extra requests (sent beyond one per call), the money
the router settled against what the upstreams billed, and connections left open.

Used by scripts/bench.py (``--tail``) and by tests/test_hedge_tail.py (fewer calls).
Run alone: ``python scripts/bench_tail.py [-n 2000] [-c 32] [--after 0.2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

# Per million tokens; input and output priced apart so a cancelled request (input
# only) is told from an answered one.
IN_PER_MTOK = Decimal(3)
OUT_PER_MTOK = Decimal(15)
COMPLETION_TOKENS = 20


@dataclass
class TailUpstream:
    """A keep-alive HTTP/1.1 server whose every answer takes ``fast_s`` or, with
    probability ``slow_p``, ``slow_s``; it bills what a provider would."""

    prompt_tokens: int
    seed: int
    fast_s: float = 0.05
    slow_s: float = 3.0
    slow_p: float = 0.05
    requests: int = 0
    answered: int = 0
    abandoned: int = 0  # the client closed the connection before the answer
    billed: Decimal = Decimal(0)
    open_connections: int = 0
    url: str = ""
    _server: asyncio.Server | None = None
    _rng: random.Random = field(default_factory=random.Random)

    async def start(self) -> TailUpstream:
        self._rng = random.Random(self.seed)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _cost(self, tokens_in: int, tokens_out: int) -> Decimal:
        return (tokens_in * IN_PER_MTOK + tokens_out * OUT_PER_MTOK) / 1_000_000

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                delay = self.slow_s if self._rng.random() < self.slow_p else self.fast_s
                try:  # the client going away ends the request (and its connection)
                    gone = await asyncio.wait_for(reader.read(1), delay) == b""
                except TimeoutError:
                    gone = False
                if gone:
                    self.abandoned += 1
                    self.billed += self._cost(self.prompt_tokens, 0)  # the prompt was read
                    return
                body = json.dumps(
                    {
                        "id": f"chatcmpl-{self.requests}",
                        "object": "chat.completion",
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "AAPL 1.0"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": self.prompt_tokens,
                            "completion_tokens": COMPLETION_TOKENS,
                            "total_tokens": self.prompt_tokens + COMPLETION_TOKENS,
                        },
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                self.answered += 1
                self.billed += self._cost(self.prompt_tokens, COMPLETION_TOKENS)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.open_connections -= 1
            writer.close()


def tail_yaml(urls: list[str], after_s: float | None, deadline_s: float) -> str:
    hedge = "" if after_s is None else f"    hedge: {{after_s: {after_s}}}\n"
    price = f"{{input_per_mtok: {IN_PER_MTOK}, output_per_mtok: {OUT_PER_MTOK}}}"
    providers = "".join(
        f"  {name}:\n    kind: openai\n    base_url: {url}/v1\n"
        f"    hedge_budget: {{ratio: 0.1, window_s: 60}}\n"
        f"    models:\n      m: {{price: {price}}}\n"
        for name, url in zip(("a", "b"), urls, strict=True)
    )
    return (
        "version: 1\n"
        "settings: {ledger: {backend: memory}, cooldown: {failures: 1000000}}\n"
        f"providers:\n{providers}"
        "budgets:\n  all: {limit_usd: 1000}\n"
        "routes:\n"
        f"  r:\n    prompt: 'Quote {{{{ ticker }}}}'\n    deadline_s: {deadline_s}\n{hedge}"
        "    fallback: [a/m, b/m]\n"
    )


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_tail(
    n: int = 2000,
    concurrency: int = 32,
    after_s: float | None = 0.2,
    deadline_s: float = 5.0,
    seed: int = 7,
) -> dict[str, Any]:
    """N calls at concurrency C of the heavy-tail route; the figures in the module doc."""
    from router import Router

    ups = [TailUpstream(0, seed), TailUpstream(0, seed + 1)]
    for up in ups:
        await up.start()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "providers.yaml"
        path.write_text(tail_yaml([u.url for u in ups], after_s, deadline_s))
        latencies: list[float] = []
        errors = 0
        hedges = wins = cancelled = timed_out = 0
        settled = Decimal(0)
        async with Router.from_yaml(path) as router:
            plan = router.plan
            messages = plan.render("r", {"ticker": "AAPL"})
            prompt = plan.route("r").templates.estimate_tokens(messages, [])
            for up in ups:  # each bills the prompt the router estimates: exact comparison
                up.prompt_tokens = prompt
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                nonlocal errors, hedges, wins, cancelled, timed_out, settled
                async with sem:
                    t0 = time.monotonic()
                    try:
                        done = await router.complete("r", {"ticker": "AAPL"})
                    except Exception:
                        errors += 1
                        return
                    latencies.append(time.monotonic() - t0)
                    for a in done.attempts:
                        settled += a.cost_usd
                        hedges += a.hedged
                        wins += bool(a.hedged and a.won)
                        cancelled += a.outcome == "cancelled"
                        timed_out += a.outcome == "error"  # cut at its deadline share

            t_start = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(n)))
            wall = time.monotonic() - t_start
            await router.state.flush()
            spent = sum((b.spent_usd for b in router.spend()), Decimal(0))
        await asyncio.sleep(0.05)  # let the servers see the last closes
        open_after = sum(u.open_connections for u in ups)
        billed = sum((u.billed for u in ups), Decimal(0))
        requests = sum(u.requests for u in ups)
        abandoned = sum(u.abandoned for u in ups)
        for up in ups:
            await up.aclose()
    ordered = sorted(latencies)
    baseline_cost = (prompt * IN_PER_MTOK + COMPLETION_TOKENS * OUT_PER_MTOK) / 1_000_000 * n
    return {
        "hedge_after_s": after_s,
        "calls": n,
        "concurrency": concurrency,
        "errors": errors,
        "p50_s": _pct(ordered, 0.50),
        "p90_s": _pct(ordered, 0.90),
        "p99_s": _pct(ordered, 0.99),
        "max_s": ordered[-1],
        "requests": requests,
        "extra_requests": (requests - n) / n,
        "hedges": hedges,
        "hedge_wins": wins,
        "cancelled": cancelled,
        "timed_out": timed_out,
        "abandoned_upstream": abandoned,
        "ledger_usd": str(spent),
        "attempts_usd": str(settled),
        "upstream_billed_usd": str(billed),
        "request_usd": str(  # what one answered request bills
            (prompt * IN_PER_MTOK + COMPLETION_TOKENS * OUT_PER_MTOK) / 1_000_000
        ),
        "extra_cost": float((spent - baseline_cost) / baseline_cost),
        "open_connections_after": open_after,
        "wall_s": wall,
    }


def tail_table(rows: list[dict[str, Any]]) -> str:
    """The runs as a text table."""
    head = (
        f"{'hedge':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'extra req':>9} {'extra cost':>10} {'ledger = billed':>15}"
    )
    lines = [head]
    for r in rows:
        label = "none" if r["hedge_after_s"] is None else f"{r['hedge_after_s']:g}s"
        same = "yes" if r["ledger_usd"] == r["upstream_billed_usd"] else "NO"
        lines.append(
            f"{label:>10} {r['p50_s'] * 1000:8.0f} {r['p90_s'] * 1000:8.0f}"
            f" {r['p99_s'] * 1000:8.0f} {r['max_s'] * 1000:8.0f}"
            f" {r['extra_requests'] * 100:8.1f}% {r['extra_cost'] * 100:9.1f}% {same:>15}"
        )
    return "\n".join(lines)


def tail_chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Latency percentiles with and without hedging, as a bar chart (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["p50", "p90", "p99", "max"]
    keys = ["p50_s", "p90_s", "p99_s", "max_s"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(rows)
    for j, r in enumerate(rows):
        name = (
            "no hedging" if r["hedge_after_s"] is None else f"hedge after {r['hedge_after_s']:g}s"
        )
        xs = [i + j * width for i in range(len(keys))]
        ys = [r[k] * 1000 for k in keys]
        ax.bar(xs, ys, width, label=f"{name} (+{r['extra_requests'] * 100:.1f}% requests)")
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(keys))], labels)
    ax.set_ylabel("call latency, ms")
    ax.set_title(
        f"Heavy-tail upstreams (5% of answers take 3 s): {rows[0]['calls']} calls,"
        f" concurrency {rows[0]['concurrency']}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("-c", type=int, default=32)
    parser.add_argument("--after", type=float, default=0.2)
    parser.add_argument("--chart", type=Path, default=None)
    args = parser.parse_args()
    rows = [
        asyncio.run(run_tail(args.n, args.c, None)),
        asyncio.run(run_tail(args.n, args.c, args.after)),
    ]
    print(tail_table(rows))
    print(json.dumps(rows, indent=1))
    if args.chart is not None:
        tail_chart(rows, args.chart)


if __name__ == "__main__":
    main()
