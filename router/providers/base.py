"""The adapter contract, and the wire helpers every adapter shares.

An adapter is pure translation for one wire protocol: it turns a model,
messages and parameters into a :class:`~router.types.WireRequest`, and a
response's status, headers and body bytes into a :class:`~router.types.Reply`,
a stream event, or a typed :class:`~router.errors.ProviderError`. It never
opens a connection, sleeps, reads the clock or logs (an import-linter contract
in pyproject.toml checks that no adapter imports the transport, the router or
an I/O module).

Here: the contract (:class:`Adapter`), the base class the adapters share
(:class:`AdapterBase`: construction, auth headers, the model listing), and the
wire helpers:

- wire bodies are validated by :func:`parse_wire` against an adapter's pydantic
  models (:class:`Wire`); a body that does not match is an
  :class:`~router.errors.InvalidResponseError` naming the fields, and a 2xx
  body that is an error object raises that error's type;
- stream events: ``details`` of a :class:`~router.types.StreamEvent` carries
  *deltas* under the same keys for every protocol: ``"reasoning"`` or
  ``"thinking"`` (a text fragment) and ``"tool_calls"`` (a list of fragments
  ``{"index", "id", "name", "arguments"}``, where id/name come once and the
  ``arguments`` strings concatenate). ``usage`` holds the cumulative counts known
  at that event for the fields it reports, so merging events' usage field-wise
  with ``max()`` gives the final usage.

Error bodies (decoding, classification, the typed error of a response) are
:mod:`router.providers.error_body`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.errors import ContentFilterError, InvalidResponseError, ProviderError
from router.output import OutputRequest, with_instruction
from router.providers.error_body import Classifier, ErrorBody, embedded_error
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

# A chat request's parameters: the router's (``max_tokens``, ``temperature``) and
# provider extras, already merged.
Params = Mapping[str, Any]

# How a streamed body is framed: server-sent events or newline-delimited JSON.
StreamFormat = Literal["sse", "ndjson"]


class Adapter(Protocol):
    """What every protocol adapter provides. See ``openai.py`` for the reference shape.

    Adapters are built as ``XAdapter(provider, api_key, headers)``.
    """

    # The provider's name in providers.yaml; every error carries it.
    provider: str
    # How a streamed body is framed: server-sent events or newline-delimited JSON.
    stream_format: ClassVar[StreamFormat]
    # An example base_url of this protocol: the API root its request paths are
    # appended to (named in the hint of a 404 that names no model).
    api_root: ClassVar[str]

    def __init__(
        self, provider: str, api_key: str | None, headers: Mapping[str, str] | None = None
    ) -> None: ...

    def auth_headers(self) -> dict[str, str]:
        """Headers sent with every request (auth, API version, the YAML's extra headers).
        Built once at construction."""
        ...

    def chat_request(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        stream: bool = False,
        output: OutputRequest | None = None,
    ) -> WireRequest:
        """Build a chat request. ``params`` holds ``max_tokens``, ``temperature`` (both
        optional, in the router's names) and provider extras, already merged;
        ``output`` asks for structured output in its mode (router.output)."""
        ...

    def tool_fields(self, tools: ToolSet) -> dict[str, Any] | str:
        """The body fields that offer ``tools`` with their ``tool_choice`` (merged into
        a request's params), or why this protocol cannot honour them (the step is
        skipped: ``tools_unsupported``). Built once per route at load."""
        ...

    def parse_reply(self, model: str, body: bytes) -> Reply:
        """Parse a 2xx body; raise InvalidResponseError (or a typed error for an
        error object inside a 200) when it does not match the wire format."""
        ...

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Say which error type an error status and its decoded body mean.

        ``status`` is 0 for an error that arrived inside a 2xx body or a stream
        without a status of its own; the adapter infers one from the error type.
        """
        ...

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """Decode one stream event (SSE ``event``/``data``; for NDJSON ``event`` is
        empty and ``data`` is one line). None for events that carry nothing.
        Raises the typed ProviderError for an error event."""
        ...

    def health_request(self) -> WireRequest:
        """A free request (a model listing) that proves reachability and the key."""
        ...

    def parse_models(self, body: bytes) -> set[str]:
        """The model names a health response lists."""
        ...

    def missing_model_hint(self, model: str) -> str:
        """What to tell the operator when a configured model is not in the listing."""
        ...


class AdapterBase:
    """Construction, auth headers and a key-free ``repr`` shared by the adapters.

    Subclasses set ``stream_format`` (SSE by default), ``api_root`` (an example
    base_url: OpenAI's by default) and build their auth headers
    in :meth:`_auth` (a bearer token by default); the key is kept only inside those
    headers.
    """

    __slots__ = ("_headers", "provider")
    stream_format: ClassVar[StreamFormat] = "sse"
    api_root: ClassVar[str] = "https://api.openai.com/v1"

    def __init__(
        self, provider: str, api_key: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.provider = provider
        # Auth + version headers, then the YAML's extra headers (which may override them).
        self._headers: dict[str, str] = {**self._auth(api_key), **(headers or {})}

    def _auth(self, api_key: str | None) -> dict[str, str]:
        """Headers that carry the key (and API version): by default a bearer token when
        there is a key (OpenAI and compatible APIs, Ollama's cloud), else none."""
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def auth_headers(self) -> dict[str, str]:
        """Headers sent with every request (a copy; built once at construction)."""
        return dict(self._headers)

    def missing_model_hint(self, model: str) -> str:
        """What to tell the operator when ``model`` is not in the provider's listing."""
        return "not listed by the provider"

    def tool_fields(self, tools: ToolSet) -> dict[str, Any] | str:
        """OpenAI's form (and every compatible API's): ``tools`` as functions and
        ``tool_choice`` as ``"auto"``, ``"none"``, ``"required"`` or
        ``{"type": "function", "function": {"name"}}``."""
        choice: Any = tools.choice
        if choice not in ("auto", "none", "required"):
            choice = {"type": "function", "function": {"name": choice}}
        return {"tools": function_tools(tools), "tool_choice": choice}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} provider={self.provider!r}>"

    __str__ = __repr__


# -- wire validation ------------------------------------------------------------------


class Wire(BaseModel):
    """Base of every wire-format model: unknown fields ignored, read fields strict."""

    model_config = ConfigDict(extra="ignore", strict=True)


W = TypeVar("W", bound=Wire)
V = TypeVar("V", bound=Wire)

# A token count: a negative one is a malformed body, not a number to bill.
Count = Annotated[int, Field(ge=0)]


def invalid(provider: str, model: str, what: str, status: int | None = 200) -> InvalidResponseError:
    """An InvalidResponseError for a body that does not match the wire format."""
    return InvalidResponseError(
        f"invalid response body: {what}", provider=provider, model=model, status=status
    )


def validation_summary(exc: ValidationError) -> str:
    """One line naming the first few fields of a wire body that did not match."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "<body>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_wire(
    adapter: Classifier, model: str, cls: type[W], body: bytes | str, status: int = 200
) -> W:
    """Validate ``body`` as ``cls``; raise the typed error if it is an error object,
    else InvalidResponseError naming what did not match."""
    try:
        return cls.model_validate_json(body)
    except ValidationError as exc:
        summary = validation_summary(exc)
    # Raised outside the except block: the ValidationError quotes the body (and so any
    # key a server echoed) and must not ride along as the error's __context__.
    embedded = embedded_error(adapter, model, body, status)
    if embedded is not None:
        raise embedded
    raise invalid(adapter.provider, model, summary, status)


def parse_wire_once(
    adapter: Classifier, model: str, typed: type[W], loose: type[V], body: bytes | str
) -> W | V:
    """Validate ``body`` in one pass as ``typed``: ``loose`` with its usage fields
    typed too, which is what nearly every reply is. Only a body that does not fit
    ``typed`` is validated again, as ``loose`` (:func:`parse_wire`), whose usage
    fields are read by :func:`wire_usage` so that a malformed usage costs no reply."""
    try:
        # model_validate_json without its Python wrapper (the same validator, defaults).
        return typed.__pydantic_validator__.validate_json(body)  # type: ignore[no-any-return]
    except ValidationError:
        pass
    return parse_wire(adapter, model, loose, body)


def map_finish_reason(
    raw: str | None, table: Mapping[str, str], details: dict[str, Any]
) -> str | None:
    """Normalize a finish reason with an adapter's table (unknown values pass through);
    a raw value that the table changed is kept in ``details["finish_reason"]``."""
    if raw is None:
        return None
    finish = table.get(raw, raw)
    if finish != raw:
        details["finish_reason"] = raw
    return finish


def reported_usage(
    input_tokens: int | None,
    output_tokens: int | None,
    details: dict[str, Any],
    *,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> Usage:
    """Usage as the provider reported it. A count it left out is 0 and named in
    ``details["usage_missing"]``; with neither count the usage is ``estimated``."""
    if input_tokens is not None and output_tokens is not None:  # nearly every reply
        return Usage(
            input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens
        )
    missing = [
        name
        for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens))
        if value is None
    ]
    if missing:
        details["usage_missing"] = missing
    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cached_input_tokens=cached_input_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
        estimated=len(missing) == 2,
    )


def wire_usage(cls: type[W], raw: Any) -> W | str:
    """Validate a body's usage object on its own, against ``cls``.

    A malformed usage (a count that is a string, a float, a bool or negative; not
    an object) must not cost the caller a reply the provider has most likely
    billed: instead of failing the body, it comes back as a one-line summary of
    what is wrong, for :func:`malformed_usage`.
    """
    if isinstance(raw, cls):
        return raw  # validated with the body (parse_wire_once)
    if not isinstance(raw, dict):
        return f"usage: not an object ({type(raw).__name__})"
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        return "usage." + validation_summary(exc)


def malformed_usage(what: str) -> Usage:
    """The usage of a reply whose usage could not be read: no counts, marked ``suspect``
    so that the router bills its own estimate (never $0)."""
    return Usage(estimated=True, suspect=f"malformed usage: {what}")


def event_usage(usage: Usage) -> Usage | None:
    """A stream event's usage, or None when the event reported no count at all
    (a malformed one is kept: the router must know to bill an estimate)."""
    return None if usage.estimated and usage.suspect is None else usage


def filtered(
    adapter: Adapter, model: str, why: str, usage: Usage | None = None
) -> ContentFilterError:
    """A 200 reply whose only content the provider withheld; ``usage``: what the
    reply reported (the router bills it)."""
    err = ContentFilterError(why, provider=adapter.provider, model=model, status=200)
    err.usage = usage
    return err


def compact_json(value: Any) -> str:
    """Tool-call arguments given as a JSON value, as the JSON text OpenAI would send."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- conversations: message parts to wire, tool calls from wire ---------------------


def parts_of(content: str | list[Part]) -> list[Part]:
    """A message's content as a list of parts (a string is one Text part)."""
    return [Text(content)] if isinstance(content, str) else content


def joined_text(parts: Sequence[Part | Text | Image]) -> str:
    """The text of the Text parts, joined (the other parts left out)."""
    return "".join(p.text for p in parts if isinstance(p, Text))


def image_base64(image: Image) -> str:
    """An Image's bytes as base64 text (the caller checked that it has bytes)."""
    return base64.b64encode(image.data or b"").decode("ascii")


def image_url(image: Image) -> str:
    """An Image as a URL: its own, or a ``data:`` URL carrying its bytes."""
    if image.url is not None:
        return image.url
    return f"data:{image.mime};base64,{image_base64(image)}"


def function_tools(tools: ToolSet) -> list[dict[str, Any]]:
    """Tool definitions in OpenAI's function form (also Ollama's)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools.tools
    ]


def call_arguments_json(call: ToolCall) -> str:
    """A tool call's arguments as JSON text: the provider's raw text when it was not a
    JSON object (sent back as received), else the arguments compacted."""
    return call.arguments_raw if call.arguments_raw is not None else compact_json(call.arguments)


def instructed(messages: Sequence[Message], output: OutputRequest | None) -> Sequence[Message]:
    """``messages``, with the output instruction in the system message when ``output``
    is asked for in a mode that has no schema field of its own (json_object, none)."""
    if output is not None and output.mode in ("json_object", "none"):
        return with_instruction(messages, output)
    return messages


def chat_body(model: str, params: Mapping[str, Any], reserved: frozenset[str]) -> dict[str, Any]:
    """The start of a chat request body: every param not in ``reserved`` (the router
    params an adapter translates and the body keys it owns), passed through as a
    provider extra; then ``model``."""
    body = {k: v for k, v in params.items() if k not in reserved}
    body["model"] = model
    return body


class _ModelEntry(Wire):
    id: str


class _ModelList(Wire):
    data: list[_ModelEntry]


def listed_models(adapter: Classifier, body: bytes) -> set[str]:
    """The ``id`` of every model in a ``{"data": [{"id": ...}, ...]}`` listing
    (OpenAI's ``GET /models``, and Anthropic's)."""
    listing = parse_wire(adapter, "*", _ModelList, body)
    return {m.id for m in listing.data}
