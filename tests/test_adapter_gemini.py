"""Gemini generateContent adapter: exact requests, and synthetic bodies the recordings lack.

The recorded replies (text, usage, tool calls, blocks, errors) are covered by
tests/test_adapter_fixtures.py; here, what the recordings cannot show: the request
side, tool-call round trips, and the edge cases of the reply.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from router.conversation import streamed_calls
from router.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    ContextLengthError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    RequestError,
    ServerError,
)
from router.output import TOOL_NAME, OutputRequest, output_spec
from router.providers import build_adapter
from router.providers.error_body import error_from_response
from router.providers.gemini import GeminiAdapter
from router.tools import Tool, ToolSet
from router.types import Image, Message, Text, ToolCall, ToolResult, Usage
from tests.fixtures_util import load

KEY = "AIzaSy-test-0123456789abcdefghijklmnop"
MODEL = "gemini-2.5-flash"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@pytest.fixture
def adapter() -> GeminiAdapter:
    return GeminiAdapter("gemini", KEY, {"X-Trace": "1"})


def _reply(parts: list[dict[str, Any]], finish: str | None = "STOP", **extra: Any) -> bytes:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    doc = {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3},
        "responseId": "r1",
    }
    return json.dumps({**doc, **extra}).encode()


# -- requests ---------------------------------------------------------------------------


def test_key_goes_in_the_goog_header_and_never_in_the_path(adapter: GeminiAdapter) -> None:
    assert adapter.auth_headers() == {"x-goog-api-key": KEY, "X-Trace": "1"}
    for stream in (False, True):
        req = adapter.chat_request(MODEL, [Message("user", "hi")], {}, stream=stream)
        assert KEY not in req.path
        assert "key=" not in req.path
    assert KEY not in adapter.health_request().path
    assert KEY not in repr(adapter)
    assert GeminiAdapter("g", None).auth_headers() == {}


def test_request_paths_with_and_without_the_models_prefix(adapter: GeminiAdapter) -> None:
    plain = adapter.chat_request(MODEL, [Message("user", "hi")], {})
    prefixed = adapter.chat_request(f"models/{MODEL}", [Message("user", "hi")], {})
    assert plain.method == "POST"
    assert plain.path == prefixed.path == f"/models/{MODEL}:generateContent"
    streamed = adapter.chat_request(MODEL, [Message("user", "hi")], {}, stream=True)
    assert streamed.path == f"/models/{MODEL}:streamGenerateContent?alt=sse"
    assert plain.json is not None and "model" not in plain.json


def test_a_model_name_stays_one_path_segment(adapter: GeminiAdapter) -> None:
    req = adapter.chat_request("../tunedModels/x y", [Message("user", "hi")], {})
    assert req.path == "/models/..%2FtunedModels%2Fx%20y:generateContent"


def test_system_contents_and_generation_config(adapter: GeminiAdapter) -> None:
    safety = [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}]
    params = {
        "max_tokens": 256,
        "temperature": 0.2,
        "stop": "END",
        "topP": 0.9,
        "thinkingConfig": {"thinkingBudget": 0},
        "generationConfig": {"seed": 7, "maxOutputTokens": 99999},
        "safetySettings": safety,
        "cachedContent": "cachedContents/abc",
    }
    messages = [
        Message("system", "Be terse."),
        Message("system", "Answer in English."),
        Message("user", "hi"),
        Message("assistant", "hello"),
        Message("user", "and?"),
    ]
    body = adapter.chat_request(MODEL, messages, params).json
    assert body == {
        "safetySettings": safety,
        "cachedContent": "cachedContents/abc",
        "systemInstruction": {"parts": [{"text": "Be terse.\n\nAnswer in English."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "and?"}]},
        ],
        "generationConfig": {
            "seed": 7,
            # The router's max_tokens wins over a generationConfig of the YAML's: the
            # budget reserved for it.
            "maxOutputTokens": 256,
            "topP": 0.9,
            "thinkingConfig": {"thinkingBudget": 0},
            "stopSequences": ["END"],
            "temperature": 0.2,
        },
    }


def test_a_generation_config_that_is_not_a_mapping_is_a_bad_request(
    adapter: GeminiAdapter,
) -> None:
    with pytest.raises(BadRequestError, match="generationConfig must be a mapping, not list"):
        adapter.chat_request(MODEL, [Message("user", "x")], {"generationConfig": [1]})


def test_no_system_and_no_config_leave_the_fields_out(adapter: GeminiAdapter) -> None:
    body = adapter.chat_request(MODEL, [Message("system", ""), Message("user", "x")], {}).json
    assert body == {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}


def test_images_as_inline_data_file_data_and_data_urls(adapter: GeminiAdapter) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content: list[Any] = [
        Text("what is it?"),
        Image(data=PNG, mime="image/png"),
        Image(url="https://example.com/cat.jpg?sig=secret"),
        Image(url="gs://bucket/scan", mime="image/webp"),
        Image(url=data_url),
    ]
    body = adapter.chat_request(MODEL, [Message("user", content)], {}).json
    assert body is not None
    encoded = base64.b64encode(PNG).decode()
    assert body["contents"][0]["parts"] == [
        {"text": "what is it?"},
        {"inlineData": {"mimeType": "image/png", "data": encoded}},
        {
            "fileData": {
                "mimeType": "image/jpeg",
                "fileUri": "https://example.com/cat.jpg?sig=secret",
            }
        },
        {"fileData": {"mimeType": "image/webp", "fileUri": "gs://bucket/scan"}},
        {"inlineData": {"mimeType": "image/png", "data": encoded}},
    ]


def test_an_image_url_of_unknown_type_is_a_request_error_without_its_query(
    adapter: GeminiAdapter,
) -> None:
    image = Image(url="https://example.com/render?token=s3cret")
    with pytest.raises(RequestError, match="MIME type") as info:
        adapter.chat_request(MODEL, [Message("user", [image])], {})
    assert "s3cret" not in str(info.value)
    assert "https://example.com/render?..." in str(info.value)


def test_a_data_url_that_is_not_base64_is_a_request_error(adapter: GeminiAdapter) -> None:
    for url in ("data:image/png,rawbytes", "data:image/png;base64,@@not-base64@@"):
        with pytest.raises(RequestError, match="base64"):
            adapter.chat_request(MODEL, [Message("user", [Image(url=url)])], {})


# -- tools ------------------------------------------------------------------------------

WEATHER = Tool(
    "weather",
    "Current weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("weather", {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
    ],
)
def test_tool_fields_for_every_choice(
    adapter: GeminiAdapter, choice: str, config: dict[str, Any]
) -> None:
    fields = adapter.tool_fields(ToolSet((WEATHER,), choice))
    assert fields == {
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "weather",
                        "description": "Current weather",
                        "parametersJsonSchema": WEATHER.parameters,
                    }
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": config},
    }
    assert isinstance(fields, dict)
    body = adapter.chat_request(MODEL, [Message("user", "hi")], fields).json
    assert body is not None
    assert body["tools"] == fields["tools"] and body["toolConfig"] == fields["toolConfig"]


def test_recorded_call_round_trips_with_its_signature_and_name(adapter: GeminiAdapter) -> None:
    """The recorded call (no id: call_0) and its thoughtSignature go back as a
    functionCall; the result is a functionResponse under the call's name."""
    fx = load("gemini-generatecontent-200-json-function-call")
    reply = adapter.parse_reply(MODEL, fx.body)
    (call,) = reply.tool_calls
    signature = json.loads(fx.body)["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert call == ToolCall(
        "call_0", "weather", {"latitude": "52.5200", "longitude": "13.4050"}, None, signature
    )
    assert signature not in repr(call)
    history = [
        Message("user", "Weather in Berlin?"),
        Message("assistant", [call]),
        Message("tool", [ToolResult("call_0", "15°C, cloudy")]),
        Message("user", "Thanks. And tomorrow?"),
    ]
    body = adapter.chat_request(MODEL, history, {}).json
    assert body is not None
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Berlin?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "name": "weather",
                        "args": {"latitude": "52.5200", "longitude": "13.4050"},
                    },
                    "thoughtSignature": signature,
                }
            ],
        },
        # The tool result and the next prompt make one user content, result first.
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "15°C, cloudy"}}},
                {"text": "Thanks. And tomorrow?"},
            ],
        },
    ]


