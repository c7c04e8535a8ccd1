"""The Responses API (``POST /responses``): OpenAI's, xAI's, and compatible servers'.

Requests. Leading system messages become ``instructions``; the rest of the
conversation becomes ``input`` items: a message of parts is a ``content``
array of ``input_text`` and ``input_image`` parts (image bytes as a ``data:``
URL); an assistant's text is an assistant message and each of its tool calls a
``function_call`` item (``call_id``, ``name``, JSON-text ``arguments``); each
tool result a ``function_call_output`` item with the same ``call_id`` (text,
or ``input_text``/``input_image`` parts; the format has no error flag, so say
a failure in the text). The router's ``max_tokens`` is ``max_output_tokens``;
the temperature is left out for reasoning families (``o1``..., ``gpt-5``...),
which refuse it. ``store`` is ``false`` unless a param sets it (nothing is kept
at the provider). Other params pass through (``reasoning: {effort, summary}``,
``text: {verbosity}``, ``include``...).

Function tools are ``{"type": "function", "name", "description",
"parameters"}`` (flat, not nested under ``function``); the route's server
tools (config ``server_tools``, resolved into the ``server_tools`` param by the
plan: the tools' wire form and their call cap) follow them in ``tools``, and
``max_tool_calls`` caps their calls: the plan's cap, which the reservation
holds, or a call's lower one.
Structured output is ``text.format`` (``json_schema`` with ``strict``, or
``json_object``).

Replies. The text is every ``output_text`` part of the ``message`` items;
``url_citation`` annotations become :class:`~router.types.Citation` (offsets
into the joined text); ``function_call`` items become tool calls; reasoning
summaries go to ``details["reasoning"]``; server-tool items
(``web_search_call``, ``x_search_call``...) go to
``details["server_tool_calls"]`` and are counted in
``Usage.server_tool_calls``, with the larger of that count and the one the
provider reports (OpenAI ``tool_usage.web_search.num_requests``, xAI
``usage.server_side_tool_usage_details.web_search_calls``...). Usage:
``input_tokens`` holds the cached ones (``input_tokens_details.cached_tokens``)
and ``output_tokens`` the reasoning ones
(``output_tokens_details.reasoning_tokens``): the router's convention as it is.
``status: incomplete`` for ``max_output_tokens`` is finish ``length``; a
``failed`` response raises its error's type.

Streams are typed SSE events without a ``[DONE]``: ``response.output_text.delta``
(text), ``response.reasoning_summary_text.delta`` (reasoning),
``response.output_item.added`` and ``response.function_call_arguments.delta``
(tool-call fragments, keyed by ``output_index``), ``response.output_item.done``
of a server-tool call (into ``details["server_tool_calls"]`` as it finishes, so
that a stream cut short still bills it), then ``response.completed``
or ``response.incomplete`` with the whole response (usage, citations, server
tool calls): the end of the stream. ``response.failed`` and ``error`` events
raise their error's type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from router.conversation import decoded_call
from router.errors import ProviderError
from router.output import TOOL_DESCRIPTION, TOOL_NAME, OutputRequest
from router.providers.base import (
    AdapterBase,
    Count,
    Params,
    Wire,
    call_arguments_json,
    chat_body,
    event_usage,
    filtered,
    image_url,
    instructed,
    joined_text,
    listed_models,
    malformed_usage,
    parse_wire,
    parse_wire_once,
    reported_usage,
    wire_usage,
)
from router.providers.error_body import ErrorBody, classify, stream_error
from router.providers.openai import ERROR_RULES, ERROR_STATUS, is_reasoning
from router.tools import ToolSet
from router.types import (
    Citation,
    Image,
    Message,
    Reply,
    StreamEvent,
    Text,
    ToolCall,
    ToolResult,
    Usage,
    WireRequest,
)

# Router parameter names translated here, and the plan's server tools.
_ROUTER_PARAMS = frozenset({"max_tokens", "temperature", "server_tools"})
# Body keys the adapter owns; params cannot override them.
_OWNED = frozenset({"model", "input", "instructions", "stream"})
_RESERVED = _ROUTER_PARAMS | _OWNED

# Output item types that are not server-tool calls.
_NOT_SERVER_TOOLS = frozenset({"function_call", "custom_tool_call"})
# A finish reason by the reason of an incomplete response.
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


class _InputDetails(Wire):
    cached_tokens: Count | None = None
    cache_write_tokens: Count | None = None


class _OutputDetails(Wire):
    reasoning_tokens: Count | None = None


class _Usage(Wire):
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None
    # xAI: calls by tool (``web_search_calls``, ``x_search_calls``...), sources read.
    # Values are read only when they are counts: a new field of another shape must
    # not make the whole usage unreadable.
    server_side_tool_usage_details: dict[str, Any] | None = None
    num_sources_used: Count | None = None


class _Annotation(Wire):
    type: str
    url: str | None = None
    title: str | None = None
    start_index: int | None = None
    end_index: int | None = None


class _Content(Wire):
    type: str
    text: str | None = None
    refusal: str | None = None
    annotations: list[_Annotation] | None = None


class _Summary(Wire):
    type: str
    text: str | None = None


class _Item(Wire):
    type: str
    id: str | None = None
    status: str | None = None
    content: list[_Content] | None = None
    summary: list[_Summary] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    action: Any = None


class _Incomplete(Wire):
    reason: str | None = None


class _Response(Wire):
    id: str | None = None
    status: str | None = None
    output: list[_Item]
    usage: Any = None  # read by _usage, so that a malformed one costs no reply
    incomplete_details: _Incomplete | None = None
    error: Any = None
    tool_usage: Any = None  # OpenAI: server-tool requests (read by _reported_counts)


class _TypedResponse(_Response):
    """A reply whose usage is well-formed: validated in one pass (parse_wire_once)."""

    usage: _Usage | None = None


class _EventResponse(_Response):
    """The response an event carries (``response.created`` has no output yet)."""

    output: list[_Item] = Field(default_factory=list)


class _Event(Wire):
    type: str | None = None
    delta: str | None = None
    output_index: int | None = None
    item: _Item | None = None
    response: _EventResponse | None = None
    # An ``error`` event carries its error at the top level (some servers nest it).
    code: Any = None
    message: Any = None
    error: Any = None


# -- replies ------------------------------------------------------------------------


class _Decoded:
    """What a response's output items say (a reply's, or a completed stream's)."""

    __slots__ = ("calls", "citations", "reasoning", "refusal", "server", "text")

    def __init__(self, items: Sequence[_Item]) -> None:
        texts: list[str] = []
        offset = 0
        self.citations: list[Citation] = []
        self.calls: list[ToolCall] = []
        self.server: list[dict[str, Any]] = []
        reasoning: list[str] = []
        refusal: list[str] = []
        for item in items:
            if item.type == "message":
                for part in item.content or ():
                    if part.type == "output_text" and part.text is not None:
                        self.citations += _citations(part, offset)
                        texts.append(part.text)
                        offset += len(part.text)
                    elif part.type == "refusal" and part.refusal:
                        refusal.append(part.refusal)
            elif item.type == "reasoning":
                reasoning += [s.text for s in item.summary or () if s.text]
            elif item.type == "function_call":
                call_id = item.call_id or item.id or f"call_{len(self.calls)}"
                self.calls.append(decoded_call(call_id, item.name or "", item.arguments))
            elif _is_server_tool(item):
                self.server.append(_server_entry(item))
        self.text = "".join(texts)
        self.reasoning = "\n".join(reasoning)
        self.refusal = "\n".join(refusal)

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.reasoning:
            details["reasoning"] = self.reasoning
        if self.refusal:
            details["refusal"] = self.refusal
        if self.server:
            details["server_tool_calls"] = self.server
        return details

    def counts(self) -> dict[str, int]:
        """Server-tool calls by tool, from the output items."""
        counts: dict[str, int] = {}
        for entry in self.server:
            counts[entry["type"]] = counts.get(entry["type"], 0) + 1
        return counts


