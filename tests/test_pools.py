"""Pools of deployments (``pools:`` and ``pool:NAME`` steps; docs/latency.md).

Config checks with file:line and did-you-mean; the strategies (weighted holds its
weights over 3,000 calls; round_robin takes turns; least_latency moves to the fast
healthy member within a few calls; least_busy spreads concurrent calls); a
retryable failure tries another member before the step gives up; hedging to the
pool's next member; the dry run shows pools and their order.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from router import AllProvidersFailedError, Router
from router.cli import main
from router.errors import ConfigError
from router.plan import load_config
from tests.routerkit import write_config
from tests.test_hedge import late
from tests.upstream import Upstream, reply

Factory = Callable[..., Awaitable[Upstream]]
CHAT = "/v1/chat/completions"
PRICE = "{input_per_mtok: 1, output_per_mtok: 2}"


def mock_pool(strategy: str, weights: list[int], step_extra: str = "") -> str:
    providers = "".join(
        f"  m{i}:\n    kind: mock\n    mock: {{reply: 'from m{i}'}}\n    models:\n      x: {{}}\n"
        for i in range(len(weights))
    )
    members = ", ".join(f"{{use: m{i}/x, weight: {w}}}" for i, w in enumerate(weights))
    return (
        f"providers:\n{providers}"
        f"pools:\n  p:\n    strategy: {strategy}\n    members: [{members}]\n"
        f"routes:\n  r:\n    prompt: hi\n{step_extra}    fallback: [pool:p]\n"
    )


def http_pool(urls: list[str], strategy: str, route_extra: str = "") -> str:
    providers = "".join(
        f"  u{i}:\n    kind: openai\n    base_url: {url}/v1\n"
        f"    models:\n      m: {{price: {PRICE}}}\n"
        for i, url in enumerate(urls)
    )
    members = ", ".join(f"{{use: u{i}/m}}" for i in range(len(urls)))
    return (
        f"providers:\n{providers}"
        "settings: {backoff: {initial_s: 0.01, max_s: 0.01}}\n"
        f"pools:\n  p:\n    strategy: {strategy}\n    members: [{members}]\n"
        f"routes:\n  r:\n    prompt: hi\n    retries: 1\n{route_extra}    fallback: [pool:p]\n"
    )


async def test_weighted_holds_its_weights_over_3000_calls(tmp_path: Path) -> None:
    path = write_config(tmp_path, mock_pool("weighted", [3, 1, 1]))
    async with Router.from_yaml(path) as router:
        seen = Counter()
        for _ in range(3000):
            done = await router.complete("r")
            seen[done.provider] += 1
    shares = {p: n / 3000 for p, n in seen.items()}
    for name, want in (("m0", 0.6), ("m1", 0.2), ("m2", 0.2)):
        assert abs(shares[name] - want) <= 0.05 * want, shares


async def test_round_robin_takes_turns(tmp_path: Path) -> None:
    path = write_config(tmp_path, mock_pool("round_robin", [1, 1, 1]))
    async with Router.from_yaml(path) as router:
        order = [(await router.complete("r")).provider for _ in range(4)]
        # Looking at the order does not take a turn.
        assert router.pool_order("r") == [["m1/x", "m0/x", "m2/x"]]
        assert router.pool_order("r") == [["m1/x", "m0/x", "m2/x"]]
        order += [(await router.complete("r")).provider for _ in range(2)]
    assert order == ["m0", "m1", "m2", "m0", "m1", "m2"]


async def test_least_latency_finds_the_healthy_fast_member(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    broken, slow, fast = [await upstream_factory() for _ in range(3)]
    broken.route(CHAT, reply(503, {"error": {"message": "overloaded"}}))
    slow.route(CHAT, late(0.15, "slow"))
    fast.route(CHAT, late(0.0, "fast"))
    path = write_config(tmp_path, http_pool([broken.url, slow.url, fast.url], "least_latency"))
    async with Router.from_yaml(path) as router:
        answers = []
        for _ in range(20):
            done = await router.complete("r")
            answers.append(done.text)
            # A 503 never reaches the caller: the pool's next member answers.
            assert done.text in ("slow", "fast")
        # The live order: the fast member first, the failing one last.
        (order,) = router.pool_order("r")
        assert order is not None and order[0] == "u2/m" and order[-1] == "u0/m"
    # Within a few calls every call goes to the fast one, first.
    assert answers[3:] == ["fast"] * 17
    assert len(broken.requests) <= 3
    assert len(slow.requests) <= 2


async def test_a_retryable_failure_tries_another_member_before_leaving_the_step(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    a, b = await upstream_factory(), await upstream_factory()
    a.route(CHAT, reply(500, {"error": {"message": "boom"}}))
    b.route(CHAT, late(0.0, "b"))
    path = write_config(tmp_path, http_pool([a.url, b.url], "round_robin"))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r")
    assert done.text == "b"
    assert [(x.provider, x.outcome) for x in done.attempts] == [("u0", "error"), ("u1", "ok")]


async def test_every_member_failing_retries_then_gives_up(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    a, b = await upstream_factory(), await upstream_factory()
    for up in (a, b):
        up.route(CHAT, reply(500, {"error": {"message": "boom"}}))
    path = write_config(tmp_path, http_pool([a.url, b.url], "round_robin"))
    async with Router.from_yaml(path) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r")
    assert [a.provider for a in info.value.attempts] == ["u0", "u1", "u0", "u1"]
    # Each member once, then the step's one retry goes through the members again.
    assert len(a.requests) + len(b.requests) == 4


async def test_least_busy_spreads_concurrent_calls(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    ups = [await upstream_factory() for _ in range(3)]
    for up in ups:
        up.route(CHAT, late(0.1, "ok"))
    path = write_config(tmp_path, http_pool([u.url for u in ups], "least_busy"))
    async with Router.from_yaml(path) as router:
        await asyncio.gather(*(router.complete("r") for _ in range(9)))
    assert [len(u.requests) for u in ups] == [3, 3, 3]


async def test_a_pool_step_hedges_to_its_next_member(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    a, b = await upstream_factory(), await upstream_factory()
    a.route(CHAT, late(1.0, "a"))
    b.route(CHAT, late(0.0, "b"))
    path = write_config(
        tmp_path, http_pool([a.url, b.url], "round_robin", "    hedge: {after_s: 0.05}\n")
    )
    async with Router.from_yaml(path) as router:
        done = await router.complete("r")
    assert done.text == "b"
    assert {(x.provider, x.outcome, x.hedged) for x in done.attempts} == {
        ("u0", "cancelled", False),
        ("u1", "ok", True),
    }


def test_an_unknown_pool_is_named_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    body = mock_pool("weighted", [1, 1]).replace("fallback: [pool:p]", "fallback: [pool:q]")
    body = body.replace("  p:\n    strategy", "  q2:\n    strategy")
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, body.replace("q2", "qq")))
    text = str(info.value)
    assert "routes.r.fallback[0]" in text and "unknown pool 'q'" in text
    assert "did you mean 'qq'" in text
    assert "providers.yaml:" in text  # file:line:col


def test_pool_members_are_checked(tmp_path: Path) -> None:
    body = mock_pool("weighted", [1, 1]).replace("use: m1/x", "use: m1/y")
    body = body.replace("{use: m0/x, weight: 1}", "{use: m9/x, weight: 1}")
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, body))
    text = str(info.value)
    assert "pools.p.members[0].use" in text and "unknown provider 'm9'" in text
    assert "pools.p.members[1].use" in text and "model 'y' is not declared" in text


def test_a_hedge_needs_one_delay(tmp_path: Path) -> None:
    body = mock_pool("weighted", [1], "    hedge: {max_hedges: 2}\n")
    with pytest.raises(ConfigError, match=r"routes\.r\.hedge.*exactly one of after_s"):
        load_config(write_config(tmp_path, body))


def test_dry_run_shows_pools_and_their_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, mock_pool("weighted", [1, 3], "    hedge: {after: p90}\n"))
    assert main(["routes", "--config", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (pool,) = doc[0]["steps"]
    assert pool["pool"] == "p" and pool["strategy"] == "weighted"
    assert [(m["provider"], m["weight"], m["enabled"]) for m in pool["members"]] == [
        ("m0", 1, True),
        ("m1", 3, True),
    ]
    assert pool["order"] == ["m1/x", "m0/x"]  # the heavier member first
    assert doc[0]["hedge"]["after"] == "p90"
    assert main(["render", "r", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pool p (weighted): m0/x (weight 1), m1/x (weight 3)" in out
    assert "order now: m1/x > m0/x" in out
    assert "hedge: after p90 of its latency" in out


async def test_a_reload_that_keeps_a_pool_keeps_its_turn(tmp_path: Path) -> None:
    """The weighted cursor survives a reload that leaves the pool as it was (another
    route added): the order goes on where it was; a pool whose weights change starts
    over."""
    text = mock_pool("weighted", [3, 1, 1])
    path = write_config(tmp_path, text)
    async with Router.from_yaml(path) as router:
        straight = [(await router.complete("r")).provider for _ in range(10)]
    async with Router.from_yaml(path) as router:
        around = [(await router.complete("r")).provider for _ in range(4)]
        other = "routes:\n  other:\n    prompt: hi\n    fallback: [m0/x]\n"
        path.write_text(path.read_text().replace("routes:\n", other))
        report = await router.reload()
        assert report.routes_added == ["other"]
        around += [(await router.complete("r")).provider for _ in range(6)]
        path.write_text(path.read_text().replace("weight: 3", "weight: 2"))
        await router.reload()
        fresh = [(await router.complete("r")).provider for _ in range(4)]
    assert around == straight
    async with Router.from_yaml(path) as router:
        assert fresh == [(await router.complete("r")).provider for _ in range(4)]
