"""Cost from reported usage: every recorded success fixture, priced by hand.

Usage is read from the fixture bodies with plain ``json`` here (the adapters are
tested on their own) and normalised to the router's one convention: input
counts every prompt token, cached or not; output includes reasoning. The
expected figures below were computed by hand from each fixture's usage and the
test prices in ``PRICES``; docs/money.md shows the arithmetic for one fixture
per provider.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.budget import cost_usd, worst_case_usd
from router.config import Price
from router.types import Usage

# The recorded corpus of real provider responses, with its sources (tests/fixtures/INDEX.md).
FIXTURES = Path(__file__).parent / "fixtures"


def _p(
    i: str,
    o: str,
    cached: str | None = None,
    write: str | None = None,
    per_call: dict[str, str] | None = None,
) -> Price:
    return Price(
        input_per_mtok=Decimal(i),
        output_per_mtok=Decimal(o),
        cached_input_per_mtok=None if cached is None else Decimal(cached),
        cache_write_per_mtok=None if write is None else Decimal(write),
        per_call={k: Decimal(v) for k, v in (per_call or {}).items()},
    )


# Test prices, USD per million tokens (input, output, cached input, cache write).
# xAI's are the ones its own cost_in_usd_ticks implies (see test_xai_billed_cost).
PRICES = {
    "openai": _p("1.25", "10", cached="0.125"),
    "deepseek": _p("0.28", "0.42", cached="0.028"),
    "anthropic": _p("1", "5", cached="0.10", write="1.25"),
    "grok-4.3": _p("1.25", "2.50", cached="0.20"),
    # Responses API: tokens as above, and server-tool calls per call (xAI: $5 per
    # 1000 searches, what its cost_in_usd_ticks implies; OpenAI: $10 per 1000).
    "openai-responses": _p("1.25", "10", cached="0.125", per_call={"web_search": "0.01"}),
    "grok-4.3-responses": _p(
        "1.25", "2.50", cached="0.20", per_call={"web_search": "0.005", "x_search": "0.005"}
    ),
    "grok-4-1-fast-non-reasoning": _p("0.20", "0.50", cached="0.05"),
    "grok-2": _p("2", "10"),
    "openrouter": _p("0", "0"),  # a ':free' model; OpenRouter itself reports cost 0
    "gemini": _p("0.30", "2.50", cached="0.03"),
    "ollama": _p("0.10", "0.40"),  # as if a paid host served it; local Ollama is free
    "azure": _p("0.15", "0.60", cached="0.075"),
}

# fixture id -> (price key, (input, cached, cache write, output) after normalising, cost)
EXPECTED: dict[str, tuple[str, tuple[int, int, int, int], str]] = {
    # OpenAI: cached_tokens is INSIDE prompt_tokens; reasoning INSIDE completion_tokens.
    "openai-chat-200-json-basic-reasoning-usage": ("openai", (13, 0, 0, 209), "0.00210625"),
    "openai-chat-200-json-cached-tokens": ("openai", (1144, 1024, 0, 2), "0.000298"),
    "openai-chat-200-json-parallel-tool-calls": ("openai", (194, 0, 0, 191), "0.0021525"),
    "openai-chat-200-json-json-schema": ("openai", (49, 0, 0, 213), "0.00219125"),
    "openai-chat-200-json-image-input": ("openai", (39, 0, 0, 504), "0.00508875"),
    "openai-chat-200-json-wire": ("openai", (13, 0, 0, 31), "0.00032625"),
    "openai-chat-200-sse-basic": ("openai", (13, 0, 0, 206), "0.00207625"),
    "openai-chat-200-sse-cached-tokens": ("openai", (1144, 1024, 0, 3), "0.000308"),
    "openai-chat-200-sse-include-usage-reasoning-length": (
        "openai",
        (12, 0, 0, 100),
        "0.001015",
    ),
    "openai-chat-200-sse-include-usage-wire": ("openai", (14, 0, 0, 13), "0.0001475"),
    "openai-chat-200-sse-tool-calls": ("openai", (54, 0, 0, 20), "0.0002675"),
    # DeepSeek: prompt_cache_hit_tokens + prompt_cache_miss_tokens == prompt_tokens.
    "deepseek-chat-200-json-basic": ("deepseek", (12, 0, 0, 1), "0.00000378"),
    "deepseek-chat-200-json-cache-hit": ("deepseek", (359, 256, 0, 25), "0.000046508"),
    "deepseek-chat-200-json-reasoner-long": ("deepseek", (48, 0, 0, 5074), "0.00214452"),
    "deepseek-chat-200-json-reasoning-content": ("deepseek", (97, 0, 0, 17), "0.0000343"),
    "deepseek-chat-200-sse-basic": ("deepseek", (11, 0, 0, 8), "0.00000644"),
    "deepseek-chat-200-sse-reasoner": ("deepseek", (6, 0, 0, 212), "0.00009072"),
    "deepseek-chat-200-sse-tool-calls-cache-hit": (
        "deepseek",
        (496, 384, 0, 31),
        "0.000055132",
    ),
    # Anthropic: input_tokens EXCLUDES cache reads and cache writes; we add them.
    "anthropic-messages-200-json-basic": ("anthropic", (16, 0, 0, 13), "0.000081"),
    "anthropic-messages-200-json-after-tool-result": ("anthropic", (748, 0, 0, 55), "0.001023"),
    "anthropic-messages-200-sse-after-tool-result": ("anthropic", (748, 0, 0, 49), "0.000993"),
    "anthropic-messages-200-json-image-input": ("anthropic", (43, 0, 0, 132), "0.000703"),
    "anthropic-messages-200-json-cache-read": ("anthropic", (7361, 7351, 0, 4), "0.0007651"),
    "anthropic-messages-200-json-cache-write": ("anthropic", (7361, 0, 7351, 4), "0.00921875"),
    "anthropic-messages-200-json-parallel-tool-use": ("anthropic", (701, 0, 0, 98), "0.001191"),
    "anthropic-messages-200-json-structured-output": ("anthropic", (181, 0, 0, 12), "0.000241"),
    "anthropic-messages-200-json-thinking": ("anthropic", (80, 0, 0, 755), "0.003855"),
    "anthropic-messages-200-json-wire": ("anthropic", (13, 0, 0, 35), "0.000188"),
    "anthropic-messages-200-sse-cache-read": ("anthropic", (1220, 1217, 0, 6), "0.0001547"),
    "anthropic-messages-200-sse-text-ping-padding": ("anthropic", (17, 0, 0, 10), "0.000067"),
    "anthropic-messages-200-sse-thinking": ("anthropic", (46, 0, 0, 133), "0.000711"),
    "anthropic-messages-200-sse-tool-use": ("anthropic", (543, 0, 0, 40), "0.000743"),
    "anthropic-messages-200-sse-wire": ("anthropic", (15, 0, 0, 13), "0.00008"),
    # xAI: reasoning_tokens are BESIDE completion_tokens (total = prompt+completion+reasoning).
    "xai-chat-200-json-basic": ("grok-4.3", (137, 128, 0, 117), "0.00032935"),
    "xai-chat-200-json-parallel-tool-calls": (
        "grok-4-1-fast-non-reasoning",
        (461, 158, 0, 58),
        "0.0000975",
    ),
    "xai-chat-200-json-reasoning-content": ("grok-4.3", (173, 128, 0, 2807), "0.00709935"),
    "xai-chat-200-sse-basic": ("grok-4.3", (137, 128, 0, 133), "0.00036935"),
    "xai-chat-200-sse-grok-2": ("grok-2", (9, 0, 0, 10), "0.000118"),
    # Responses API (OpenAI and xAI alike): cached_tokens INSIDE input_tokens, reasoning
    # INSIDE output_tokens; each server-tool call at its per-call price.
    "openai-responses-200-json-basic": ("openai-responses", (13, 0, 0, 157), "0.00158625"),
    "openai-responses-200-json-cached-tokens": (
        "openai-responses",
        (4565, 4352, 0, 5),
        "0.00086025",
    ),
    "openai-responses-200-json-function-call": (
        "openai-responses",
        (87, 0, 0, 211),
        "0.00221875",
    ),
    "openai-responses-200-json-after-function-call-output": (
        "openai-responses",
        (330, 0, 0, 259),
        "0.0030025",
    ),
    # 10767.5 + 950 per M = $0.0117175, plus one web search at $0.01.
    "openai-responses-200-json-web-search-url-citation": (
        "openai-responses",
        (8614, 0, 0, 95),
        "0.0217175",
    ),
    "openai-responses-200-json-json-schema": ("openai-responses", (45, 0, 0, 752), "0.00757625"),
    "openai-responses-200-json-image-input": ("openai-responses", (38, 0, 0, 729), "0.0073375"),
    "openai-responses-200-sse-basic": ("openai-responses", (13, 0, 0, 284), "0.00285625"),
    "openai-responses-200-sse-function-call": (
        "openai-responses",
        (87, 0, 0, 339),
        "0.00349875",
    ),
    "xai-responses-200-json-basic": ("grok-4.3-responses", (204, 128, 0, 80), "0.0003206"),
    "xai-responses-200-json-function-call": (
        "grok-4.3-responses",
        (340, 192, 0, 127),
        "0.0005409",
    ),
    # 6150.85 per M = $0.00615085, plus two web searches at $0.005.
    "xai-responses-200-json-web-search-citations": (
        "grok-4.3-responses",
        (5913, 2048, 0, 364),
        "0.01615085",
    ),
    "xai-responses-200-sse-reasoning-summary": (
        "grok-4.3-responses",
        (199, 128, 0, 160),
        "0.00051435",
    ),
    "openrouter-chat-200-sse-processing-comment": ("openrouter", (586, 0, 0, 3), "0"),
    # Gemini: thoughtsTokenCount is BESIDE candidatesTokenCount (output = their sum);
    # cachedContentTokenCount is INSIDE promptTokenCount.
    "gemini-generatecontent-200-json": ("gemini", (10, 0, 0, 31), "0.0000805"),
    "gemini-generatecontent-200-json-cached-content": (
        "gemini",
        (9622, 9609, 0, 171),
        "0.00071967",
    ),
    "gemini-generatecontent-200-json-function-call": ("gemini", (103, 0, 0, 136), "0.0003709"),
    "gemini-generatecontent-200-json-thought-parts-function-call": (
        "gemini",
        (120, 0, 0, 164),
        "0.000446",
    ),
    "gemini-generatecontent-200-json-thoughts-token-count": (
        "gemini",
        (13, 0, 0, 175),
        "0.0004414",
    ),
    # Blocked by its safety settings: the prompt was still counted, no output.
    "gemini-generatecontent-200-json-safety-blocked-candidate": (
        "gemini",
        (14, 0, 0, 0),
        "0.0000042",
    ),
    "gemini-streamgeneratecontent-200-sse": ("gemini", (8, 0, 0, 27), "0.0000699"),
    "gemini-streamgeneratecontent-200-sse-thoughts-token-count": (
        "gemini",
        (13, 0, 0, 208),
        "0.0005239",
    ),
    # Ollama: prompt_eval_count / eval_count; prompt_eval_count is omitted when the
    # whole prompt came from Ollama's KV cache (nothing evaluated).
    "ollama-chat-200-json-basic": ("ollama", (31, 0, 0, 46), "0.0000215"),
    "ollama-chat-200-json-missing-prompt-eval-count": ("ollama", (0, 0, 0, 79), "0.0000316"),
    "ollama-chat-200-json-tool-calls-thinking": ("ollama", (292, 0, 0, 143), "0.0000864"),
    "ollama-chat-200-ndjson-stream-ruby": ("ollama", (31, 0, 0, 51), "0.0000235"),
    "ollama-chat-200-ndjson-stream-thinking": ("ollama", (21, 0, 0, 889), "0.0003577"),
    "ollama-chat-200-ndjson-stream-wire": ("ollama", (16, 0, 0, 22), "0.0000104"),
    # Azure OpenAI: OpenAI's usage (reasoning inside completion_tokens: 4416 of 4600).
    "azure-chat-200-json-deployment-content-filter-results": ("azure", (18, 0, 0, 20), "0.0000147"),
    "azure-foundry-chat-200-json-content-filter-results": (
        "azure",
        (50, 0, 0, 4600),
        "0.0027675",
    ),
    "azure-chat-200-sse-deployment-usage": ("azure", (12, 0, 0, 24), "0.0000162"),
}

# 200 responses that carry no usage, and why.
NO_USAGE = {
    "anthropic-messages-200-sse-error-overloaded": "error event before message_start",
    "groq-chat-200-sse-midstream-error-event": "stream ends in an error event",
    "ollama-local-openai-compat-200-sse": "request did not ask for include_usage",
    # api-version 2023-07-01-preview predates stream_options (include_usage).
    "azure-chat-200-sse-deployment-content-filter": "api-version without include_usage",
    "ollama-tags-200-json": "a model listing, not a completion",
    "vertex-generatecontent-200-json-prompt-blocked-model-armor": (
        "prompt blocked: usageMetadata has no count (only trafficType)"
    ),
}


def _manifest() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((FIXTURES / "manifest.json").read_text())
    return entries


def _entry(fixture_id: str) -> dict[str, Any]:
    return next(e for e in _manifest() if e["id"] == fixture_id)


def _events(body: str) -> list[dict[str, Any]]:
    """JSON objects of an SSE body's data lines, or of an NDJSON body's lines."""
    out = []
    for line in body.splitlines():
        text = line.strip()
        if text.startswith("data:"):
            text = text[5:].strip()
        if text.startswith("{"):
            out.append(json.loads(text))
    return out


def raw_usage(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The provider's final usage object, as sent (merged over a stream's events)."""
    body = (FIXTURES / entry["body"]).read_text(encoding="utf-8")
    api = entry["api"]
    docs = [json.loads(body)] if not entry["streaming"] else _events(body)
    usage: dict[str, Any] = {}
    for doc in docs:
        if api == "anthropic-messages":
            if doc.get("type") == "message_start":
                usage.update(doc["message"]["usage"])
            elif doc.get("type") == "message_delta" and doc.get("usage"):
                usage.update(doc["usage"])  # cumulative counts; later wins
            elif "usage" in doc and not entry["streaming"]:
                usage.update(doc["usage"])
        elif api == "ollama-chat":
            if doc.get("done"):
                usage = {k: v for k, v in doc.items() if k in ("prompt_eval_count", "eval_count")}
        elif api.startswith("gemini"):
            counts = doc.get("usageMetadata") or {}
            usage = {k: v for k, v in counts.items() if k.endswith("Count")} or usage
        elif api.endswith("-responses"):
            # A reply, or a stream's response.completed event (the whole response).
            resp = doc.get("response", doc) if entry["streaming"] else doc
            if resp.get("usage"):
                # OpenAI counts its server-tool requests beside usage.
                usage = {**resp["usage"], "tool_usage": resp.get("tool_usage") or {}}
        else:
            usage = doc.get("usage") or usage
    return usage or None


