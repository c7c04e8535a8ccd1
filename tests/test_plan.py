"""The Plan: providers.yaml resolved once (step > route > provider > settings), frozen,
compared by value; a dry run from it alone; a reload decided by comparing two Plans."""

from __future__ import annotations

import dataclasses
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

import router
from router import ChainStep, Plan, Router, StepPlan, load_config
from router.config import FREE
from router.plan import compare
from tests.routerkit import make_config, write_config

CASCADE = """\
settings:
  retries: 2
  deadline_s: 40
  max_tokens: 300
  first_token_timeout_s: 15
  idle_timeout_s: 10
  fallback_on: [server, timeout]
providers:
  a:
    kind: mock
    timeout_s: 20
    first_token_timeout_s: 5
    extra: {x: 1, shared: provider}
    models:
      m:
        price: {input_per_mtok: 1, output_per_mtok: 2}
        max_output_tokens: 500
        context_window: 8000
        extra: {y: 2, shared: model}
  b:
    kind: mock
    input_overhead_tokens: 7
    models: {n: {}}
routes:
  own:
    prompt: "hi {{ who }}"
    retries: 1
    idle_timeout_s: 3
    deadline_s: 12
    max_tokens: 100
    temperature: 0.5
    max_cost_usd: 0.25
    fallback_on: [rate_limit]
    fallback:
      - {model: a/m, retries: 0, timeout_s: 50, params: {z: 3, shared: step}}
      - {model: a/m, timeout_s: 8}
      - b/n
  inherits:
    prompt: "hello"
    fallback: [a/m, b/n]
"""


def test_each_step_carries_its_effective_settings(tmp_path: Path) -> None:
    plan = make_config(tmp_path, CASCADE)
    first, second, third = plan.routes["own"].steps
    # step > route > settings for retries; the step's timeout never exceeds the provider's.
    assert (first.retries, second.retries, third.retries) == (0, 1, 1)
    assert (first.timeout_s, second.timeout_s, third.timeout_s) == (20, 8, 60)
    # route > provider > settings for the stream waits.
    assert [s.first_token_timeout_s for s in (first, second, third)] == [5, 5, 15]
    assert [s.idle_timeout_s for s in (first, second, third)] == [3, 3, 3]
    # provider extra < model extra < step params.
    assert first.params == {"x": 1, "y": 2, "z": 3, "shared": "step"}
    assert second.params == {"x": 1, "y": 2, "shared": "model"}
    assert third.params == {}
    price = first.price
    assert (price.input_per_mtok, price.output_per_mtok) == (1, 2)
    assert third.price == FREE  # a mock model without a price is free
    assert (first.max_output_tokens, first.context_window) == (500, 8000)
    assert (third.input_overhead, first.input_overhead) == (7, 0)
    own = plan.routes["own"]
    assert (own.deadline_s, own.max_tokens, own.temperature) == (12, 100, 0.5)
    assert own.max_cost_usd == Decimal("0.25")
    assert own.fallback_on == frozenset({"rate_limit"})
    assert own.vars is None
    inherits = plan.routes["inherits"]
    assert [s.retries for s in inherits.steps] == [2, 2]
    assert [s.timeout_s for s in inherits.steps] == [20, 60]
    assert [s.first_token_timeout_s for s in inherits.steps] == [5, 15]
    assert [s.idle_timeout_s for s in inherits.steps] == [10, 10]
    assert (inherits.deadline_s, inherits.max_tokens, inherits.temperature) == (40, 300, None)
    assert inherits.fallback_on == frozenset({"server", "timeout"})
    assert inherits.max_cost_usd is None