def test_parallel_results_errors_images_and_raw_arguments(adapter: GeminiAdapter) -> None:
    calls = [
        ToolCall("a", "weather", {"city": "Oslo"}),
        ToolCall("b", "chart", {}, arguments_raw="not json"),
    ]
    results = [
        ToolResult("a", "sunny"),
        ToolResult("b", [Text("no chart"), Image(data=PNG, mime="image/png")], is_error=True),
    ]
    body = adapter.chat_request(
        MODEL, [Message("user", "go"), Message("assistant", calls), Message("tool", results)], {}
    ).json
    assert body is not None
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
        {"functionCall": {"name": "chart", "args": {}}},
    ]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
        {"functionResponse": {"name": "chart", "response": {"error": "no chart"}}},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
    ]


def test_a_result_for_an_unknown_call_is_a_request_error(adapter: GeminiAdapter) -> None:
    history = [Message("user", "go"), Message("tool", [ToolResult("call_9", "x")])]
    with pytest.raises(RequestError, match=r"'call_9'.*name of the tool"):
        adapter.chat_request(MODEL, history, {})


def test_several_calls_without_ids_get_their_positions(adapter: GeminiAdapter) -> None:
    parts = [
        {"text": "Checking."},
        {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
        {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
    ]
    reply = adapter.parse_reply(MODEL, _reply(parts))
    assert [c.id for c in reply.tool_calls] == ["call_0", "call_1"]
    assert [c.arguments for c in reply.tool_calls] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert reply.text == "Checking."
    assert reply.finish_reason == "tool_calls"


# -- structured output ------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_json_schema_mode_constrains_the_answer(adapter: GeminiAdapter) -> None:
    out = OutputRequest(output_spec(SCHEMA), "json_schema")
    body = adapter.chat_request(MODEL, [Message("user", "n?")], {"max_tokens": 9}, output=out).json
    assert body is not None
    assert body["generationConfig"] == {
        "maxOutputTokens": 9,
        "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
    }
    assert "systemInstruction" not in body


def test_json_object_mode_asks_json_and_instructs(adapter: GeminiAdapter) -> None:
    out = OutputRequest(output_spec(SCHEMA), "json_object")
    body = adapter.chat_request(MODEL, [Message("user", "n?")], {}, output=out).json
    assert body is not None
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    assert '"required":["n"]' in body["systemInstruction"]["parts"][0]["text"]


def test_tool_mode_forces_the_answer_function(adapter: GeminiAdapter) -> None:
    out = OutputRequest(output_spec(SCHEMA), "tool")
    body = adapter.chat_request(MODEL, [Message("user", "n?")], {}, output=out).json
    assert body is not None
    assert body["tools"][-1]["functionDeclarations"][0]["name"] == TOOL_NAME
    assert body["tools"][-1]["functionDeclarations"][0]["parametersJsonSchema"] == SCHEMA
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [TOOL_NAME]}
    }
    reply = adapter.parse_reply(
        MODEL, _reply([{"functionCall": {"name": TOOL_NAME, "args": {"n": 4}}}])
    )
    assert out.answer(reply) == '{"n":4}'