def _is_server_tool(item: _Item) -> bool:
    """Whether an output item is a call of a tool the provider ran itself."""
    return item.type.endswith("_call") and item.type not in _NOT_SERVER_TOOLS


def _server_entry(item: _Item) -> dict[str, Any]:
    """A server-tool call item for ``details["server_tool_calls"]``."""
    entry: dict[str, Any] = {"type": item.type.removesuffix("_call"), "id": item.id}
    if item.status is not None:
        entry["status"] = item.status
    if item.action is not None:
        entry["action"] = item.action
    return entry


def _citations(part: _Content, offset: int) -> list[Citation]:
    return [
        Citation(
            a.url,
            a.title,
            None if a.start_index is None else a.start_index + offset,
            None if a.end_index is None else a.end_index + offset,
        )
        for a in part.annotations or ()
        if a.type == "url_citation" and a.url
    ]


def _reported_counts(resp: _Response, u: _Usage | None) -> dict[str, int]:
    """Server-tool calls by tool as the provider reports them (xAI usage, OpenAI
    ``tool_usage``)."""
    counts: dict[str, int] = {}
    if u is not None and u.server_side_tool_usage_details:
        for key, n in u.server_side_tool_usage_details.items():
            if _count(n) and key.endswith("_calls"):
                counts[key.removesuffix("_calls")] = n
    tools = resp.tool_usage
    searches = tools.get("web_search") if isinstance(tools, dict) else None
    n = searches.get("num_requests") if isinstance(searches, dict) else None
    if isinstance(n, int) and _count(n):
        counts["web_search"] = max(counts.get("web_search", 0), n)
    return counts


