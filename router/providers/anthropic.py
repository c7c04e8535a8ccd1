"""Anthropic Messages API.

Requests: ``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version:
2023-06-01``; system messages become the top-level ``system`` field;
``max_tokens`` is required by the API (the router always passes it; a default
covers direct use).

Usage: Anthropic's ``input_tokens`` counts only the uncached prompt tokens;
``cache_read_input_tokens`` and ``cache_creation_input_tokens`` are *beside*
it (a cache-read reply: input 10, cache read 7351). So ``input_tokens`` here is
their sum, with the two cache counts as its parts. ``output_tokens`` includes
extended thinking; ``output_tokens_details.thinking_tokens``, when present, is
the part spent thinking. In a stream, ``message_start`` carries the input side
(and a provisional output count) and ``message_delta`` the cumulative output
(newer API versions repeat the input side there too), so a field-wise ``max()``
over the events is the final usage. A malformed usage object (a count that is a
string, float, bool or negative) does not fail the reply: the usage comes back
``suspect`` and the router bills its own estimate (docs/money.md).

Thinking blocks go to ``details["thinking"]``, tool_use blocks to
``details["tool_calls"]`` (``arguments`` as JSON text, like OpenAI's).

Conversations (docs/conversations.md): a message of parts becomes a list of
content blocks: ``text``, ``image`` (``source`` of type ``base64`` with the
bytes, or ``url``), ``tool_use`` in assistant messages (``input`` is the
arguments object; a call whose arguments were not valid JSON goes back with
``{}``), and a tool message becomes a *user* message of ``tool_result`` blocks
(``tool_use_id``, the content, ``is_error`` when set). Anthropic requires
turns to alternate, so consecutive messages of the same wire role are merged
into one message (their blocks in order): tool results then a user prompt make
one user message whose ``tool_result`` blocks come first, as the API requires.
A reply's ``tool_use`` blocks come back as ``Reply.tool_calls``.

Prompt caching: Anthropic caches a prompt prefix only up to a block marked
``"cache_control": {"type": "ephemeral"}`` (Anthropic's default lifetime, 5
minutes). A message marked ``cache`` (a route's ``prompt_cache``) is sent as a
list of text blocks whose last one carries that mark: the system messages as
``system: [{"type": "text", "text": ..., "cache_control": ...}, ...]``, one block
each, and a user or assistant message as its ``content``. Unmarked requests keep
the plain string forms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from router.conversation import decoded_call
from router.errors import AuthenticationError, ContextLengthError, ProviderError
from router.output import TOOL_DESCRIPTION, TOOL_NAME, OutputRequest
from router.providers.base import (
    AdapterBase,
    Count,
    Params,
    Wire,
    chat_body,
    compact_json,
    event_usage,
    filtered,
    image_base64,
    instructed,
    joined_text,
    listed_models,
    malformed_usage,
    map_finish_reason,
    parse_wire,
    parse_wire_once,
    reported_usage,
    wire_usage,
)
from router.providers.error_body import COMMON_RULES, ErrorBody, ErrorRules, classify, stream_error
from router.tools import ToolSet
from router.types import (
    Image,
    Message,
    Part,
    Reply,
    StreamEvent,
    Text,
    ToolCall,
    Usage,
    WireRequest,
)

API_VERSION = "2023-06-01"
# max_tokens when the caller gave none (the API requires one); the YAML default too.
DEFAULT_MAX_TOKENS = 1024

_FINISH_REASON_MAP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# The mark that makes a text block a prompt-cache breakpoint.
CACHE_CONTROL = {"type": "ephemeral"}

_ROUTER_PARAMS = frozenset({"max_tokens", "temperature"})
_OWNED = frozenset({"model", "messages", "system", "stream"})
# Params that do not pass into the body as provider extras.
_RESERVED = _ROUTER_PARAMS | _OWNED

_ERROR_RULES: ErrorRules = (
    (re.compile(r"request_too_large"), ContextLengthError),
    (re.compile(r"billing_error"), AuthenticationError),  # no credit: cool down like a bad key
    *COMMON_RULES,
)

# Anthropic's documented error type -> HTTP status, for errors inside a 200 stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class _OutputDetails(Wire):
    thinking_tokens: Count | None = None


class _Usage(Wire):
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None
    output_tokens_details: _OutputDetails | None = None


class _Block(Wire):
    type: str
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Response(Wire):
    id: str | None = None
    content: list[_Block]
    stop_reason: str | None = None
    usage: Any = None  # read by _usage, so that a malformed one costs no reply


class _TypedResponse(_Response):
    """A reply whose usage is well-formed: validated in one pass (parse_wire_once)."""

    usage: _Usage | None = None


class _Delta(Wire):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _StartMessage(Wire):
    id: str | None = None
    usage: Any = None  # read by _usage, so that a malformed one costs no reply


class _Event(Wire):
    type: str
    index: int | None = None
    message: _StartMessage | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: Any = None  # read by _usage, so that a malformed one costs no reply
    error: Any = None


def _usage(raw: Any, details: dict[str, Any]) -> Usage:
    u = wire_usage(_Usage, raw)
    if isinstance(u, str):
        return malformed_usage(u)
    cache_read = u.cache_read_input_tokens or 0
    cache_write = u.cache_creation_input_tokens or 0
    uncached = u.input_tokens
    thinking = u.output_tokens_details.thinking_tokens if u.output_tokens_details else None
    return reported_usage(
        None if uncached is None else uncached + cache_read + cache_write,
        u.output_tokens,
        details,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=thinking or 0,
    )


def _system_text(m: Message) -> str:
    return m.content if isinstance(m.content, str) else joined_text(m.content)


def _block(m: Message) -> dict[str, Any]:
    """A system message as one text block, marked as a cache breakpoint when it is one."""
    block: dict[str, Any] = {"type": "text", "text": _system_text(m)}
    if m.cache:
        block["cache_control"] = dict(CACHE_CONTROL)
    return block


def _image(image: Image) -> dict[str, Any]:
    if image.url is not None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    source = {"type": "base64", "media_type": image.mime, "data": image_base64(image)}
    return {"type": "image", "source": source}


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        return _image(part)
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.arguments}
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id}
    content = part.content
    result["content"] = content if isinstance(content, str) else [_part(p) for p in content]
    if part.is_error:
        result["is_error"] = True
    return result


def _blocks(content: str | list[Part]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [_part(p) for p in content]


def _content(m: Message) -> str | list[dict[str, Any]]:
    """A message's ``content``: the plain string, or blocks (the last one marked as a
    cache breakpoint when the message is one)."""
    if isinstance(m.content, str) and not m.cache:
        return m.content
    blocks = _blocks(m.content)
    if m.cache:
        blocks[-1]["cache_control"] = dict(CACHE_CONTROL)
    return blocks


def _wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``messages`` array: system left out, tool messages as user messages, and
    consecutive messages of one role merged (Anthropic requires turns to alternate)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "user" if m.role == "tool" else m.role
        content = _content(m)
        if out and out[-1]["role"] == role:
            prev = out[-1]
            before = prev["content"]
            merged = _blocks(before) if isinstance(before, str) else before
            prev["content"] = merged + (_blocks(content) if isinstance(content, str) else content)
        else:
            out.append({"role": role, "content": content})
    return out


def _ask_output(body: dict[str, Any], output: OutputRequest) -> None:
    """Structured output in the request: a forced tool (``tool``), or the structured
    outputs format (``json_schema``); json_object and none have only the instruction."""
    spec = output.spec
    if output.mode == "tool":
        tool = {
            "name": TOOL_NAME,
            "description": TOOL_DESCRIPTION,
            "input_schema": dict(spec.schema),
        }
        body["tools"] = [*body.get("tools", ()), tool]
        choice = output.answer_choice
        if choice == "any":
            body["tool_choice"] = {"type": "any"}
        elif choice == "answer":
            body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    elif output.mode == "json_schema":
        body["output_config"] = {"format": {"type": "json_schema", "schema": dict(spec.schema)}}


class AnthropicAdapter(AdapterBase):
    """Anthropic Messages (SSE streams)."""

    __slots__ = ()

    def tool_fields(self, tools: ToolSet) -> dict[str, Any] | str:
        """``tools`` as ``{name, description, input_schema}`` and ``tool_choice`` as
        ``{"type": "auto" | "any" | "none"}`` or ``{"type": "tool", "name"}``. With
        ``none`` the definitions are still sent: a history with ``tool_use`` blocks
        needs them."""
        choice: dict[str, Any]
        if tools.choice in ("auto", "none"):
            choice = {"type": tools.choice}
        elif tools.choice == "required":
            choice = {"type": "any"}
        else:
            choice = {"type": "tool", "name": tools.choice}
        defs = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools.tools
        ]
        return {"tools": defs, "tool_choice": choice}

    # Request paths start with /v1: the root is the host alone.
    api_root: ClassVar[str] = "https://api.anthropic.com"

    def _auth(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def chat_request(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        stream: bool = False,
        output: OutputRequest | None = None,
    ) -> WireRequest:
        """``POST /v1/messages``: system hoisted, max_tokens always set, extras passed."""
        body = chat_body(model, params, _RESERVED)
        messages = instructed(messages, output)
        if output is not None:
            _ask_output(body, output)
        body["messages"] = _wire_messages(messages)
        # Empty system text is left out: Anthropic refuses an empty text block.
        system = [m for m in messages if m.role == "system" and m.content]
        if any(m.cache for m in system):
            body["system"] = [_block(m) for m in system]
        elif system:
            body["system"] = "\n\n".join(_system_text(m) for m in system)
        max_tokens = params.get("max_tokens")
        body["max_tokens"] = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
        temperature = params.get("temperature")
        if temperature is not None:
            body["temperature"] = temperature
        if stream:
            body["stream"] = True
        return WireRequest("POST", "/v1/messages", body)

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """Parse a ``message`` body: text blocks joined; thinking and tools to details."""
        resp = parse_wire_once(self, model, _TypedResponse, _Response, body)
        texts: list[str] = []
        thinking: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        calls: list[ToolCall] = []
        for block in resp.content:
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "thinking":
                thinking.append(block.thinking or "")
            elif block.type == "tool_use":
                tool_calls.append(
                    {"id": block.id, "name": block.name, "arguments": compact_json(block.input)}
                )
                call_id = block.id or f"call_{len(calls)}"
                calls.append(decoded_call(call_id, block.name or "", block.input))
        text = "".join(texts)
        details: dict[str, Any] = {}
        if thinking:
            details["thinking"] = "".join(thinking)
        if tool_calls:
            details["tool_calls"] = tool_calls
        finish = map_finish_reason(resp.stop_reason, _FINISH_REASON_MAP, details)
        usage = _usage(resp.usage, details) if resp.usage is not None else Usage(estimated=True)
        if finish == "content_filter" and not text and not tool_calls:
            why = "the model refused to answer (stop_reason: refusal)"
            raise filtered(self, model, why, usage)
        return Reply(text, finish, usage, resp.id, details, calls)

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Status plus Anthropic's error ``type`` (529 ``overloaded_error`` is a server error)."""
        return classify(status, body, _ERROR_RULES, _ERROR_STATUS)

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """One SSE event of the Messages stream; ``error`` events raise their type."""
        payload = data.strip()
        if not payload:
            return None
        ev = parse_wire(self, model, _Event, payload)
        kind = ev.type
        if kind == "error" or ev.error is not None:
            raise stream_error(self, model, payload)
        if kind == "content_block_delta" and ev.delta is not None:
            delta = ev.delta
            if delta.type == "text_delta":
                return StreamEvent(text=delta.text) if delta.text else None
            if delta.type == "thinking_delta":
                return StreamEvent(details={"thinking": delta.thinking}) if delta.thinking else None
            if delta.type == "input_json_delta":
                fragment = {"index": ev.index, "id": None, "name": None}
                return StreamEvent(
                    details={"tool_calls": [{**fragment, "arguments": delta.partial_json or ""}]}
                )
            return None  # signature_delta, citations_delta...: nothing for the text
        if kind == "message_start" and ev.message is not None:
            start = ev.message.usage
            return StreamEvent(
                usage=event_usage(_usage(start, {})) if start is not None else None,
                response_id=ev.message.id,
            )
        if kind == "content_block_start" and ev.content_block is not None:
            block = ev.content_block
            if block.type == "text" and block.text:
                return StreamEvent(text=block.text)
            if block.type == "tool_use":
                call = {"index": ev.index, "id": block.id, "name": block.name, "arguments": ""}
                return StreamEvent(details={"tool_calls": [call]})
            return None
        if kind == "message_delta":
            details: dict[str, Any] = {}
            raw = ev.delta.stop_reason if ev.delta is not None else None
            finish = map_finish_reason(raw, _FINISH_REASON_MAP, details)
            usage = event_usage(_usage(ev.usage, {})) if ev.usage is not None else None
            return StreamEvent(usage=usage, finish_reason=finish, details=details or None)
        if kind == "message_stop":
            return StreamEvent(done=True)
        return None  # ping, content_block_stop, and event types added later

    def health_request(self) -> WireRequest:
        """``GET /v1/models``: free; the listing pages at 20 by default, so ask for all."""
        return WireRequest("GET", "/v1/models?limit=1000")

    def parse_models(self, body: bytes) -> set[str]:
        """The ``id`` of every model in the listing."""
        return listed_models(self, body)
