"""OpenAI-compatible adapter: exact requests, and synthetic bodies the recordings lack."""

from __future__ import annotations

import json

import pytest

from router.errors import (
    AuthenticationError,
    ContentFilterError,
    ContextLengthError,
    InvalidResponseError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from router.providers import ADAPTERS, build_adapter
from router.providers.error_body import decode_error_body
from router.providers.openai import OpenAIAdapter
from router.types import Message, Usage, WireRequest

KEY = "sk-test-0123456789abcdef"
MSGS = [Message("system", "Be brief."), Message("user", "2+2?")]
WIRE_MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]


@pytest.fixture
def adapter() -> OpenAIAdapter:
    return OpenAIAdapter("openai", KEY, {"OpenAI-Organization": "org-1"})


def _reply(message: dict[str, object], finish: str | None = "stop", **extra: object) -> bytes:
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return json.dumps({"id": "c1", "choices": [choice], **extra}).encode()


# -- requests ---------------------------------------------------------------------------


def test_auth_headers_carry_bearer_key_and_extra_headers(adapter: OpenAIAdapter) -> None:
    assert adapter.auth_headers() == {
        "Authorization": f"Bearer {KEY}",
        "OpenAI-Organization": "org-1",
    }


def test_keyless_server_gets_no_authorization_header() -> None:
    assert OpenAIAdapter("vllm", None).auth_headers() == {}


def test_chat_request_for_a_classic_model_uses_max_tokens_and_temperature(
    adapter: OpenAIAdapter,
) -> None:
    req = adapter.chat_request("gpt-4.1", MSGS, {"max_tokens": 100, "temperature": 0.2})
    assert req == WireRequest(
        "POST",
        "/chat/completions",
        {"model": "gpt-4.1", "messages": WIRE_MSGS, "max_tokens": 100, "temperature": 0.2},
    )
    assert req.headers == {}


@pytest.mark.parametrize("model", ["o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5-nano", "GPT-5.1"])
def test_reasoning_models_get_max_completion_tokens_and_no_temperature(
    adapter: OpenAIAdapter, model: str
) -> None:
    req = adapter.chat_request(model, MSGS, {"max_tokens": 100, "temperature": 0.2})
    assert req.json == {"model": model, "messages": WIRE_MSGS, "max_completion_tokens": 100}


@pytest.mark.parametrize(
    "model", ["deepseek-chat", "grok-4", "openai/o3-mini", "llama3.1", "gpt-4o"]
)
def test_other_and_compatible_models_get_max_tokens(adapter: OpenAIAdapter, model: str) -> None:
    req = adapter.chat_request(model, MSGS, {"max_tokens": 7})
    assert req.json is not None
    assert req.json["max_tokens"] == 7
    assert "max_completion_tokens" not in req.json


@pytest.mark.parametrize("stream", [False, True])
def test_the_prompt_cache_mark_is_ignored(adapter: OpenAIAdapter, stream: bool) -> None:
    """OpenAI and compatible APIs cache prompt prefixes on their own: a message marked for
    the cache is sent exactly as an unmarked one."""
    marked = [Message("system", "Be brief.", cache=True), Message("user", "2+2?", cache=True)]
    assert adapter.chat_request("gpt-4.1", marked, {}, stream=stream) == adapter.chat_request(
        "gpt-4.1", MSGS, {}, stream=stream
    )


def test_absent_router_params_are_left_out(adapter: OpenAIAdapter) -> None:
    req = adapter.chat_request("gpt-4.1", MSGS, {})
    assert req.json == {"model": "gpt-4.1", "messages": WIRE_MSGS}


def test_extras_pass_straight_into_the_body(adapter: OpenAIAdapter) -> None:
    params = {
        "max_tokens": 5,
        "seed": 7,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "low",
    }
    req = adapter.chat_request("grok-4", MSGS, params)
    assert req.json == {
        "model": "grok-4",
        "messages": WIRE_MSGS,
        "max_tokens": 5,
        "seed": 7,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "low",
    }