def normalise(api: str, u: dict[str, Any]) -> Usage:
    """Map one provider's usage to the router's convention (what the adapters must do)."""
    if api == "anthropic-messages":
        read, written = u["cache_read_input_tokens"], u["cache_creation_input_tokens"]
        return Usage(
            input_tokens=u["input_tokens"] + read + written,
            cached_input_tokens=read,
            cache_write_tokens=written,
            output_tokens=u["output_tokens"],
        )
    if api == "ollama-chat":
        return Usage(input_tokens=u.get("prompt_eval_count", 0), output_tokens=u["eval_count"])
    if api.startswith("gemini"):
        return Usage(
            input_tokens=u["promptTokenCount"],
            cached_input_tokens=u.get("cachedContentTokenCount", 0),
            output_tokens=u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0),
        )
    if api.endswith("-responses"):
        calls = {
            k.removesuffix("_calls"): n
            for k, n in (u.get("server_side_tool_usage_details") or {}).items()
            if n
        }
        searches = (u["tool_usage"].get("web_search") or {}).get("num_requests", 0)
        if searches:
            calls["web_search"] = searches
        return Usage(
            input_tokens=u["input_tokens"],
            cached_input_tokens=u["input_tokens_details"].get("cached_tokens", 0),
            cache_write_tokens=u["input_tokens_details"].get("cache_write_tokens", 0),
            output_tokens=u["output_tokens"],
            server_tool_calls=calls,
        )
    # OpenAI Chat Completions and compatibles. total - prompt is the output that
    # was billed whether reasoning is inside completion_tokens (OpenAI, DeepSeek)
    # or beside it (xAI).
    details = u.get("prompt_tokens_details") or {}
    cached = u.get("prompt_cache_hit_tokens", details.get("cached_tokens", 0))
    return Usage(
        input_tokens=u["prompt_tokens"],
        cached_input_tokens=cached,
        output_tokens=u["total_tokens"] - u["prompt_tokens"],
    )


