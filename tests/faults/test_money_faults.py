"""Money under faults: budgets reloaded while calls are in flight, and a stalled ledger.

The same fault upstream, route and seeded call plans as the mixed run
(test_fault_injection.py), with the money side under attack:

- **reload during traffic**: a reloader swaps the budget every few tens of ms
  while calls run (period day -> month -> total, renamed = removed and re-added,
  re-scoped to the route) with the same limit; the limit binds. Spend settled
  across the run never exceeds the limit, the live budget ends with exactly the
  spend the calls were billed, and every call ends by its deadline + SLACK_S.
- **stalled ledger**: the router runs on an SQLite ledger while a second sqlite3
  connection holds the write lock for seconds at a time during traffic. Answers
  still arrive by their deadline + SLACK_S (ledger I/O is off the call's path),
  and after ``aclose()`` the file holds every settled cost: none lost.

Knobs: ``FAULTS_MONEY_CALLS`` (600 per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from router import Router
from router.budget import Reservation
from router.errors import BudgetExceededError
from router.ledger import SqliteLedger
from tests.conftest import FaultReport
from tests.faults.test_fault_injection import (
    ENV,
    SLACK_S,
    CallResult,
    FaultServer,
    _env_int,
    fault_config,
    run_call,
    state_problems,
)

CONCURRENCY = 50
PACE_S = 0.25
# Deadlines of the calls (as in the mixed run).
LO, HI = 0.3, 1.0
GAMMA_CAP = {"limit_usd": "0.03", "period": "total", "provider": "gamma"}


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer(_env_int("FAULTS_SEED", 7))
    yield server
    server.close()


def _write(path: Path, doc: dict[str, Any], budgets: dict[str, Any]) -> None:
    doc = {**doc, "budgets": {**budgets, "gamma_cap": GAMMA_CAP}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _base(fault_server: FaultServer, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The suite's YAML (written by fault_config) as a document to vary."""
    fault_server.command("reset")
    config = fault_config(tmp_path, fault_server.urls)
    return config.source, yaml.safe_load(config.source.read_text())


async def _traffic(router: Router, seed: int, first: int, calls: int) -> list[CallResult]:
    """``calls`` seeded calls from CONCURRENCY paced callers (as the mixed run's)."""
    results: list[CallResult] = []
    numbers = iter(range(first, first + calls))

    async def caller(k: int) -> None:
        jitter = random.Random(f"{seed}/money-caller/{k}")
        await asyncio.sleep(PACE_S * k / CONCURRENCY)
        for call in numbers:
            begun = time.monotonic()
            results.append(await run_call(router, seed, call, LO, HI))
            period = PACE_S * jitter.uniform(0.5, 1.5)
            await asyncio.sleep(max(period - (time.monotonic() - begun), 0.0))

    await asyncio.gather(*(caller(k) for k in range(CONCURRENCY)))
    return results


def _late(results: list[CallResult]) -> list[str]:
    return [
        f"call {r.call} {r.kind} -> {r.outcome} {r.overshoot_s * 1000:.1f} ms late"
        f" (loop {r.loop_late_s * 1000:.0f} ms late)"
        for r in results
        if r.router_overshoot_s > SLACK_S
    ]


def _report(fault_report: FaultReport, name: str, results: list[CallResult], extra: str) -> None:
    """Record the figures (printed at the end of the run with ``--fault-report``)."""
    outcomes = Counter(r.outcome for r in results)
    over = max(r.overshoot_s for r in results) * 1000
    router_over = max(r.router_overshoot_s for r in results) * 1000
    fault_report(
        [
            f"{name}: {len(results)} calls, outcomes {dict(sorted(outcomes.items()))}",
            f"  max deadline overshoot {over:.1f} ms, less the loop's own lateness"
            f" {router_over:.1f} ms (bound {SLACK_S * 1000:.0f} ms); {extra}",
        ]
    )