def test_extras_cannot_override_model_messages_or_framing(adapter: OpenAIAdapter) -> None:
    params = {"model": "other", "messages": [], "stream": True, "stream_options": {"x": 1}}
    req = adapter.chat_request("gpt-4.1", MSGS, params)
    assert req.json == {"model": "gpt-4.1", "messages": WIRE_MSGS}


def test_stream_request_asks_for_usage_in_the_final_chunk(adapter: OpenAIAdapter) -> None:
    req = adapter.chat_request("gpt-4.1", MSGS, {"max_tokens": 9}, stream=True)
    assert req.json == {
        "model": "gpt-4.1",
        "messages": WIRE_MSGS,
        "max_tokens": 9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_health_request_is_the_free_model_listing(adapter: OpenAIAdapter) -> None:
    assert adapter.health_request() == WireRequest("GET", "/models")
    body = b'{"object":"list","data":[{"id":"gpt-4.1","object":"model"},{"id":"o3"}]}'
    assert adapter.parse_models(body) == {"gpt-4.1", "o3"}
    assert adapter.missing_model_hint("gpt-9") == "not listed by the provider"


def test_model_listing_that_does_not_match_is_invalid(adapter: OpenAIAdapter) -> None:
    with pytest.raises(InvalidResponseError, match="data"):
        adapter.parse_models(b'{"models": []}')


def test_registry_builds_every_kind() -> None:
    assert set(ADAPTERS) == {
        "openai",
        "openai_responses",
        "anthropic",
        "gemini",
        "ollama",
        "mock",
        "azure_openai",
    }
    adapter = build_adapter("openai", "deepseek", KEY, None)
    assert isinstance(adapter, OpenAIAdapter)
    assert adapter.provider == "deepseek"
    with pytest.raises(ValueError, match="unknown provider kind"):
        build_adapter("vertex", "g", None, None)


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_repr_and_str_never_show_the_key(kind: str) -> None:
    adapter = build_adapter(kind, "p", KEY, {"X-Trace": "1"})
    assert KEY not in repr(adapter)
    assert KEY not in str(adapter)
    assert repr(adapter) == f"<{type(adapter).__name__} provider='p'>"
    assert not hasattr(adapter, "__dict__")  # nothing else to dump


# -- replies ----------------------------------------------------------------------------


def test_empty_choices_is_invalid(adapter: OpenAIAdapter) -> None:
    with pytest.raises(InvalidResponseError, match="choices: empty list") as info:
        adapter.parse_reply("m", b'{"id":"x","choices":[],"usage":null}')
    assert info.value.status == 200
    assert info.value.retryable


def test_null_content_with_tool_calls_gives_empty_text_and_calls(adapter: OpenAIAdapter) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    reply = adapter.parse_reply(
        "m", _reply({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    )
    assert reply.text == ""
    assert reply.finish_reason == "tool_calls"
    assert reply.details["tool_calls"] == [{"id": "call_1", "name": "f", "arguments": '{"a":1}'}]


def test_no_usage_at_all_is_marked_estimated(adapter: OpenAIAdapter) -> None:
    reply = adapter.parse_reply("m", _reply({"content": "hi"}))
    assert reply.usage == Usage(estimated=True)


def test_partial_usage_fills_what_was_reported_and_says_what_was_not(
    adapter: OpenAIAdapter,
) -> None:
    reply = adapter.parse_reply("m", _reply({"content": "hi"}, usage={"prompt_tokens": 12}))
    assert reply.usage == Usage(input_tokens=12)
    assert reply.details["usage_missing"] == ["output_tokens"]


def test_content_as_a_list_of_parts_is_joined(adapter: OpenAIAdapter) -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]
    assert adapter.parse_reply("m", _reply({"content": parts})).text == "ab"


def test_unknown_finish_reason_passes_through(adapter: OpenAIAdapter) -> None:
    reply = adapter.parse_reply("m", _reply({"content": "x"}, "function_call"))
    assert reply.finish_reason == "tool_calls"
    assert reply.details["finish_reason"] == "function_call"
    assert adapter.parse_reply("m", _reply({"content": "x"}, "weird")).finish_reason == "weird"


def test_xai_citations_go_to_details(adapter: OpenAIAdapter) -> None:
    body = _reply({"content": "x"}, citations=["https://a.example", "https://b.example"])
    assert adapter.parse_reply("m", body).details["citations"] == [
        "https://a.example",
        "https://b.example",
    ]


def test_content_filter_with_no_text_raises(adapter: OpenAIAdapter) -> None:
    with pytest.raises(ContentFilterError, match="content filter"):
        adapter.parse_reply("m", _reply({"content": None}, "content_filter"))


def test_content_filter_after_some_text_returns_the_text(adapter: OpenAIAdapter) -> None:
    reply = adapter.parse_reply("m", _reply({"content": "part"}, "content_filter"))
    assert (reply.text, reply.finish_reason) == ("part", "content_filter")


def test_refusal_is_kept_in_details(adapter: OpenAIAdapter) -> None:
    reply = adapter.parse_reply("m", _reply({"content": None, "refusal": "I can't."}))
    assert (reply.text, reply.details["refusal"]) == ("", "I can't.")


@pytest.mark.parametrize(
    ("body", "error", "status"),
    [
        (
            b'{"error":{"message":"Rate limit","type":"requests","code":"rate_limit_exceeded"}}',
            RateLimitError,
            200,
        ),
        (b'{"error":{"message":"boom","type":"server_error"}}', ServerError, 200),
        (b'{"error":{"message":"upstream said no","code":502}}', ServerError, 502),
        (b'{"error":{"message":"x","code":"context_length_exceeded"}}', ContextLengthError, 200),
        (b'{"error":{"message":"Incorrect API key provided"}}', AuthenticationError, 200),
    ],
)
def test_a_200_body_with_an_error_object_raises_its_type(
    adapter: OpenAIAdapter, body: bytes, error: type[ProviderError], status: int
) -> None:
    with pytest.raises(error) as info:
        adapter.parse_reply("m", body)
    assert type(info.value) is error
    assert info.value.status == status
    assert info.value.provider == "openai"


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b'{"id":"x","choices":[{"message":{"content":"hi"', "Invalid JSON"),  # truncated
        (b"", "Invalid JSON"),
        (b"\xff\xfe\x00garbage", "Invalid JSON"),  # not UTF-8
        (b'{"choices":[{"message":{"content":42}}]}', "choices.0.message.content"),
        (b'{"choices":[{"message":"hi"}]}', "choices.0.message"),
        (b'{"choices":{"0":{}}}', "choices"),
        (b"[1,2,3]", "<body>"),
        (b'"just a string"', "<body>"),
    ],
)
def test_a_body_that_does_not_match_is_invalid_with_a_reason(
    adapter: OpenAIAdapter, body: bytes, what: str
) -> None:
    with pytest.raises(InvalidResponseError) as info:
        adapter.parse_reply("m", body)
    assert what in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("usage", "what"),
    [
        ('{"prompt_tokens":"12","completion_tokens":3}', "usage.prompt_tokens"),
        ('{"prompt_tokens":12,"completion_tokens":-5}', "usage.completion_tokens"),
        ('{"prompt_tokens":12.0,"completion_tokens":3}', "usage.prompt_tokens"),
        ('{"prompt_tokens":true,"completion_tokens":3}', "usage.prompt_tokens"),
        ('{"prompt_tokens":12,"prompt_tokens_details":{"cached_tokens":"x"}}', "cached_tokens"),
        ('"many"', "not an object"),
    ],
)
def test_a_malformed_usage_keeps_the_reply_and_is_marked_suspect(
    adapter: OpenAIAdapter, usage: str, what: str
) -> None:
    """The provider billed the reply whatever its usage says: the text is kept and the
    usage is marked, so the router bills its own estimate (docs/money.md)."""
    body = b'{"choices":[{"message":{"content":"x"}}],"usage":' + usage.encode() + b"}"
    reply = adapter.parse_reply("m", body)
    assert reply.text == "x"
    assert reply.usage.estimated and (reply.usage.input_tokens, reply.usage.output_tokens) == (0, 0)
    assert reply.usage.suspect is not None and what in reply.usage.suspect
    assert "\n" not in reply.usage.suspect
    ev = adapter.parse_stream_event("m", "", '{"choices":[],"usage":' + usage + "}")
    assert ev is not None and ev.usage is not None and ev.usage.suspect == reply.usage.suspect