# -- replies ----------------------------------------------------------------------------


def test_thought_parts_stay_out_of_the_text(adapter: GeminiAdapter) -> None:
    parts = [{"text": "Hmm, 2+2.", "thought": True}, {"text": "4"}]
    reply = adapter.parse_reply(MODEL, _reply(parts))
    assert reply.text == "4"
    assert reply.details["thinking"] == "Hmm, 2+2."
    assert reply.response_id == "r1"


def test_max_tokens_is_length_and_other_reasons_pass_through(adapter: GeminiAdapter) -> None:
    reply = adapter.parse_reply(MODEL, _reply([{"text": "cut"}], "MAX_TOKENS"))
    assert (reply.finish_reason, reply.details["finish_reason"]) == ("length", "MAX_TOKENS")
    assert adapter.parse_reply(MODEL, _reply([{"text": "x"}], "OTHER")).finish_reason == "OTHER"


@pytest.mark.parametrize("reason", ["RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII"])
def test_filter_reasons_are_content_filter_errors(adapter: GeminiAdapter, reason: str) -> None:
    doc = json.loads(_reply([{"text": "partial"}], reason))
    doc["candidates"][0]["finishMessage"] = "blocked here"
    body = json.dumps(doc).encode()
    with pytest.raises(ContentFilterError) as info:
        adapter.parse_reply(MODEL, body)
    assert info.value.detail == (
        f"the provider withheld the answer (finishReason: {reason}: blocked here)"
    )
    assert info.value.status == 200


