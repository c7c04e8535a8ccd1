"""Ollama's native chat API (``POST /api/chat``; NDJSON streams).

Requests: the router's ``max_tokens`` becomes ``options.num_predict`` and
``temperature`` ``options.temperature``, merged into the caller's ``options``
(the router's values win: the budget reserved for ``max_tokens``). ``stream``
is always set, because Ollama streams unless told ``false``. Extras such as
``keep_alive``, ``think`` and ``format`` pass through.

Usage: ``prompt_eval_count`` counts the prompt tokens Ollama evaluated and
``eval_count`` every generated token, thinking included. Ollama reports no
cache split: prompt tokens reused from its KV cache are left out of
``prompt_eval_count``, and when the whole prompt was cached it drops the field
(a recorded reply has ``eval_count`` and no ``prompt_eval_count``); then
``input_tokens`` is 0 and ``details["usage_missing"]`` says so. Local models
cost nothing, so this never skews a cost. A malformed count (a string, float,
bool or negative) does not fail the reply: the usage comes back ``suspect`` and
the router bills its own estimate (docs/money.md).

Health: ``GET /api/tags`` lists pulled models as ``name:tag``; a configured
``llama3.2`` matches a pulled ``llama3.2:latest``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from router.errors import BadRequestError, ProviderError
from router.providers.base import (
    AdapterBase,
    Count,
    Params,
    StreamFormat,
    Wire,
    chat_body,
    compact_json,
    event_usage,
    malformed_usage,
    map_finish_reason,
    parse_wire,
    parse_wire_once,
    reported_usage,
    wire_usage,
)
from router.providers.error_body import COMMON_RULES, ErrorBody, classify, stream_error
from router.types import Message, Reply, StreamEvent, Usage, WireRequest

_FINISH_REASON_MAP = {"stop": "stop", "length": "length"}

_ROUTER_PARAMS = frozenset({"max_tokens", "temperature", "options"})
_OWNED = frozenset({"model", "messages", "stream"})
# Params that do not pass into the body as provider extras.
_RESERVED = _ROUTER_PARAMS | _OWNED
_LATEST = ":latest"


class _Function(Wire):
    index: int | None = None
    name: str | None = None
    arguments: Any = None  # a JSON object in Ollama (a string in OpenAI)


class _ToolCall(Wire):
    id: str | None = None
    function: _Function | None = None


class _Message(Wire):
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Counts(Wire):
    prompt_eval_count: Count | None = None
    eval_count: Count | None = None


class _Response(Wire):
    message: _Message
    done_reason: str | None = None
    # Read by _usage, so that a malformed count costs no reply.
    prompt_eval_count: Any = None
    eval_count: Any = None


class _TypedResponse(_Response):
    """A reply whose counts are well-formed: validated in one pass (parse_wire_once)."""

    prompt_eval_count: Count | None = None
    eval_count: Count | None = None


class _Chunk(Wire):
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: Any = None
    eval_count: Any = None
    error: Any = None


def _usage(body: _Response | _Chunk, details: dict[str, Any]) -> Usage:
    if isinstance(body, _TypedResponse):  # counts validated with the body
        return reported_usage(body.prompt_eval_count, body.eval_count, details)
    raw = {"prompt_eval_count": body.prompt_eval_count, "eval_count": body.eval_count}
    counts = wire_usage(_Counts, raw)
    if isinstance(counts, str):
        return malformed_usage(counts)
    return reported_usage(counts.prompt_eval_count, counts.eval_count, details)


class _Tag(Wire):
    name: str
    model: str | None = None


class _Tags(Wire):
    models: list[_Tag]


def _tool_calls(calls: list[_ToolCall]) -> list[dict[str, Any]]:
    out = []
    for position, tc in enumerate(calls):
        args = tc.function.arguments if tc.function else None
        index = tc.function.index if tc.function else None
        out.append(
            {
                "index": position if index is None else index,
                "id": tc.id,
                "name": tc.function.name if tc.function else None,
                "arguments": args if isinstance(args, str) else compact_json(args or {}),
            }
        )
    return out


def _finish(raw: str | None, has_tools: bool, details: dict[str, Any]) -> str | None:
    finish = map_finish_reason(raw, _FINISH_REASON_MAP, details)
    if has_tools and finish == "stop":  # Ollama says "stop" after calling tools
        details["finish_reason"] = raw
        finish = "tool_calls"
    return finish


class OllamaAdapter(AdapterBase):
    """Ollama native ``/api/chat`` (NDJSON streams).

    Local Ollama needs no key; Ollama's cloud and authenticating proxies take it
    as a bearer token (:class:`AdapterBase`'s default).
    """

    __slots__ = ()
    stream_format: ClassVar[StreamFormat] = "ndjson"
    # Request paths start with /api: the root is the host alone.
    api_root: ClassVar[str] = "http://localhost:11434"

    def chat_request(
        self, model: str, messages: Sequence[Message], params: Params, *, stream: bool = False
    ) -> WireRequest:
        """``POST /api/chat``: router params into ``options``; extras passed through."""
        user_options = params.get("options")
        if user_options is not None and not isinstance(user_options, Mapping):
            raise BadRequestError(
                f"params.options must be a mapping, not {type(user_options).__name__}",
                provider=self.provider,
                model=model,
            )
        options = dict(user_options or {})
        if params.get("max_tokens") is not None:
            options["num_predict"] = params["max_tokens"]
        if params.get("temperature") is not None:
            options["temperature"] = params["temperature"]
        body = chat_body(model, params, _RESERVED)
        body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        body["stream"] = stream
        if options:
            body["options"] = options
        return WireRequest("POST", "/api/chat", body)

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """Parse a non-streamed ``/api/chat`` body."""
        resp = parse_wire_once(self, model, _TypedResponse, _Response, body)
        msg = resp.message
        details: dict[str, Any] = {}
        if msg.thinking:
            details["thinking"] = msg.thinking
        if msg.tool_calls:
            details["tool_calls"] = [
                {k: v for k, v in tc.items() if k != "index"} for tc in _tool_calls(msg.tool_calls)
            ]
        finish = _finish(resp.done_reason, bool(msg.tool_calls), details)
        usage = _usage(resp, details)
        return Reply(msg.content or "", finish, usage, None, details)

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Status plus Ollama's messages (``model '...' not found``, context length)."""
        return classify(status, body, COMMON_RULES)

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """One NDJSON line: a message delta, the final ``done`` line, or an error."""
        line = data.strip()
        if not line:
            return None
        chunk = parse_wire(self, model, _Chunk, line)
        if chunk.error is not None:
            raise stream_error(self, model, line)
        text = ""
        details: dict[str, Any] = {}
        msg = chunk.message
        if msg is not None:
            text = msg.content or ""
            if msg.thinking:
                details["thinking"] = msg.thinking
            if msg.tool_calls:  # Ollama sends each call whole, in one line
                details["tool_calls"] = _tool_calls(msg.tool_calls)
        if not chunk.done:
            return StreamEvent(text=text, details=details or None)
        has_tools = bool(msg and msg.tool_calls)
        finish = _finish(chunk.done_reason, has_tools, details)
        usage = event_usage(_usage(chunk, details))
        return StreamEvent(
            text=text, usage=usage, finish_reason=finish, done=True, details=details or None
        )

    def health_request(self) -> WireRequest:
        """``GET /api/tags``: the pulled models (free and local)."""
        return WireRequest("GET", "/api/tags")

    def parse_models(self, body: bytes) -> set[str]:
        """Pulled model names; ``x:latest`` is also listed as ``x``, as Ollama resolves it."""
        tags = parse_wire(self, "*", _Tags, body)
        names: set[str] = set()
        for tag in tags.models:
            for name in (tag.name, tag.model):
                if name:
                    names.add(name)
                    if name.endswith(_LATEST):
                        names.add(name.removesuffix(_LATEST))
        return names

    def missing_model_hint(self, model: str) -> str:
        """Ollama serves only pulled models."""
        return f"not pulled; run `ollama pull {model}`"