def test_every_200_fixture_is_priced_or_known_to_lack_usage() -> None:
    """No success fixture is silently left out of the cost test."""
    ids = {e["id"] for e in _manifest() if e["status"] == 200}
    assert ids == set(EXPECTED) | set(NO_USAGE)
    assert not set(EXPECTED) & set(NO_USAGE)
    for fixture_id in NO_USAGE:
        assert raw_usage(_entry(fixture_id)) is None, fixture_id


@pytest.mark.parametrize("fixture_id", sorted(EXPECTED))
def test_fixture_cost_matches_hand_computed(fixture_id: str) -> None:
    """Normalised usage and cost of each success fixture equal the hand-computed figures."""
    price_key, (inp, cached, written, out), expected = EXPECTED[fixture_id]
    entry = _entry(fixture_id)
    u = raw_usage(entry)
    assert u is not None
    usage = normalise(entry["api"], u)
    got = (
        usage.input_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.output_tokens,
    )
    assert got == (inp, cached, written, out)
    cost = cost_usd(usage, PRICES[price_key])
    assert cost == Decimal(expected)  # exact: no rounding anywhere


def test_openai_cached_tokens_are_inside_prompt_tokens() -> None:
    """OpenAI: total = prompt + completion, cached <= prompt, reasoning <= completion."""
    for fid in ("openai-chat-200-json-cached-tokens", "openai-chat-200-json-basic-reasoning-usage"):
        u = raw_usage(_entry(fid))
        assert u is not None
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        assert u["prompt_tokens_details"]["cached_tokens"] <= u["prompt_tokens"]
        assert u["completion_tokens_details"]["reasoning_tokens"] <= u["completion_tokens"]


