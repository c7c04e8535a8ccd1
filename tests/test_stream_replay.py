"""Every recorded stream, replayed through the Router by a local server in random pieces.

The expected text and usage are computed here from the recording's JSON, with
no adapter code, so a bug shared by an adapter and the router cannot hide.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.budget import cost_usd
from router.config import Price
from router.estimate import estimate_text_tokens, estimate_tokens
from router.router import Router
from router.types import Completion, Message, Usage
from tests.fixtures_util import Fixture, fixture_ids, load, stream_events
from tests.routerkit import make_config
from tests.upstream import Upstream, load_recording, stream

# Recordings of a stream that ends in an error event: the fallback tests replay those.
_ERROR_STREAMS = {
    "anthropic-messages-200-sse-error-overloaded",
    "groq-chat-200-sse-midstream-error-event",
}
# Every recorded stream of a protocol the router speaks.
REPLAYS = sorted(i for i in fixture_ids(streaming=True) if i not in _ERROR_STREAMS)

PROMPT = "Say something."
PRICE = {
    "input_per_mtok": "1.25",
    "output_per_mtok": "10",
    "cached_input_per_mtok": "0.125",
    "cache_write_per_mtok": "2.5",
}
PRICE_MODEL = Price.model_validate({k: Decimal(v) for k, v in PRICE.items()})
# The adapter posts to <base_url>/chat/completions, /responses, /v1/messages, /api/chat,
# /models/m:streamGenerateContent or (Azure) /openai/deployments/m/chat/completions?...
_BASE_PATH = {
    "openai": "/v1",
    "openai_responses": "/v1",
    "anthropic": "",
    "gemini": "/v1beta",
    "ollama": "",
    "azure_openai": "",
}


def _config_yaml(kind: str, url: str) -> str:
    return json.dumps(
        {
            "providers": {
                "p": {
                    "kind": kind,
                    "base_url": url + _BASE_PATH[kind],
                    "models": {"m": {"price": PRICE}},
                }
            },
            "budgets": {"everything": {"limit_usd": 100, "period": "total"}},
            "routes": {"r": {"prompt": PROMPT, "fallback": ["p/m"]}},
        }
    )


# ------------------------------------------------------------ the expected answer


def expected_text(fx: Fixture) -> str:
    """The visible text of a recording, read straight from its JSON events."""
    parts: list[str] = []
    for event, data in stream_events(fx):
        payload = data.strip()
        if not payload or payload == "[DONE]":
            continue
        doc = json.loads(payload)
        if fx.kind == "ollama":
            parts.append((doc.get("message") or {}).get("content") or "")
        elif fx.kind == "anthropic":
            if event == "content_block_delta" and doc["delta"]["type"] == "text_delta":
                parts.append(doc["delta"]["text"])
            elif event == "content_block_start" and doc["content_block"]["type"] == "text":
                parts.append(doc["content_block"].get("text") or "")
        elif fx.kind == "openai_responses":
            if doc["type"] == "response.output_text.delta":
                parts.append(doc["delta"])
        elif fx.kind == "gemini":
            for c in doc.get("candidates") or []:
                for p in (c.get("content") or {}).get("parts") or []:
                    parts.append("" if p.get("thought") else p.get("text") or "")
        else:
            for choice in doc.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


def expected_usage(fx: Fixture) -> Usage | None:
    """The final usage a recording reports, in the router's convention (None: none sent).

    OpenAI-compatible: output = total - prompt (xAI leaves reasoning out of
    completion_tokens but not out of total_tokens). Anthropic: input counts cache
    reads and writes; the last ``message_delta`` has the final output count.
    Ollama: the ``done`` line's counts. Responses API: ``response.completed``
    carries the whole response, whose usage already counts cached input inside
    input and reasoning inside output.
    """
    found: Usage | None = None
    for event, data in stream_events(fx):
        payload = data.strip()
        if not payload or payload == "[DONE]":
            continue
        doc = json.loads(payload)
        if fx.kind == "ollama":
            if doc.get("done"):
                found = Usage(doc.get("prompt_eval_count", 0), doc.get("eval_count", 0))
        elif fx.kind == "anthropic":
            u = doc["message"]["usage"] if event == "message_start" else doc.get("usage")
            if u is None:
                continue
            read = u.get("cache_read_input_tokens") or 0
            write = u.get("cache_creation_input_tokens") or 0
            found = Usage(
                input_tokens=u.get("input_tokens", 0) + read + write,
                output_tokens=u.get("output_tokens", 0),
                cached_input_tokens=read,
                cache_write_tokens=write,
            )
        elif fx.kind == "openai_responses":
            if doc["type"] == "response.completed":
                u = doc["response"]["usage"]
                found = Usage(
                    input_tokens=u["input_tokens"],
                    output_tokens=u["output_tokens"],
                    cached_input_tokens=u["input_tokens_details"]["cached_tokens"],
                    reasoning_tokens=u["output_tokens_details"]["reasoning_tokens"],
                )
        elif fx.kind == "gemini":
            u = doc.get("usageMetadata") or {}
            if "promptTokenCount" in u:  # cumulative: the last chunk's counts are final
                thoughts = u.get("thoughtsTokenCount", 0)
                found = Usage(
                    input_tokens=u["promptTokenCount"],
                    output_tokens=u.get("candidatesTokenCount", 0) + thoughts,
                    cached_input_tokens=u.get("cachedContentTokenCount", 0),
                    reasoning_tokens=thoughts,
                )
        elif doc.get("usage"):
            u = doc["usage"]
            details = u.get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0
            reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
            found = Usage(
                input_tokens=u["prompt_tokens"],
                output_tokens=u["total_tokens"] - u["prompt_tokens"],
                cached_input_tokens=cached,
                reasoning_tokens=reasoning,
            )
    return found


def test_every_stream_recording_is_replayed() -> None:
    """The corpus covers each stream wire format, and an SSE comment."""
    kinds = {load(i).kind for i in REPLAYS}
    assert kinds == {"openai", "openai_responses", "anthropic", "gemini", "ollama", "azure_openai"}
    families = {load(i).family for i in REPLAYS}
    assert {"openai", "deepseek", "xai", "anthropic", "ollama", "openai-compatible"} <= families
    assert {"openai-responses", "xai-responses", "azure-openai", "gemini"} <= families
    assert any(load(i).body.startswith(b":") for i in REPLAYS)  # OpenRouter's comment line


def test_expected_values_are_not_trivial() -> None:
    """The independent reading finds text in most recordings and usage in all but two
    (their requests asked for none)."""
    with_text = [i for i in REPLAYS if expected_text(load(i))]
    # Tool-call-only answers (one of them a Responses stream), and one that spent every
    # token on reasoning, have none.
    assert len(with_text) == len(REPLAYS) - 5
    assert [i for i in REPLAYS if expected_usage(load(i)) is None] == [
        "azure-chat-200-sse-deployment-content-filter",
        "ollama-local-openai-compat-200-sse",
    ]


# -------------------------------------------------------------------- the replay


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(body)}), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def cut_points(draw: st.DrawFn, size: int) -> list[int]:
    """Where to cut a body: a few random offsets, or a regular chunk size, or both."""
    cuts = draw(st.lists(st.integers(1, size - 1), max_size=40))
    least = max(1, size // 400)  # at most ~400 pieces, so a 100 kB body stays quick
    step = draw(st.none() | st.integers(least, max(least, 97)))
    if step is not None:
        cuts += range(step, size, step)
    return cuts


async def _replay(fx: Fixture, pieces: list[bytes]) -> tuple[list[str], Completion, Router]:
    status, headers, _ = load_recording(f"{fx.family}/{fx.id}.meta.json")
    async with Upstream() as up:
        up.queue(stream(pieces, status=status, headers=headers))
        with tempfile.TemporaryDirectory() as tmp:
            config = make_config(Path(tmp), _config_yaml(fx.kind, up.url))
        async with Router(config) as router:
            deltas: list[str] = []
            async with router.stream("r") as s:
                async for delta in s:
                    deltas.append(delta)
            assert s.completion is not None
            assert router.reserved_usd == 0
            spent = router.spend()[0].spent_usd
            assert spent == s.completion.cost_usd
        return deltas, s.completion, router


@pytest.mark.parametrize("fixture_id", REPLAYS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_replayed_stream_gives_the_recorded_text_usage_and_cost(
    fixture_id: str, data: st.DataObject
) -> None:
    fx = load(fixture_id)
    cuts = data.draw(cut_points(len(fx.body)), label="cuts")
    deltas, completion, _ = asyncio.run(_replay(fx, _pieces(fx.body, cuts)))
    text = expected_text(fx)
    assert "".join(deltas) == text
    assert all(deltas), "an empty delta was yielded"
    assert completion.text == text
    usage = expected_usage(fx)
    if usage is None:  # the provider sent none: estimated, and marked so
        est_in = estimate_tokens([Message("user", PROMPT)])
        usage = Usage(est_in, estimate_text_tokens(text), estimated=True)
    assert completion.usage == usage
    assert completion.cost_usd == cost_usd(usage, PRICE_MODEL) > 0
    assert completion.provider == "p" and completion.route == "r"
    [attempt] = completion.attempts
    assert attempt.outcome == "ok" and attempt.cost_usd == completion.cost_usd
    assert attempt.ttft_s is not None or not text
