"""Anthropic Messages adapter: exact requests, and synthetic bodies the recordings lack."""

from __future__ import annotations

import json

import pytest

from router.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    ContextLengthError,
    InvalidResponseError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from router.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicAdapter
from router.providers.error_body import decode_error_body
from router.types import Message, StreamEvent, Usage, WireRequest

KEY = "sk-ant-api03-0123456789abcdef"


@pytest.fixture
def adapter() -> AnthropicAdapter:
    return AnthropicAdapter("anthropic", KEY, {"anthropic-beta": "prompt-caching-2024-07-31"})


def _message(
    content: list[dict[str, object]], stop: str | None = "end_turn", **extra: object
) -> bytes:
    usage = {"input_tokens": 5, "output_tokens": 2}
    doc = {
        "id": "msg_1",
        "type": "message",
        "content": content,
        "stop_reason": stop,
        "usage": usage,
    }
    return json.dumps({**doc, **extra}).encode()


# -- requests ---------------------------------------------------------------------------


def test_auth_headers_carry_key_version_and_extra_headers(adapter: AnthropicAdapter) -> None:
    assert adapter.auth_headers() == {
        "x-api-key": KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
    }


def test_auth_headers_are_a_copy(adapter: AnthropicAdapter) -> None:
    adapter.auth_headers()["x-api-key"] = "changed"
    assert adapter.auth_headers()["x-api-key"] == KEY


def test_system_messages_become_the_top_level_system_field(adapter: AnthropicAdapter) -> None:
    messages = [
        Message("system", "Be brief."),
        Message("system", "Answer in French."),
        Message("user", "Hi"),
        Message("assistant", "Salut"),
        Message("user", "2+2?"),
    ]
    req = adapter.chat_request("claude-haiku-4-5", messages, {"max_tokens": 50, "temperature": 0.1})
    assert req == WireRequest(
        "POST",
        "/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "system": "Be brief.\n\nAnswer in French.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Salut"},
                {"role": "user", "content": "2+2?"},
            ],
            "max_tokens": 50,
            "temperature": 0.1,
        },
    )


def test_a_cached_system_message_is_a_text_block_marked_ephemeral(
    adapter: AnthropicAdapter,
) -> None:
    """Anthropic's documented form: system as a list of text blocks, the breakpoint
    carrying cache_control {"type": "ephemeral"}; the messages stay plain strings."""
    messages = [Message("system", "Long stable instructions.", cache=True), Message("user", "Hi")]
    req = adapter.chat_request("claude-haiku-4-5", messages, {"max_tokens": 50})
    assert req.json == {
        "model": "claude-haiku-4-5",
        "system": [
            {
                "type": "text",
                "text": "Long stable instructions.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 50,
    }


def test_with_several_system_messages_only_the_marked_one_is_a_breakpoint(
    adapter: AnthropicAdapter,
) -> None:
    messages = [
        Message("system", "Stable part.", cache=True),
        Message("system", "Per-call part."),
        Message("system", ""),  # an empty text block is refused by the API: left out
        Message("user", "Hi"),
    ]
    system = adapter.chat_request("m", messages, {}).json["system"]  # type: ignore[index]
    assert system == [
        {"type": "text", "text": "Stable part.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Per-call part."},
    ]


def test_a_cached_user_message_is_a_marked_content_block(adapter: AnthropicAdapter) -> None:
    """The same flag on a conversation message (for routes that mark more than the system
    message) makes its content a marked block; the next user message is merged into the
    same turn (Anthropic requires turns to alternate), after the breakpoint."""
    messages = [Message("user", "A long document.", cache=True), Message("user", "Question?")]
    req = adapter.chat_request("m", messages, {})
    assert req.json is not None
    assert req.json["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "A long document.",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Question?"},
            ],
        },
    ]
    assert "system" not in req.json


def test_the_cache_mark_is_a_fresh_dict_per_request(adapter: AnthropicAdapter) -> None:
    messages = [Message("system", "S", cache=True)]
    first = adapter.chat_request("m", messages, {}).json
    assert first is not None
    first["system"][0]["cache_control"]["ttl"] = "1h"
    second = adapter.chat_request("m", messages, {}).json
    assert second is not None
    assert second["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_max_tokens_is_always_sent_and_extras_pass_through(adapter: AnthropicAdapter) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    params = {"thinking": thinking, "system": "ignored", "model": "ignored"}
    req = adapter.chat_request("claude-sonnet-4-5", [Message("user", "x")], params, stream=True)
    assert req.json == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "thinking": thinking,
        "stream": True,
    }


def test_health_request_lists_every_model(adapter: AnthropicAdapter) -> None:
    assert adapter.health_request() == WireRequest("GET", "/v1/models?limit=1000")
    body = b'{"data":[{"type":"model","id":"claude-haiku-4-5-20251001"}],"has_more":false}'
    assert adapter.parse_models(body) == {"claude-haiku-4-5-20251001"}


# -- replies ----------------------------------------------------------------------------


def test_text_blocks_are_joined_and_thinking_kept_apart(adapter: AnthropicAdapter) -> None:
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xxx"},
        {"type": "text", "text": "The answer"},
        {"type": "text", "text": " is 4."},
    ]
    reply = adapter.parse_reply("m", _message(content))
    assert reply.text == "The answer is 4."
    assert reply.details == {"thinking": "hmm", "finish_reason": "end_turn"}
    assert reply.response_id == "msg_1"


