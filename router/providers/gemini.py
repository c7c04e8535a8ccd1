"""Google's native Gemini API (``generateContent``; SSE streams).

Requests: ``POST {base_url}/models/{model}:generateContent``, and
``:streamGenerateContent?alt=sse`` for a stream; the key goes in the
``x-goog-api-key`` header, never in the URL. A model may be written with or
without Gemini's ``models/`` prefix. System messages become
``systemInstruction``; the rest become ``contents`` with roles ``user`` and
``model`` (consecutive messages of one role are merged into one content).

Parameters: the router's ``max_tokens`` becomes
``generationConfig.maxOutputTokens`` (thinking tokens count against it) and
``temperature`` ``generationConfig.temperature``; a param named like a
``generationConfig`` field (``stopSequences``, ``topP``, ``topK``, ``seed``,
``thinkingConfig``...) goes into ``generationConfig`` too, and so does a
``generationConfig`` mapping; ``stop`` is taken as ``stopSequences``. Every other
param (``safetySettings``, ``cachedContent``, ``labels``...) is a top-level body
field, passed through.

Parts: text is ``text``; an image's bytes are ``inlineData`` (base64 and
``mimeType``); an image URL is ``fileData`` (``fileUri`` and ``mimeType``: the
image's own, else guessed from the URL's extension; a ``data:`` URL becomes
``inlineData``). An assistant's tool call is a ``functionCall`` (``name``,
``args``) with its ``thoughtSignature`` when the reply gave one
(:attr:`~router.types.ToolCall.signature`: Gemini 3 refuses a history that drops
it); a tool result is a ``functionResponse`` (``name``: the name of the call it
answers, found by its id in the history; ``response``: ``{"output": text}``, or
``{"error": text}`` when ``is_error``), images in a result following it as
``inlineData`` parts.

Call ids: Gemini 2.x gives function calls no id (Gemini 3 gives one). A call
without one gets ``call_<n>``, its position among the reply's calls, the same
for the same reply. Ids are not sent back: Gemini pairs each
``functionResponse`` with its call by name and order, so results go back in the
order of the calls.

Tools: ``tools: [{functionDeclarations: [{name, description,
parametersJsonSchema}]}]`` (JSON Schema as written) and
``toolConfig.functionCallingConfig`` (``AUTO``, ``NONE``, ``ANY``, or ``ANY``
with ``allowedFunctionNames`` for one named tool). Structured output:
``responseMimeType: application/json`` with ``responseJsonSchema``
(json_schema), JSON only plus the instruction (json_object), or a forced
function (tool).

Replies: the first candidate's text parts are the text; parts marked
``thought: true`` (thought summaries, with ``thinkingConfig.includeThoughts``) go
to ``details["thinking"]``; ``functionCall`` parts are the tool calls.
``finishReason`` ``STOP`` is ``stop`` (``tool_calls`` when the reply calls a
tool), ``MAX_TOKENS`` ``length``; ``SAFETY``, ``RECITATION``, ``BLOCKLIST``,
``PROHIBITED_CONTENT``, ``SPII``, ``IMAGE_SAFETY`` and the like are a
ContentFilterError naming the reason and the safety ratings that blocked, and
so is a reply with no candidate whose ``promptFeedback.blockReason`` says the
prompt was blocked (Vertex AI answers Model Armor blocks that way too).

Usage (router.types.Usage): ``promptTokenCount`` counts the whole prompt,
``cachedContentTokenCount`` (a part of it) included; ``toolUsePromptTokenCount``
(prompts of Google's server tools) is beside it and added to the input.
``thoughtsTokenCount`` is *beside* ``candidatesTokenCount`` (total = prompt +
candidates + thoughts), so output is their sum and reasoning the thoughts. In a
stream every chunk carries the cumulative counts. A malformed count does not
fail the reply: the usage comes back ``suspect`` (docs/money.md).

Errors: ``{"error": {"code", "message", "status"}}``; ``RESOURCE_EXHAUSTED`` is a
rate limit (its ``RetryInfo.retryDelay`` is the Retry-After, read in
:mod:`router.providers.error_body`), "API key not valid" (a 400) a bad key, "is
not found for API version" a missing model, "input token count ... exceeds" the
context length.

Health: ``GET {base_url}/models?pageSize=1000`` lists ``models/<id>`` names;
both forms count as listed.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from router.conversation import decoded_call, url_shown
from router.errors import (
    BadRequestError,
    ContentFilterError,
    ContextLengthError,
    ModelNotFoundError,
    ProviderError,
    RequestError,
)
from router.output import TOOL_DESCRIPTION, TOOL_NAME, OutputRequest
from router.providers.base import (
    AdapterBase,
    Count,
    Params,
    Wire,
    compact_json,
    event_usage,
    image_base64,
    instructed,
    joined_text,
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
    ToolResult,
    Usage,
    WireRequest,
)

# Gemini's prefix of a model's resource name ("models/gemini-2.5-flash").
MODEL_PREFIX = "models/"
# Characters a model name keeps in the request path; the rest are percent-encoded.
_PATH_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~@")
# The MIME type of an image URL without one, by the URL path's extension.
_IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
}

_FINISH_REASON_MAP = {"STOP": "stop", "MAX_TOKENS": "length"}
# Finish reasons that mean the answer was withheld or cut by a filter.
FILTER_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)

# generationConfig fields a param may name directly (the rest of the params are
# top-level body fields).
GENERATION_FIELDS = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "thinkingConfig",
        "mediaResolution",
        "speechConfig",
        "imageConfig",
        "enableEnhancedCivicAnswers",
    }
)
_ROUTER_PARAMS = frozenset({"max_tokens", "temperature", "stop", "generationConfig"})
_OWNED = frozenset({"model", "contents", "systemInstruction", "stream"})
# Params that do not pass into the body's top level.
_RESERVED = _ROUTER_PARAMS | _OWNED | GENERATION_FIELDS

_CHOICE_MODE = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

_ERROR_RULES: ErrorRules = (
    (re.compile(r"input token count.*exceeds the maximum"), ContextLengthError),
    (re.compile(r"is not found for api version|models/\S+ is not found"), ModelNotFoundError),
    *COMMON_RULES,
)

# Google's canonical error status -> HTTP status, for errors inside a 200 stream.
_ERROR_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# -- wire models ------------------------------------------------------------------


class _Usage(Wire):
    promptTokenCount: Count | None = None
    candidatesTokenCount: Count | None = None
    thoughtsTokenCount: Count | None = None
    cachedContentTokenCount: Count | None = None
    toolUsePromptTokenCount: Count | None = None


class _FunctionCall(Wire):
    name: str | None = None
    args: Any = None
    id: str | None = None


class _Part(Wire):
    text: str | None = None
    thought: bool | None = None
    thoughtSignature: str | None = None
    functionCall: _FunctionCall | None = None


class _Content(Wire):
    parts: list[_Part] | None = None
    role: str | None = None


class _Rating(Wire):
    category: str | None = None
    probability: str | None = None
    blocked: bool | None = None


class _Candidate(Wire):
    content: _Content | None = None
    finishReason: str | None = None
    finishMessage: str | None = None
    safetyRatings: list[_Rating] | None = None


class _Feedback(Wire):
    blockReason: str | None = None
    blockReasonMessage: str | None = None
    safetyRatings: list[_Rating] | None = None


class _Response(Wire):
    candidates: list[_Candidate] | None = None
    promptFeedback: _Feedback | None = None
    responseId: str | None = None
    usageMetadata: Any = None  # read by _usage, so that a malformed one costs no reply
    error: Any = None


class _TypedResponse(_Response):
    """A reply whose usage is well-formed: validated in one pass (parse_wire_once)."""

    usageMetadata: _Usage | None = None


class _ListedModel(Wire):
    name: str


class _ModelList(Wire):
    models: list[_ListedModel] | None = None


# -- request ----------------------------------------------------------------------


def model_id(model: str) -> str:
    """A model name without Gemini's ``models/`` prefix (both forms are accepted)."""
    return model.removeprefix(MODEL_PREFIX)


