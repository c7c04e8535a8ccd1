"""The adapter contract, and the parts every adapter shares.

An adapter is pure translation for one wire protocol: it turns a model,
messages and parameters into a :class:`WireRequest`, and a response's status,
headers and body bytes into a :class:`~router.types.Reply`, a stream event, or
a typed :class:`~router.errors.ProviderError`. It never opens a connection,
sleeps, reads the clock or logs.

Shared here, written once for every adapter:

- error bodies are decoded by :func:`decode_error_body` (JSON, HTML, text,
  empty, truncated, not UTF-8); an adapter only supplies its tables for
  :func:`classify` (which error type a status and decoded body mean);
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
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    ContextLengthError,
    InvalidResponseError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from router.redact import redact
from router.types import Message, Reply, StreamEvent, Usage

# How much of a non-JSON error body is kept as the message.
ERROR_TEXT_LIMIT = 300
# How much of a JSON error message is kept (provider messages are sentences, some long).
ERROR_MESSAGE_LIMIT = 1000
# How much of a non-JSON body is looked at: the title or first words are near the top,
# and a bound keeps the HTML clean-up linear on hostile bodies.
ERROR_SCAN_LIMIT = 16 * 1024
# Text kept past a cut until secrets are redacted: longer than any API key, so a key
# that straddles the cut is either redacted whole or dropped whole.
_KEY_MARGIN = 512


@dataclass(slots=True, frozen=True)
class WireRequest:
    """An HTTP request as data: the transport sends it, the adapter built it."""

    method: str
    path: str  # relative to the provider's base_url
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class ErrorBody:
    """An error response body decoded once for every adapter."""

    message: str  # readable one-line text: the JSON message, else the start of the text
    data: Any = None  # the parsed JSON document, when the body was JSON
    code: str | None = None  # the provider's error code (else its type or status), if any
    type: str | None = None  # the provider's error type (OpenAI/Anthropic ``type``), if any


class Adapter(Protocol):
    """What every protocol adapter provides. See ``openai.py`` for the reference shape.

    Adapters are built as ``XAdapter(provider, api_key, headers)``.
    """

    # The provider's name in providers.yaml; every error carries it.
    provider: str
    # How a streamed body is framed: server-sent events or newline-delimited JSON.
    stream_format: ClassVar[Literal["sse", "ndjson"]]

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
        params: Mapping[str, Any],
        *,
        stream: bool = False,
    ) -> WireRequest:
        """Build a chat request. ``params`` holds ``max_tokens``, ``temperature`` (both
        optional, in the router's names) and provider extras, already merged."""
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

    Subclasses set ``stream_format`` and build their auth headers in
    :meth:`_auth`; the key is kept only inside those headers.
    """

    __slots__ = ("_headers", "provider")
    stream_format: ClassVar[Literal["sse", "ndjson"]] = "sse"

    def __init__(
        self, provider: str, api_key: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.provider = provider
        # Auth + version headers, then the YAML's extra headers (which may override them).
        self._headers: dict[str, str] = {**self._auth(api_key), **(headers or {})}

    def _auth(self, api_key: str | None) -> dict[str, str]:
        """Headers that carry the key (and API version); none by default."""
        return {}

    def auth_headers(self) -> dict[str, str]:
        """Headers sent with every request (a copy; built once at construction)."""
        return dict(self._headers)

    def missing_model_hint(self, model: str) -> str:
        """What to tell the operator when ``model`` is not in the provider's listing."""
        return "not listed by the provider"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} provider={self.provider!r}>"

    __str__ = __repr__


# -- wire validation ------------------------------------------------------------------


class Wire(BaseModel):
    """Base of every wire-format model: unknown fields ignored, read fields strict."""

    model_config = ConfigDict(extra="ignore", strict=True)


W = TypeVar("W", bound=Wire)

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
    adapter: Adapter, model: str, cls: type[W], body: bytes | str, status: int = 200
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


def embedded_error(
    adapter: Adapter, model: str, body: bytes | str, status: int = 200
) -> ProviderError | None:
    """The typed error for a 2xx body (or stream event) that is an error object, else None.

    The error's status is the one the body states (``status_code``, a numeric
    ``code``), else the HTTP status the response really had.
    """
    decoded = decode_error_body(body.encode() if isinstance(body, str) else body)
    data = decoded.data
    if not isinstance(data, dict) or not data.get("error"):
        return None
    stated = stated_status(data)
    cls = adapter.classify_error(stated or 0, decoded)
    return cls(decoded.message, provider=adapter.provider, model=model, status=stated or status)


