"""The mock provider: a deterministic upstream that the OpenAI-format adapter understands."""

from __future__ import annotations

import json
import math

import pytest

from router.config import MockSettings
from router.errors import AuthenticationError, RateLimitError, ServerError
from router.providers import build_adapter
from router.providers.error_body import error_from_response
from router.providers.mock import MockAdapter, MockResponse, MockUpstream
from router.types import Message, Usage
from tests.fixtures_util import consume, sse_events

MSGS = [Message("system", "You are terse."), Message("user", "What is ACME at?")]


def _request(adapter: MockAdapter, *, stream: bool = False, model: str = "m1") -> bytes:
    req = adapter.chat_request(model, MSGS, {"max_tokens": 50}, stream=stream)
    return json.dumps(req.json).encode()


@pytest.fixture
def adapter() -> MockAdapter:
    adapter = build_adapter("mock", "mock", "ignored-key-123", None)
    assert isinstance(adapter, MockAdapter)
    return adapter


def test_mock_adapter_sends_no_key(adapter: MockAdapter) -> None:
    assert adapter.auth_headers() == {}


def test_reply_template_and_deterministic_usage(adapter: MockAdapter) -> None:
    upstream = MockUpstream(MockSettings(reply="{model} says: {prompt}", latency_s=0.25))
    res = upstream.respond("POST", "/chat/completions", _request(adapter))
    assert res == MockResponse(0.25, 200, res.headers, res.body)
    assert res.headers["content-type"] == "application/json"
    reply = adapter.parse_reply("m1", res.body)
    text = "m1 says: What is ACME at?"
    assert reply.text == text
    assert reply.finish_reason == "stop"
    chars = len("You are terse.") + len("What is ACME at?")
    assert reply.usage == Usage(
        input_tokens=math.ceil(chars / 4), output_tokens=math.ceil(len(text) / 4)
    )


def test_template_substitution_is_literal_not_format(adapter: MockAdapter) -> None:
    upstream = MockUpstream(MockSettings(reply="{x} {model} {0} {prompt}"))
    res = upstream.respond("POST", "/v1/chat/completions", _request(adapter))
    assert adapter.parse_reply("m1", res.body).text == "{x} m1 {0} What is ACME at?"


def test_failures_come_first_in_order_then_success(adapter: MockAdapter) -> None:
    upstream = MockUpstream(MockSettings(failures=[503, 429, 401]))
    responses = [upstream.respond("POST", "/chat/completions", _request(adapter)) for _ in range(4)]
    assert [r.status for r in responses] == [503, 429, 401, 200]
    errors = [
        error_from_response(adapter, "m1", r.status, r.headers, r.body) for r in responses[:3]
    ]
    assert [type(e) for e in errors] == [ServerError, RateLimitError, AuthenticationError]
    assert errors[0].detail == "mock failure 1 of 3: HTTP 503"
    assert errors[1].retry_after == 1.0
    assert errors[0].retry_after is None
    assert errors[0].request_id == "mock-req-1"


def test_model_listing_is_not_a_chat_and_does_not_consume_failures(adapter: MockAdapter) -> None:
    upstream = MockUpstream(MockSettings(failures=[500]), models=["m1", "m2"])
    listing = upstream.respond("GET", "/models", b"")
    assert listing.status == 200
    assert adapter.parse_models(listing.body) == {"m1", "m2"}
    assert upstream.respond("POST", "/chat/completions", _request(adapter)).status == 500


def test_unknown_route_is_a_404(adapter: MockAdapter) -> None:
    res = MockUpstream(MockSettings()).respond("DELETE", "/files", b"")
    assert res.status == 404
    assert (
        "no route for DELETE /files" in error_from_response(adapter, "m", 404, {}, res.body).detail
    )


def test_invalid_request_body_is_a_400(adapter: MockAdapter) -> None:
    res = MockUpstream(MockSettings()).respond("POST", "/chat/completions", b"{nope")
    assert res.status == 400
    err = error_from_response(adapter, "m1", res.status, res.headers, res.body)
    assert "invalid chat request" in err.detail


def test_stream_replays_the_reply_in_word_chunks_with_usage(adapter: MockAdapter) -> None:
    reply = "  Buy ACME,  hold  the rest. "
    upstream = MockUpstream(MockSettings(reply=reply))
    res = upstream.respond("POST", "/chat/completions", _request(adapter, stream=True))
    assert res.status == 200
    assert res.headers["content-type"].startswith("text/event-stream")
    events = sse_events(res.body)
    assert len(events) > 5  # word-sized chunks
    result = consume(adapter, "m1", events)
    assert result.text == reply
    assert result.done
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.output_tokens == math.ceil(len(reply) / 4)


def test_stream_without_include_usage_sends_no_usage(adapter: MockAdapter) -> None:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    res = MockUpstream(MockSettings()).respond("POST", "/chat/completions", body.encode())
    result = consume(adapter, "m", sse_events(res.body))
    assert result.usage is None
    assert result.text == "mock answer from m"


def test_same_requests_give_the_same_bytes(adapter: MockAdapter) -> None:
    a = MockUpstream(MockSettings(failures=[500]))
    b = MockUpstream(MockSettings(failures=[500]))
    for _ in range(3):
        body = _request(adapter, stream=True)
        assert a.respond("POST", "/chat/completions", body) == b.respond(
            "POST", "/chat/completions", body
        )
