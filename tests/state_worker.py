"""One app process of the shared-state tests: ``python -m tests.state_worker CONFIG
ROUTE CALLS CONCURRENCY [PACE]``. It runs CALLS calls of ROUTE, CONCURRENCY at a time
(with PACE > 0: call i starts PACE*i seconds after the first),
through a Router on CONFIG (whose state is in Redis, ``REDIS_URL``), prints
``started`` once the router has started, then one JSON line: how many calls
answered and how each of the others failed (by error class)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

from router import Router


async def main(config: str, route: str, calls: int, concurrency: int, pace: float) -> None:
    outcomes: Counter[str] = Counter()
    async with Router.from_yaml(config) as router:
        print("started", flush=True)
        queue = iter(range(calls))
        start = asyncio.get_running_loop().time()

        async def worker() -> None:
            for i in queue:
                if pace:
                    await asyncio.sleep(
                        max(start + i * pace - asyncio.get_running_loop().time(), 0)
                    )
                try:
                    await router.complete(route)
                except Exception as exc:
                    outcomes[type(exc).__name__] += 1
                else:
                    outcomes["ok"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await router.state.flush()
        reserved = str(router.reserved_usd)
    print(json.dumps({"outcomes": dict(outcomes), "reserved": reserved}), flush=True)


if __name__ == "__main__":
    pace = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), pace))
