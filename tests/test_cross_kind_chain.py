"""One route across the three newer wire kinds: ``openai_responses -> gemini ->
azure_openai``, each step a loopback server replaying real recordings.

Whichever step answers, the Completion carries that recording's exact usage and
the cost its price gives; the steps that failed are attempts with their typed
errors, and nothing is billed for them (their recordings report no usage).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router import Router, Usage
from tests.routerkit import write_config
from tests.upstream import Upstream, replay

RESPONSES = "/v1/responses"
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
AZURE = "/openai/deployments/prod-mini/chat/completions"
SSE = {"content-type": "text/event-stream"}

# USD per million tokens (input, cached input, output) per step.
PRICES = {
    "resp": (Decimal("1.25"), Decimal("0.125"), Decimal("10")),
    "gem": (Decimal("0.30"), Decimal("0.03"), Decimal("2.50")),
    "az": (Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
}


def chain_yaml(resp: str, gem: str, az: str) -> str:
    def price(step: str) -> str:
        i, c, o = PRICES[step]
        return f"{{input_per_mtok: {i}, cached_input_per_mtok: {c}, output_per_mtok: {o}}}"

    return f"""\
providers:
  resp:
    kind: openai_responses
    base_url: {resp}/v1
    api_key_env: CHAIN_KEY
    models: {{gpt-5-nano: {{price: {price("resp")}}}}}
  gem:
    kind: gemini
    base_url: {gem}/v1beta
    api_key_env: CHAIN_KEY
    models: {{gemini-2.5-flash: {{price: {price("gem")}}}}}
  az:
    kind: azure_openai
    base_url: {az}
    api_key_env: CHAIN_KEY
    models: {{gpt-4o-mini: {{deployment: prod-mini, price: {price("az")}}}}}
settings: {{retries: 0, backoff: {{initial_s: 0.01, max_s: 0.02}}}}
budgets:
  all: {{limit_usd: 10}}
routes:
  r:
    prompt: "Say {{{{ word }}}}"
    max_tokens: 8192
    deadline_s: 10
    fallback: [resp/gpt-5-nano, gem/gemini-2.5-flash, az/gpt-4o-mini]
"""


def cost(step: str, usage: Usage) -> Decimal:
    i, c, o = PRICES[step]
    uncached = usage.input_tokens - usage.cached_input_tokens
    return (uncached * i + usage.cached_input_tokens * c + usage.output_tokens * o) / 1_000_000


@pytest.fixture
async def servers(
    upstream_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[Upstream, Upstream, Upstream]:
    monkeypatch.setenv("CHAIN_KEY", "chain-test-key-0123456789")
    return await upstream_factory(), await upstream_factory(), await upstream_factory()


def outcomes(done: Any) -> list[str]:
    return [a.error.kind if a.error is not None else a.outcome for a in done.attempts]


async def test_the_chain_falls_through_to_azure_with_its_exact_usage_and_cost(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    resp, gem, az = servers
    resp.route(RESPONSES, replay("openai-responses/openai-responses-401-invalid-api-key.meta.json"))
    gem.route(GEMINI, replay("gemini/gemini-generatecontent-429-quota.meta.json"))
    az.route(
        AZURE,
        replay("azure-openai/azure-chat-200-json-deployment-content-filter-results.meta.json"),
    )
    path = write_config(tmp_path, chain_yaml(resp.url, gem.url, az.url))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"word": "hi"})
        (budget,) = router.spend()
    assert (done.provider, done.model) == ("az", "gpt-4o-mini")
    assert done.text.startswith("I'm sorry, as an AI language model")
    assert done.usage == Usage(input_tokens=18, output_tokens=20)
    assert done.cost_usd == cost("az", done.usage) == Decimal("0.0000147")
    assert outcomes(done) == ["auth", "rate_limit", "ok"]
    assert [a.cost_usd for a in done.attempts] == [0, 0, done.cost_usd]
    assert budget.spent_usd == done.cost_usd and budget.reserved_usd == 0
    assert [len(s.requests) for s in servers] == [1, 1, 1]


async def test_gemini_answers_when_the_responses_step_fails(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    resp, gem, az = servers
    resp.route(RESPONSES, replay("xai-responses/xai-responses-400-invalid-api-key.meta.json"))
    gem.route(GEMINI, replay("gemini/gemini-generatecontent-200-json-cached-content.meta.json"))
    path = write_config(tmp_path, chain_yaml(resp.url, gem.url, az.url))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"word": "hi"})
    # 9609 of 9622 prompt tokens cached; 35 candidates + 136 thoughts are output.
    assert done.provider == "gem"
    assert done.usage == Usage(
        input_tokens=9622, output_tokens=35 + 136, cached_input_tokens=9609, reasoning_tokens=136
    )
    assert done.cost_usd == cost("gem", done.usage)
    assert outcomes(done) == ["auth", "ok"]
    assert az.requests == []


async def test_the_responses_step_answers_first(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream]
) -> None:
    resp, gem, az = servers
    resp.route(RESPONSES, replay("openai-responses/openai-responses-200-json-basic.meta.json"))
    path = write_config(tmp_path, chain_yaml(resp.url, gem.url, az.url))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"word": "hi"})
    assert done.provider == "resp"
    assert done.usage == Usage(input_tokens=13, output_tokens=157, reasoning_tokens=128)
    assert done.cost_usd == cost("resp", done.usage)
    assert gem.requests == [] and az.requests == []


@pytest.mark.parametrize("answering", ["gem", "az"])
async def test_a_stream_falls_back_across_the_kinds_before_its_first_token(
    tmp_path: Path, servers: tuple[Upstream, Upstream, Upstream], answering: str
) -> None:
    resp, gem, az = servers
    resp.route(RESPONSES, replay("openai-responses/openai-responses-401-invalid-api-key.meta.json"))
    if answering == "gem":
        gem.route(
            GEMINI_STREAM,
            replay("gemini/gemini-streamgeneratecontent-200-sse.meta.json", chunk_size=64),
        )
        text, usage = "1, 2, 3", Usage(input_tokens=8, output_tokens=7 + 20, reasoning_tokens=20)
    else:
        gem.route(GEMINI_STREAM, replay("gemini/gemini-generatecontent-429-quota.meta.json"))
        az.route(
            AZURE,
            replay("azure-openai/azure-chat-200-sse-deployment-usage.meta.json", chunk_size=64),
        )
        text = "Not much—here and ready to help. What do you want to talk about or work on?"
        usage = Usage(input_tokens=12, output_tokens=24)
    path = write_config(tmp_path, chain_yaml(resp.url, gem.url, az.url))
    async with Router.from_yaml(path) as router:
        async with router.stream("r", {"word": "hi"}) as stream:
            got = "".join([d async for d in stream])
        (budget,) = router.spend()
    done = stream.completion
    assert done is not None and done.provider == answering
    assert got == text == done.text
    assert done.usage == usage
    assert done.cost_usd == cost(answering, usage) == budget.spent_usd
    assert budget.reserved_usd == 0
    assert outcomes(done)[0] == "auth" and outcomes(done)[-1] == "ok"