@pytest.mark.slow
async def test_budgets_reloaded_during_traffic_never_overspend(
    fault_server: FaultServer, tmp_path: Path, fault_report: FaultReport
) -> None:
    calls = _env_int("FAULTS_MONEY_CALLS", 600)
    seed = fault_server.seed
    path, doc = _base(fault_server, tmp_path)
    limit = Decimal("0.05")
    total = str(limit)
    # The same limit over every call, under another period, name or scope each time:
    # a new identity starts from the ledger (plus costs not yet written) and must
    # count the reservations of the calls already in flight.
    variants: list[dict[str, Any]] = [
        {"cap": {"limit_usd": total, "period": "day"}},
        {"cap": {"limit_usd": total, "period": "month"}},
        {"renamed": {"limit_usd": total, "period": "total"}},
        {"cap": {"limit_usd": total, "period": "total", "route": "faults"}},
    ]
    _write(path, doc, variants[0])
    reloads = 0
    # The most the router had committed at any sampled moment: what was settled plus
    # what open reservations may still cost. Every call matches the budget, so this
    # must stay within the limit (a new budget that forgot the calls in flight would
    # admit the whole limit again on top of them).
    exposure = Decimal(0)
    above = Decimal(0)
    settled = Decimal(0)
    async with Router.from_yaml(path, env=ENV) as router:
        stop = asyncio.Event()
        book = router.state.book
        # Everything settled so far, and what settled above its reservation: the one
        # documented way past a limit (the provider billed more input than the
        # estimate; docs/money.md).
        settle = book.settle

        async def counting_settle(reservation: Reservation, actual: Decimal) -> None:
            nonlocal above, settled
            above += max(actual - reservation.amount, Decimal(0))
            settled += actual
            await settle(reservation, actual)

        book.settle = counting_settle  # type: ignore[method-assign]

        async def sampler() -> None:
            nonlocal exposure
            while not stop.is_set():
                exposure = max(exposure, settled + book.reserved_total)
                await asyncio.sleep(0.002)

        async def reloader() -> None:
            nonlocal reloads
            i = 0
            while not stop.is_set():
                await asyncio.sleep(random.uniform(0.01, 0.05))
                i += 1
                _write(path, doc, variants[i % len(variants)])
                await router.reload()
                reloads += 1

        task = asyncio.create_task(reloader())
        sampling = asyncio.create_task(sampler())
        try:
            results = await _traffic(router, seed, 100_000, calls)
        finally:
            stop.set()
            await task
            await sampling
        held = state_problems(router)
        live = {s.name: s.spent_usd for s in router.spend()}
        budget = next(n for n in live if n != "gamma_cap")
        await router.state.flush()
    billed = sum((r.billed for r in results), Decimal(0))
    refused = sum(1 for r in results if r.outcome == BudgetExceededError.__name__)
    overspend = max(billed - limit, Decimal(0))
    _report(
        fault_report,
        "money: budgets reloaded during traffic",
        results,
        f"{reloads} reloads; billed {billed} of a {limit} limit (overspend {overspend}),"
        f" committed at most {exposure} ({exposure / limit:.0%} of the limit; settled above"
        f" reservations {above}),"
        f" {refused} calls refused by the budget",
    )
    problems = [f"call {r.call} ({r.kind}): {p}" for r in results for p in r.problems]
    assert not problems, problems[:20]
    assert not _late(results), _late(results)[:10]
    assert billed <= limit, f"spent {billed} over a limit of {limit}"
    assert exposure <= limit + above, f"committed {exposure} (settled + reserved) over {limit}"
    assert refused > 0, "the limit never bound: the test proves nothing"
    assert reloads >= 10
    assert live[budget] == billed, f"{budget}: {live[budget]} != billed {billed}"
    assert not held, held


@pytest.mark.slow
async def test_a_stalled_ledger_delays_no_answer_and_loses_no_spend(
    fault_server: FaultServer, tmp_path: Path, fault_report: FaultReport
) -> None:
    calls = _env_int("FAULTS_MONEY_CALLS", 600)
    seed = fault_server.seed
    path, doc = _base(fault_server, tmp_path)
    doc["settings"]["ledger"] = {"backend": "sqlite", "path": "spend.sqlite3"}
    _write(path, doc, {"everything": {"limit_usd": "1000", "period": "total"}})
    ledger_path = tmp_path / "spend.sqlite3"
    held_s = 0.0
    max_pending = 0
    async with Router.from_yaml(path, env=ENV) as router:
        stop = asyncio.Event()

        async def staller() -> None:
            """Another connection takes SQLite's write lock for 2 s at a time (within
            the ledger's 5 s busy timeout: a stall, not a failure), then lets go."""
            nonlocal held_s, max_pending
            other = sqlite3.connect(ledger_path, timeout=0, isolation_level=None)
            try:
                while not stop.is_set():
                    await asyncio.sleep(0.3)
                    while True:  # never block this loop waiting for the lock
                        try:
                            other.execute("BEGIN IMMEDIATE")
                            break
                        except sqlite3.OperationalError:
                            await asyncio.sleep(0.001)
                    t = time.monotonic()
                    with contextlib.suppress(asyncio.CancelledError):
                        while time.monotonic() - t < 2.0 and not stop.is_set():
                            await asyncio.sleep(0.01)
                            max_pending = max(max_pending, router.ledger_status().pending)
                    other.execute("ROLLBACK")
                    held_s += time.monotonic() - t
            finally:
                other.close()

        task = asyncio.create_task(staller())
        try:
            results = await _traffic(router, seed, 200_000, calls)
        finally:
            stop.set()
            await task
        held = state_problems(router)
        ledger_stats = router.stats()["ledger"]
        spent = router.spend()[0].spent_usd
    billed = sum((r.billed for r in results), Decimal(0))
    ledger = SqliteLedger(ledger_path)
    await ledger.open()
    try:
        on_disk = await ledger.totals(0.0)
    finally:
        await ledger.close()
    _report(
        fault_report,
        "money: stalled ledger",
        results,
        f"write lock held by another connection {held_s:.1f} s, up to {max_pending} costs"
        f" waiting; billed {billed}, in the ledger after aclose {on_disk}"
        f" (lost {billed - on_disk}), write failures {ledger_stats['write_failures']}",
    )
    problems = [f"call {r.call} ({r.kind}): {p}" for r in results for p in r.problems]
    assert not problems, problems[:20]
    assert not _late(results), _late(results)[:10]
    assert held_s >= 2.0 and max_pending > 0, "the ledger was never stalled under traffic"
    assert spent == billed
    assert on_disk == billed, f"ledger {on_disk} != billed {billed}"
    assert not held, held