def test_tokens_in_total_beyond_prompt_and_completion_are_hidden_output(
    adapter: OpenAIAdapter,
) -> None:
    """No reasoning count, but total_tokens says more was generated: billed as output."""
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 57}
    reply = adapter.parse_reply("m", _reply({"content": "hi"}, usage=usage))
    assert reply.usage == Usage(input_tokens=12, output_tokens=45, reasoning_tokens=40)
    data = json.dumps({"choices": [], "usage": usage})
    ev = adapter.parse_stream_event("m", "", data)
    assert ev is not None and ev.usage == reply.usage


def test_a_total_below_prompt_plus_completion_bills_the_counts(adapter: OpenAIAdapter) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 3}
    reply = adapter.parse_reply("m", _reply({"content": "hi"}, usage=usage))
    assert reply.usage == Usage(input_tokens=12, output_tokens=5)


# -- stream events ----------------------------------------------------------------------


def test_done_marker_ends_the_stream(adapter: OpenAIAdapter) -> None:
    ev = adapter.parse_stream_event("m", "", "[DONE]")
    assert ev is not None
    assert ev.done


def test_blank_data_carries_nothing(adapter: OpenAIAdapter) -> None:
    assert adapter.parse_stream_event("m", "", "  ") is None


def test_usage_only_chunk_reports_usage(adapter: OpenAIAdapter) -> None:
    data = (
        '{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'
    )
    ev = adapter.parse_stream_event("m", "", data)
    assert ev is not None
    assert ev.usage == Usage(input_tokens=3, output_tokens=4)
    assert ev.text == ""


