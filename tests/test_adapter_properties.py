"""Whatever bytes a provider sends, an adapter answers with a result or a ProviderError:
never a KeyError, IndexError, TypeError or any other crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import ProviderError
from router.providers import ADAPTERS, build_adapter
from router.providers.base import Adapter
from router.providers.error_body import ErrorBody, decode_error_body, error_from_response
from router.types import Reply, StreamEvent

KINDS = sorted(ADAPTERS)
ADAPTER_LIST = [build_adapter(kind, "p", "key-for-fuzzing", None) for kind in KINDS]

# Keys the wire models read, so that generated documents reach past the first check.
KEYS = st.sampled_from(
    [
        "id",
        "choices",
        "message",
        "delta",
        "content",
        "text",
        "type",
        "thinking",
        "reasoning_content",
        "reasoning",
        "tool_calls",
        "function",
        "name",
        "arguments",
        "index",
        "finish_reason",
        "stop_reason",
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "cached_tokens",
        "reasoning_tokens",
        "error",
        "code",
        "status_code",
        "metadata",
        "raw",
        "done",
        "done_reason",
        "prompt_eval_count",
        "eval_count",
        "models",
        "data",
        "citations",
        "refusal",
        "input",
        "partial_json",
        "content_block",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["text", "text_delta", "tool_use", "error", "message_start", "[DONE]"])
)
DOCS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)
EVENTS = st.sampled_from(
    ["", "message", "error", "ping", "message_start", "content_block_delta", "message_delta"]
)


def _doc_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _parse_all(adapter: Adapter, body: bytes, event: str) -> None:
    """Call every parsing entry point; only ProviderError may escape."""
    for call in (
        lambda: adapter.parse_reply("m", body),
        lambda: adapter.parse_models(body),
        lambda: adapter.parse_stream_event("m", event, body.decode("utf-8", errors="replace")),
    ):
        result: object
        try:
            result = call()
        except ProviderError as exc:
            result = exc
        if isinstance(result, ProviderError):
            assert result.provider == "p"
            assert "\n" not in str(result)
        else:
            assert result is None or isinstance(result, Reply | StreamEvent | set)


@pytest.mark.parametrize("adapter", ADAPTER_LIST, ids=KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300), event=EVENTS)
def test_arbitrary_bytes_never_crash(adapter: Adapter, body: bytes, event: str) -> None:
    _parse_all(adapter, body, event)


@pytest.mark.parametrize("adapter", ADAPTER_LIST, ids=KINDS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCS, event=EVENTS)
def test_arbitrary_json_documents_never_crash(adapter: Adapter, doc: Any, event: str) -> None:
    _parse_all(adapter, _doc_bytes(doc), event)


@pytest.mark.parametrize("adapter", ADAPTER_LIST, ids=KINDS)
@settings(max_examples=200, deadline=None)
@given(
    status=st.integers(min_value=0, max_value=999),
    body=st.binary(max_size=200) | DOCS.map(_doc_bytes),
    headers=st.dictionaries(
        st.sampled_from(["retry-after", "retry-after-ms", "x-request-id", "request-id"]),
        st.text(max_size=30),
    ),
)
def test_any_error_response_becomes_a_provider_error(
    adapter: Adapter, status: int, body: bytes, headers: dict[str, str]
) -> None:
    err = error_from_response(adapter, "m", status, headers, body, now_epoch=1.7e9)
    assert isinstance(err, ProviderError)
    assert "\n" not in str(err)
    assert err.retry_after is None or err.retry_after >= 0


@given(body=st.binary(max_size=500))
def test_decode_error_body_never_raises(body: bytes) -> None:
    decoded = decode_error_body(body)
    assert isinstance(decoded, ErrorBody)
    assert decoded.message
    assert "\n" not in decoded.message


@pytest.mark.parametrize("adapter", ADAPTER_LIST, ids=KINDS)
@given(
    status=st.integers(min_value=0, max_value=999),
    message=st.text(max_size=50),
    code=st.none() | st.text(max_size=20),
    err_type=st.none() | st.text(max_size=20),
)
def test_classify_error_always_names_a_provider_error(
    adapter: Adapter, status: int, message: str, code: str | None, err_type: str | None
) -> None:
    cls = adapter.classify_error(status, ErrorBody(message=message, code=code, type=err_type))
    assert issubclass(cls, ProviderError)