def _count(value: Any) -> bool:
    """Whether ``value`` is a positive count (an int, not a bool)."""
    return type(value) is int and value > 0


def _usage(resp: _Response, decoded: _Decoded, details: dict[str, Any]) -> Usage:
    if resp.usage is None:
        return Usage(estimated=True, server_tool_calls=decoded.counts())
    u = wire_usage(_Usage, resp.usage)
    if isinstance(u, str):
        bad = malformed_usage(u)
        bad.server_tool_calls = decoded.counts()
        return bad
    inp, out = u.input_tokens_details, u.output_tokens_details
    usage = reported_usage(
        u.input_tokens,
        u.output_tokens,
        details,
        cached_input_tokens=(inp.cached_tokens or 0) if inp else 0,
        cache_write_tokens=(inp.cache_write_tokens or 0) if inp else 0,
        reasoning_tokens=(out.reasoning_tokens or 0) if out else 0,
    )
    counts = decoded.counts()
    for name, n in _reported_counts(resp, u).items():
        counts[name] = max(counts.get(name, 0), n)
    usage.server_tool_calls = counts
    if u.num_sources_used:
        details["num_sources_used"] = u.num_sources_used
    return usage


def _finish(resp: _Response, decoded: _Decoded, details: dict[str, Any]) -> str | None:
    if resp.status == "incomplete":
        reason = resp.incomplete_details.reason if resp.incomplete_details else None
        details["finish_reason"] = f"incomplete: {reason}"
        return _INCOMPLETE.get(reason or "", "length" if reason is None else reason)
    if decoded.calls:
        return "tool_calls"
    return "stop" if resp.status in ("completed", None) else resp.status


# -- requests -----------------------------------------------------------------------


def _input_parts(parts: Sequence[Any]) -> list[dict[str, Any]]:
    """Text and Image parts as ``input_text`` and ``input_image`` parts."""
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            out.append({"type": "input_text", "text": p.text})
        elif isinstance(p, Image):
            out.append({"type": "input_image", "image_url": image_url(p)})
    return out


def _result_output(result: ToolResult) -> str | list[dict[str, Any]]:
    return result.content if isinstance(result.content, str) else _input_parts(result.content)