def stated_status(data: Any) -> int | None:
    """An HTTP status an error document states about itself (groq ``status_code``,
    OpenRouter's numeric ``code``), if any."""
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    for holder in (err, data):
        if not isinstance(holder, dict):
            continue
        for key in ("status_code", "status", "code"):
            value = holder.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
                return value
    return None


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


def stream_error(adapter: Adapter, model: str, payload: str) -> ProviderError:
    """The typed error for an error event inside a 200 stream."""
    return embedded_error(adapter, model, payload) or ServerError(
        f"error event: {decode_error_body(payload.encode()).message}",
        provider=adapter.provider,
        model=model,
        status=200,
    )


def filtered(adapter: Adapter, model: str, why: str) -> ContentFilterError:
    """A 200 reply whose only content the provider withheld."""
    return ContentFilterError(why, provider=adapter.provider, model=model, status=200)


def compact_json(value: Any) -> str:
    """Tool-call arguments given as a JSON value, as the JSON text OpenAI would send."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- error bodies ---------------------------------------------------------------------

_TAG = re.compile(r"<[^<>]*>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def _one_line(text: str, limit: int) -> str:
    # Redact before cutting: a key cut in two by the limit would no longer match its
    # registered value, and its first part would be kept.
    text = redact(_SPACE.sub(" ", text).strip()[: limit + _KEY_MARGIN])
    if len(text) > limit:
        text = text[:limit] + "..."
    return text


def _text_message(text: str) -> str:
    # The scan window is redacted before it is cut, for the same reason as in _one_line.
    text = redact(text[: ERROR_SCAN_LIMIT + _KEY_MARGIN])[:ERROR_SCAN_LIMIT]
    stripped = text.lstrip()
    if stripped[:1] == "<":  # HTML (or XML) error page from a proxy
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", _SCRIPT.sub(" ", text))
    return _one_line(text, ERROR_TEXT_LIMIT)


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    return str(value)


def _upstream_message(err: dict[str, Any]) -> str | None:
    """OpenRouter wraps an upstream provider's error in ``metadata.raw`` (a JSON string)."""
    metadata = err.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("raw"), str):
        return None
    raw: str = metadata["raw"]
    try:
        inner = json.loads(raw)
    except ValueError:
        inner = None
    message, _, _ = _json_message(inner) if inner is not None else (raw, None, None)
    if not message:
        return None
    who = metadata.get("provider_name")
    return f"{who}: {message}" if isinstance(who, str) and who else message


def _json_message(data: Any) -> tuple[str | None, str | None, str | None]:
    """Find (message, code, type) in the common error shapes of every provider."""
    if isinstance(data, list) and data and isinstance(data[0], dict):  # Gemini streams errors
        data = data[0]
    if not isinstance(data, dict):
        return None, None, None
    err = data.get("error", data)
    if isinstance(err, str):  # Ollama and xAI: {"error": "text"}
        return err, _scalar(data.get("code")), None
    if isinstance(err, list) and err and isinstance(err[0], dict):  # Gemini-style lists
        err = err[0].get("error", err[0])
    if not isinstance(err, dict):
        return None, None, None
    message = (
        _scalar(err.get("message")) or _scalar(err.get("detail")) or _scalar(data.get("message"))
    )
    upstream = _upstream_message(err)
    if upstream and message:
        message = f"{message} ({upstream})"
    err_type = _scalar(err.get("type"))
    code = _scalar(err.get("code")) or err_type or _scalar(err.get("status"))
    return message, code, err_type


def decode_error_body(body: bytes) -> ErrorBody:
    """Decode any error body: JSON, HTML, plain text, empty, truncated or not UTF-8."""
    if not body.strip():
        return ErrorBody(message="(empty body)")
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return ErrorBody(message=_text_message(text) or "(blank body)")
    message, code, err_type = _json_message(data)
    message = _one_line(message, ERROR_MESSAGE_LIMIT) if message else _text_message(text)
    return ErrorBody(message=message or "(blank body)", data=data, code=code, type=err_type)


