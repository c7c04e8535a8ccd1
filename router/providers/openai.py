"""OpenAI Chat Completions, and every API that speaks it (DeepSeek, xAI, Groq,
OpenRouter, vLLM, Ollama's /v1, ...).

Requests: ``POST /chat/completions`` relative to a base_url that includes
``/v1``. Reasoning families (``o1``/``o3``/``o4``..., ``gpt-5``...) take
``max_completion_tokens`` instead of ``max_tokens`` and reject any
``temperature`` but the default (HTTP 400 ``unsupported_value``), so the router's
temperature is left out for them; other models and compatible servers get
``max_tokens``, which every compatible server understands. Only bare OpenAI
model names are matched: an OpenRouter ``openai/o3`` goes through OpenRouter's
own parameter mapping, which speaks ``max_tokens``.

Usage, checked against the recorded fixtures:

- ``prompt_tokens`` counts every prompt token; the cached ones are *inside* it
  (OpenAI and xAI ``prompt_tokens_details.cached_tokens``, DeepSeek
  ``prompt_cache_hit_tokens``, where ``prompt_tokens = hit + miss``).
- OpenAI and DeepSeek count reasoning *inside* ``completion_tokens``
  (``completion_tokens_details.reasoning_tokens`` is a part of it). xAI counts
  it *beside*: its ``total_tokens = prompt + completion + reasoning`` (a grok-4.3
  reply: 137 + 1 + 116 = 254) and bills reasoning as output. One rule is right
  either way, read from the numbers and not from a provider name: when
  ``total_tokens`` is above prompt + completion, output is ``total_tokens -
  prompt_tokens``. Tokens in the total that no count names (a server that
  hides its reasoning count) are thinking the provider bills as output: they
  are added to ``output_tokens`` and taken as ``reasoning_tokens``.
- A malformed usage object (a count that is a string, float, bool or negative)
  does not fail the reply: the usage comes back ``suspect`` and the router
  bills its own estimate (docs/money.md).

Conversations (docs/conversations.md): a message of parts becomes a
``content`` array of ``text`` and ``image_url`` parts (image bytes as a
``data:`` URL); an assistant's tool calls become ``tool_calls`` with JSON-text
``arguments``; each tool result its own ``role: tool`` message with its
``tool_call_id`` (text only: the format has no images in tool results and no
error flag). A reply's ``message.tool_calls`` come back as
``Reply.tool_calls``.

Reasoning text (DeepSeek/xAI ``reasoning_content``, Groq/OpenRouter/vLLM
``reasoning``) goes to ``details["reasoning"]``, never into the text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from router.conversation import reply_calls
from router.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    ProviderError,
    RequestError,
)
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
    invalid,
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
from router.types import (
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

_FINISH_REASON_MAP = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the pre-tools name
    "content_filter": "content_filter",
    "eos": "stop",  # some self-hosted servers
}

# Model names that take max_completion_tokens and no temperature.
_REASONING_MODEL = re.compile(r"^(?:o\d|gpt-5)", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def is_reasoning(model: str) -> bool:
    """Whether ``model`` takes max_completion_tokens and no temperature (per name, once)."""
    return _REASONING_MODEL.match(model) is not None


# Router parameter names translated here; every other param passes into the body.
_ROUTER_PARAMS = frozenset({"max_tokens", "temperature"})
# Body keys the adapter owns (framing and identity); params cannot override them.
_OWNED = frozenset({"model", "messages", "stream", "stream_options"})
# Params that do not pass into the body as provider extras.
_RESERVED = _ROUTER_PARAMS | _OWNED

ERROR_RULES: ErrorRules = (
    # A request larger than the tokens-per-minute limit comes back as a 429 but can
    # never fit this provider (the fixture: 2.5M tokens against a 2M TPM limit); it
    # is not retried and another provider may take it: ContextLengthError.
    (re.compile(r"request too large"), ContextLengthError),
    # No credit left: the account, not the request, is the problem; the router cools
    # the provider down as it does for a bad key.
    (re.compile(r"insufficient_quota|exceeded your current quota"), AuthenticationError),
    # OpenRouter's 403 when the upstream provider refuses our region: the key is fine.
    (
        re.compile(r"unsupported_country|request_forbidden|territory not supported"),
        BadRequestError,
    ),
    *COMMON_RULES,
)

# The status an error object inside a 2xx body or stream stands for, by code/type.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "model_not_found": 404,
    "context_length_exceeded": 400,
    "rate_limit_exceeded": 429,
    "tokens": 429,
    "requests": 429,
    "server_error": 500,
}


class _PromptDetails(Wire):
    cached_tokens: Count | None = None


class _CompletionDetails(Wire):
    reasoning_tokens: Count | None = None


class _Usage(Wire):
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    total_tokens: Count | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None
    prompt_cache_hit_tokens: Count | None = None  # DeepSeek


class _Function(Wire):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(Wire):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Part(Wire):
    type: str
    text: str | None = None


class _Message(Wire):
    """A reply's ``message``, or a stream chunk's ``delta``."""

    content: str | list[_Part] | None = None
    reasoning_content: str | None = None  # DeepSeek, xAI
    reasoning: str | None = None  # Groq, OpenRouter, vLLM
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(Wire):
    message: _Message
    finish_reason: str | None = None


class _Response(Wire):
    id: str | None = None
    choices: list[_Choice]
    usage: Any = None  # read by _usage, so that a malformed one costs no reply
    citations: list[Any] | None = None  # xAI live search


class _TypedResponse(_Response):
    """A reply whose usage is well-formed: validated in one pass (parse_wire_once)."""

    usage: _Usage | None = None


class _ChunkChoice(Wire):
    delta: _Message | None = None
    finish_reason: str | None = None


class _Chunk(Wire):
    id: str | None = None
    choices: list[_ChunkChoice] | None = None
    usage: Any = None  # read by _usage
    citations: list[Any] | None = None
    error: Any = None


def _text(content: str | list[_Part] | None) -> str:
    if type(content) is str:
        return content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content if p.type in ("text", "output_text"))


def _usage(raw: Any, details: dict[str, Any]) -> Usage:
    u = wire_usage(_Usage, raw)
    if isinstance(u, str):
        return malformed_usage(u)
    prompt_details, output_details = u.prompt_tokens_details, u.completion_tokens_details
    reasoning = (output_details.reasoning_tokens or 0) if output_details else 0
    cached = prompt_details.cached_tokens if prompt_details else None
    if cached is None:
        cached = u.prompt_cache_hit_tokens  # DeepSeek without the OpenAI-style field
    output = u.completion_tokens
    if output is not None and u.prompt_tokens is not None and u.total_tokens is not None:
        beyond = u.total_tokens - u.prompt_tokens - output
        if beyond > 0:
            # xAI: reasoning counted beside completion_tokens (beyond == reasoning);
            # a hidden reasoning count (no reasoning_tokens): thinking billed as output.
            output += beyond
            reasoning = max(reasoning, beyond)
    return reported_usage(
        u.prompt_tokens,
        output,
        details,
        cached_input_tokens=cached or 0,
        reasoning_tokens=reasoning,
    )


def _tool_call(tc: _ToolCall) -> dict[str, Any]:
    fn = tc.function
    return {
        "id": tc.id,
        "name": fn.name if fn else None,
        "arguments": (fn.arguments if fn else None) or "",
    }


def _content_parts(parts: list[Any]) -> list[dict[str, Any]]:
    """Text and Image parts as a ``content`` array."""
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, Image):
            out.append({"type": "image_url", "image_url": {"url": image_url(p)}})
    return out


def _result_content(provider: str, result: ToolResult) -> str | list[dict[str, Any]]:
    if isinstance(result.content, str):
        return result.content
    if any(isinstance(p, Image) for p in result.content):
        raise RequestError(
            f"provider {provider!r}: the OpenAI Chat Completions format cannot carry an"
            f" image in a tool result (call {result.call_id!r})",
            provider=provider,
        )
    return _content_parts(result.content)


def _wire_messages(provider: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``messages`` array of a conversation (docs/conversations.md)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.content
        if isinstance(content, str):
            out.append({"role": m.role, "content": content})
        elif m.role == "tool":
            out += [
                {"role": "tool", "tool_call_id": r.call_id, "content": _result_content(provider, r)}
                for r in content
                if isinstance(r, ToolResult)
            ]
        elif m.role == "assistant":
            calls = [p for p in content if isinstance(p, ToolCall)]
            text = joined_text(content)
            wire: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                wire["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": call_arguments_json(c)},
                    }
                    for c in calls
                ]
            out.append(wire)
        elif m.role == "system":
            out.append({"role": "system", "content": joined_text(content)})
        else:
            out.append({"role": m.role, "content": _content_parts(content)})
    return out


def _ask_output(body: dict[str, Any], output: OutputRequest) -> None:
    """Structured output in the request (docs/conversations.md, "Structured output")."""
    spec = output.spec
    if output.mode == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": spec.name, "schema": dict(spec.schema), "strict": spec.strict},
        }
    elif output.mode == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif output.mode == "tool":
        tool = {
            "type": "function",
            "function": {
                "name": TOOL_NAME,
                "description": TOOL_DESCRIPTION,
                "parameters": dict(spec.schema),
            },
        }
        body["tools"] = [*body.get("tools", ()), tool]
        choice = output.answer_choice
        if choice == "any":
            body["tool_choice"] = "required"
        elif choice == "answer":
            body["tool_choice"] = {"type": "function", "function": {"name": TOOL_NAME}}


class OpenAIAdapter(AdapterBase):
    """OpenAI Chat Completions and compatible APIs (SSE streams, a bearer key)."""

    __slots__ = ()

    def chat_request(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        stream: bool = False,
        output: OutputRequest | None = None,
    ) -> WireRequest:
        """``POST /chat/completions``: extras pass through; see the module docstring."""
        body = chat_body(model, params, _RESERVED)
        body["messages"] = _wire_messages(self.provider, instructed(messages, output))
        if output is not None:
            _ask_output(body, output)
        reasoning = is_reasoning(model)
        max_tokens = params.get("max_tokens")
        if max_tokens is not None:
            body["max_completion_tokens" if reasoning else "max_tokens"] = max_tokens
        temperature = params.get("temperature")
        if temperature is not None and not reasoning:
            body["temperature"] = temperature
        if stream:
            body["stream"] = True
            extra_options = params.get("stream_options")
            options = dict(extra_options) if isinstance(extra_options, Mapping) else {}
            body["stream_options"] = {**options, "include_usage": True}
        return WireRequest("POST", "/chat/completions", body)

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """Parse a ``chat.completion`` body."""
        resp = parse_wire_once(self, model, _TypedResponse, _Response, body)
        if not resp.choices:
            raise invalid(self.provider, model, "choices: empty list")
        choice = resp.choices[0]
        msg = choice.message
        text = _text(msg.content)
        details: dict[str, Any] = {}
        reasoning = msg.reasoning_content or msg.reasoning
        if reasoning:
            details["reasoning"] = reasoning
        calls: list[ToolCall] = []
        if msg.tool_calls:
            details["tool_calls"] = [_tool_call(tc) for tc in msg.tool_calls]
            calls = reply_calls(msg.tool_calls)
        if msg.refusal:
            details["refusal"] = msg.refusal
        if resp.citations:
            details["citations"] = resp.citations
        finish = map_finish_reason(choice.finish_reason, _FINISH_REASON_MAP, details)
        usage = _usage(resp.usage, details) if resp.usage is not None else Usage(estimated=True)
        if finish == "content_filter" and not text and not msg.tool_calls:
            why = msg.refusal or "the reply was withheld by the provider's content filter"
            raise filtered(self, model, why, usage)
        return Reply(text, finish, usage, resp.id, details, calls)

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Status plus OpenAI codes/messages and those of compatible servers."""
        return classify(status, body, ERROR_RULES, ERROR_STATUS)

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """One SSE event: a ``chat.completion.chunk``, ``[DONE]``, or an error object."""
        payload = data.strip()
        if not payload:
            return None
        if payload == "[DONE]":
            return StreamEvent(done=True)
        chunk = parse_wire(self, model, _Chunk, payload)
        if chunk.error is not None or event == "error":
            raise stream_error(self, model, payload)
        text = ""
        finish = None
        details: dict[str, Any] = {}
        if chunk.choices:
            choice = chunk.choices[0]
            delta = choice.delta
            if delta is not None:
                text = _text(delta.content)
                reasoning = delta.reasoning_content or delta.reasoning
                if reasoning:
                    details["reasoning"] = reasoning
                if delta.tool_calls:
                    details["tool_calls"] = [
                        {**_tool_call(tc), "index": tc.index} for tc in delta.tool_calls
                    ]
            finish = map_finish_reason(choice.finish_reason, _FINISH_REASON_MAP, details)
        if chunk.citations:
            details["citations"] = chunk.citations
        usage = event_usage(_usage(chunk.usage, details)) if chunk.usage is not None else None
        return StreamEvent(
            text=text,
            usage=usage,
            finish_reason=finish,
            response_id=chunk.id,
            details=details or None,
        )

    def health_request(self) -> WireRequest:
        """``GET /models``: free, and it proves the key."""
        return WireRequest("GET", "/models")

    def parse_models(self, body: bytes) -> set[str]:
        """The ``id`` of every model in the listing."""
        return listed_models(self, body)
