"""What an attempt is billed when the provider's usage cannot be taken as reported.

End to end against a local server (OpenAI wire): absurd counts are capped and
flagged, malformed usage in a 200 is billed from the router's own estimate (never
$0), a provider's hidden prompt is reserved through ``input_overhead_tokens``, and
N concurrent calls overshoot a budget by no more than the bound docs/money.md
states. The figures used here are the documented ones: output is allowed up to
``max_tokens + max_tokens // 20 + 16`` and a cost up to 2x the attempt's
reservation (docs/money.md, "When the usage cannot be billed as reported").
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router.budget import cost_usd, worst_case_usd
from router.config import Price
from router.estimate import estimate_text_tokens, estimate_tokens
from router.router import Router
from router.types import Completion, Message, Usage
from tests.logs import capture_logs
from tests.routerkit import make_config
from tests.upstream import Upstream, reply, stream

CHAT = "/v1/chat/completions"
PRICE = Price(input_per_mtok=Decimal(2), output_per_mtok=Decimal(8))
PROMPT = "Tell me about {{ ticker }}."
VARS = {"ticker": "ACME"}
EST_IN = estimate_tokens([Message("user", "Tell me about ACME.")])
MAX_TOKENS = 100
# The documented output allowance for max_tokens 100: 100 + 100 // 20 + 16.
ALLOWED_OUT = 121
COST_CAP_MULTIPLE = 2
TEXT = "hello there"


def config_yaml(
    url: str,
    *,
    overhead: int | None = None,
    limit: Decimal | None = None,
    max_tokens: int = 100,
    tpm: int | None = None,
) -> str:
    provider: dict[str, Any] = {
        "kind": "openai",
        "base_url": f"{url}/v1",
        "models": {"m": {"price": {"input_per_mtok": 2, "output_per_mtok": 8}}},
    }
    if overhead is not None:
        provider["input_overhead_tokens"] = overhead
    if tpm is not None:
        provider["limits"] = {"tokens_per_minute": tpm}
    doc: dict[str, Any] = {
        "settings": {"retries": 0},
        "providers": {"p": provider},
        "routes": {
            "r": {
                "prompt": PROMPT,
                "vars": {"ticker": "str"},
                "max_tokens": max_tokens,
                "fallback": ["p/m"],
            }
        },
    }
    if limit is not None:
        doc["budgets"] = {"daily": {"limit_usd": str(limit), "period": "day"}}
    return json.dumps(doc)


def router_for(tmp_path: Path, up: Upstream, **kwargs: Any) -> Router:
    return Router(make_config(tmp_path, config_yaml(up.url, **kwargs)))


def body(usage: Any, text: str = TEXT) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


def worst(est_in: int = EST_IN, max_tokens: int = MAX_TOKENS) -> Decimal:
    return worst_case_usd(est_in, max_tokens, PRICE)


def suspect_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "usage_suspect"]


# ------------------------------------------------------------------ absurd counts


async def test_output_above_max_tokens_is_capped_flagged_and_logged(
    tmp_path: Path, upstream: Upstream
) -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": 10**9, "total_tokens": 20 + 10**9}
    upstream.route(CHAT, reply(200, body(usage)))
    with capture_logs() as logs:
        async with router_for(tmp_path, upstream) as router:
            c = await router.complete("r", VARS)
    assert c.text == TEXT
    assert c.usage.output_tokens == ALLOWED_OUT
    assert c.usage.input_tokens == 20
    assert c.usage.estimated
    assert c.usage.suspect is not None and "max_tokens" in c.usage.suspect
    assert c.cost_usd == cost_usd(Usage(20, ALLOWED_OUT), PRICE)
    (entry,) = suspect_logs(logs)
    assert entry["log_level"] == "warning"
    assert entry["provider"] == "p" and entry["model"] == "m"
    assert "1000000000" in entry["reason"]


async def test_a_cost_above_a_multiple_of_the_reservation_is_capped(
    tmp_path: Path, upstream: Upstream
) -> None:
    usage = {"prompt_tokens": 10**12, "completion_tokens": 5, "total_tokens": 10**12 + 5}
    upstream.route(CHAT, reply(200, body(usage)))
    with capture_logs() as logs:
        async with router_for(tmp_path, upstream, limit=Decimal(1000)) as router:
            c = await router.complete("r", VARS)
            (status,) = router.spend()
    assert c.cost_usd == COST_CAP_MULTIPLE * worst()
    assert status.spent_usd == c.cost_usd
    assert c.usage.estimated and c.usage.suspect is not None
    assert "reservation" in c.usage.suspect
    (entry,) = suspect_logs(logs)
    assert entry["log_level"] == "warning"
    assert entry["billed_usd"] == str(c.cost_usd)


async def test_usage_within_the_allowance_is_billed_as_reported_without_a_warning(
    tmp_path: Path, upstream: Upstream
) -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": ALLOWED_OUT, "total_tokens": 141}
    upstream.route(CHAT, reply(200, body(usage)))
    with capture_logs() as logs:
        async with router_for(tmp_path, upstream) as router:
            c = await router.complete("r", VARS)
    assert c.usage == Usage(20, ALLOWED_OUT)
    assert c.cost_usd == cost_usd(Usage(20, ALLOWED_OUT), PRICE)
    assert suspect_logs(logs) == []


# ------------------------------------------------------------------ malformed usage


MALFORMED = {
    "string": {"prompt_tokens": "20", "completion_tokens": 5},
    "float": {"prompt_tokens": 20, "completion_tokens": 5.0},
    "bool": {"prompt_tokens": True, "completion_tokens": 5},
    "negative": {"prompt_tokens": 20, "completion_tokens": -5},
    "nested": {"prompt_tokens": 20, "completion_tokens": 5, "prompt_tokens_details": []},
    "not-an-object": "lots",
    "cached-above-input": {
        "prompt_tokens": 20,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 64},
    },
}


@pytest.mark.parametrize("usage", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_usage_in_a_200_is_billed_from_the_estimate(
    tmp_path: Path, upstream: Upstream, usage: Any
) -> None:
    upstream.route(CHAT, reply(200, body(usage)))
    with capture_logs() as logs:
        async with router_for(tmp_path, upstream, limit=Decimal(1)) as router:
            c = await router.complete("r", VARS)
            (status,) = router.spend()
    estimate = Usage(EST_IN, estimate_text_tokens(TEXT), estimated=True)
    assert c.text == TEXT  # the paid answer is kept
    assert c.usage.suspect is not None
    assert (c.usage.input_tokens, c.usage.output_tokens) == (EST_IN, estimate.output_tokens)
    assert c.usage.estimated
    assert c.cost_usd == cost_usd(estimate, PRICE) > 0  # never $0: the provider billed it
    assert status.spent_usd == c.cost_usd
    (entry,) = suspect_logs(logs)
    assert entry["log_level"] == "warning"


async def test_malformed_usage_at_the_end_of_a_stream_is_billed_from_the_estimate(
    tmp_path: Path, upstream: Upstream
) -> None:
    def chunk(doc: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({"id": "c", **doc}).encode() + b"\n\n"

    chunks = [
        chunk({"choices": [{"index": 0, "delta": {"content": "hello "}}]}),
        chunk({"choices": [{"index": 0, "delta": {"content": "there"}, "finish_reason": "stop"}]}),
        chunk({"choices": [], "usage": {"prompt_tokens": "20", "completion_tokens": 2}}),
        b"data: [DONE]\n\n",
    ]
    upstream.route(CHAT, stream(chunks))
    with capture_logs() as logs:
        async with router_for(tmp_path, upstream) as router, router.stream("r", VARS) as s:
            text = "".join([d async for d in s])
    c = s.completion
    assert text == TEXT and c is not None
    assert c.usage.suspect is not None and c.usage.estimated
    estimate = Usage(EST_IN, estimate_text_tokens(TEXT))
    assert c.cost_usd == cost_usd(estimate, PRICE) > 0
    assert len(suspect_logs(logs)) == 1


# ------------------------------------------------------------------ hidden tokens


async def test_hidden_output_tokens_in_total_tokens_are_billed(
    tmp_path: Path, upstream: Upstream
) -> None:
    """total_tokens above prompt + completion, no reasoning count: the rest is output."""
    usage = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 85}
    upstream.route(CHAT, reply(200, body(usage)))
    async with router_for(tmp_path, upstream) as router:
        c = await router.complete("r", VARS)
    assert c.usage == Usage(20, 65, reasoning_tokens=60)
    assert c.cost_usd == cost_usd(Usage(20, 65), PRICE)


async def test_the_input_overhead_is_reserved_and_admitted(
    tmp_path: Path, upstream: Upstream
) -> None:
    """A provider that bills 130 hidden prompt tokens: with input_overhead_tokens: 130 the
    worst case reserved covers them, so a budget that fits N worst cases is not overspent."""
    n = 8
    limit = worst(EST_IN + 130) * n
    billed = {
        "prompt_tokens": EST_IN + 130,
        "completion_tokens": MAX_TOKENS,
        "total_tokens": EST_IN + 130 + MAX_TOKENS,
    }
    upstream.route(CHAT, reply(200, body(billed)))
    async with router_for(tmp_path, upstream, overhead=130, limit=limit) as router:
        results = await asyncio.gather(
            *(router.complete("r", VARS) for _ in range(n + 4)), return_exceptions=True
        )
        (status,) = router.spend()
    ok = [r for r in results if isinstance(r, Completion)]
    assert len(ok) == n
    assert status.spent_usd == limit  # every call billed exactly its reservation
    assert all(c.usage.suspect is None for c in ok)


async def test_n_concurrent_absurd_calls_overshoot_by_at_most_the_documented_bound(
    tmp_path: Path, upstream: Upstream
) -> None:
    """docs/money.md: with no input under-estimate, N calls admitted together end at most
    N x (output slack x output price) above the limit, however absurd their usage."""
    n = 10
    limit = worst() * n
    absurd = {"prompt_tokens": EST_IN, "completion_tokens": 10**7, "total_tokens": 10**7}
    upstream.route(CHAT, reply(200, body(absurd)))
    async with router_for(tmp_path, upstream, limit=limit) as router:
        results = await asyncio.gather(
            *(router.complete("r", VARS) for _ in range(n)), return_exceptions=True
        )
        (status,) = router.spend()
    assert all(isinstance(r, Completion) for r in results)
    slack_cost = (ALLOWED_OUT - MAX_TOKENS) * PRICE.output_per_mtok / Decimal(10**6)
    assert status.spent_usd <= limit + n * slack_cost
    assert status.spent_usd == n * cost_usd(Usage(EST_IN, ALLOWED_OUT), PRICE)


@pytest.mark.parametrize(("overhead", "sent"), [(0, True), (130, False)])
async def test_the_input_overhead_is_drawn_from_tokens_per_minute(
    tmp_path: Path, upstream: Upstream, overhead: int, sent: bool
) -> None:
    """tokens_per_minute admits estimate + overhead + max_tokens: a request that fits
    without the provider's hidden prompt does not fit with it, and is not sent."""
    usage = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    upstream.route(CHAT, reply(200, body(usage)))
    tpm = EST_IN + MAX_TOKENS + 50
    async with router_for(tmp_path, upstream, overhead=overhead, tpm=tpm) as router:
        outcome = await asyncio.gather(router.complete("r", VARS), return_exceptions=True)
    assert isinstance(outcome[0], Completion) is sent
    assert len(upstream.requests) == int(sent)
