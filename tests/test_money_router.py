"""Budgets through the router: reserved before sending, never overspent under concurrency."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from router.budget import worst_case_usd
from router.errors import BudgetExceededError
from router.estimate import estimate_tokens
from router.router import Router
from router.types import Completion
from tests.routerkit import make_config

PAID = """\
providers:
  paid:
    kind: mock
    mock: {{latency_s: 0.1, reply: "short answer"}}
    models: {{m: {{price: {{input_per_mtok: 3, output_per_mtok: 15}}}}}}
  free:
    kind: mock
    models: {{f: {{}}}}
budgets:
  daily: {{limit_usd: {limit}, period: day, provider: paid}}
routes:
  r:
    prompt: "Summarise {{{{ ticker }}}} for the desk."
    max_tokens: 200
    fallback: {chain}
"""


def _worst(tmp_path: Path) -> Decimal:
    config = make_config(tmp_path, PAID.format(limit=1, chain="[paid/m]"))
    router = Router(config)
    messages = router.render("r", {"ticker": "ACME"})
    return worst_case_usd(
        estimate_tokens(messages), 200, config.providers["paid"].models["m"].price
    )


async def _burst(router: Router, n: int) -> list[Completion | BaseException]:
    calls = [router.complete("r", {"ticker": "ACME"}) for _ in range(n)]
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_200_concurrent_calls_on_a_budget_for_50_never_overspend(tmp_path: Path) -> None:
    worst = _worst(tmp_path)
    limit = worst * 50
    config = make_config(tmp_path, PAID.format(limit=limit, chain="[paid/m]"))
    async with Router(config) as router:
        results = await _burst(router, 200)
        ok = [r for r in results if isinstance(r, Completion)]
        refused = [r for r in results if isinstance(r, BudgetExceededError)]
        assert len(ok) == 50  # every call was in flight at once: exactly 50 reservations fit
        assert len(refused) == 150
        assert all(e.budget == "daily" and "daily" in str(e) for e in refused)
        assert all(e.limit_usd == limit for e in refused)
        (status,) = router.spend()
        assert status.spent_usd == sum(c.cost_usd for c in ok)
        assert status.spent_usd <= limit
        assert status.reserved_usd == 0
        assert router.reserved_usd == 0


async def test_a_refused_step_falls_back_to_a_free_model_naming_the_budget(tmp_path: Path) -> None:
    limit = _worst(tmp_path) * 10
    config = make_config(tmp_path, PAID.format(limit=limit, chain="[paid/m, free/f]"))
    async with Router(config) as router:
        results = await _burst(router, 40)
    assert all(isinstance(r, Completion) for r in results)
    paid = [r for r in results if isinstance(r, Completion) and r.provider == "paid"]
    free = [r for r in results if isinstance(r, Completion) and r.provider == "free"]
    assert len(paid) == 10 and len(free) == 30
    for r in free:
        skipped = r.attempts[0]
        assert skipped.outcome == "skipped" and "budget 'daily'" in (skipped.reason or "")
        assert r.cost_usd == 0


async def test_spend_survives_a_restart_on_the_sqlite_ledger(tmp_path: Path) -> None:
    body = PAID.format(limit=1, chain="[paid/m]").replace(
        "providers:", "settings:\n  ledger: {backend: sqlite, path: spend.sqlite3}\nproviders:", 1
    )
    config = make_config(tmp_path, body)
    async with Router(config) as router:
        first = await router.complete("r", {"ticker": "ACME"})
    assert first.cost_usd > 0
    async with Router(make_config(tmp_path, body)) as again:
        (status,) = again.spend()
    assert status.spent_usd == first.cost_usd
    assert (tmp_path / "spend.sqlite3").exists()