def _path_segment(name: str) -> str:
    """``name`` as one URL path segment: a '/' or space cannot change the path."""
    return "".join(chr(b) if b in _PATH_SAFE else f"%{b:02X}" for b in name.encode())


def _url_image_type(url: str) -> str | None:
    path = url.split("?")[0].split("#")[0]
    tail = path.rsplit("/", 1)[-1]
    return _IMAGE_TYPES.get(tail.rsplit(".", 1)[-1].lower()) if "." in tail else None


def _image(provider: str, image: Image) -> dict[str, Any]:
    if image.data is not None:
        return {"inlineData": {"mimeType": image.mime, "data": image_base64(image)}}
    url = image.url or ""
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        if ";base64" not in head:
            raise RequestError(
                f"provider {provider!r}: a data: URL image must be base64 ({head[:80]!r})",
                provider=provider,
            )
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                f"provider {provider!r}: a data: URL image is not valid base64",
                provider=provider,
            ) from None
        declared = head[5:].split(";")[0]
        return {"inlineData": {"mimeType": image.mime or declared, "data": payload}}
    mime = image.mime or _url_image_type(url)
    if mime is None:
        raise RequestError(
            f"provider {provider!r}: Gemini needs the MIME type of an image URL"
            f" ({url_shown(url)!r}); pass Image(url=..., mime='image/png')",
            provider=provider,
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _call_part(call: ToolCall) -> dict[str, Any]:
    args = {} if call.arguments_raw is not None else call.arguments
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": args}}
    if call.signature:
        part["thoughtSignature"] = call.signature
    return part


def _result_parts(provider: str, r: ToolResult, names: Mapping[str, str]) -> list[dict[str, Any]]:
    name = names.get(r.call_id)
    if name is None:
        raise RequestError(
            f"provider {provider!r}: the tool result for call {r.call_id!r} answers no"
            " tool call earlier in the history; Gemini needs the name of the tool it answers",
            provider=provider,
        )
    content = [Text(r.content)] if isinstance(r.content, str) else r.content
    key = "error" if r.is_error else "output"
    parts: list[dict[str, Any]] = [
        {"functionResponse": {"name": name, "response": {key: joined_text(content)}}}
    ]
    parts.extend(_image(provider, p) for p in content if isinstance(p, Image))
    return parts


def _parts(provider: str, m: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    if isinstance(m.content, str):
        return [{"text": m.content}]
    out: list[dict[str, Any]] = []
    for p in m.content:
        out.extend(_part(provider, p, names))
    return out


def _part(provider: str, p: Part, names: dict[str, str]) -> list[dict[str, Any]]:
    if isinstance(p, Text):
        return [{"text": p.text}]
    if isinstance(p, Image):
        return [_image(provider, p)]
    if isinstance(p, ToolCall):
        names[p.id] = p.name
        return [_call_part(p)]
    return _result_parts(provider, p, names)


def _contents(provider: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """``contents``: system left out, assistant as ``model``, tool results as ``user``,
    and consecutive messages of one role merged into one content."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in messages:
        if m.role == "system":
            continue
        role = "model" if m.role == "assistant" else "user"
        parts = _parts(provider, m, names)
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _system_text(m: Message) -> str:
    return m.content if isinstance(m.content, str) else joined_text(m.content)


def _generation_config(provider: str, model: str, params: Params) -> dict[str, Any]:
    """``generationConfig``: its own mapping, the params named like its fields, the
    router's ``stop``, ``temperature`` and ``max_tokens`` (the router's values win)."""
    given = params.get("generationConfig")
    if given is not None and not isinstance(given, Mapping):
        raise BadRequestError(
            f"params.generationConfig must be a mapping, not {type(given).__name__}",
            provider=provider,
            model=model,
        )
    config = dict(given or {})
    config.update({k: v for k, v in params.items() if k in GENERATION_FIELDS})
    stop = params.get("stop")
    if stop is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("temperature") is not None:
        config["temperature"] = params["temperature"]
    if params.get("max_tokens") is not None:
        config["maxOutputTokens"] = params["max_tokens"]
    return config


def _function_declarations(tools: ToolSet) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}
        for t in tools.tools
    ]


def _ask_output(body: dict[str, Any], config: dict[str, Any], output: OutputRequest) -> None:
    """Structured output: JSON constrained to the schema (json_schema), JSON only
    (json_object), or a forced function whose arguments are the answer (tool)."""
    if output.mode in ("json_schema", "json_object"):
        config["responseMimeType"] = "application/json"
        if output.mode == "json_schema":
            config["responseJsonSchema"] = dict(output.spec.schema)
    elif output.mode == "tool":
        tool = {
            "name": TOOL_NAME,
            "description": TOOL_DESCRIPTION,
            "parametersJsonSchema": dict(output.spec.schema),
        }
        body["tools"] = [*body.get("tools", ()), {"functionDeclarations": [tool]}]
        choice = output.answer_choice
        if choice == "any":
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
        elif choice == "answer":
            body["toolConfig"] = {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [TOOL_NAME]}
            }


# -- reply ------------------------------------------------------------------------


def _usage(raw: Any, details: dict[str, Any]) -> Usage:
    u = wire_usage(_Usage, raw)
    if isinstance(u, str):
        return malformed_usage(u)
    thoughts = u.thoughtsTokenCount or 0
    prompt = u.promptTokenCount
    if prompt is not None:
        prompt += u.toolUsePromptTokenCount or 0
    candidates = u.candidatesTokenCount
    output = None if candidates is None and not thoughts else (candidates or 0) + thoughts
    return reported_usage(
        prompt,
        output,
        details,
        cached_input_tokens=u.cachedContentTokenCount or 0,
        reasoning_tokens=thoughts,
    )


def _ratings(ratings: list[_Rating] | None) -> str:
    """The safety ratings that blocked (else every rating above NEGLIGIBLE)."""
    ratings = ratings or []
    shown = [r for r in ratings if r.blocked] or [
        r for r in ratings if r.probability not in (None, "NEGLIGIBLE")
    ]
    return ", ".join(f"{r.category} {r.probability or '?'}" for r in shown)


def _verdict(what: str, field: str, reason: str | None, message: str | None, ratings: str) -> str:
    """One line for a filter's verdict: what was blocked, the reason field and value,
    the provider's message, and the safety ratings behind it."""
    why = f"the provider {what} ({field}: {reason}"
    if message:
        why += f": {message}"
    return why + (f"; safety ratings: {ratings})" if ratings else ")")


def _blocked_prompt(f: _Feedback) -> str:
    return _verdict(
        "blocked the prompt",
        "blockReason",
        f.blockReason,
        f.blockReasonMessage,
        _ratings(f.safetyRatings),
    )


def _filtered_answer(c: _Candidate) -> str:
    return _verdict(
        "withheld the answer",
        "finishReason",
        c.finishReason,
        c.finishMessage,
        _ratings(c.safetyRatings),
    )


class _Decoded:
    """What one candidate (or stream chunk) holds: text, thoughts and calls."""

    __slots__ = ("calls", "text", "thinking")

    def __init__(self, content: _Content | None) -> None:
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.calls: list[tuple[_FunctionCall, str | None]] = []
        for part in (content.parts if content is not None else None) or ():
            if part.functionCall is not None:
                self.calls.append((part.functionCall, part.thoughtSignature))
            elif part.text is not None:
                (self.thinking if part.thought else self.text).append(part.text)

    def details(self, ids: Sequence[str | None]) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.thinking:
            details["thinking"] = "".join(self.thinking)
        if self.calls:
            details["tool_calls"] = [
                {"id": call_id, "name": fc.name, "arguments": compact_json(fc.args or {})}
                for (fc, _), call_id in zip(self.calls, ids, strict=True)
            ]
        return details


class GeminiAdapter(AdapterBase):
    """Google Gemini ``generateContent`` (SSE streams with ``alt=sse``)."""

    __slots__ = ()
    api_root: ClassVar[str] = "https://generativelanguage.googleapis.com/v1beta"

    def _auth(self, api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    def tool_fields(self, tools: ToolSet) -> dict[str, Any] | str:
        """``tools`` as one ``functionDeclarations`` list and ``toolConfig`` as
        ``AUTO``, ``NONE``, ``ANY``, or ``ANY`` limited to the named tool. With
        ``none`` the declarations are still sent: a history with calls needs them."""
        mode = _CHOICE_MODE.get(tools.choice)
        calling: dict[str, Any] = {"mode": mode or "ANY"}
        if mode is None:
            calling["allowedFunctionNames"] = [tools.choice]
        return {
            "tools": [{"functionDeclarations": _function_declarations(tools)}],
            "toolConfig": {"functionCallingConfig": calling},
        }

    def chat_request(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        stream: bool = False,
        output: OutputRequest | None = None,
    ) -> WireRequest:
        """``POST models/{model}:generateContent`` (``:streamGenerateContent?alt=sse``)."""
        body: dict[str, Any] = {k: v for k, v in params.items() if k not in _RESERVED}
        config = _generation_config(self.provider, model, params)
        messages = instructed(messages, output)
        if output is not None:
            _ask_output(body, config, output)
        system = [_system_text(m) for m in messages if m.role == "system"]
        system = [s for s in system if s]
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        body["contents"] = _contents(self.provider, messages)
        if config:
            body["generationConfig"] = config
        name = _path_segment(model_id(model))
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return WireRequest("POST", f"/models/{name}:{method}", body)

    def _check_blocked(self, model: str, resp: _Response) -> _Candidate:
        """The first candidate, or the ContentFilterError of a blocked prompt."""
        if resp.candidates:
            return resp.candidates[0]
        feedback = resp.promptFeedback
        if feedback is not None and feedback.blockReason:
            why = _blocked_prompt(feedback)
            raise ContentFilterError(why, provider=self.provider, model=model, status=200)
        return _Candidate()

    def _finish(
        self, model: str, c: _Candidate, calls: bool, details: dict[str, Any]
    ) -> str | None:
        if c.finishReason in FILTER_REASONS:
            raise ContentFilterError(
                _filtered_answer(c), provider=self.provider, model=model, status=200
            )
        finish = map_finish_reason(c.finishReason, _FINISH_REASON_MAP, details)
        if calls and finish == "stop":
            finish = "tool_calls"
        return finish

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """The first candidate: text, thoughts to details, function calls as tool calls."""
        resp = parse_wire_once(self, model, _TypedResponse, _Response, body)
        raw = resp.usageMetadata
        try:
            candidate = self._check_blocked(model, resp)
            decoded = _Decoded(candidate.content)
            ids = [fc.id or f"call_{i}" for i, (fc, _) in enumerate(decoded.calls)]
            details = decoded.details(ids)
            calls = [
                decoded_call(call_id, fc.name or "", fc.args, signature)
                for (fc, signature), call_id in zip(decoded.calls, ids, strict=True)
            ]
            finish = self._finish(model, candidate, bool(calls), details)
        except ContentFilterError as err:
            err.usage = _usage(raw, {}) if raw is not None else None  # billed all the same
            raise
        usage = _usage(raw, details) if raw is not None else Usage(estimated=True)
        return Reply("".join(decoded.text), finish, usage, resp.responseId, details, calls)

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Status plus Google's messages and canonical status names."""
        status_name = body.data.get("error") if isinstance(body.data, dict) else None
        named = status_name.get("status") if isinstance(status_name, dict) else None
        types = dict(_ERROR_STATUS)
        if status == 0 and isinstance(named, str) and named in types:
            status = types[named]
        return classify(status, body, _ERROR_RULES, types)

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """One SSE chunk (a whole GenerateContentResponse with the new parts and the
        cumulative usage); the chunk with a finishReason ends the stream."""
        payload = data.strip()
        if not payload:
            return None
        chunk = parse_wire(self, model, _Response, payload)
        if chunk.error is not None:
            raise stream_error(self, model, payload)
        candidate = self._check_blocked(model, chunk)
        decoded = _Decoded(candidate.content)
        details = decoded.details([fc.id for fc, _ in decoded.calls])
        for fragment, (_, signature) in zip(
            details.get("tool_calls", ()), decoded.calls, strict=True
        ):
            fragment["index"] = None  # each call comes whole: its own position
            if signature:
                fragment["signature"] = signature
        finish = self._finish(model, candidate, bool(decoded.calls), details)
        raw = chunk.usageMetadata
        usage = event_usage(_usage(raw, {})) if raw is not None else None
        return StreamEvent(
            text="".join(decoded.text),
            usage=usage,
            finish_reason=finish,
            response_id=chunk.responseId,
            done=finish is not None,
            details=details or None,
        )

    def health_request(self) -> WireRequest:
        """``GET models``: free; pages at 50 by default, so ask for the most (1000)."""
        return WireRequest("GET", "/models?pageSize=1000")

    def parse_models(self, body: bytes) -> set[str]:
        """Every listed model, as ``models/<id>`` and as ``<id>``."""
        listing = parse_wire(self, "*", _ModelList, body)
        return {n for m in listing.models or () for n in (m.name, model_id(m.name))}

    def missing_model_hint(self, model: str) -> str:
        """Gemini lists only the models this key may call."""
        return "not listed by GET models for this key (see ai.google.dev/gemini-api/docs/models)"