def test_provider_plans_resolve_defaults_and_keys(tmp_path: Path) -> None:
    plan = make_config(
        tmp_path,
        """\
        settings: {cooldown: {failures: 4, seconds: 9}, max_response_bytes: 4096}
        providers:
          oai:
            kind: openai
            api_key_env: K
            headers: {OpenAI-Project: proj_x}
            limits: {requests_per_minute: 60}
            models: {g: {price: {input_per_mtok: 1, output_per_mtok: 2}}}
          gone: {kind: openai, api_key_env: MISSING, optional: true,
                 models: {g: {price: {input_per_mtok: 1, output_per_mtok: 2}}}}
          local: {kind: ollama, base_url: "http://localhost:11434/", models: {l: {}}}
        routes:
          r: {prompt: hi, fallback: [gone/g, oai/g, local/l]}
        """,
        env={"K": "sk-test-0123456789abcdef"},
    )
    oai = plan.providers["oai"]
    assert (oai.kind, oai.base_url) == ("openai", "https://api.openai.com/v1")
    assert oai.key == SecretStr("sk-test-0123456789abcdef")
    assert "0123456789" not in repr(plan)
    assert oai.headers == {"OpenAI-Project": "proj_x"}
    assert oai.limits.requests_per_minute == 60
    assert (oai.cooldown.failures, oai.cooldown.seconds) == (4, 9)
    assert (oai.timeout_s, oai.connect_timeout_s, oai.max_response_bytes) == (60, 5, 4096)
    assert oai.first_token_timeout_s is None  # its own: none; steps hold the effective one
    assert oai.mock is None
    assert plan.providers["local"].base_url == "http://localhost:11434"
    assert plan.providers["local"].key is None
    # A disabled provider is out of the plan and out of every chain.
    assert plan.disabled_providers == {"gone"}
    assert set(plan.providers) == {"oai", "local"}
    assert [s.provider for s in plan.routes["r"].steps] == ["oai", "local"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        oai.timeout_s = 1  # type: ignore[misc]


def test_a_dry_run_needs_only_the_plan(tmp_path: Path) -> None:
    plan = make_config(tmp_path, CASCADE)
    assert isinstance(plan, Plan)
    assert plan.render("own", {"who": "desk"})[-1].content == "hi desk"
    chain = plan.chain("own")
    assert all(isinstance(s, ChainStep) for s in chain)
    # The attempt cap is the step's timeout, or the route's deadline when shorter.
    assert [(s.provider, s.model, s.retries, s.attempt_cap_s) for s in chain] == [
        ("a", "m", 0, 12),
        ("a", "m", 1, 8),
        ("b", "n", 1, 12),
    ]
    provider, model, price, retries, cap = chain[1]  # still unpacks as a tuple
    assert (provider, model, retries, cap) == ("a", "m", 1, 8)
    assert price.output_per_mtok == 2
    assert Router(plan).chain("own") == chain
    for name in ("ChainStep", "Plan", "ProviderPlan", "RoutePlan", "StepPlan", "ModelPlan"):
        assert name in router.__all__


def test_two_loads_of_one_file_are_equal_plans(tmp_path: Path) -> None:
    path = write_config(tmp_path, textwrap.dedent(CASCADE))
    one, two = load_config(path, env={}), load_config(path, env={})
    assert one == two
    assert compare(one, two).changed is False
    assert isinstance(one.routes["own"].steps[0], StepPlan)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_compare_reports_what_the_plans_say_changed(tmp_path: Path) -> None:
    path = write_config(tmp_path, textwrap.dedent(CASCADE))
    before = load_config(path, env={})
    _edit(path, "retries: 2", "retries: 3")  # settings: inherited by the route 'inherits'
    after = load_config(path, env={})
    report = compare(before, after)
    assert report.settings_changed
    assert report.routes_changed == ["inherits"]  # 'own' sets its own retries
    assert report.providers_changed == []
    _edit(path, "input_overhead_tokens: 7", "input_overhead_tokens: 8")
    report = compare(after, load_config(path, env={}))
    assert report.providers_changed == ["b"]
    # Both routes use b: their steps run on a rebuilt provider.
    assert report.routes_changed == ["own", "inherits"]
    assert not report.settings_changed


COOLING = """\
settings:
  retries: 0
  cooldown: {failures: 1, seconds: 600}
providers:
  a: {kind: mock, timeout_s: 30, mock: {failures: [503, 503, 503]}, models: {m: {}}}
  b: {kind: mock, mock: {failures: [503, 503, 503]}, models: {m: {}}}
  ok: {kind: mock, models: {m: {}}}
routes:
  r:
    prompt: "hi"
    fallback: [a/m, b/m, ok/m]
"""


def _outcomes(result: router.Completion) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in result.attempts]


