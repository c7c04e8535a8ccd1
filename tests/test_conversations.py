"""Conversations in each wire format: message parts to request bodies, tool calls from
replies (recorded ones), and a round-trip property over every adapter.

The expected request bodies are written from the providers' documented formats:
OpenAI Chat Completions (``content`` arrays with ``image_url``, assistant
``tool_calls`` with JSON-text arguments, ``role: tool`` with ``tool_call_id``),
Anthropic Messages (``image`` blocks, ``tool_use``, ``tool_result`` inside a user
message, turns alternating) and Ollama ``/api/chat`` (``images`` as base64,
``tool_calls`` with object arguments, ``role: tool``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import Image, Message, RequestError, Text, ToolCall, ToolResult
from router.conversation import streamed_calls
from router.providers.anthropic import AnthropicAdapter
from router.providers.base import Adapter
from router.providers.mock import MockAdapter
from router.providers.ollama import OllamaAdapter
from router.providers.openai import OpenAIAdapter
from tests.fixtures_util import load, stream_events

PNG = b"\x89PNG\r\n\x1a\n"  # base64: iVBORw0KGgo=
PNG_B64 = "iVBORw0KGgo="
URL = "https://example.com/chart.png"


def conversation(*, with_url: bool = True) -> list[Message]:
    images: list[Text | Image | ToolCall | ToolResult] = [
        Text("What is in this chart?"),
        Image(data=PNG, mime="image/png"),
    ]
    if with_url:
        images.append(Image(url=URL))
    return [
        Message("system", "You are terse."),
        Message("user", images),
        Message(
            "assistant",
            [Text("Let me look up the price."), ToolCall("call_1", "quote", {"ticker": "AAPL"})],
        ),
        Message("tool", [ToolResult("call_1", "189.5")]),
        Message("user", "Buy or sell?"),
    ]


def test_openai_wire_body() -> None:
    req = OpenAIAdapter("oa", "k").chat_request("gpt-4o", conversation(), {"max_tokens": 100})
    assert req.json == {
        "model": "gpt-4o",
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this chart?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": URL}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look up the price.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "quote", "arguments": '{"ticker":"AAPL"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "189.5"},
            {"role": "user", "content": "Buy or sell?"},
        ],
    }


def test_mock_speaks_the_openai_body_and_answers_a_conversation() -> None:
    """The mock adapter sends what OpenAI's does; its upstream reads the parts' text."""
    messages = conversation()
    mock = MockAdapter("mock", None).chat_request("m", messages, {})
    assert mock.json == OpenAIAdapter("oa", None).chat_request("m", messages, {}).json


def test_anthropic_wire_body() -> None:
    req = AnthropicAdapter("an", "k").chat_request("claude", conversation(), {"max_tokens": 100})
    assert req.json == {
        "model": "claude",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this chart?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                    {"type": "image", "source": {"type": "url", "url": URL}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look up the price."},
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "quote",
                        "input": {"ticker": "AAPL"},
                    },
                ],
            },
            # The tool result and the next user text: one user turn, results first.
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "189.5"},
                    {"type": "text", "text": "Buy or sell?"},
                ],
            },
        ],
    }


def test_anthropic_merges_consecutive_tool_results_and_marks_errors() -> None:
    messages = [
        Message("user", "Quote both."),
        Message("assistant", [ToolCall("a", "quote", {"t": "X"}), ToolCall("b", "quote", {})]),
        Message("tool", [ToolResult("a", [Text("1.5"), Image(data=PNG, mime="image/png")])]),
        Message("tool", [ToolResult("b", "unknown ticker", is_error=True)]),
    ]
    body = AnthropicAdapter("an", "k").chat_request("claude", messages, {}).json
    assert body is not None
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "a",
                "content": [
                    {"type": "text", "text": "1.5"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                    },
                ],
            },
            {
                "type": "tool_result",
                "tool_use_id": "b",
                "content": "unknown ticker",
                "is_error": True,
            },
        ],
    }
    assert len(body["messages"]) == 3


def test_ollama_wire_body() -> None:
    req = OllamaAdapter("ol", None).chat_request(
        "llama3.2", conversation(with_url=False), {"max_tokens": 100}
    )
    assert req.json == {
        "model": "llama3.2",
        "stream": False,
        "options": {"num_predict": 100},
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is in this chart?", "images": [PNG_B64]},
            {
                "role": "assistant",
                "content": "Let me look up the price.",
                "tool_calls": [{"function": {"name": "quote", "arguments": {"ticker": "AAPL"}}}],
            },
            {"role": "tool", "content": "189.5", "tool_name": "quote"},
            {"role": "user", "content": "Buy or sell?"},
        ],
    }


def test_ollama_refuses_an_image_url_clearly() -> None:
    with pytest.raises(RequestError, match=r"Ollama takes images only as bytes") as info:
        OllamaAdapter("ol", None).chat_request("llama3.2", conversation(), {})
    assert info.value.provider == "ol"
    assert URL in str(info.value)


def test_openai_refuses_an_image_inside_a_tool_result() -> None:
    messages = [
        Message("assistant", [ToolCall("a", "chart", {})]),
        Message("tool", [ToolResult("a", [Image(data=PNG, mime="image/png")])]),
    ]
    with pytest.raises(RequestError, match=r"image in a tool result \(call 'a'\)"):
        OpenAIAdapter("oa", "k").chat_request("gpt-4o", messages, {})


def test_a_call_with_invalid_arguments_goes_back_as_received() -> None:
    bad = ToolCall("c", "f", {}, arguments_raw='{"x": ')
    messages = [Message("assistant", [bad]), Message("tool", [ToolResult("c", "?")])]
    body = OpenAIAdapter("oa", "k").chat_request("gpt-4o", messages, {}).json
    assert body is not None
    assert body["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"x": '
    assert body["messages"][0]["content"] is None


# -- replies: recorded tool calls ------------------------------------------------------

RECORDED_CALLS = {
    "openai/openai-chat-200-json-parallel-tool-calls": [
        ToolCall(
            "call_5Brxo90SHuOxfJol2Pubf4BX",
            "weather",
            {"latitude": "52.5200", "longitude": "13.4050"},
        ),
        ToolCall("call_SRydeRpiPuKkNTBwOHKgFDLX", "best_language_to_learn", {}),
    ],
    "xai/xai-chat-200-json-parallel-tool-calls": [
        ToolCall("call_05822893", "weather", {"latitude": "52.5200", "longitude": "13.4050"}),
        ToolCall("call_41336261", "best_language_to_learn", {}),
    ],
    "anthropic/anthropic-messages-200-json-parallel-tool-use": [
        ToolCall(
            "toolu_01TjHdHxyQNDy4DipRieJU5n",
            "weather",
            {"latitude": "52.5200", "longitude": "13.4050"},
        ),
        ToolCall("toolu_01QHFWAkMuVLb3VgS4EDGUGY", "best_language_to_learn", {}),
    ],
    "ollama/ollama-chat-200-json-tool-calls-thinking": [
        ToolCall("call_gsiiy8py", "get_current_weather", {"city": "Paris"}),
    ],
}


@pytest.mark.parametrize("fixture_id", sorted(RECORDED_CALLS))
def test_recorded_tool_calls_decode_exactly(fixture_id: str) -> None:
    fx = load(fixture_id.split("/", 1)[1])
    reply = fx.adapter().parse_reply("m", fx.body)
    assert reply.tool_calls == RECORDED_CALLS[fixture_id]
    assert reply.finish_reason == "tool_calls"


STREAMED_CALLS = {
    "deepseek-chat-200-sse-tool-calls-cache-hit": [
        ToolCall("call_00_A6fR64rW3nzZeNuJ64ZI0806", "best_language_to_learn", {})
    ],
    "openai-chat-200-sse-tool-calls": [
        ToolCall("call_1EYWDzueHEp8OsB8jJSEp7WB", "multiply", {"a": 1231, "b": 2331})
    ],
    "anthropic-messages-200-sse-tool-use": [
        ToolCall("toolu_01CzN6riCPqw4pVSuTd9Dwn7", "pelican_name_generator", {})
    ],
}


@pytest.mark.parametrize("fixture_id", sorted(STREAMED_CALLS))
def test_recorded_streamed_tool_calls_assemble_exactly(fixture_id: str) -> None:
    fx = load(fixture_id)
    adapter = fx.adapter()
    fragments: list[dict[str, Any]] = []
    for event, data in stream_events(fx):
        ev = adapter.parse_stream_event("m", event, data)
        if ev is not None and ev.details and "tool_calls" in ev.details:
            fragments += ev.details["tool_calls"]
    assert streamed_calls(fragments) == STREAMED_CALLS[fixture_id]


def test_ollama_calls_without_ids_get_stable_positional_ids() -> None:
    body = json.dumps(
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "a", "arguments": {"x": 1}}},
                    {"function": {"name": "b", "arguments": {}}},
                ],
            },
            "done_reason": "stop",
            "done": True,
        }
    ).encode()
    adapter = OllamaAdapter("ol", None)
    first = adapter.parse_reply("m", body).tool_calls
    assert first == [ToolCall("call_0", "a", {"x": 1}), ToolCall("call_1", "b", {})]
    assert adapter.parse_reply("m", body).tool_calls == first


@pytest.mark.parametrize(
    ("raw", "arguments", "kept"),
    [
        ('{"a": 1}', {"a": 1}, None),
        ("", {}, None),
        ('{"a": ', {}, '{"a": '),  # cut off: not JSON
        ("[1, 2]", {}, "[1, 2]"),  # JSON, but not an object
    ],
)
def test_openai_arguments_that_are_not_a_json_object_are_kept_raw(
    raw: str, arguments: dict[str, Any], kept: str | None
) -> None:
    body = json.dumps(
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": raw},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    ).encode()
    (call,) = OpenAIAdapter("oa", "k").parse_reply("m", body).tool_calls
    assert call == ToolCall("c1", "f", arguments, kept)
    assert call.invalid_arguments is (kept is not None)


def test_a_reply_without_tool_calls_has_an_empty_list() -> None:
    fx = load("openai-chat-200-json-wire")
    assert fx.adapter().parse_reply("m", fx.body).tool_calls == []


# -- the round-trip property -----------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_args = st.dictionaries(
    st.text(max_size=5),
    st.one_of(st.integers(-1000, 1000), st.text(max_size=6), st.booleans(), st.none()),
    max_size=3,
)


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """user, assistant (text and/or calls), their results; repeated; a final user turn."""
    out: list[Message] = [Message("system", draw(_text))]
    n_calls = 0
    for _ in range(draw(st.integers(0, 3))):
        user: list[Any] = [Text(draw(_text))]
        if draw(st.booleans()):
            user.append(Image(data=draw(st.binary(min_size=1, max_size=8)), mime="image/png"))
        out.append(Message("user", user))
        parts: list[Any] = []
        if draw(st.booleans()):
            parts.append(Text(draw(_text)))
        calls = []
        for _ in range(draw(st.integers(0 if parts else 1, 2))):
            n_calls += 1
            calls.append(ToolCall(f"id{n_calls}", draw(_text), draw(_args)))
        out.append(Message("assistant", parts + calls))
        for call in calls:
            out.append(Message("tool", [ToolResult(call.id, draw(_text))]))
    out.append(Message("user", draw(_text)))
    return out


def _texts(m: Message) -> str:
    content = m.content
    return (
        content
        if isinstance(content, str)
        else "".join(p.text for p in content if isinstance(p, Text))
    )


def _calls(m: Message) -> list[ToolCall]:
    return [p for p in m.content if isinstance(p, ToolCall)] if isinstance(m.content, list) else []


def _reply_body(kind: str, wire: dict[str, Any]) -> bytes:
    """The reply a provider would send for this assistant turn, in its own format."""
    if kind == "openai":
        doc: dict[str, Any] = {"choices": [{"message": wire, "finish_reason": "stop"}]}
    elif kind == "anthropic":
        doc = {"content": wire["content"], "stop_reason": "end_turn"}
    else:
        doc = {"message": wire, "done_reason": "stop", "done": True}
    return json.dumps(doc).encode()


ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter("oa", "k"),
    "anthropic": AnthropicAdapter("an", "k"),
    "ollama": OllamaAdapter("ol", None),
}


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_every_wire_format_keeps_roles_order_text_ids_and_arguments(
    messages: list[Message],
) -> None:
    assistants = [m for m in messages if m.role == "assistant"]
    for kind, adapter in ADAPTERS.items():
        body = adapter.chat_request("m", messages, {}).json
        assert body is not None
        wire = body["messages"]
        if kind == "anthropic":
            # Roles alternate, starting with the user; tool results ride in user turns.
            assert [w["role"] for w in wire] == ["user", "assistant"] * len(assistants) + ["user"]
            assert body["system"] == messages[0].content
            results = [
                b["tool_use_id"]
                for w in wire
                if w["role"] == "user" and isinstance(w["content"], list)
                for b in w["content"]
                if b["type"] == "tool_result"
            ]
            made = [c.id for m in assistants for c in _calls(m)]
            assert results == made
        else:
            # One wire message per message (per tool result), same roles, same order.
            assert [w["role"] for w in wire] == [m.role for m in messages]
            for m, w in zip(messages, wire, strict=True):
                if m.role == "tool":
                    (result,) = m.content  # type: ignore[misc]
                    assert w["content"] == result.content
                    if kind == "openai":
                        assert w["tool_call_id"] == result.call_id
                elif m.role != "assistant":
                    text = (
                        w["content"]
                        if isinstance(w["content"], str)
                        else "".join(p.get("text", "") for p in w["content"])
                    )
                    assert text == _texts(m)
        wire_assistants = [w for w in wire if w["role"] == "assistant"]
        for m, w in zip(assistants, wire_assistants, strict=True):
            reply = adapter.parse_reply("m", _reply_body(kind, w))
            assert reply.text == _texts(m)
            calls = _calls(m)
            if kind == "ollama":  # Ollama's format has no call ids: positional ones
                calls = [ToolCall(f"call_{i}", c.name, c.arguments) for i, c in enumerate(calls)]
            assert reply.tool_calls == calls


def test_trace_content_capture_shows_parts_without_image_bytes() -> None:
    """GenAI span content (opt-in): parts in the semantic-convention shapes; an image's
    bytes are never copied into a span, only their type and size."""
    from router.metrics.otel import _parts

    parts = _parts(conversation()[1].content)
    assert parts == [
        {"type": "text", "content": "What is in this chart?"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "size": len(PNG)},
        {"type": "uri", "modality": "image", "uri": URL},
    ]
    call, result = conversation()[2].content[1], conversation()[3].content[0]
    assert _parts([call, result]) == [  # type: ignore[list-item]
        {"type": "tool_call", "id": "call_1", "name": "quote", "arguments": '{"ticker": "AAPL"}'},
        {"type": "tool_call_response", "id": "call_1", "response": "189.5"},
    ]


def test_an_image_url_is_shown_without_its_query_in_errors_and_dry_runs() -> None:
    """A pre-signed URL carries its credential in the query: errors, dry runs and
    traces show the URL without it (the request itself sends it whole)."""
    from router.conversation import shown

    signed = "https://bucket.example/c.png?X-Amz-Signature=abcdef0123456789"
    messages = [Message("user", [Image(url=signed)])]
    with pytest.raises(RequestError) as info:
        OllamaAdapter("ol", None).chat_request("m", messages, {})
    assert "abcdef0123456789" not in str(info.value)
    assert "https://bucket.example/c.png?..." in str(info.value)
    assert shown(messages[0].content) == "[image: https://bucket.example/c.png?...]"
    body = OpenAIAdapter("oa", "k").chat_request("m", messages, {}).json
    assert body is not None
    assert body["messages"][0]["content"][0]["image_url"]["url"] == signed
