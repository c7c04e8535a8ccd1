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

Conversations (docs/conversations.md): a message's text parts are joined
into ``content`` and its images go to ``images`` as base64 (Ollama takes no
image URL: a RequestError); an assistant's tool calls become ``tool_calls``
with ``function.name`` and the arguments as an object (Ollama's format has no
call ids); each tool result its own ``role: tool`` message with
``tool_name`` (the name of the call it answers). A reply's
``message.tool_calls`` come back as ``Reply.tool_calls``; a call without an id
gets ``call_<index>`` (its position in the reply), stable for the same reply.

Health: ``GET /api/tags`` lists pulled models as ``name:tag``; a configured
``llama3.2`` matches a pulled ``llama3.2:latest``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from router.conversation import reply_calls, url_shown
from router.errors import BadRequestError, ProviderError, RequestError
from router.output import OutputRequest, with_instruction
from router.providers.base import (
    AdapterBase,
    Count,
    Params,
    StreamFormat,
    Wire,
    chat_body,
    compact_json,
    event_usage,
    function_tools,
    image_base64,
    joined_text,
    malformed_usage,
    map_finish_reason,
    parse_wire,
    parse_wire_once,
    reported_usage,
    wire_usage,
)
from router.providers.error_body import COMMON_RULES, ErrorBody, classify, stream_error
from router.tools import ToolSet
from router.types import (
    Image,
    Message,
    Part,
    Reply,
    StreamEvent,
    Text,
    ToolCall,
    ToolResult,
    Usage,
    WireRequest,
)

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


def _images(provider: str, parts: Sequence[Part | Text | Image]) -> list[str]:
    images = []
    for p in parts:
        if isinstance(p, Image):
            if p.data is None:
                raise RequestError(
                    f"provider {provider!r}: Ollama takes images only as bytes, not by URL"
                    f" ({url_shown(p.url or '')!r}); pass Image(data=..., mime=...)",
                    provider=provider,
                )
            images.append(image_base64(p))
    return images


def _wire_message(provider: str, m: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    """One message as Ollama messages (a tool message: one per result). ``names``
    maps the call ids seen so far to their tool names."""
    content = m.content
    if isinstance(content, str):
        return [{"role": m.role, "content": content}]
    if m.role == "tool":
        out = []
        for r in content:
            if not isinstance(r, ToolResult):
                continue
            parts = [Text(r.content)] if isinstance(r.content, str) else r.content
            wire: dict[str, Any] = {"role": "tool", "content": joined_text(parts)}
            if r.call_id in names:
                wire["tool_name"] = names[r.call_id]
            images = _images(provider, parts)
            if images:
                wire["images"] = images
            out.append(wire)
        return out
    wire = {"role": m.role, "content": joined_text(content)}
    images = _images(provider, content)
    if images:
        wire["images"] = images
    calls = [p for p in content if isinstance(p, ToolCall)]
    if calls:
        for c in calls:
            names[c.id] = c.name
        wire["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]
    return [wire]


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
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        stream: bool = False,
        output: OutputRequest | None = None,
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
        if output is not None:
            # Ollama constrains the answer to a schema, or to JSON; it cannot force a
            # tool, so mode tool is asked as json_object (JSON plus the instruction).
            if output.mode == "json_schema":
                body["format"] = dict(output.spec.schema)
            else:
                messages = with_instruction(messages, output)
                if output.mode != "none":
                    body["format"] = "json"
        names: dict[str, str] = {}
        body["messages"] = [
            wire for m in messages for wire in _wire_message(self.provider, m, names)
        ]
        body["stream"] = stream
        if options:
            body["options"] = options
        return WireRequest("POST", "/api/chat", body)

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """Parse a non-streamed ``/api/chat`` body."""
        resp = parse_wire_once(self, model, _TypedResponse, _Response, body)
        msg = resp.message
        details: dict[str, Any] = {}
        calls: list[ToolCall] = []
        if msg.thinking:
            details["thinking"] = msg.thinking
        if msg.tool_calls:
            details["tool_calls"] = [
                {k: v for k, v in tc.items() if k != "index"} for tc in _tool_calls(msg.tool_calls)
            ]
            calls = reply_calls(msg.tool_calls)
        finish = _finish(resp.done_reason, bool(msg.tool_calls), details)
        usage = _usage(resp, details)
        return Reply(msg.content or "", finish, usage, None, details, calls)

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

    def tool_fields(self, tools: ToolSet) -> dict[str, Any] | str:
        """``tools`` in OpenAI's function form. Ollama's API has no ``tool_choice``:
        ``auto`` sends the tools, ``none`` leaves them out, and ``required`` or a
        tool's name cannot be enforced, so the step is skipped (tools_unsupported)."""
        if tools.choice == "none":
            return {}
        if tools.choice != "auto":
            return (
                f"Ollama has no tool_choice: {tools.choice!r} cannot be enforced"
                " (only auto and none)"
            )
        return {"tools": function_tools(tools)}

    def missing_model_hint(self, model: str) -> str:
        """Ollama serves only pulled models."""
        return f"not pulled; run `ollama pull {model}`"
