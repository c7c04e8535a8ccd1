"""Stats: the in-process snapshot counts a scripted mix of outcomes exactly.

The script (:func:`run_mix`) is shared with the Prometheus and OTel tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from router.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    DeadlineExceededError,
    ProviderError,
    RateLimitError,
    RouterError,
    ServerError,
    StreamInterruptedError,
)
from router.metrics import Stats
from router.metrics.stats import (
    CALL_ERROR_TYPES,
    ERROR_TYPES,
    WINDOW,
    Window,
    call_moves,
    error_type,
    skip_label,
)
from router.router import Router
from router.types import Attempt, Completion, SkipKind
from tests.routerkit import make_config

MIX = """\
settings:
  backoff: {initial_s: 0, max_s: 0}
  cooldown: {failures: 3, seconds: 60}
providers:
  flaky:
    kind: mock
    mock: {failures: [503, 503]}
    models: {m1: {price: {input_per_mtok: 1, output_per_mtok: 2}}}
  steady:
    kind: mock
    mock: {reply: "answer about {prompt}"}
    models: {m2: {price: {input_per_mtok: 3, output_per_mtok: 6}}}
  badkey:
    kind: mock
    mock: {failures: [401]}
    models: {m3: {}}
  picky:
    kind: mock
    mock: {failures: [400, 400]}
    models: {m4: {}}
  pricey:
    kind: mock
    models: {m5: {price: {input_per_mtok: 1000000, output_per_mtok: 1000000}}}
budgets:
  tiny: {limit_usd: 0.01, period: total, route: costly}
routes:
  r:
    prompt: "{{ ticker }}"
    vars: {ticker: str}
    max_tokens: 50
    fallback: [flaky/m1, steady/m2]
  bad:
    prompt: "hello"
    fallback: [badkey/m3, picky/m4]
  costly:
    prompt: "hello"
    fallback: [pricey/m5]