def test_max_tokens_stop_is_length(adapter: AnthropicAdapter) -> None:
    reply = adapter.parse_reply("m", _message([{"type": "text", "text": "cut"}], "max_tokens"))
    assert reply.finish_reason == "length"


def test_refusal_with_no_text_raises_content_filter(adapter: AnthropicAdapter) -> None:
    with pytest.raises(ContentFilterError, match="refusal"):
        adapter.parse_reply("m", _message([], "refusal"))


def test_no_usage_is_marked_estimated(adapter: AnthropicAdapter) -> None:
    body = b'{"id":"m","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn"}'
    assert adapter.parse_reply("m", body).usage == Usage(estimated=True)


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": "5", "output_tokens": 2},
        {"input_tokens": 5, "output_tokens": 2.5},
        {"input_tokens": 5, "output_tokens": False},
        {"input_tokens": 5, "cache_read_input_tokens": -1},
        [5, 2],
    ],
)
def test_a_malformed_usage_keeps_the_reply_and_is_marked_suspect(
    adapter: AnthropicAdapter, usage: object
) -> None:
    reply = adapter.parse_reply("m", _message([{"type": "text", "text": "x"}], usage=usage))
    assert reply.text == "x"
    assert reply.usage.estimated and reply.usage.suspect is not None
    assert reply.usage.suspect.startswith("malformed usage: usage")
    delta = json.dumps({"type": "message_delta", "delta": {}, "usage": usage})
    ev = adapter.parse_stream_event("m", "message_delta", delta)
    assert ev is not None and ev.usage is not None and ev.usage.suspect == reply.usage.suspect


def test_a_200_error_object_raises_its_type(adapter: AnthropicAdapter) -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    with pytest.raises(ServerError, match="Overloaded"):
        adapter.parse_reply("m", body)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b'{"content":"text"}', "content"),
        (b'{"content":[{"text":"no type"}]}', "content.0.type"),
        (b'{"content":[', "Invalid JSON"),
    ],
)
def test_a_body_that_does_not_match_is_invalid(
    adapter: AnthropicAdapter, body: bytes, what: str
) -> None:
    with pytest.raises(InvalidResponseError, match="invalid response body") as info:
        adapter.parse_reply("m", body)
    assert what in str(info.value)


# -- stream events ----------------------------------------------------------------------


def test_message_start_reports_the_input_side(adapter: AnthropicAdapter) -> None:
    data = (
        '{"type":"message_start","message":{"id":"msg_9","usage":{"input_tokens":3,'
        '"cache_read_input_tokens":100,"cache_creation_input_tokens":20,"output_tokens":1}}}'
    )
    ev = adapter.parse_stream_event("m", "message_start", data)
    assert ev == StreamEvent(
        usage=Usage(
            input_tokens=123, output_tokens=1, cached_input_tokens=100, cache_write_tokens=20
        ),
        response_id="msg_9",
    )


def test_message_delta_with_output_only_keeps_input_for_the_max_merge(
    adapter: AnthropicAdapter,
) -> None:
    data = (
        '{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}'
    )
    ev = adapter.parse_stream_event("m", "message_delta", data)
    assert ev is not None
    assert ev.usage == Usage(output_tokens=9)
    assert ev.finish_reason == "length"
    assert ev.details == {"finish_reason": "max_tokens"}


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("ping", '{"type": "ping"}'),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        (
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"x"}}',
        ),
        ("future_event", '{"type":"future_event"}'),
        ("", "   "),
    ],
)
def test_events_that_carry_nothing_give_none(
    adapter: AnthropicAdapter, event: str, data: str
) -> None:
    assert adapter.parse_stream_event("m", event, data) is None


def test_thinking_delta_goes_to_details(adapter: AnthropicAdapter) -> None:
    data = (
        '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}'
    )
    assert adapter.parse_stream_event("m", "content_block_delta", data) == StreamEvent(
        details={"thinking": "hm"}
    )


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", ServerError),
        ("api_error", ServerError),
        ("rate_limit_error", RateLimitError),
        ("invalid_request_error", BadRequestError),
        ("authentication_error", AuthenticationError),
        ("not_found_error", ModelNotFoundError),
        ("request_too_large", ContextLengthError),
        ("brand_new_error", ServerError),
    ],
)
def test_error_event_raises_the_type_its_error_type_stands_for(
    adapter: AnthropicAdapter, error_type: str, expected: type[ProviderError]
) -> None:
    data = json.dumps({"type": "error", "error": {"type": error_type, "message": "boom"}})
    with pytest.raises(ProviderError) as info:
        adapter.parse_stream_event("m", "error", data)
    assert type(info.value) is expected
    assert info.value.status == 200
    assert info.value.detail == "boom"


def test_prompt_too_long_inside_a_stream_error_is_context_length(
    adapter: AnthropicAdapter,
) -> None:
    data = (
        '{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}'
    )
    with pytest.raises(ContextLengthError):
        adapter.parse_stream_event("m", "error", data)


def test_malformed_event_is_invalid(adapter: AnthropicAdapter) -> None:
    with pytest.raises(InvalidResponseError, match="type"):
        adapter.parse_stream_event("m", "message_start", '{"message":{}}')


def test_billing_error_is_treated_like_a_bad_key(adapter: AnthropicAdapter) -> None:
    body = decode_error_body(b'{"type":"error","error":{"type":"billing_error","message":"x"}}')
    assert adapter.classify_error(400, body) is AuthenticationError