def test_deepseek_hit_plus_miss_is_prompt_tokens() -> None:
    """DeepSeek: hit + miss = prompt_tokens, and its cached_tokens mirrors the hits."""
    for e in _manifest():
        if e["provider"] != "deepseek" or e["status"] != 200:
            continue
        u = raw_usage(e)
        assert u is not None
        assert u["prompt_cache_hit_tokens"] + u["prompt_cache_miss_tokens"] == u["prompt_tokens"]
        assert u["prompt_tokens_details"]["cached_tokens"] == u["prompt_cache_hit_tokens"]


def test_gemini_thoughts_are_beside_candidates_and_cache_inside_prompt() -> None:
    """Gemini: total = prompt + candidates + thoughts in every recording with counts,
    and the cached count is a part of the prompt count."""
    checked = 0
    for e in _manifest():
        if e["family"] != "gemini" or e["status"] != 200:
            continue
        u = raw_usage(e)
        if u is None:
            continue
        parts = u["promptTokenCount"] + u.get("candidatesTokenCount", 0)
        assert u["totalTokenCount"] == parts + u.get("thoughtsTokenCount", 0), e["id"]
        assert u.get("cachedContentTokenCount", 0) <= u["promptTokenCount"]
        checked += 1
    assert checked == 8


def test_anthropic_input_tokens_exclude_cache() -> None:
    """Anthropic: the same 7,361-token prompt reports input_tokens=10 when written and
    when read, so cache tokens are beside input_tokens, not inside it."""
    write = raw_usage(_entry("anthropic-messages-200-json-cache-write"))
    read = raw_usage(_entry("anthropic-messages-200-json-cache-read"))
    assert write is not None
    assert read is not None
    assert write["input_tokens"] == read["input_tokens"] == 10
    assert write["cache_creation_input_tokens"] == read["cache_read_input_tokens"] == 7351


