"""Ollama native adapter: exact requests, and synthetic bodies the recordings lack."""

from __future__ import annotations

import pytest

from router.errors import (
    BadRequestError,
    ContextLengthError,
    InvalidResponseError,
    ModelNotFoundError,
    ServerError,
)
from router.providers.error_body import decode_error_body
from router.providers.ollama import OllamaAdapter
from router.types import Message, StreamEvent, Usage, WireRequest

MSGS = [Message("system", "Be brief."), Message("user", "Hi")]
WIRE_MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.fixture
def adapter() -> OllamaAdapter:
    return OllamaAdapter("local", None)


def test_no_key_no_auth_header_but_a_key_is_a_bearer() -> None:
    assert OllamaAdapter("local", None).auth_headers() == {}
    cloud = OllamaAdapter("cloud", "ollama-cloud-key-123", {"X-Proxy": "1"})
    assert cloud.auth_headers() == {"Authorization": "Bearer ollama-cloud-key-123", "X-Proxy": "1"}


def test_router_params_merge_into_user_options(adapter: OllamaAdapter) -> None:
    params = {
        "max_tokens": 64,
        "temperature": 0.3,
        "options": {"num_ctx": 8192, "num_predict": 9999, "top_k": 20},
        "keep_alive": "5m",
        "think": True,
    }
    req = adapter.chat_request("llama3.2", MSGS, params)
    assert req == WireRequest(
        "POST",
        "/api/chat",
        {
            "model": "llama3.2",
            "messages": WIRE_MSGS,
            "stream": False,
            "options": {"num_ctx": 8192, "num_predict": 64, "top_k": 20, "temperature": 0.3},
            "keep_alive": "5m",
            "think": True,
        },
    )
    assert params["options"] == {"num_ctx": 8192, "num_predict": 9999, "top_k": 20}  # not mutated


def test_stream_is_always_explicit_and_empty_options_are_left_out(adapter: OllamaAdapter) -> None:
    assert adapter.chat_request("m", MSGS, {}).json == {
        "model": "m",
        "messages": WIRE_MSGS,
        "stream": False,
    }
    assert adapter.chat_request("m", MSGS, {"stream": False}, stream=True).json == {
        "model": "m",
        "messages": WIRE_MSGS,
        "stream": True,
    }


def test_options_that_are_not_a_mapping_are_refused(adapter: OllamaAdapter) -> None:
    with pytest.raises(BadRequestError, match="options must be a mapping"):
        adapter.chat_request("m", MSGS, {"options": [1, 2]})


def test_health_is_the_tags_listing_with_a_pull_hint(adapter: OllamaAdapter) -> None:
    assert adapter.health_request() == WireRequest("GET", "/api/tags")
    body = b'{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest"},{"name":"qwen3:8b"}]}'
    names = adapter.parse_models(body)
    assert names == {"llama3.2:latest", "llama3.2", "qwen3:8b"}
    assert "qwen3" not in names  # only :latest is implied by a bare name
    assert adapter.missing_model_hint("qwen3") == "not pulled; run `ollama pull qwen3`"


@pytest.mark.parametrize(
    "counts",
    [
        '"prompt_eval_count":"9","eval_count":3',
        '"prompt_eval_count":9,"eval_count":3.0',
        '"prompt_eval_count":9,"eval_count":true',
        '"prompt_eval_count":-9,"eval_count":3',
    ],
)
def test_a_malformed_count_keeps_the_reply_and_is_marked_suspect(
    adapter: OllamaAdapter, counts: str
) -> None:
    body = '{"model":"m","message":{"role":"assistant","content":"hi"},"done":true,' + counts
    reply = adapter.parse_reply("m", (body + "}").encode())
    assert reply.text == "hi"
    assert reply.usage.estimated and reply.usage.suspect is not None
    assert "count" in reply.usage.suspect
    ev = adapter.parse_stream_event("m", "", body + "}")
    assert ev is not None and ev.usage is not None and ev.usage.suspect == reply.usage.suspect


def test_no_counts_at_all_is_estimated(adapter: OllamaAdapter) -> None:
    body = b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":true}'
    reply = adapter.parse_reply("m", body)
    assert reply.usage == Usage(estimated=True)
    assert reply.details["usage_missing"] == ["input_tokens", "output_tokens"]


def test_a_200_error_object_raises(adapter: OllamaAdapter) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        adapter.parse_reply("m", b'{"error":"model \'x\' not found, try pulling it first"}')


@pytest.mark.parametrize(
    "body",
    [b'{"message":null}', b'{"message":{"content":["a"]}}', b'{"done":true}', b"{"],
)
def test_a_body_that_does_not_match_is_invalid(adapter: OllamaAdapter, body: bytes) -> None:
    with pytest.raises(InvalidResponseError):
        adapter.parse_reply("m", body)


def test_stream_chunk_text_and_thinking(adapter: OllamaAdapter) -> None:
    line = '{"model":"m","message":{"role":"assistant","content":"a","thinking":"t"},"done":false}'
    assert adapter.parse_stream_event("m", "", line) == StreamEvent(
        text="a", details={"thinking": "t"}
    )


def test_final_stream_line_carries_counts_and_length_finish(adapter: OllamaAdapter) -> None:
    line = (
        '{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length",'
        '"prompt_eval_count":7,"eval_count":3}'
    )
    assert adapter.parse_stream_event("m", "", line) == StreamEvent(
        usage=Usage(input_tokens=7, output_tokens=3), finish_reason="length", done=True
    )


def test_error_line_mid_stream_raises(adapter: OllamaAdapter) -> None:
    with pytest.raises(ServerError, match="out of memory"):
        adapter.parse_stream_event("m", "", '{"error":"model runner crashed: out of memory"}')


def test_blank_line_carries_nothing(adapter: OllamaAdapter) -> None:
    assert adapter.parse_stream_event("m", "", "\n") is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"error":"model \\"x\\" not found, try pulling it first"}', ModelNotFoundError),
        (400, b'{"error":"the input length exceeds the context length"}', ContextLengthError),
        (500, b'{"error":"llama runner process has terminated"}', ServerError),
        (400, b'{"error":"invalid options"}', BadRequestError),
    ],
)
def test_classification(adapter: OllamaAdapter, status: int, body: bytes, expected: type) -> None:
    assert adapter.classify_error(status, decode_error_body(body)) is expected


def test_the_prompt_cache_mark_is_ignored() -> None:
    """Ollama has no prompt cache to mark: a marked message is sent as an unmarked one."""
    adapter = OllamaAdapter("ollama", None)
    plain = [Message("system", "Be brief."), Message("user", "2+2?")]
    marked = [Message("system", "Be brief.", cache=True), Message("user", "2+2?")]
    assert adapter.chat_request("llama3.2", marked, {"max_tokens": 5}) == adapter.chat_request(
        "llama3.2", plain, {"max_tokens": 5}
    )
