"""kind: gemini end to end: Router.from_yaml, complete(), stream(), tools and health
against a server on 127.0.0.1 replaying real recorded Gemini responses.

The expected numbers are read by hand from the recorded bodies: usage in the
router's convention (thoughts beside candidates, so output is their sum; cached
inside the prompt) and cost at the YAML's price.
"""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from pathlib import Path

import pytest

from router import (
    AllProvidersFailedError,
    ContentFilterError,
    Router,
    Tool,
    Usage,
)
from router.types import Message, ToolResult
from tests.routerkit import write_config
from tests.upstream import Upstream, replay, reply, stream

MODEL = "gemini-2.5-flash"
CHAT = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
# USD per million tokens: input, cached input, output (gemini-2.5-flash's paid tier).
PRICE = "{input_per_mtok: 0.30, cached_input_per_mtok: 0.03, output_per_mtok: 2.50}"
WEATHER = Tool(
    "weather",
    "Current weather at a place",
    {
        "type": "object",
        "properties": {"latitude": {"type": "string"}, "longitude": {"type": "string"}},
        "required": ["latitude", "longitude"],
    },
)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "AIzaSy-canary-" + secrets.token_hex(16)
    monkeypatch.setenv("GEMINI_TEST_KEY", value)
    return value


def config(tmp_path: Path, url: str, model: str = MODEL) -> Path:
    return write_config(
        tmp_path,
        f"""\
providers:
  g:
    kind: gemini
    base_url: {url}/v1beta
    api_key_env: GEMINI_TEST_KEY
    extra:
      safetySettings: [{{category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_ONLY_HIGH}}]
    models:
      {model}: {{price: {PRICE}}}
settings: {{retries: 0}}
budgets:
  all: {{limit_usd: 10}}
routes:
  r:
    system: "You are terse."
    prompt: "Say {{{{ word }}}}"
    max_tokens: 4096
    fallback: ["g/{model}"]
""",
    )


def cost(usage: Usage) -> Decimal:
    uncached = usage.input_tokens - usage.cached_input_tokens
    return (
        uncached * Decimal("0.30")
        + usage.cached_input_tokens * Decimal("0.03")
        + usage.output_tokens * Decimal("2.50")
    ) / 1_000_000


def no_key_in_urls(up: Upstream, key: str) -> None:
    """The key rides in x-goog-api-key on every request and in no URL."""
    assert up.requests
    for request in up.requests:
        assert key not in request.target and "key=" not in request.target
        assert request.headers["x-goog-api-key"] == key
        assert "authorization" not in request.headers


@pytest.mark.parametrize("model", [MODEL, f"models/{MODEL}"])
async def test_complete_gives_exact_text_usage_and_cost(
    tmp_path: Path, upstream: Upstream, key: str, model: str
) -> None:
    """gemini-generatecontent-200-json-cached-content: 9609 of the 9622 prompt tokens
    cached, 35 candidates + 136 thoughts out. The model may be written with Gemini's
    ``models/`` prefix: the same URL."""
    upstream.route(CHAT, replay("gemini/gemini-generatecontent-200-json-cached-content.meta.json"))
    async with Router.from_yaml(config(tmp_path, upstream.url, model)) as router:
        result = await router.complete("r", {"word": "hi"}, deadline_s=5)
    usage = Usage(9622, 35 + 136, cached_input_tokens=9609, reasoning_tokens=136)
    assert result.text.startswith("The RubyLLM release engineering handbook describes")
    assert result.usage == usage and not usage.estimated
    assert result.cost_usd == cost(usage) == Decimal("0.00071967")
    assert result.finish_reason == "stop"
    assert result.response_id == "5b6FatW4CKyhnsEP-bGDwQE"
    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", CHAT)
    no_key_in_urls(upstream, key)
    assert request.json() == {
        "safetySettings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
        ],
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
        "generationConfig": {"maxOutputTokens": 4096},
    }