"""

# What the mix costs: steady answers "answer about ACME" (1 in, 5 out at $3/$6 per Mtok),
# flaky answers "mock answer from m1" twice (1 in, 5 out at $1/$2), once as a stream.
STEADY_COST = Decimal(1 * 3 + 5 * 6) / 1_000_000
FLAKY_COST = Decimal(1 * 1 + 5 * 2) / 1_000_000


async def _nosleep(seconds: float) -> None:
    return None


def mix_router(tmp_path: Path, **kwargs: object) -> Router:
    return Router(make_config(tmp_path, MIX), sleep=_nosleep, **kwargs)  # type: ignore[arg-type]


async def run_mix(router: Router) -> list[Completion | RouterError]:
    """Seven calls, in order:

    1. r: flaky 503, flaky 503 (a retry), steady ok — ok after a fallback;
    2. r: flaky ok;
    3. bad: badkey 401 (auth: cooldown at once), picky 400 — all providers failed;
    4. bad: badkey skipped (cooldown), picky 400 — all providers failed;
    5. costly: pricey skipped (budget) — budget exceeded;
    6. r as a stream: flaky ok (with a time to first token).
    """
    out: list[Completion | RouterError] = []
    out.append(await router.complete("r", {"ticker": "ACME"}))
    out.append(await router.complete("r", {"ticker": "ACME"}))
    for route in ("bad", "bad", "costly"):
        with pytest.raises(RouterError) as info:
            await router.complete(route)
        out.append(info.value)
    async with router.stream("r", {"ticker": "ACME"}) as stream:
        assert "".join([d async for d in stream]) == "mock answer from m1"
    assert stream.completion is not None
    out.append(stream.completion)
    return out


async def test_snapshot_counts_a_scripted_mix_exactly(tmp_path: Path) -> None:
    stats = Stats()
    async with mix_router(tmp_path, observers=[stats]) as router:
        results = await run_mix(router)
        snap = stats.snapshot(router)
    assert [type(r).__name__ for r in results] == [
        "Completion",
        "Completion",
        "AllProvidersFailedError",
        "AllProvidersFailedError",
        "BudgetExceededError",
        "Completion",
    ]
    json.dumps(snap)  # JSON-serializable as it is
    assert snap["window"] == WINDOW

    routes = snap["routes"]
    assert sorted(routes) == ["bad", "costly", "r"]
    r = routes["r"]
    tokens = {"input": 3, "output": 15, "cached_input": 0, "cache_write": 0, "reasoning": 0}
    assert {k: v for k, v in r.items() if k not in ("latency_s", "ttft_s")} == {
        "calls": 3,
        "streams": 1,
        "ok": 3,
        "errors": {},
        "attempts": 5,
        "retries": 1,
        "fallbacks": 1,
        "ok_after_fallback": 1,
        "hedges": 0,
        "hedge_wins": 0,
        "hedge_wasted_usd": "0",
        "skips": {},
        "tokens": tokens,
        "cost_usd": str(STEADY_COST + 2 * FLAKY_COST),
    }
    assert r["latency_s"]["count"] == 3
    assert r["ttft_s"]["count"] == 1
    bad = routes["bad"]
    assert (bad["calls"], bad["ok"], bad["errors"]) == (2, 0, {"all_providers_failed": 2})
    assert (bad["attempts"], bad["retries"], bad["fallbacks"]) == (3, 0, 2)
    assert bad["skips"] == {"cooldown": 1}
    assert bad["cost_usd"] == "0"
    costly = routes["costly"]
    assert (costly["calls"], costly["errors"], costly["attempts"]) == (
        1,
        {"budget_exceeded": 1},
        0,
    )
    assert costly["skips"] == {"budget": 1}
    assert costly["latency_s"]["count"] == 1
    assert costly["ttft_s"] == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}

    providers = snap["providers"]
    assert sorted(providers) == ["badkey", "flaky", "picky", "pricey", "steady"]

    def counts(p: dict[str, object]) -> tuple[object, ...]:
        keys = ("attempts", "ok", "errors", "skips", "retries", "fallbacks")
        return tuple(p[k] for k in keys)

    assert counts(providers["flaky"]) == (4, 2, {"server": 2}, {}, 1, 1)
    assert counts(providers["steady"]) == (1, 1, {}, {}, 0, 0)
    assert counts(providers["badkey"]) == (1, 0, {"auth": 1}, {"cooldown": 1}, 0, 2)
    assert counts(providers["picky"]) == (2, 0, {"bad_request": 2}, {}, 0, 0)
    assert counts(providers["pricey"]) == (0, 0, {}, {"budget": 1}, 0, 0)
    flaky = providers["flaky"]
    assert flaky["cost_usd"] == str(2 * FLAKY_COST)
    assert flaky["tokens"]["input"] == 2 and flaky["tokens"]["output"] == 10
    assert flaky["latency_s"]["count"] == 4
    assert flaky["ttft_s"]["count"] == 1
    assert list(flaky["models"]) == ["m1"]
    assert counts(flaky["models"]["m1"]) == counts(flaky)
    assert providers["steady"]["cost_usd"] == str(STEADY_COST)

    # Live state, read from the router.
    assert providers["badkey"]["state"]["cooldown"] is True
    assert 59 < providers["badkey"]["state"]["cooldown_remaining_s"] <= 60
    assert providers["flaky"]["state"] == {
        "cooldown": False,
        "cooldown_remaining_s": 0.0,
        "retry_after_s": 0.0,
        "failures": 0,
        "in_flight": 0,
    }
    assert snap["budgets"] == {
        "tiny": {
            "period": "total",
            "limit_usd": "0.01",
            "spent_usd": "0",
            "reserved_usd": "0",
            "remaining_usd": "0.01",
        }
    }


async def test_snapshot_without_router_has_no_live_state(tmp_path: Path) -> None:
    """Providers never called still appear with a router; without one, no state or budgets."""
    stats = Stats()
    async with mix_router(tmp_path, observers=[stats]) as router:
        await router.complete("r", {"ticker": "ACME"})
        with_router = stats.snapshot(router)
    bare = stats.snapshot()
    assert "budgets" not in bare
    assert sorted(bare["providers"]) == ["flaky", "steady"]
    assert all("state" not in p for p in bare["providers"].values())
    assert sorted(with_router["providers"]) == ["badkey", "flaky", "picky", "pricey", "steady"]
    assert with_router["providers"]["picky"]["attempts"] == 0
    stats.reset()
    assert stats.snapshot()["routes"] == {}


LIMITED = """\
providers:
  slow:
    kind: mock
    limits: {requests_per_minute: 1, tokens_per_minute: 100}
    models: {s1: {}}
  spare:
    kind: mock
    models: {s2: {}}