def test_a_blocked_prompt_names_its_reason_and_ratings(adapter: GeminiAdapter) -> None:
    feedback = {
        "blockReason": "SAFETY",
        "safetyRatings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"},
        ],
    }
    body = json.dumps({"promptFeedback": feedback, "usageMetadata": {"promptTokenCount": 9}})
    with pytest.raises(ContentFilterError) as info:
        adapter.parse_reply(MODEL, body.encode())
    assert info.value.detail == (
        "the provider blocked the prompt (blockReason: SAFETY;"
        " safety ratings: HARM_CATEGORY_DANGEROUS_CONTENT HIGH)"
    )
    # The same in a stream: the chunk raises.
    with pytest.raises(ContentFilterError):
        adapter.parse_stream_event(MODEL, "", body)


def test_usage_adds_tool_prompts_to_input_and_thoughts_to_output(adapter: GeminiAdapter) -> None:
    usage = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 60,
        "toolUsePromptTokenCount": 20,
        "candidatesTokenCount": 10,
        "thoughtsTokenCount": 5,
    }
    reply = adapter.parse_reply(MODEL, _reply([{"text": "x"}], usageMetadata=usage))
    assert reply.usage == Usage(120, 15, cached_input_tokens=60, reasoning_tokens=5)


def test_malformed_or_missing_usage_costs_no_reply(adapter: GeminiAdapter) -> None:
    bad = adapter.parse_reply(
        MODEL, _reply([{"text": "x"}], usageMetadata={"promptTokenCount": -1})
    )
    assert bad.text == "x"
    assert bad.usage.estimated and bad.usage.suspect is not None
    assert "promptTokenCount" in bad.usage.suspect
    body = json.dumps({"candidates": [{"content": {"parts": [{"text": "y"}]}}]}).encode()
    assert adapter.parse_reply(MODEL, body).usage == Usage(estimated=True)
    only_prompt = _reply([{"text": "z"}], usageMetadata={"promptTokenCount": 4})
    reply = adapter.parse_reply(MODEL, only_prompt)
    assert reply.usage == Usage(4, 0)
    assert reply.details["usage_missing"] == ["output_tokens"]


def test_a_body_that_is_not_a_reply_is_invalid(adapter: GeminiAdapter) -> None:
    with pytest.raises(ProviderError, match="candidates"):
        adapter.parse_reply(MODEL, b'{"candidates": "nope"}')


# -- streams ----------------------------------------------------------------------------