async def test_stream_gives_exact_text_usage_and_cost(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """gemini-streamgeneratecontent-200-sse-thoughts-token-count: two chunks, each with
    the cumulative usage; the last (with finishReason) ends the stream: 13 in,
    71 candidates + 137 thoughts out."""
    meta = "gemini/gemini-streamgeneratecontent-200-sse-thoughts-token-count.meta.json"
    upstream.route(STREAM, replay(meta, chunk_size=64))
    async with Router.from_yaml(config(tmp_path, upstream.url)) as router:
        deltas = []
        async with router.stream("r", {"word": "hi"}, deadline_s=5) as s:
            async for delta in s:
                deltas.append(delta)
        done = s.completion
        assert done is not None
    assert "".join(deltas) == done.text
    assert done.text.startswith("Let's think step-by-step:") and done.text.endswith("2 + 2 = 4.")
    usage = Usage(13, 71 + 137, reasoning_tokens=137)
    assert done.usage == usage
    assert done.cost_usd == cost(usage) == Decimal("0.0005239")
    assert done.finish_reason == "stop"
    (request,) = upstream.requests
    assert request.target == STREAM + "?alt=sse"
    no_key_in_urls(upstream, key)


async def test_a_tool_call_round_trips_through_the_router(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """The recorded call comes back as a ToolCall (call_0, its thoughtSignature kept);
    the next call sends it back with the tool's result as a functionResponse."""
    upstream.queue(replay("gemini/gemini-generatecontent-200-json-function-call.meta.json"))
    upstream.queue(replay("gemini/gemini-generatecontent-200-json.meta.json"))
    async with Router.from_yaml(config(tmp_path, upstream.url)) as router:
        first = await router.complete("r", {"word": "hi"}, tools=[WEATHER], deadline_s=5)
        (call,) = first.tool_calls
        assert (call.id, call.name) == ("call_0", "weather")
        assert call.arguments == {"latitude": "52.5200", "longitude": "13.4050"}
        assert call.signature is not None and call.signature.startswith("CsIEARFNMg8g")
        assert first.finish_reason == "tool_calls"
        assert first.usage == Usage(103, 30 + 106, reasoning_tokens=106)
        history = [
            Message("user", "Weather in Berlin?"),
            Message("assistant", first.tool_calls),
            Message("tool", [ToolResult(call.id, '{"temp_c": 15}')]),
        ]
        second = await router.complete(
            "r", {"word": "hi"}, messages=history, tools=[WEATHER], deadline_s=5
        )
    assert second.text == "2 + 2 = **4**"
    offered, answered = (r.json() for r in upstream.requests)
    assert offered["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Current weather at a place",
                    "parametersJsonSchema": WEATHER.parameters,
                }
            ]
        }
    ]
    assert offered["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    contents = answered["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "weather", "args": call.arguments},
                "thoughtSignature": call.signature,
            }
        ],
    }
    assert contents[2]["parts"][0] == {
        "functionResponse": {"name": "weather", "response": {"output": '{"temp_c": 15}'}}
    }
    no_key_in_urls(upstream, key)


async def test_a_streamed_tool_call_keeps_its_signature(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """A stream whose answer is a function call (sent whole in one chunk) ends with the
    call on the completion, its thoughtSignature kept. (Chunks built here: the recorded
    corpus has no streamed Gemini function call.)"""
    call = {
        "functionCall": {"name": "weather", "args": {"latitude": "1", "longitude": "2"}},
        "thoughtSignature": "c2lnbmF0dXJl",
    }
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "Checking."}], "role": "model"}}]},
        {
            "candidates": [{"content": {"parts": [call], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 50,
                "candidatesTokenCount": 12,
                "thoughtsTokenCount": 30,
            },
        },
    ]
    body = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks)
    upstream.route(STREAM, stream([body[:40], body[40:]]))
    async with Router.from_yaml(config(tmp_path, upstream.url)) as router:
        async with router.stream("r", {"word": "hi"}, tools=[WEATHER], deadline_s=5) as s:
            text = "".join([d async for d in s])
        done = s.completion
    assert done is not None and text == "Checking."
    (tool_call,) = done.tool_calls
    assert (tool_call.id, tool_call.name, tool_call.signature) == (
        "call_0",
        "weather",
        "c2lnbmF0dXJl",
    )
    assert done.finish_reason == "tool_calls"
    assert done.usage == Usage(50, 42, reasoning_tokens=30)
    no_key_in_urls(upstream, key)