def test_xai_reasoning_is_beside_completion_and_billed_as_output() -> None:
    """xAI: total = prompt + completion + reasoning, and our cost equals the cost xAI
    itself reports (cost_in_usd_ticks, 1 tick = 1e-10 USD) to the tick."""
    for fid in (
        "xai-chat-200-json-basic",
        "xai-chat-200-json-parallel-tool-calls",
        "xai-chat-200-json-reasoning-content",
        "xai-chat-200-sse-basic",
    ):
        entry = _entry(fid)
        u = raw_usage(entry)
        assert u is not None
        reasoning = u["completion_tokens_details"]["reasoning_tokens"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] + reasoning
        price = PRICES[EXPECTED[fid][0]]
        billed = Decimal(u["cost_in_usd_ticks"]).scaleb(-10)
        assert cost_usd(normalise(entry["api"], u), price) == billed


def test_xai_responses_cost_with_searches_equals_the_billed_ticks() -> None:
    """xAI's Responses API: reasoning inside output_tokens, web searches at $0.005 a
    call; our cost equals cost_in_usd_ticks to the tick, searches included."""
    for fid in (i for i in EXPECTED if i.startswith("xai-responses-")):
        entry = _entry(fid)
        u = raw_usage(entry)
        assert u is not None
        usage = normalise(entry["api"], u)
        assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
        assert sum(usage.server_tool_calls.values()) == u["num_server_side_tools_used"]
        billed = Decimal(u["cost_in_usd_ticks"]).scaleb(-10)
        assert cost_usd(usage, PRICES["grok-4.3-responses"]) == billed, fid