def _input(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """``instructions`` (the leading system messages) and the ``input`` items."""
    system: list[str] = []
    items: list[dict[str, Any]] = []
    for m in messages:
        content = m.content
        if m.role == "system":
            text = content if isinstance(content, str) else joined_text(content)
            if not items:
                system.append(text)
            else:
                items.append({"role": "system", "content": text})
        elif isinstance(content, str):
            items.append({"role": m.role if m.role != "tool" else "user", "content": content})
        elif m.role == "tool":
            items += [
                {"type": "function_call_output", "call_id": r.call_id, "output": _result_output(r)}
                for r in content
                if isinstance(r, ToolResult)
            ]
        elif m.role == "assistant":
            text = joined_text(content)
            if text:
                items.append({"role": "assistant", "content": text})
            items += [
                {
                    "type": "function_call",
                    "call_id": c.id,
                    "name": c.name,
                    "arguments": call_arguments_json(c),
                }
                for c in content
                if isinstance(c, ToolCall)
            ]
        else:
            items.append({"role": m.role, "content": _input_parts(content)})
    return ("\n\n".join(system) if system else None), items


def _ask_output(body: dict[str, Any], output: OutputRequest) -> None:
    """Structured output: ``text.format``, or a forced tool (mode tool)."""
    spec = output.spec
    text = body.get("text")
    fmt: dict[str, Any] | None = None
    if output.mode == "json_schema":
        fmt = {
            "type": "json_schema",
            "name": spec.name,
            "schema": dict(spec.schema),
            "strict": spec.strict,
        }
    elif output.mode == "json_object":
        fmt = {"type": "json_object"}
    elif output.mode == "tool":
        tool = {
            "type": "function",
            "name": TOOL_NAME,
            "description": TOOL_DESCRIPTION,
            "parameters": dict(spec.schema),
        }
        body["tools"] = [*body.get("tools", ()), tool]
        choice = output.answer_choice
        if choice == "any":
            body["tool_choice"] = "required"
        elif choice == "answer":
            body["tool_choice"] = {"type": "function", "name": TOOL_NAME}
    if fmt is not None:
        body["text"] = {**(text if isinstance(text, Mapping) else {}), "format": fmt}


def _wrapped_error(error: Any) -> str:
    """An error object as a body the error decoding reads: ``{"error": {...}}``."""
    return json.dumps({"error": error if error else {"message": "the response failed"}})


class OpenAIResponsesAdapter(AdapterBase):
    """The Responses API: OpenAI, xAI and compatible servers (SSE, a bearer key)."""

    __slots__ = ()

    def tool_fields(self, tools: ToolSet) -> dict[str, Any] | str:
        """Function tools in the Responses form (flat ``name``/``parameters``), and
        ``tool_choice`` as ``auto``/``none``/``required`` or ``{"type": "function",
        "name"}``."""
        choice: Any = tools.choice
        if choice not in ("auto", "none", "required"):
            choice = {"type": "function", "name": choice}
        functions = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            }
            for t in tools.tools
        ]
        return {"tools": functions, "tool_choice": choice}

    def chat_request(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        stream: bool = False,
        output: OutputRequest | None = None,
    ) -> WireRequest:
        """``POST /responses``: see the module docstring."""
        body = chat_body(model, params, _RESERVED)
        instructions, items = _input(instructed(messages, output))
        if instructions is not None:
            body["instructions"] = instructions
        body["input"] = items
        server = params.get("server_tools")
        if isinstance(server, Mapping) and server.get("tools"):
            body["tools"] = [*body.get("tools", ()), *server["tools"]]
            # The plan's cap is what the reservation holds: a call may lower it only.
            cap = server["max_tool_calls"]
            asked = params.get("max_tool_calls")
            if isinstance(asked, int) and not isinstance(asked, bool) and 0 < asked < cap:
                cap = asked
            body["max_tool_calls"] = cap
        if output is not None:
            _ask_output(body, output)
        max_tokens = params.get("max_tokens")
        if max_tokens is not None:
            body["max_output_tokens"] = max_tokens
        temperature = params.get("temperature")
        if temperature is not None and not is_reasoning(model):
            body["temperature"] = temperature
        body.setdefault("store", False)
        if stream:
            body["stream"] = True
        return WireRequest("POST", "/responses", body)

    def _reply(self, model: str, resp: _Response) -> tuple[_Decoded, dict[str, Any]]:
        """Decode a response object; raise the typed error of a failed one."""
        if resp.status == "failed" or (resp.error and resp.status != "completed"):
            raise stream_error(self, model, _wrapped_error(resp.error))
        decoded = _Decoded(resp.output)
        return decoded, decoded.details()

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """Parse a ``response`` object."""
        resp = parse_wire_once(self, model, _TypedResponse, _Response, body)
        decoded, details = self._reply(model, resp)
        finish = _finish(resp, decoded, details)
        if decoded.refusal and not decoded.text and not decoded.calls:
            raise filtered(self, model, decoded.refusal, _usage(resp, decoded, details))
        if decoded.calls:
            details["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": call_arguments_json(c)}
                for c in decoded.calls
            ]
        usage = _usage(resp, decoded, details)
        return Reply(
            decoded.text, finish, usage, resp.id, details, decoded.calls, decoded.citations
        )

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Status plus OpenAI's codes and messages (xAI's flat ``{code, error}`` too)."""
        return classify(status, body, ERROR_RULES, ERROR_STATUS)

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """One typed SSE event (see the module docstring); None for the others."""
        payload = data.strip()
        if not payload:
            return None
        ev = parse_wire(self, model, _Event, payload)
        kind = ev.type or event
        if kind == "response.output_text.delta":
            return StreamEvent(text=ev.delta or "") if ev.delta else None
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return StreamEvent(details={"reasoning": ev.delta}) if ev.delta else None
        if kind == "response.function_call_arguments.delta":
            fragment = {"index": ev.output_index, "id": None, "name": None, "arguments": ev.delta}
            return StreamEvent(details={"tool_calls": [fragment]})
        if kind == "response.output_item.added" and ev.item and ev.item.type == "function_call":
            item = ev.item
            fragment = {
                "index": ev.output_index,
                "id": item.call_id or item.id,
                "name": item.name,
                "arguments": item.arguments or "",
            }
            return StreamEvent(details={"tool_calls": [fragment]})
        if kind == "response.output_item.done" and ev.item and _is_server_tool(ev.item):
            # Counted as they happen, so that a stream cut before its end still bills them.
            return StreamEvent(details={"server_tool_calls": [_server_entry(ev.item)]})
        if kind == "response.refusal.delta":
            return StreamEvent(details={"refusal": ev.delta}) if ev.delta else None
        if kind == "error":
            error = ev.error if isinstance(ev.error, dict) else None
            if error is None:
                error = {"code": ev.code, "message": ev.message}
            raise stream_error(self, model, _wrapped_error(error))
        resp = ev.response
        if resp is None:
            return None
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            return self._completed(model, resp)
        if kind == "response.created":
            return StreamEvent(response_id=resp.id)
        return None

    def _completed(self, model: str, resp: _Response) -> StreamEvent:
        """The last event: usage, finish, citations and server-tool calls."""
        decoded, details = self._reply(model, resp)
        # Streamed already, as deltas and finished items.
        for key in ("reasoning", "refusal", "server_tool_calls"):
            details.pop(key, None)
        finish = _finish(resp, decoded, details)
        usage = _usage(resp, decoded, details)
        return StreamEvent(
            usage=event_usage(usage) if resp.usage is not None else None,
            finish_reason=finish,
            response_id=resp.id,
            done=True,
            details=details or None,
            citations=tuple(decoded.citations) or None,
        )

    def health_request(self) -> WireRequest:
        """``GET /models``: free, and it proves the key."""
        return WireRequest("GET", "/models")

    def parse_models(self, body: bytes) -> set[str]:
        """The ``id`` of every model in the listing."""
        return listed_models(self, body)
