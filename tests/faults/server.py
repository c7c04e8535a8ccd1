"""The fault upstream: three OpenAI-shaped providers on 127.0.0.1, in a process of its own.

The suite runs ``python -m tests.faults.server SEED`` and talks to it over stdin and
stdout, one line each way:

- at start it prints ``{"urls": {"alpha": "http://127.0.0.1:PORT", ...}}``;
- ``stats`` prints the counters: faults injected by name (``complete`` and
  ``stream`` requests apart), requests, connections opened and open now;
- ``idle SECONDS`` waits (at most that long) until no connection is open, then
  prints the counters (the client closed every socket it opened);
- ``reset`` zeroes the counters;
- end of input closes every server and exits.

Each provider is a :class:`tests.upstream.Upstream` whose ``handler`` picks the
fault of every request with :func:`tests.faults.plan.choose_fault` (or the one the
prompt forces). Why a process of its own: the deadline promise is measured in the
test's event loop; serving 100 concurrent misbehaving connections from that same
loop would charge the server's work to the router, and on a 2-core machine the
server gets the other core.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
from collections import Counter
from typing import Any

from tests.faults.plan import OK_LATENCY_S, PROVIDERS, Ctx, build_fault, choose_fault
from tests.upstream import Behaviour, Request, Upstream, reply

# What the route's prompt template renders: "fault-call <n>", maybe " force=a,b,c".
_CALL = re.compile(r"fault-call (\d+)(?: force=([\w,]+))?")


class FaultPlan:
    """Chooses each request's fault and counts what was injected."""

    def __init__(self, seed: int, ok_latency_s: tuple[float, float]) -> None:
        self.seed = seed
        self.ok_latency_s = ok_latency_s
        self.reset()

    def reset(self) -> None:
        # Requests seen per (call, provider): which try this is, for choose_fault.
        self.tries: Counter[tuple[int, str]] = Counter()
        # Requests seen per call (any provider): which forced fault applies.
        self.per_call: Counter[int] = Counter()
        # Faults injected, by name, for non-streamed and streamed requests.
        self.injected: dict[str, Counter[str]] = {"complete": Counter(), "stream": Counter()}

    def handler(self, provider: str) -> Any:
        def choose(request: Request) -> Behaviour:
            try:
                body = request.json()
                content = body["messages"][-1]["content"]
                match = _CALL.search(content)
                assert match is not None
            except Exception:  # not a routed call (nothing sends one today)
                return reply(404, {"error": {"message": "unknown request"}})
            call = int(match.group(1))
            is_stream = bool(body.get("stream"))
            self.tries[call, provider] += 1
            self.per_call[call] += 1
            if match.group(2):
                forced = match.group(2).split(",")
                name = forced[min(self.per_call[call], len(forced)) - 1]
            else:
                name = choose_fault(
                    self.seed, call, provider, self.tries[call, provider], is_stream
                )
            self.injected["stream" if is_stream else "complete"][name] += 1
            n = self.tries[call, provider]
            ctx = Ctx(
                seed=self.seed,
                call=call,
                provider=provider,
                stream=is_stream,
                rng=random.Random(f"{self.seed}/build/{call}/{provider}/{n}"),
                echo=request.headers.get("authorization", ""),
                ok_latency_s=self.ok_latency_s,
            )
            return build_fault(name, ctx)

        return choose


def _stats(plan: FaultPlan, servers: dict[str, Upstream]) -> dict[str, Any]:
    return {
        "faults": {kind: dict(c) for kind, c in plan.injected.items()},
        "requests": sum(len(s.requests) for s in servers.values()),
        "connections": sum(s.connections_opened for s in servers.values()),
        "open": sum(s.open_connections for s in servers.values()),
        "disconnects": sum(s.disconnects for s in servers.values()),
    }


def _say(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(seed: int) -> None:
    latency = os.environ.get("FAULTS_OK_LATENCY", "").strip()
    lo, _, hi = latency.partition(",")
    plan = FaultPlan(seed, (float(lo), float(hi or lo)) if latency else OK_LATENCY_S)
    servers = {p: await Upstream(handler=plan.handler(p)).start() for p in PROVIDERS}
    _say({"urls": {p: s.url for p, s in servers.items()}})
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "reset":
                plan.reset()
                for s in servers.values():
                    s.requests.clear()
                _say({"ok": True})
            elif cmd == "idle":
                deadline = asyncio.get_running_loop().time() + float(arg or 2)
                while any(s.open_connections for s in servers.values()):
                    if asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.01)
                _say(_stats(plan, servers))
            else:
                _say(_stats(plan, servers))
    finally:
        for s in servers.values():
            await s.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