def test_openrouter_reported_cost_agrees() -> None:
    """OpenRouter reports its own cost (0 for a :free model); ours agrees."""
    entry = _entry("openrouter-chat-200-sse-processing-comment")
    u = raw_usage(entry)
    assert u is not None
    assert Decimal(u["cost"]) == cost_usd(normalise(entry["api"], u), PRICES["openrouter"]) == 0


# --- cost_usd and worst_case_usd themselves ---------------------------------------


def test_missing_cache_prices_default_to_input_price() -> None:
    """Cached and cache-write tokens cost the input price when the YAML gives none."""
    price = _p("2", "8")
    usage = Usage(input_tokens=1000, cached_input_tokens=300, cache_write_tokens=200)
    assert cost_usd(usage, price) == Decimal("0.002")


def test_inconsistent_usage_is_refused() -> None:
    """Cache parts larger than the input they belong to are a bug, not a cost."""
    with pytest.raises(ValueError, match="inconsistent usage"):
        cost_usd(Usage(input_tokens=5, cached_input_tokens=6), _p("1", "1"))


def test_cost_is_exact_for_tiny_amounts() -> None:
    """One token at a sub-micro price is kept exactly, not rounded to zero."""
    assert cost_usd(Usage(output_tokens=1), _p("0", "0.0000001")) == Decimal("1E-13")


def test_worst_case_uses_input_and_max_tokens() -> None:
    """Worst case = estimated input x input price + max_tokens x output price."""
    assert worst_case_usd(1000, 500, _p("3", "15")) == Decimal("0.0105")


def test_worst_case_prices_input_at_cache_write_when_higher() -> None:
    """Anthropic bills cache writes above input; the worst case assumes the whole
    prompt may be written, so a settled cost never exceeds it on that account."""
    price = _p("1", "5", cached="0.10", write="1.25")
    assert worst_case_usd(7361, 4, price) == Decimal("0.00922125")
    actual = cost_usd(Usage(input_tokens=7361, cache_write_tokens=7351, output_tokens=4), price)
    assert actual <= worst_case_usd(7361, 4, price)


_prices = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
_tokens = st.integers(min_value=0, max_value=10**7)


@given(
    i=_prices,
    o=_prices,
    c=_prices,
    w=_prices,
    uncached=_tokens,
    cached=_tokens,
    written=_tokens,
    out=_tokens,
)
def test_cost_equals_rational_arithmetic(
    i: Decimal,
    o: Decimal,
    c: Decimal,
    w: Decimal,
    uncached: int,
    cached: int,
    written: int,
    out: int,
) -> None:
    """cost_usd is the exact rational figure, and never above the worst case when
    the input and output counts stay within what was reserved."""
    price = Price(
        input_per_mtok=i, output_per_mtok=o, cached_input_per_mtok=c, cache_write_per_mtok=w
    )
    usage = Usage(
        input_tokens=uncached + cached + written,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=out,
    )
    exact = (
        Fraction(uncached) * Fraction(i)
        + Fraction(cached) * Fraction(c)
        + Fraction(written) * Fraction(w)
        + Fraction(out) * Fraction(o)
    ) / 10**6
    cost = cost_usd(usage, price)
    assert Fraction(cost) == exact
    assert cost <= worst_case_usd(usage.input_tokens, out, price)
