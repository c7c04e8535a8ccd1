"""OpenTelemetry: an in-memory exporter gets GenAI spans for every call and attempt, and no key."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from router.errors import RouterError
from router.metrics.otel import instrument, vendor_for
from router.observe import CallRecord
from router.router import Router
from router.types import Message
from tests.routerkit import make_config
from tests.test_metrics_stats import FLAKY_COST, STEADY_COST, mix_router, run_mix
from tests.upstream import Upstream, reply

# Timestamps are derived from one wall-clock reading and monotonic offsets: allow rounding.
_SLACK_NS = 10_000


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _calls(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.INTERNAL]


def _attrs(item: ReadableSpan | Event) -> dict[str, Any]:
    """A span's or an event's attributes as a plain dict."""
    return dict(item.attributes or {})


def _children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    pid = parent.context.span_id
    kids = [s for s in spans if s.parent is not None and s.parent.span_id == pid]
    return sorted(kids, key=lambda s: s.start_time or 0)


async def test_the_mix_gives_one_span_per_call_and_one_child_per_attempt(
    tmp_path: Path, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = tracing
    async with mix_router(tmp_path) as router:
        instrument(router, provider)
        await run_mix(router)
    spans = exporter.get_finished_spans()
    calls = _calls(spans)
    names = ["chat r", "chat r", "chat bad", "chat bad", "chat costly", "chat r"]
    assert [s.name for s in calls] == names
    # 8 attempts reached a provider; the 2 skips are events, not spans.
    assert len(spans) == 6 + 8
    assert all(s.kind is SpanKind.CLIENT for s in spans if s not in calls)

    first = calls[0]
    assert first.parent is None
    assert dict(first.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.max_tokens": 50,
        "router.route": "r",
        "router.deadline_s": 30.0,
        "router.stream": False,
        "router.attempts": 3,
        "router.cost_usd": float(STEADY_COST),
        "gen_ai.provider.name": "mock",
        "router.provider": "steady",
        "gen_ai.response.model": "m2",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.response.id": "mock-1",
        "gen_ai.usage.input_tokens": 1,
        "gen_ai.usage.output_tokens": 5,
    }
    assert first.status.status_code is StatusCode.UNSET
    kids = _children(spans, first)
    assert [k.name for k in kids] == ["chat m1", "chat m1", "chat m2"]
    assert [_attrs(k)["router.attempt.outcome"] for k in kids] == ["error", "error", "ok"]
    assert [_attrs(k).get("error.type") for k in kids] == ["server", "server", None]
    assert [_attrs(k)["router.attempt.retry"] for k in kids] == [False, True, False]
    assert [k.status.status_code for k in kids] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    ok = dict(kids[2].attributes or {})
    assert ok == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mock",
        "router.provider": "steady",
        "gen_ai.request.model": "m2",
        "gen_ai.request.max_tokens": 50,
        "router.route": "r",
        "router.attempt.outcome": "ok",
        "router.attempt.retry": False,
        "router.cost_usd": float(STEADY_COST),
        "http.response.status_code": 200,
        "gen_ai.response.model": "m2",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.response.id": "mock-1",
        "gen_ai.usage.input_tokens": 1,
        "gen_ai.usage.output_tokens": 5,
    }
    assert _attrs(kids[0])["http.response.status_code"] == 503
    # Children sit inside their parent, in order.
    assert first.start_time is not None and first.end_time is not None
    for k in kids:
        assert k.start_time is not None and k.end_time is not None
        assert first.start_time - _SLACK_NS <= k.start_time <= k.end_time
        assert k.end_time <= first.end_time + _SLACK_NS
    ends = [(k.start_time or 0, k.end_time or 0) for k in kids]
    assert ends[0][1] <= ends[1][0] + _SLACK_NS  # the retry started after the first try ended

    # bad #2: the cooled-down step is an event on the call span; the call failed.
    bad2 = calls[3]
    assert _attrs(bad2)["error.type"] == "all_providers_failed"
    assert bad2.status.status_code is StatusCode.ERROR
    assert "all 2 attempt(s) failed" in (bad2.status.description or "")
    assert [e.name for e in bad2.events] == ["router.skip"]
    skip = dict(bad2.events[0].attributes or {})
    assert skip == {
        "router.provider": "badkey",
        "gen_ai.request.model": "m3",
        "router.skip_reason": "cooldown",
        "router.skip_detail": "cooling down for 60.0s more",
    }
    assert [_attrs(k)["error.type"] for k in _children(spans, bad2)] == ["bad_request"]

    # costly: budget refusal, no attempt span at all.
    costly = calls[4]
    assert _attrs(costly)["error.type"] == "budget_exceeded"
    assert _children(spans, costly) == []
    assert _attrs(costly.events[0])["router.skip_reason"] == "budget"

    # The stream: time to first token on its attempt.
    stream = calls[5]
    assert _attrs(stream)["router.stream"] is True
    assert _attrs(stream)["router.cost_usd"] == float(FLAKY_COST)
    (attempt,) = _children(spans, stream)
    ttft = _attrs(attempt)["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttft, float) and ttft >= 0


async def test_call_span_is_a_child_of_the_callers_span(
    tmp_path: Path, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = tracing
    tracer = provider.get_tracer("app")
    async with mix_router(tmp_path) as router:
        instrument(router, provider)
        with tracer.start_as_current_span("POST /analyse") as outer:
            await router.complete("r", {"ticker": "X"})
    spans = exporter.get_finished_spans()
    (call,) = _calls([s for s in spans if s.name != "POST /analyse"])
    assert call.parent is not None
    assert call.parent.span_id == outer.get_span_context().span_id
    assert call.context.trace_id == outer.get_span_context().trace_id


async def test_no_content_unless_asked_and_uninstrument_stops(
    tmp_path: Path, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = tracing
    async with mix_router(tmp_path) as router:
        t = instrument(router, provider)
        await router.complete("r", {"ticker": "SECRETTICKER"})
        t.uninstrument()
        await router.complete("r", {"ticker": "X"})
    spans = exporter.get_finished_spans()
    assert len(_calls(spans)) == 1
    dump = "".join(s.to_json() for s in spans)
    assert "SECRETTICKER" not in dump
    assert "gen_ai.output.messages" not in dump and "gen_ai.input.messages" not in dump


CANARY = "canary-7f3a9d2e41b6c85f"

CANARY_CONFIG = """\
settings:
  backoff: {initial_s: 0, max_s: 0}