def test_stream_chunks_carry_text_calls_with_signatures_and_the_end(
    adapter: GeminiAdapter,
) -> None:
    first = _reply([{"text": "Let me check."}], finish=None)
    call = {
        "functionCall": {"name": "weather", "args": {"city": "Oslo"}},
        "thoughtSignature": "sig",
    }
    last = _reply([call], usageMetadata={"promptTokenCount": 7, "candidatesTokenCount": 9})
    ev1 = adapter.parse_stream_event(MODEL, "", first.decode())
    ev2 = adapter.parse_stream_event(MODEL, "", last.decode())
    assert ev1 is not None and ev2 is not None
    assert (ev1.text, ev1.done, ev1.finish_reason) == ("Let me check.", False, None)
    assert ev1.usage == Usage(7, 3)
    assert ev2.done and ev2.finish_reason == "tool_calls" and ev2.usage == Usage(7, 9)
    assert ev2.details is not None
    (fragment,) = ev2.details["tool_calls"]
    assert fragment == {
        "id": None,
        "name": "weather",
        "arguments": '{"city":"Oslo"}',
        "index": None,
        "signature": "sig",
    }
    (streamed,) = streamed_calls(ev2.details["tool_calls"])
    assert streamed == ToolCall("call_0", "weather", {"city": "Oslo"}, None, "sig")
    assert adapter.parse_stream_event(MODEL, "", "  ") is None


def test_an_error_chunk_in_a_stream_raises_its_type(adapter: GeminiAdapter) -> None:
    for status, cls in (("RESOURCE_EXHAUSTED", RateLimitError), ("UNAVAILABLE", ServerError)):
        data = json.dumps({"error": {"message": "busy", "status": status}})
        with pytest.raises(cls):
            adapter.parse_stream_event(MODEL, "", data)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        (
            400,
            "The input token count (1048577) exceeds the maximum number of tokens allowed"
            " (1048576).",
            ContextLengthError,
        ),
        (400, "API key not valid. Please pass a valid API key.", AuthenticationError),
        (404, "models/gemini-9 is not found for API version v1beta", ModelNotFoundError),
        (429, "Resource has been exhausted (e.g. check quota).", RateLimitError),
        (503, "The model is overloaded. Please try again later.", ServerError),
    ],
)
def test_error_bodies_map_to_types(
    adapter: GeminiAdapter, status: int, message: str, cls: type[ProviderError]
) -> None:
    body = json.dumps({"error": {"code": status, "message": message, "status": "X"}}).encode()
    err = error_from_response(adapter, MODEL, status, {}, body)
    assert type(err) is cls
    assert err.detail == message


def test_retry_info_delay_is_capped_and_a_header_wins(adapter: GeminiAdapter) -> None:
    fx = load("gemini-generatecontent-429-quota")
    capped = error_from_response(adapter, MODEL, 429, {}, fx.body, retry_after_max_s=30.0)
    assert capped.retry_after == 30.0
    header = error_from_response(adapter, MODEL, 429, {"retry-after": "3"}, fx.body)
    assert header.retry_after == 3.0
    fractional = json.dumps(
        {
            "error": {
                "code": 429,
                "message": "slow down",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
                ],
            }
        }
    ).encode()
    assert error_from_response(adapter, MODEL, 429, {}, fractional).retry_after == 1.5


# -- health -----------------------------------------------------------------------------


def test_health_lists_models_with_and_without_the_prefix(adapter: GeminiAdapter) -> None:
    req = adapter.health_request()
    assert (req.method, req.path) == ("GET", "/models?pageSize=1000")
    body = json.dumps(
        {"models": [{"name": "models/gemini-2.5-flash"}, {"name": "models/gemini-2.5-pro"}]}
    ).encode()
    assert adapter.parse_models(body) == {
        "models/gemini-2.5-flash",
        "gemini-2.5-flash",
        "models/gemini-2.5-pro",
        "gemini-2.5-pro",
    }
    assert adapter.parse_models(b"{}") == set()
    assert "GET models" in adapter.missing_model_hint("gemini-9")


def test_registry_builds_it() -> None:
    adapter = build_adapter("gemini", "g", KEY, None)
    assert isinstance(adapter, GeminiAdapter)
    assert adapter.stream_format == "sse"
