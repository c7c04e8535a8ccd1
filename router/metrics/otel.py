"""OpenTelemetry traces of a Router, GenAI semantic conventions (extra ``yaml-llm-router[otel]``).

::

    from router.metrics.otel import instrument

    instrument(router)          # the global TracerProvider, or pass one

Every call becomes one span ``chat {route}`` (kind INTERNAL) and every attempt
that reached a provider one child span ``chat {model}`` (kind CLIENT); skipped
steps are events ``router.skip`` on the call span. The spans are built when
the call ends, from the :class:`~router.observe.CallRecord`'s timings (explicit
start and end times), so tracing adds nothing while a call runs and cannot
change its outcome. The call span's parent is the span current where the call
was made (e.g. the web request's).

Attributes follow the GenAI conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
``gen_ai.response.model``, ``gen_ai.response.finish_reasons``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``error.type``)
plus the router's own (``router.route``, ``router.provider``, ``router.cost_usd``,
``router.deadline_s``, ``router.attempt.outcome``, ``router.skip_reason``); the
full list is in docs/operations.md. Prompt and completion text is recorded only
with ``capture_content=True``, and passes through :func:`router.redact.redact`
like every error message; keys never appear.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from router.metrics.extras import missing_extra

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.util.types import AttributeValue
except ImportError as missing:  # the optional dependency is not installed
    raise missing_extra(__name__, "otel", missing) from missing

from router.conversation import url_shown
from router.errors import StreamInterruptedError
from router.metrics.stats import call_moves, error_type, skip_label
from router.observe import CallRecord
from router.redact import redact
from router.types import Attempt, Image, Part, Text, ToolCall, Usage

if TYPE_CHECKING:
    from router.router import Router

__all__ = ["Tracing", "instrument", "vendor_for"]

# Host (or parent domain) of a base_url -> gen_ai.provider.name well-known value.
_VENDORS: dict[str, str] = {
    "api.openai.com": "openai",
    "openai.azure.com": "azure.ai.openai",
    "api.anthropic.com": "anthropic",
    "api.x.ai": "x_ai",
    "api.deepseek.com": "deepseek",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral_ai",
    "api.perplexity.ai": "perplexity",
    "api.cohere.com": "cohere",
    "api.cohere.ai": "cohere",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "openrouter.ai": "openrouter",
}

Attributes = dict[str, AttributeValue]


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def vendor_for(kind: str, base_url: str) -> str:
    """The ``gen_ai.provider.name`` of a provider of ``kind`` at ``base_url``.

    A known vendor host gives its well-known value (``api.x.ai`` → ``x_ai``);
    otherwise the wire protocol's name (``openai`` for any OpenAI-compatible
    server, as OpenAI's own client instrumentation reports), ``ollama`` or
    ``mock``; ``azure.ai.openai`` for ``azure_openai`` on any host.
    """
    host = (urlsplit(base_url).hostname or "").lower()
    while host:
        vendor = _VENDORS.get(host)
        if vendor is not None:
            return vendor
        _, _, host = host.partition(".")
    # Azure OpenAI behind a gateway host is still Azure OpenAI.
    return "azure.ai.openai" if kind == "azure_openai" else kind


def _usage_attrs(attrs: Attributes, usage: Usage) -> None:
    attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
    attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
    if usage.cached_input_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    if usage.cache_write_tokens:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens


def _parts(content: str | list[Part]) -> list[dict[str, Any]]:
    """A message's content as GenAI semantic-convention parts (text redacted; image
    bytes left out, only their type and size)."""
    if isinstance(content, str):
        return [{"type": "text", "content": redact(content)}]
    out: list[dict[str, Any]] = []
    for p in content:
        if isinstance(p, Text):
            out.append({"type": "text", "content": redact(p.text)})
        elif isinstance(p, Image):
            if p.url is not None:
                out.append({"type": "uri", "modality": "image", "uri": redact(url_shown(p.url))})
            else:
                out.append(
                    {
                        "type": "blob",
                        "modality": "image",
                        "mime_type": p.mime,
                        "size": len(p.data or b""),
                    }
                )
        elif isinstance(p, ToolCall):
            args = p.arguments_raw if p.arguments_raw is not None else json.dumps(p.arguments)
            out.append({"type": "tool_call", "id": p.id, "name": p.name, "arguments": redact(args)})
        else:
            result = p.content
            text = (
                result
                if isinstance(result, str)
                else "".join(r.text for r in result if isinstance(r, Text))
            )
            out.append({"type": "tool_call_response", "id": p.call_id, "response": redact(text)})
    return out


class Tracing:
    """A Router observer that turns each finished call into spans; made by :func:`instrument`."""

    def __init__(
        self, router: Router, tracer_provider: TracerProvider | None, capture_content: bool
    ) -> None:
        self._router = router
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        # Record prompt and completion text (redacted) on call spans.
        self._capture = capture_content
        # (kind, base_url) -> provider attributes derived from them.
        self._servers: dict[tuple[str, str], Attributes] = {}

    def __repr__(self) -> str:
        return f"<Tracing capture_content={self._capture}>"

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        """Nothing: spans are made when the call ends."""

    def _provider_attrs(self, provider: str) -> Attributes:
        """gen_ai.provider.name, router.provider and server.* of a configured provider."""
        pplan = self._router.plan.providers.get(provider)
        if pplan is None:  # removed by a reload since the attempt
            return {"router.provider": provider}
        kind, base_url = pplan.kind, pplan.base_url
        key = (kind, base_url)
        attrs = self._servers.get(key)
        if attrs is None:
            attrs = {"gen_ai.provider.name": vendor_for(kind, base_url)}
            if kind != "mock":
                url = urlsplit(base_url)
                if url.hostname:
                    attrs["server.address"] = url.hostname
                    attrs["server.port"] = url.port or (443 if url.scheme == "https" else 80)
            self._servers[key] = attrs
        return {**attrs, "router.provider": provider}

    def on_call(self, record: CallRecord) -> None:
        result, error = record.result, record.error
        attempts = record.attempts
        attrs: Attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.max_tokens": record.max_tokens,
            "router.route": record.route,
            "router.deadline_s": record.deadline_s,
            "router.stream": record.stream,
            "router.attempts": len(attempts),
            "router.cost_usd": float(sum(a.cost_usd for a in attempts)),
        }
        if result is not None:
            attrs.update(self._provider_attrs(result.provider))
            attrs["gen_ai.response.model"] = result.model
            if result.finish_reason:
                attrs["gen_ai.response.finish_reasons"] = (result.finish_reason,)
            if result.response_id:
                attrs["gen_ai.response.id"] = result.response_id
            _usage_attrs(attrs, result.usage)
        else:
            attrs["error.type"] = error_type(error)
        if self._capture:
            self._content(attrs, record)
        start = record.started_at
        span = self._tracer.start_span(
            f"chat {record.route}", kind=SpanKind.INTERNAL, attributes=attrs, start_time=_ns(start)
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, str(error)))
        ctx = trace.set_span_in_context(span)
        retries = set(call_moves(attempts)[0]) if len(attempts) > 1 else set()
        last = len(attempts) - 1
        for i, a in enumerate(attempts):
            at = start + a.start_s
            if a.outcome == "skipped":
                span.add_event(
                    "router.skip",
                    {
                        "router.provider": a.provider,
                        "gen_ai.request.model": a.model,
                        "router.skip_reason": skip_label(a.skip),
                        "router.skip_detail": redact(a.reason or ""),
                    },
                    timestamp=_ns(at),
                )
                continue
            child = self._tracer.start_span(
                f"chat {a.model}",
                context=ctx,
                kind=SpanKind.CLIENT,
                attributes=self._attempt_attrs(record, a, i in retries, i == last),
                start_time=_ns(at),
            )
            if a.outcome == "error":
                child.set_status(Status(StatusCode.ERROR, str(a.error) if a.error else None))
            child.end(end_time=_ns(at + a.latency_s))
        span.end(end_time=_ns(start + record.latency_s))

    def _attempt_attrs(self, record: CallRecord, a: Attempt, retry: bool, last: bool) -> Attributes:
        attrs: Attributes = {
            "gen_ai.operation.name": "chat",
            **self._provider_attrs(a.provider),
            "gen_ai.request.model": a.model,
            "gen_ai.request.max_tokens": record.max_tokens,
            "router.route": record.route,
            "router.attempt.outcome": a.outcome,
            "router.attempt.retry": retry,
            "router.cost_usd": float(a.cost_usd),
        }
        if a.status is not None:
            attrs["http.response.status_code"] = a.status
        if a.outcome == "ok":
            attrs["gen_ai.response.model"] = a.model
            result = record.result
            if last and result is not None:
                if result.finish_reason:
                    attrs["gen_ai.response.finish_reasons"] = (result.finish_reason,)
                if result.response_id:
                    attrs["gen_ai.response.id"] = result.response_id
        else:
            attrs["error.type"] = error_type(a.error)
        if a.usage is not None:
            _usage_attrs(attrs, a.usage)
        if a.ttft_s is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = a.ttft_s
        return attrs

    def _content(self, attrs: Attributes, record: CallRecord) -> None:
        """gen_ai.system_instructions, gen_ai.input.messages and gen_ai.output.messages (JSON)."""
        messages = record.messages
        system = [p for m in messages if m.role == "system" for p in _parts(m.content)]
        if system:
            attrs["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False)
        chat = [
            {"role": m.role, "parts": _parts(m.content)} for m in messages if m.role != "system"
        ]
        if chat:
            attrs["gen_ai.input.messages"] = json.dumps(chat, ensure_ascii=False)
        text: str | None = None
        finish = "error"
        if record.result is not None:
            text = record.result.text
            finish = record.result.finish_reason or "stop"
        elif isinstance(record.error, StreamInterruptedError):
            text = record.error.partial_text
        if text is not None:
            out = [{"role": "assistant", "parts": _parts(text), "finish_reason": finish}]
            attrs["gen_ai.output.messages"] = json.dumps(out, ensure_ascii=False)

    def uninstrument(self) -> None:
        """Stop tracing the router."""
        self._router.remove_observer(self)


def instrument(
    router: Router,
    tracer_provider: TracerProvider | None = None,
    *,
    capture_content: bool = False,
) -> Tracing:
    """Trace every call of ``router`` from now on.

    Args:
        router: the Router to trace.
        tracer_provider: where spans go; the global one (``trace.set_tracer_provider``)
            when None.
        capture_content: also record the rendered prompt and the completion text
            (redacted) as ``gen_ai.input.messages`` / ``gen_ai.output.messages``.
            Off by default: prompts often carry data that must not leave the process.

    Returns:
        The observer; ``.uninstrument()`` stops tracing.
    """
    tracing = Tracing(router, tracer_provider, capture_content)
    router.add_observer(tracing)
    return tracing