async def test_a_safety_block_is_a_content_filter_error_on_the_attempt(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    upstream.route(
        CHAT, replay("gemini/gemini-generatecontent-200-json-safety-blocked-candidate.meta.json")
    )
    async with Router.from_yaml(config(tmp_path, upstream.url)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"word": "hi"}, deadline_s=5)
        (budget,) = router.spend()
    (attempt,) = info.value.attempts
    err = attempt.error
    assert isinstance(err, ContentFilterError)
    assert "finishReason: SAFETY" in str(err) and "HARM_CATEGORY_HATE_SPEECH LOW" in str(err)
    assert key not in str(err) and key not in repr(info.value)
    # The blocked answer's 14 prompt tokens are billed, as Google bills them.
    assert attempt.usage == Usage(14, 0) and err.usage == Usage(14, 0)
    assert attempt.cost_usd == cost(Usage(14, 0)) == budget.spent_usd > 0
    assert budget.reserved_usd == 0


async def test_health_lists_models_by_key_header_with_the_prefix_normalized(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """GET {base_url}/models with the key header; a configured ``gemini-2.5-flash``
    (or ``models/gemini-2.5-flash``) is found among ``models/...`` names."""
    listing = {
        "models": [
            {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash"},
            {"name": "models/gemini-2.5-pro"},
        ]
    }
    upstream.route("/v1beta/models", reply(200, listing))
    for model in (MODEL, f"models/{MODEL}"):
        async with Router.from_yaml(config(tmp_path, upstream.url, model)) as router:
            (report,) = await router.health(force=True)
        assert report.ok and report.missing_models == [], report
        assert report.url == f"GET {upstream.url}/v1beta/models"
    assert all(r.target == "/v1beta/models?pageSize=1000" for r in upstream.requests)
    no_key_in_urls(upstream, key)
    async with Router.from_yaml(config(tmp_path, upstream.url, "gemini-9-ultra")) as router:
        (report,) = await router.health(force=True)
    assert not report.ok
    assert report.missing_models == [
        "gemini-9-ultra (not listed by GET models for this key (see"
        " ai.google.dev/gemini-api/docs/models))"
    ]


async def test_health_with_a_refused_key_names_the_status(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    body = (
        Path(__file__).parent / "fixtures/gemini/gemini-generatecontent-400-invalid-key.body.json"
    )
    upstream.route("/v1beta/models", reply(400, body.read_bytes()))
    async with Router.from_yaml(config(tmp_path, upstream.url)) as router:
        (report,) = await router.health(force=True)
    assert not report.ok and report.reachable and report.status == 400
    assert report.error == "API key not valid. Please pass a valid API key."
    assert key not in json.dumps(report.error)


async def test_structured_output_asks_for_the_schema_and_checks_the_answer(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """An ``output=`` schema goes as responseMimeType + responseJsonSchema (json_schema,
    the kind's default mode); the JSON text of the answer comes back parsed. (A body
    built here: the recorded corpus has no Gemini structured-output reply.)"""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = {
        "candidates": [{"content": {"parts": [{"text": '{"n": 4}'}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 6},
    }
    upstream.route(CHAT, reply(200, body))
    async with Router.from_yaml(config(tmp_path, upstream.url)) as router:
        result = await router.complete("r", {"word": "hi"}, output=schema, deadline_s=5)
    assert result.output == {"n": 4}
    assert result.usage == Usage(20, 6)
    (request,) = upstream.requests
    assert request.json()["generationConfig"] == {
        "maxOutputTokens": 4096,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


async def test_a_stream_blocked_before_its_first_text_is_billed(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """A SAFETY chunk first: the stream fails over (content_filter) and the attempt is
    billed the prompt (an estimate: the stream never reached its final count)."""
    chunk = {
        "candidates": [
            {
                "finishReason": "SAFETY",
                "safetyRatings": [
                    {
                        "category": "HARM_CATEGORY_HATE_SPEECH",
                        "probability": "HIGH",
                        "blocked": True,
                    }
                ],
            }
        ],
        "usageMetadata": {"promptTokenCount": 14, "totalTokenCount": 14},
    }
    sse = {"content-type": "text/event-stream"}
    upstream.route(STREAM, reply(200, b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n", sse))

    async def read_all(router: Router) -> None:
        async with router.stream("r", {"word": "hi"}, deadline_s=5) as live:
            async for _ in live:
                pass

    async with Router.from_yaml(config(tmp_path, upstream.url)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await read_all(router)
        (budget,) = router.spend()
    (attempt,) = info.value.attempts
    assert isinstance(attempt.error, ContentFilterError)
    assert attempt.usage is not None and attempt.usage.input_tokens > 0
    assert attempt.cost_usd > 0 and budget.spent_usd == attempt.cost_usd
    assert budget.reserved_usd == 0