providers:
  remote:
    kind: openai
    base_url: "%s"
    api_key_env: CANARY_KEY
    models: {gpt-x: {price: {input_per_mtok: 1, output_per_mtok: 1}}}
  echo:
    kind: mock
    mock: {reply: "you said {prompt}"}
    models: {e1: {}}
routes:
  r:
    prompt: "{{ text }}"
    vars: {text: str}
    fallback: [remote/gpt-x, echo/e1]
"""


async def test_keys_never_reach_spans_even_with_content_capture(
    tmp_path: Path, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """The upstream echoes the key in its 401 body and the prompt carries it: no span has it."""
    provider, exporter = tracing
    async with Upstream() as up:
        up.queue(
            reply(
                401,
                {"error": {"message": f"Incorrect API key provided: {CANARY}", "type": "auth"}},
            )
        )
        config = make_config(tmp_path, CANARY_CONFIG % f"{up.url}/v1", env={"CANARY_KEY": CANARY})
        async with Router(config) as router:
            instrument(router, provider, capture_content=True)
            result = await router.complete("r", {"text": f"my key is {CANARY}"})
            with pytest.raises(RouterError):
                await router.complete("r", {"text": "again"}, deadline_s=0.000001)
        assert up.requests[0].headers["authorization"] == f"Bearer {CANARY}"  # it was sent
    assert result.provider == "echo"
    spans = exporter.get_finished_spans()
    dump = "".join(s.to_json() for s in spans)
    assert CANARY not in dump
    assert "[REDACTED]" in dump  # the content was captured, then scrubbed
    call = _calls(spans)[0]
    out = json.loads(_attrs(call)["gen_ai.output.messages"])
    assert out == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "you said my key is [REDACTED]"}],
            "finish_reason": "stop",
        }
    ]
    remote = _children(spans, call)[0]
    assert _attrs(remote)["error.type"] == "auth"
    assert _attrs(remote)["gen_ai.provider.name"] == "openai"
    assert _attrs(remote)["server.address"] == "127.0.0.1"
    assert _attrs(remote)["server.port"] == up.port


@pytest.mark.parametrize(
    ("kind", "url", "vendor"),
    [
        ("openai", "https://api.openai.com/v1", "openai"),
        ("openai", "https://api.x.ai/v1", "x_ai"),
        ("openai", "https://api.deepseek.com", "deepseek"),
        ("openai", "https://api.groq.com/openai/v1", "groq"),
        ("openai", "https://openrouter.ai/api/v1", "openrouter"),
        ("openai", "https://myres.openai.azure.com/openai", "azure.ai.openai"),
        ("openai", "https://generativelanguage.googleapis.com/v1beta/openai", "gcp.gemini"),
        ("anthropic", "https://api.anthropic.com", "anthropic"),
        ("openai", "http://10.0.0.5:8000/v1", "openai"),  # a self-hosted compatible server
        ("ollama", "http://localhost:11434", "ollama"),
        ("mock", "mock://local", "mock"),
        ("azure_openai", "https://myres.openai.azure.com", "azure.ai.openai"),
        ("azure_openai", "https://gateway.example.com/aoai", "azure.ai.openai"),  # behind APIM
    ],
)
def test_vendor_names_follow_the_conventions(kind: str, url: str, vendor: str) -> None:
    assert vendor_for(kind, url) == vendor


async def test_captured_content_uses_the_conventions_json_form(
    tmp_path: Path, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """System instructions, input and output messages, once the record carries the messages."""
    provider, exporter = tracing
    async with mix_router(tmp_path) as router:
        t = instrument(router, provider, capture_content=True)
        result = await router.complete("r", {"ticker": "ACME"})
        t.uninstrument()
    messages = [Message("system", "be brief"), Message("user", f"ACME {CANARY}")]
    t.on_call(CallRecord("r", False, result, None, result.attempts, 30.0, 50, 0.1, 1.0e9, messages))
    call = _calls(exporter.get_finished_spans())[-1]
    attrs = _attrs(call)
    assert json.loads(attrs["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "be brief"}
    ]
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "ACME [REDACTED]"}]}
    ]
    assert json.loads(attrs["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "answer about ACME"}],
            "finish_reason": "stop",
        }
    ]
    assert call.start_time == 1_000_000_000 * 1_000_000_000