routes:
  r:
    prompt: "{{ text }}"
    vars: {text: str}
    max_tokens: 10
    deadline_s: 2
    fallback: [slow/s1, spare/s2]
"""


async def test_real_limiter_skips_are_labelled_by_kind(tmp_path: Path) -> None:
    """The skips router.limits makes (not copies of them) land in their kind's label."""
    stats = Stats()
    async with Router(make_config(tmp_path, LIMITED), observers=[stats]) as router:
        await router.complete("r", {"text": "a"})  # slow answers: its one request this minute
        await router.complete("r", {"text": "b"})  # slow: rpm would need ~60 s -> skipped
        await router.complete("r", {"text": "x" * 1000})  # ~150 tokens > tokens_per_minute
        snap = stats.snapshot(router)
    assert snap["providers"]["slow"]["skips"] == {"rate": 1, "tokens": 1}
    assert snap["routes"]["r"]["fallbacks"] == 2
    assert snap["providers"]["spare"]["ok"] == 2


def test_window_keeps_the_last_samples_and_reports_nearest_rank_percentiles() -> None:
    w = Window()
    for i in range(1, 101):
        w.add(float(i))
    assert Window.summary(w.samples(), w.count) == {
        "count": 100,
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "max": 100.0,
    }
    for _ in range(WINDOW):
        w.add(1.0)
    assert len(w.samples()) == WINDOW  # bounded
    assert w.count == 100 + WINDOW
    assert Window.summary(w.samples(), w.count)["max"] == 1.0  # the old samples are gone


def _a(provider: str, outcome: str = "error", model: str = "m", **kw: object) -> Attempt:
    return Attempt(provider, model, outcome, **kw)  # type: ignore[arg-type]


def test_call_moves_finds_retries_and_fallbacks() -> None:
    trail = [
        _a("p"),  # 0
        _a("p"),  # 1: retry of 0
        _a("p", "skipped", reason="cooling down for 3.0s more"),  # 2: same step, no retry
        _a("q"),  # 3: new step (left 2)
        _a("r", "skipped", reason="budget 'x': ..."),  # 4: new step (left 3)
        _a("r", "ok"),  # 5: a new step after a skip, even on the same model (left 4)
    ]
    assert call_moves(trail) == ([1], [2, 3, 4])
    assert call_moves([_a("p", "ok")]) == ([], [])
    assert call_moves([_a("p", model="a"), _a("p", "ok", model="b")]) == ([], [0])


def test_error_types_are_a_fixed_vocabulary() -> None:
    assert error_type(None) == "none"
    assert error_type(ServerError("x", provider="p", model="m")) == "server"
    assert error_type(RateLimitError("x", provider="p", model="m")) == "rate_limit"
    assert (
        error_type(StreamInterruptedError("x", provider="p", model="m", partial_text=""))
        == "stream_interrupted"
    )
    assert (
        error_type(ProviderError("x", provider="p", model="m")) == "other"
    )  # the base class's kind "provider"
    assert error_type(AllProvidersFailedError([])) == "all_providers_failed"
    assert error_type(DeadlineExceededError(1.0, [])) == "deadline_exceeded"
    assert (
        error_type(
            BudgetExceededError(
                "x",
                budget="b",
                limit_usd=Decimal(1),
                spent_usd=Decimal(1),
                reserved_usd=Decimal(0),
            )
        )
        == "budget_exceeded"
    )
    assert error_type(RouterError("x")) == "other"
    from router.errors import ERROR_KINDS

    assert set(ERROR_KINDS) <= set(ERROR_TYPES) <= set(CALL_ERROR_TYPES)


def test_skips_are_labelled_by_their_kind_not_by_their_wording() -> None:
    """A reworded reason keeps its label; an attempt without a kind is "other"."""
    for kind in SkipKind:
        assert skip_label(kind) == kind.value
    reworded = Attempt("p", "m", "skipped", reason="brand new wording", skip=SkipKind.RATE)
    assert skip_label(reworded.skip) == "rate"
    assert skip_label(None) == "other"


def test_importing_router_imports_no_exporter_library() -> None:
    """prometheus_client and opentelemetry load only with their modules, never with router."""
    code = (
        "import sys, router, router.metrics, router.metrics.stats\n"
        "bad = [m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
