"""The adapter contract, and the parts every adapter shares.

An adapter is pure translation for one wire protocol: it turns a model,
messages and parameters into a :class:`WireRequest`, and a response's status,
headers and body bytes into a :class:`~router.types.Reply`, a stream event, or
a typed :class:`~router.errors.ProviderError`. It never opens a connection,
sleeps, reads the clock or logs.

Error bodies are decoded once, here (:func:`decode_error_body`); an adapter only
says which error type a status and decoded body mean (``classify_error``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal, Protocol

from pydantic import ValidationError

from router.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from router.types import Message, Reply, StreamEvent

# How much of a non-JSON error body is kept as the message.
ERROR_TEXT_LIMIT = 300


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

    message: str  # readable text: the JSON message, else the start of the text
    data: Any = None  # the parsed JSON document, when the body was JSON
    code: str | None = None  # the provider's error code/type, when the JSON had one


class Adapter(Protocol):
    """What every protocol adapter provides. See ``openai.py`` for the reference shape."""

    # The provider's name in providers.yaml; every error carries it.
    provider: str
    # How a streamed body is framed: server-sent events or newline-delimited JSON.
    stream_format: ClassVar[Literal["sse", "ndjson"]]

    def auth_headers(self) -> dict[str, str]:
        """Headers sent with every request (auth, API version). Built once at start."""
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
        """Say which error type an error status and its decoded body mean."""
        ...

    def parse_stream_event(self, model: str, event: str, data: str) -> StreamEvent | None:
        """Decode one stream event (SSE ``event``/``data``; for NDJSON ``event`` is
        empty and ``data`` is one line). None for events that carry nothing."""
        ...

    def health_request(self) -> WireRequest:
        """A free request (a model listing) that proves reachability and the key."""
        ...

    def parse_models(self, body: bytes) -> set[str]:
        """The model names a health response lists."""
        ...


def invalid(provider: str, model: str, what: str, status: int | None = 200) -> InvalidResponseError:
    """An InvalidResponseError for a body that does not match the wire format."""
    return InvalidResponseError(
        f"invalid response body: {what}", provider=provider, model=model, status=status
    )


def validation_summary(exc: ValidationError) -> str:
    """One line naming the first few fields of a wire body that did not match."""
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "<body>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def _text_message(text: str) -> str:
    stripped = text.lstrip()
    if stripped[:1] == "<":  # HTML (or XML) error page from a proxy
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[:ERROR_TEXT_LIMIT] + "..."
    return text


def _json_message(data: Any) -> tuple[str | None, str | None]:
    """Find (message, code) in the common error shapes of every provider."""
    if not isinstance(data, dict):
        return None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None
    if isinstance(err, list) and err and isinstance(err[0], dict):  # Gemini-style lists
        err = err[0].get("error", err[0])
    if not isinstance(err, dict):
        return None, None
    message = err.get("message") or err.get("detail") or data.get("message")
    code = err.get("code") or err.get("type") or err.get("status")
    return (
        str(message) if message is not None else None,
        str(code) if code is not None else None,
    )


def decode_error_body(body: bytes) -> ErrorBody:
    """Decode any error body: JSON, HTML, plain text, empty, truncated or not UTF-8."""
    if not body.strip():
        return ErrorBody(message="(empty body)")
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return ErrorBody(message=_text_message(text) or "(blank body)")
    message, code = _json_message(data)
    if message is None:
        message = _text_message(text)
    return ErrorBody(message=message, data=data, code=code)


def parse_retry_after(headers: Mapping[str, str], now_epoch: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP-date).

    ``now_epoch`` is the current wall time for an HTTP-date; adapters read no
    clock, so the transport passes it in.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    if now_epoch is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now_epoch, 0.0)


# Status -> error type when an adapter has nothing more specific to say.
STATUS_ERRORS: dict[int, type[ProviderError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: ModelNotFoundError,
    408: ServerError,
    409: ServerError,
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


REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")


def error_from_response(
    adapter: Adapter,
    model: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now_epoch: float | None = None,
) -> ProviderError:
    """Build the typed error for a non-2xx response: one implementation for all adapters.

    ``headers`` must be case-insensitive or lower-cased.
    """
    decoded = decode_error_body(body)
    cls = adapter.classify_error(status, decoded)
    request_id = next((headers[h] for h in REQUEST_ID_HEADERS if h in headers), None)
    return cls(
        decoded.message,
        provider=adapter.provider,
        model=model,
        status=status,
        retry_after=parse_retry_after(headers, now_epoch),
        request_id=request_id,
    )