def _seconds(value: str | None) -> float | None:
    """A non-negative finite number from a header value ("nan", "inf", "soon": None)."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return max(number, 0.0) if math.isfinite(number) else None


def parse_retry_after(
    headers: Mapping[str, str], now_epoch: float | None = None, *, max_s: float = math.inf
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP-date),
    at most ``max_s`` (the router passes ``settings.retry_after_max_s``).

    ``now_epoch`` is the current wall time for an HTTP-date; adapters read no
    clock, so the router passes it in.
    """
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return min(ms / 1000.0, max_s)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return min(seconds, max_s)
    if now_epoch is None:
        return None
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return min(max(when - now_epoch, 0.0), max_s)


# -- classification -------------------------------------------------------------------

# Status -> error type when an adapter has nothing more specific to say.
STATUS_ERRORS: dict[int, type[ProviderError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: ModelNotFoundError,
    408: ServerError,
    409: ServerError,
    # Payload too large: it will not fit this provider however often it is sent;
    # another provider may take it, which is what ContextLengthError means to the router.
    413: ContextLengthError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error(status: int) -> type[ProviderError]:
    """The default error type for an HTTP status."""
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if status >= 500:
        return ServerError
    return BadRequestError


# (pattern searched in the lower-cased code, type and message; error type when it matches)
ErrorRules = Sequence[tuple[re.Pattern[str], type[ProviderError]]]

# What every provider family says in words; adapters put their own rules first.
COMMON_RULES: ErrorRules = (
    (
        re.compile(
            r"context_length_exceeded|context[ _]length|context window|prompt is too long"
            r"|prompt too long|maximum prompt length"
        ),
        ContextLengthError,
    ),
    (
        re.compile(
            r"content[_ ]?filter|content_policy|content policy|content management policy"
            r"|safety system|responsible ai"
        ),
        ContentFilterError,
    ),
    (
        re.compile(
            r"invalid[_ ]api[_ ]key|incorrect api key|invalid x-api-key|api key not valid"
            r"|authentication[_ ]?(?:error|fails|failed)|permission_error|unauthori[sz]ed"
        ),
        AuthenticationError,
    ),
    (
        re.compile(
            r"model_not_found|not_found_error|model\b[^.]{0,100}?\b(?:not found|does not exist)"
        ),
        ModelNotFoundError,
    ),
)


def error_text(body: ErrorBody) -> str:
    """The lower-cased code, type and message of an error body, for rule matching."""
    return " | ".join(p for p in (body.code, body.type, body.message) if p).lower()


def _by_rules(text: str, rules: ErrorRules) -> type[ProviderError] | None:
    return next((cls for pattern, cls in rules if pattern.search(text)), None)


def classify(
    status: int,
    body: ErrorBody,
    rules: ErrorRules,
    type_status: Mapping[str, int] | None = None,
) -> type[ProviderError]:
    """The shared decision order behind every adapter's ``classify_error``.

    5xx and 529 are server errors; then the adapter's ``rules`` decide (what the
    body says: context length, content filter, a bad key said with a 400, an
    unknown model...); then the status alone. A status of 0 (an error inside a
    2xx body or stream) is first inferred from the error type with
    ``type_status``; an unknown type is judged by its words alone, else taken
    for a server-side failure.
    """
    text = error_text(body)
    if status == 0:
        types = type_status or {}
        inferred = next((types[k] for k in (body.type, body.code) if k and k in types), None)
        if inferred is None:
            return _by_rules(text, rules) or ServerError
        status = inferred
    if status >= 500:
        return ServerError
    return _by_rules(text, rules) or status_error(status)


REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")


def error_from_response(
    adapter: Adapter,
    model: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now_epoch: float | None = None,
    retry_after_max_s: float = math.inf,
) -> ProviderError:
    """Build the typed error for a non-2xx response: one implementation for all adapters.

    ``headers`` must be case-insensitive or lower-cased; ``now_epoch`` and
    ``retry_after_max_s`` are passed to :func:`parse_retry_after`.
    """
    decoded = decode_error_body(body)
    cls = adapter.classify_error(status, decoded)
    request_id = next((headers[h] for h in REQUEST_ID_HEADERS if h in headers), None)
    return cls(
        decoded.message,
        provider=adapter.provider,
        model=model,
        status=status,
        retry_after=parse_retry_after(headers, now_epoch, max_s=retry_after_max_s),
        request_id=request_id,
    )