async def test_a_reload_keeps_exactly_the_runtimes_whose_provider_plan_is_equal(
    tmp_path: Path,
) -> None:
    """A provider's runtime (here: its cooldown state) survives a reload when its plan is
    equal, and only then: a route-only edit keeps every provider; an edit to a's timeout
    rebuilds a alone."""
    path = write_config(tmp_path, COOLING)
    async with Router.from_yaml(path, env={}) as r:
        first = await r.complete("r")
        assert _outcomes(first) == [("a", "error"), ("b", "error"), ("ok", "ok")]
        old_plan = r.plan

        _edit(path, "prompt: hi\n", "prompt: hello\n")
        report = await r.reload()
        assert (report.routes_changed, report.providers_changed) == (["r"], [])
        assert r.plan.providers == old_plan.providers  # equal plans: every runtime kept
        second = await r.complete("r")
        assert _outcomes(second) == [("a", "skipped"), ("b", "skipped"), ("ok", "ok")]

        _edit(path, "timeout_s: 30", "timeout_s: 25")
        report = await r.reload()
        assert report.providers_changed == ["a"]
        assert report.routes_changed == ["r"]  # its first step runs on the new a
        assert r.plan.providers["a"] != old_plan.providers["a"]
        assert r.plan.providers["b"] == old_plan.providers["b"]
        third = await r.complete("r")
        # a is a new runtime (no cooldown: tried, and its fresh mock fails again); b kept its.
        assert _outcomes(third) == [("a", "error"), ("b", "skipped"), ("ok", "ok")]


CACHE_ROUTE = """\
providers:
  an:
    kind: anthropic
    base_url: http://127.0.0.1:9
    models: {claude-x: {price: {input_per_mtok: 3, output_per_mtok: 15}}}
routes:
  fixed:
    system: "You are a careful analyst."
    prompt: "Hi {{ name }}"
    prompt_cache: {system: true}
    fallback: [an/claude-x]
  templated:
    system: {file: sys.j2}
    prompt: "Hi"
    prompt_cache: {system: true}
    fallback: [an/claude-x]
  plain:
    system: "S"
    prompt: "Hi"
    fallback: [an/claude-x]
"""


def test_the_plan_carries_prompt_cache_and_the_messages_carry_the_mark(tmp_path: Path) -> None:
    """RoutePlan.prompt_cache is the route's (off by default); rendering marks the system
    message as a cache breakpoint, whether constant or templated, and never the prompt."""
    plan = make_config(tmp_path, CACHE_ROUTE, templates={"sys.j2": "Desk: {{ desk }}"})
    assert plan.routes["fixed"].prompt_cache.system is True
    assert plan.routes["plain"].prompt_cache.system is False
    assert plan.render("fixed", {"name": "A"}) == [
        router.Message("system", "You are a careful analyst.", cache=True),
        router.Message("user", "Hi A"),
    ]
    assert plan.render("templated", {"desk": "rates"}) == [
        router.Message("system", "Desk: rates", cache=True),
        router.Message("user", "Hi"),
    ]
    assert [m.cache for m in plan.render("plain")] == [False, False]


def test_turning_prompt_cache_on_changes_the_route(tmp_path: Path) -> None:
    templates = {"sys.j2": "x"}
    old = make_config(tmp_path, CACHE_ROUTE, templates=templates)
    new_body = CACHE_ROUTE.replace(
        '    system: "S"\n', '    system: "S"\n    prompt_cache: {system: true}\n'
    )
    new = make_config(tmp_path, new_body, templates=templates)
    assert compare(old, new).routes_changed == ["plain"]
    assert new.routes["plain"].prompt_cache.system
