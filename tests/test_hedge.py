"""Hedged requests (docs/latency.md) against loopback upstreams.

The tail: heavy-tailed upstreams (scripts/bench_tail.py), p99 and extra requests
with and without hedging, money settled exactly, no connection left open. Then
the rules: one deadline, budgets holding both reservations, max_hedges,
hedge_budget, streams hedging until the first text delta, ``after: pNN``, and the
counts in stats and Prometheus.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router import DeadlineExceededError, ProviderConnectionError, Router
from router.config import HedgeBudget
from router.latency import MIN_SAMPLES, Observed
from router.metrics.prometheus import register
from router.transport import Transport
from tests.routerkit import write_config
from tests.upstream import Behaviour, Exchange, Upstream, hang_before_headers, reply, stream

Factory = Callable[..., Awaitable[Upstream]]
CHAT = "/v1/chat/completions"
PRICE = "{input_per_mtok: 3, output_per_mtok: 15}"


def _load_bench_tail() -> Any:
    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_tail.py"
    spec = importlib.util.spec_from_file_location("bench_tail", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tail"] = module
    spec.loader.exec_module(module)
    return module


def answer(text: str = "ok", prompt: int = 10, completion: int = 5) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def late(seconds: float, text: str = "ok") -> Behaviour:
    """Answer after ``seconds`` (nothing if the client leaves first)."""
    body = reply(200, answer(text))

    async def run(ex: Exchange) -> bool:
        if not await ex.pause(seconds):
            return False
        return await body.run(ex)

    return Behaviour(f"late {seconds}s", run)


def chain(
    urls: list[str],
    hedge: str,
    *,
    deadline_s: float = 5.0,
    budget: str = "100",
    provider_extra: str = "",
    settings: str = "",
) -> str:
    providers = "".join(
        f"  s{i}:\n    kind: openai\n    base_url: {url}/v1\n{provider_extra}"
        f"    models:\n      m: {{price: {PRICE}}}\n"
        for i, url in enumerate(urls, 1)
    )
    steps = ", ".join(f"s{i}/m" for i in range(1, len(urls) + 1))
    return (
        f"providers:\n{providers}"
        f"settings: {{{settings}}}\n"
        f"budgets:\n  all: {{limit_usd: {budget}}}\n"
        "routes:\n"
        f"  r:\n    prompt: 'Quote {{{{ ticker }}}}'\n    deadline_s: {deadline_s}\n"
        f"    max_tokens: 100\n    hedge: {hedge}\n"
        f"    fallback: [{steps}]\n"
    )


async def servers(make: Factory, *behaviours: Behaviour) -> list[Upstream]:
    out = []
    for b in behaviours:
        up = await make()
        up.route(CHAT, b)
        out.append(up)
    return out


@pytest.mark.slow
async def test_hedging_cuts_the_tail_with_exact_money_and_no_open_connection() -> None:
    bench = _load_bench_tail()
    plain = await bench.run_tail(n=600, concurrency=32, after_s=None, deadline_s=5.0, seed=3)
    hedged = await bench.run_tail(n=1000, concurrency=32, after_s=0.2, deadline_s=5.0, seed=3)
    # Without hedging a slow answer (3 s, cut at the first step's 2.5 s share) is the p99.
    assert plain["p99_s"] > 2.0
    assert plain["hedges"] == 0
    # With hedge.after_s 0.2 the slow 5% are answered by the hedge.
    assert hedged["errors"] == 0
    assert hedged["p99_s"] <= 0.4, hedged
    assert hedged["extra_requests"] <= 0.08, hedged
    assert hedged["hedges"] > 0 and hedged["hedge_wins"] > 0
    # Every request sent was settled: the ledger holds what the upstreams billed, and
    # so do the attempts the calls returned. The router cannot see two races, each
    # worth at most one request: a loser cancelled before its request reached the
    # upstream (billed its prompt here, nothing there), and one cancelled after the
    # upstream sent its answer but before it was read (billed in full there). Each
    # shows as a losing attempt the upstream did not see abandoned.
    assert hedged["attempts_usd"] == hedged["ledger_usd"]
    assert hedged["cancelled"] > 0
    races = hedged["cancelled"] + hedged["timed_out"] - hedged["abandoned_upstream"]
    assert 0 <= races <= max(3, hedged["cancelled"] // 4), hedged  # rare, even when loaded
    ledger = Decimal(hedged["ledger_usd"])
    billed = Decimal(hedged["upstream_billed_usd"])
    assert abs(ledger - billed) <= races * Decimal(hedged["request_usd"]), hedged
    # Each loser's connection was closed (the upstream saw it go), none is left.
    assert hedged["open_connections_after"] == 0


async def test_a_hedged_call_keeps_one_deadline(tmp_path: Path, upstream_factory: Factory) -> None:
    ups = await servers(upstream_factory, hang_before_headers(), hang_before_headers())
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.05}", deadline_s=0.6))
    async with Router.from_yaml(path) as router:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError) as info:
            await router.complete("r", {"ticker": "X"})
        took = time.monotonic() - t0
        assert took < 0.6 + 0.05  # the bound docs/routing.md states
        attempts = info.value.attempts
        assert [a.hedged for a in attempts if a.outcome != "skipped"].count(True) == 1
        assert router.state.reserved_usd == 0  # both reservations given back
        # A request sent and given up on is billed its input estimate (docs/latency.md).
        assert all(a.cost_usd > 0 for a in attempts if a.outcome == "error")
    for up in ups:
        await up.wait_until(lambda up=up: up.open_connections == 0)


async def test_the_loser_is_cancelled_at_once_and_billed_its_input(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    ups = await servers(upstream_factory, late(2.0, "slow"), late(0.01, "fast"))
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.05}"))
    async with Router.from_yaml(path) as router:
        t0 = time.monotonic()
        done = await router.complete("r", {"ticker": "X"})
        assert time.monotonic() - t0 < 0.5
        assert done.text == "fast" and done.provider == "s2"
        # The winner is recorded first: the loser records once cancelled.
        second, first = done.attempts
        assert (first.outcome, first.hedged, first.won) == ("cancelled", False, False)
        assert (second.outcome, second.hedged, second.won) == ("ok", True, True)
        # The loser: its input estimate at the input price, marked estimated.
        assert first.usage is not None and first.usage.estimated
        assert first.usage.output_tokens == 0
        assert first.cost_usd == Decimal(first.usage.input_tokens) * 3 / 1_000_000
        # The winner: what it reported.
        assert second.cost_usd == (Decimal(10) * 3 + Decimal(5) * 15) / 1_000_000
        await router.state.flush()
        assert sum(b.spent_usd for b in router.spend()) == first.cost_usd + second.cost_usd
        assert router.state.reserved_usd == 0
        # The loser's connection was closed (not left in the pool).
        await ups[0].wait_until(lambda: ups[0].disconnects == 1)


async def test_log_lines_show_the_race(
    tmp_path: Path, upstream_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    ups = await servers(upstream_factory, late(1.0, "slow"), late(0.0, "fast"))
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.05}"))
    caplog.set_level("INFO", logger="router.calls")
    async with Router.from_yaml(path) as router:
        await router.complete("r", {"ticker": "X"})
    lines = [r.getMessage() for r in caplog.records if "llm_attempt" in r.getMessage()]
    assert any("provider=s2" in x and "hedged=True" in x and "won=True" in x for x in lines)
    assert any("provider=s1" in x and "outcome=cancelled" in x and "won=False" in x for x in lines)


async def test_a_loser_whose_cancel_surfaces_as_an_error_is_billed_as_a_loser(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transport that turns the cancel into a connection error (as a cancel racing a
    # timeout can): the loser is still billed its input and recorded as cancelled.
    ups = await servers(upstream_factory, late(5.0, "never"), late(0.0, "fast"))
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.05}"))
    real_send = Transport.send

    async def send(self: Transport, *args: Any, **kwargs: Any) -> Any:
        if self.name != "s1":
            return await real_send(self, *args, **kwargs)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            raise ProviderConnectionError("reset", provider="s1", model="m") from None
        raise AssertionError("not cancelled")

    monkeypatch.setattr(Transport, "send", send)
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"ticker": "X"})
        assert done.text == "fast"
        lost = [a for a in done.attempts if a.provider == "s1"]
        assert [(a.outcome, a.won) for a in lost] == [("cancelled", False)]
        assert lost[0].cost_usd > 0
        assert router.provider_states()["s1"].failures == 0  # no blame for a lost race
        await router.state.flush()
        assert sum(b.spent_usd for b in router.spend()) == sum(a.cost_usd for a in done.attempts)


async def test_no_hedge_before_the_delay(tmp_path: Path, upstream_factory: Factory) -> None:
    ups = await servers(upstream_factory, late(0.05, "first"), late(0.0, "second"))
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.5}"))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"ticker": "X"})
    assert done.text == "first"
    assert len(ups[1].requests) == 0
    assert [(a.hedged, a.won) for a in done.attempts] == [(False, None)]


async def test_the_budget_counts_both_reservations(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    ups = await servers(upstream_factory, late(0.3, "slow"), late(0.0, "fast"))
    # Room for one worst case (about 100 output tokens at $15/M + input), not two.
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.05}", budget="0.002"))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"ticker": "X"})
        assert done.text == "slow"
        skipped = [a for a in done.attempts if a.outcome == "skipped"]
        assert len(skipped) == 1 and skipped[0].skip == "budget"
        assert skipped[0].hedged
        assert len(ups[1].requests) == 0
        await router.state.flush()
        assert router.state.reserved_usd == 0


async def test_max_hedges_caps_parallel_attempts(tmp_path: Path, upstream_factory: Factory) -> None:
    for max_hedges, started in ((1, 2), (2, 3)):
        ups = await servers(
            upstream_factory, late(0.4, "a"), late(0.4, "b"), late(0.4, "c"), late(0.4, "d")
        )
        path = write_config(
            tmp_path,
            chain([u.url for u in ups], f"{{after_s: 0.05, max_hedges: {max_hedges}}}"),
        )
        async with Router.from_yaml(path) as router:
            done = await router.complete("r", {"ticker": "X"})
        assert done.text == "a"
        assert sum(len(u.requests) for u in ups) == started
        assert sum(a.hedged for a in done.attempts) == started - 1


async def test_hedge_budget_caps_hedges_during_a_slow_outage(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    # The primary is slow on every request; hedging must not send every call to the
    # secondary: at most min_hedges + ratio x the primary's attempts.
    ups = await servers(upstream_factory, late(0.15, "slow"), late(0.0, "fast"))
    extra = "    hedge_budget: {ratio: 0.1, window_s: 60, min_hedges: 2}\n"
    path = write_config(
        tmp_path, chain([u.url for u in ups], "{after_s: 0.02}", provider_extra=extra)
    )
    calls = 60
    async with Router.from_yaml(path) as router:
        sem = asyncio.Semaphore(10)

        async def one() -> None:
            async with sem:
                await router.complete("r", {"ticker": "X"})

        await asyncio.gather(*(one() for _ in range(calls)))
    assert len(ups[0].requests) == calls
    assert 2 <= len(ups[1].requests) <= 2 + 0.1 * calls


async def test_a_refused_hedge_leaves_the_slow_steps_retries(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    first, second = await upstream_factory(), await upstream_factory()
    failing = reply(500, {"error": {"message": "boom"}})

    async def slow_then_500(ex: Exchange) -> bool:
        return await ex.pause(0.2) and await failing.run(ex)

    first.queue(Behaviour("slow 500", slow_then_500), path=CHAT)
    first.route(CHAT, late(0.0, "retried"))
    second.route(CHAT, late(0.0, "second"))
    extra = "    hedge_budget: {ratio: 0, min_hedges: 0}\n"
    path = write_config(
        tmp_path,
        chain(
            [first.url, second.url],
            "{after_s: 0.05}",
            provider_extra=extra,
            settings="retries: 1, backoff: {initial_s: 0.01, max_s: 0.01}",
        ),
    )
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"ticker": "X"})
    assert done.text == "retried"  # the step's retry, not the next step
    assert len(second.requests) == 0
    assert not any(a.hedged for a in done.attempts)


def _sse(*texts: str) -> list[str]:
    chunks = [
        "data: "
        + json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}],
            }
        )
        + "\n\n"
        for t in texts
    ]
    chunks.append(
        "data: "
        + json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            }
        )
        + "\n\n"
    )
    chunks.append("data: [DONE]\n\n")
    return chunks


async def test_streams_hedge_until_the_first_text_delta(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    slow = _sse("slow", " answer")
    fast = _sse("fast", " answer")
    ups = await servers(
        upstream_factory,
        stream(slow, [1.5] + [0.0] * (len(slow) - 1)),
        stream(fast, 0.0),
    )
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.05}"))
    async with Router.from_yaml(path) as router:
        t0 = time.monotonic()
        async with router.stream("r", {"ticker": "X"}) as s:
            text = "".join([d async for d in s])
        assert time.monotonic() - t0 < 1.0
        assert text == "fast answer"
        done = s.completion
        assert done is not None and done.provider == "s2"
        outcomes = [(a.provider, a.outcome, a.hedged, a.won) for a in done.attempts]
        assert ("s1", "cancelled", False, False) in outcomes
        assert ("s2", "ok", True, True) in outcomes
        await router.state.flush()
        assert router.state.reserved_usd == 0
        assert sum(b.spent_usd for b in router.spend()) == sum(a.cost_usd for a in done.attempts)
    await ups[0].wait_until(lambda: ups[0].disconnects == 1)


async def test_after_percentile_uses_the_providers_own_latency(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    ups = await servers(upstream_factory, late(0.02, "a"), late(0.0, "b"))
    hedge = "{after: p90, min_s: 0.01, max_s: 1.0}"
    path = write_config(tmp_path, chain([u.url for u in ups], hedge))
    async with Router.from_yaml(path) as router:
        for _ in range(MIN_SAMPLES):
            await router.complete("r", {"ticker": "X"})
        seen = router.state.observed(router._gen.providers["s1"].gate)
        p90 = seen.quantile(0.9)
        assert p90 is not None and 0.02 <= p90 < 0.5
        ups[0].route(CHAT, late(0.8, "a"))  # now slow: hedged after about p90
        t0 = time.monotonic()
        done = await router.complete("r", {"ticker": "X"})
        assert time.monotonic() - t0 < 0.5
        assert done.text == "b"


def test_after_percentile_is_clamped_and_waits_for_samples() -> None:
    seen = Observed()
    assert seen.quantile(0.9) is None  # no guess from nothing
    for i in range(MIN_SAMPLES):
        seen.add(0.1 + i / 1000, None, ok=True)
    q = seen.quantile(0.5)
    assert q is not None and 0.1 <= q <= 0.12
    # Streams hedge on the time to first token, not the whole latency.
    assert seen.quantile(0.5, stream=True) is None
    for _ in range(MIN_SAMPLES):
        seen.add(5.0, 0.03, ok=True)
    assert seen.quantile(0.9, stream=True) == 0.03
    # A failure is no latency sample, but it raises the pool score.
    before = seen.score()
    seen.add(0.001, None, ok=False)
    assert seen.score() > before


def test_hedge_budget_window() -> None:
    seen = Observed()
    budget = HedgeBudget(ratio=0.5, window_s=10, min_hedges=1)
    for t in range(4):
        seen.note_attempt(float(t), budget)
    # 1 + 0.5 x 4 = 3 hedges in the window.
    assert [seen.take_hedge(4.0, budget) for _ in range(4)] == [True, True, True, False]
    # Ten seconds later the window is empty again: only min_hedges.
    assert seen.take_hedge(20.0, budget) is True
    assert seen.take_hedge(20.0, budget) is False


async def test_stats_and_prometheus_count_hedges_wins_and_waste(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    ups = await servers(upstream_factory, late(1.0, "slow"), late(0.0, "fast"))
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.05}"))
    registry = CollectorRegistry()
    async with Router.from_yaml(path) as router:
        register(router, registry)
        done = await router.complete("r", {"ticker": "X"})
        snap = router.stats()
        text = generate_latest(registry).decode()
    route = snap["routes"]["r"]
    assert route["hedges"] == 1
    assert route["hedge_wins"] == 1
    wasted = sum(a.cost_usd for a in done.attempts if a.won is False)
    assert wasted > 0
    assert Decimal(route["hedge_wasted_usd"]) == wasted
    assert 'llm_hedges_total{model="m",provider="s2",route="r"} 1.0' in text
    assert 'llm_hedge_wins_total{model="m",provider="s2",route="r"} 1.0' in text
    assert (
        f'llm_hedge_wasted_usd_total{{model="m",provider="s1",route="r"}} {float(wasted)}' in text
    )
    assert 'outcome="cancelled"' in text


async def test_two_streams_delivering_at_the_same_moment_give_one_whole_answer(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    """The hedge is timed to deliver its first text when the slow stream does (0.3 s):
    whichever wins, the caller reads one stream's whole text (never a mix), the other
    is cancelled and billed as a loser, the ledger adds up and nothing stays open."""
    first = _sse("first", " answer")
    second = _sse("second", " answer")
    ups = await servers(
        upstream_factory,
        stream(first, [0.3] + [0.0] * (len(first) - 1)),
        stream(second, [0.2] + [0.0] * (len(second) - 1)),
    )
    path = write_config(tmp_path, chain([u.url for u in ups], "{after_s: 0.1}"))
    async with Router.from_yaml(path) as router:
        for _ in range(5):
            async with router.stream("r", {"ticker": "X"}) as s:
                text = "".join([d async for d in s])
            done = s.completion
            assert done is not None and text in ("first answer", "second answer")
            assert text.startswith("first" if done.provider == "s1" else "second")
            outcomes = sorted((a.outcome, a.won) for a in done.attempts)
            assert outcomes == [("cancelled", False), ("ok", True)]
        await router.state.flush()
        assert router.state.reserved_usd == 0
    await ups[0].wait_until(lambda: ups[0].open_connections == 0)
    await ups[1].wait_until(lambda: ups[1].open_connections == 0)