def test_tool_call_deltas_go_to_details(adapter: OpenAIAdapter) -> None:
    data = (
        '{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_9","function":'
        '{"name":"f","arguments":"{\\"a"}}]}}]}'
    )
    ev = adapter.parse_stream_event("m", "", data)
    assert ev is not None
    assert ev.details == {
        "tool_calls": [{"index": 1, "id": "call_9", "name": "f", "arguments": '{"a'}]
    }


def test_error_object_mid_stream_raises(adapter: OpenAIAdapter) -> None:
    with pytest.raises(ServerError, match="overloaded"):
        adapter.parse_stream_event(
            "m", "", '{"error":{"message":"overloaded","type":"server_error"}}'
        )


def test_error_event_without_an_error_object_still_raises(adapter: OpenAIAdapter) -> None:
    with pytest.raises(ServerError, match="something broke"):
        adapter.parse_stream_event("m", "error", '{"message":"something broke"}')


def test_malformed_chunk_is_invalid(adapter: OpenAIAdapter) -> None:
    with pytest.raises(InvalidResponseError):
        adapter.parse_stream_event("m", "", '{"choices":[{"delta":{"content":1}}]}')
    with pytest.raises(InvalidResponseError):
        adapter.parse_stream_event("m", "", "{not json")


# -- classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            429,
            b'{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}',
            AuthenticationError,
        ),
        (
            400,
            b'{"error":{"message":"flagged","code":"content_policy_violation"}}',
            ContentFilterError,
        ),
        (
            400,
            b'{"error":{"message":"The response was filtered","code":"content_filter"}}',
            ContentFilterError,
        ),
        (413, b"", ContextLengthError),
        (529, b"", ServerError),
        (408, b"", ServerError),
    ],
)
def test_classification_of_other_known_shapes(
    adapter: OpenAIAdapter, status: int, body: bytes, error: type[ProviderError]
) -> None:
    assert adapter.classify_error(status, decode_error_body(body)) is error
