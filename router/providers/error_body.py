"""Error bodies, decoded and classified once for every adapter.

An error reaches the router as a status, headers and body bytes (or as an error
object inside a 2xx body or a stream). Everything about reading it is shared
here; an adapter supplies only its tables for :func:`classify` (which error
type a status and decoded body mean):

- :func:`decode_error_body` reads any body (JSON, HTML, text, empty, truncated,
  not UTF-8) into an :class:`ErrorBody`: one readable line, secrets redacted;
- :func:`classify` is the shared decision order behind every adapter's
  ``classify_error``; :func:`~router.errors.status_error` is its fallback;
- :func:`error_from_response` builds the typed
  :class:`~router.errors.ProviderError` for a non-2xx response (Retry-After, or
  the body's ``RetryInfo`` delay, and request id included; with what was sent, a
  :class:`Sent`, a 404 names the URL and a 410 the extra fields), and
  :func:`embedded_error` / :func:`stream_error` the one for an error object
  inside a 2xx body or a stream.

Like the adapters, this module does no I/O and reads no clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from router.errors import (
    AuthenticationError,
    ContentFilterError,
    ContextLengthError,
    EndpointNotFoundError,
    GoneError,
    ModelNotFoundError,
    ProviderError,
    ServerError,
    status_error,
)
from router.providers.content_filter import error_filter_summary
from router.redact import redact

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
class ErrorBody:
    """An error response body decoded once for every adapter."""

    message: str  # readable one-line text: the JSON message, else the start of the text
    data: Any = None  # the parsed JSON document, when the body was JSON
    code: str | None = None  # the provider's error code (else its type or status), if any
    type: str | None = None  # the provider's error type (OpenAI/Anthropic ``type``), if any
    param: str | None = None  # the request parameter it is about (OpenAI-style ``param``)


@dataclass(slots=True, frozen=True)
class Sent:
    """What a failed request was, for the hints in its error: names only, never values.

    ``url`` is ``scheme://host/path`` with no query string (a query may carry a
    key); ``api_root`` an example base_url for the adapter's protocol;
    ``extras`` the names of the provider extra fields the body carried.
    """

    method: str
    url: str
    api_root: str | None = None
    extras: tuple[str, ...] = ()

    def request_line(self) -> str:
        """``POST https://host/path``."""
        return f"{self.method} {self.url}"


class Classifier(Protocol):
    """What reading an error needs of an adapter: its provider and its classification."""

    @property
    def provider(self) -> str: ...

    def classify_error(self, status: int, body: ErrorBody) -> type[ProviderError]:
        """Which error type an error status and its decoded body mean (see ``Adapter``)."""
        ...


# -- decoding -------------------------------------------------------------------------

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
    message = _json_message(inner)[0] if inner is not None else raw
    if not message:
        return None
    who = metadata.get("provider_name")
    return f"{who}: {message}" if isinstance(who, str) and who else message


_NOTHING: tuple[None, None, None, None] = (None, None, None, None)


def _json_message(data: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """Find (message, code, type, param) in the common error shapes of every provider."""
    if isinstance(data, list) and data and isinstance(data[0], dict):  # Gemini streams errors
        data = data[0]
    if not isinstance(data, dict):
        return _NOTHING
    err = data.get("error", data)
    if isinstance(err, str):  # Ollama and xAI: {"error": "text"}
        return err, _scalar(data.get("code")), None, _scalar(data.get("param"))
    if isinstance(err, list) and err and isinstance(err[0], dict):  # Gemini-style lists
        err = err[0].get("error", err[0])
    if not isinstance(err, dict):
        return _NOTHING
    message = (
        _scalar(err.get("message")) or _scalar(err.get("detail")) or _scalar(data.get("message"))
    )
    upstream = _upstream_message(err)
    if upstream and message:
        message = f"{message} ({upstream})"
    err_type = _scalar(err.get("type"))
    code = _scalar(err.get("code")) or err_type or _scalar(err.get("status"))
    return message, code, err_type, _scalar(err.get("param"))


def decode_error_body(body: bytes) -> ErrorBody:
    """Decode any error body: JSON, HTML, plain text, empty, truncated or not UTF-8."""
    if not body.strip():
        return ErrorBody(message="(empty body)")
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return ErrorBody(message=_text_message(text) or "(blank body)")
    message, code, err_type, param = _json_message(data)
    message = _one_line(message, ERROR_MESSAGE_LIMIT) if message else _text_message(text)
    # Azure names the content-filter categories that refused the request apart from
    # its message: say which, so that the error is actionable on its own.
    filtered = error_filter_summary(data)
    if filtered is not None:
        message = f"{message} [{_one_line(filtered, ERROR_TEXT_LIMIT)}]"
    if param is not None:
        param = _one_line(param, ERROR_TEXT_LIMIT)
    return ErrorBody(
        message=message or "(blank body)", data=data, code=code, type=err_type, param=param
    )


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
    # A missing model: the body names it. A 404 that names no model is a wrong URL
    # (EndpointNotFoundError, by status): Anthropic answers both with the type
    # not_found_error, "model: <name>" for a model and "Not Found" for a path.
    (
        re.compile(
            r"model_not_found|model_not_available|unable to access model|deploymentnotfound"
            r"|not_found_error\b.*\bmodel: |models?\b[^.]{0,100}?\b(?:not found|does not exist)"
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


# (apim-request-id: Azure's, the id its support asks for.)
REQUEST_ID_HEADERS = (
    "x-request-id",
    "request-id",
    "apim-request-id",
    "x-amzn-requestid",
    "cf-ray",
)

# google.rpc.RetryInfo's delay: a protobuf Duration in JSON ("48s", "48.939935699s").
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,9})?)s")


def body_retry_after(data: Any, max_s: float = math.inf) -> float | None:
    """Seconds to wait that an error body states: the ``retryDelay`` of a
    ``google.rpc.RetryInfo`` entry in ``error.details`` (Google's APIs say it there,
    not in a Retry-After header), at most ``max_s``; None when it states none."""
    if isinstance(data, list) and data:  # Gemini streams errors as a list
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and item.get("@type") == _RETRY_INFO:
            delay = item.get("retryDelay")
            match = _DURATION.fullmatch(delay) if isinstance(delay, str) else None
            if match:
                return min(float(match.group(1)), max_s)
    return None


# The hint of an EndpointNotFoundError: the URL that does not exist is base_url's fault.
BASE_URL_HINT = "check base_url: it should end at the API root"


def _described(cls: type[ProviderError], body: ErrorBody, sent: Sent | None) -> str:
    """The message of a typed error: the body's, plus what the caller can act on
    (the parameter the body names, the URL of a 404, the extras behind a 410)."""
    message = body.message
    if body.param and body.param not in message:
        message += f" (param: {body.param})"
    if cls is EndpointNotFoundError:
        what = sent.request_line() if sent is not None else "the requested URL"
        root = sent.api_root if sent is not None else None
        example = f", such as {root}" if root else ""
        return f"no such endpoint: {what} [{message}]; {BASE_URL_HINT}{example}"
    if issubclass(cls, GoneError):
        extras = sent.extras if sent is not None else ()
        sent_fields = f" (extra body fields sent: {', '.join(extras)})" if extras else ""
        return (
            f"{message}; the provider has retired something this request uses{sent_fields}:"
            " remove it from the provider's or model's `extra` or the step's `params`,"
            " or move the step to a model the provider still serves"
        )
    return message


def error_from_response(
    adapter: Classifier,
    model: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now_epoch: float | None = None,
    retry_after_max_s: float = math.inf,
    sent: Sent | None = None,
) -> ProviderError:
    """Build the typed error for a non-2xx response: one implementation for all adapters.

    ``headers`` must be case-insensitive or lower-cased; ``now_epoch`` and
    ``retry_after_max_s`` are passed to :func:`parse_retry_after`. ``sent``, when
    given, says what was requested: a 404 that names no model then names the URL
    (:class:`~router.errors.EndpointNotFoundError`), a 410 the extra fields.
    """
    decoded = decode_error_body(body)
    cls = adapter.classify_error(status, decoded)
    request_id = next((headers[h] for h in REQUEST_ID_HEADERS if h in headers), None)
    message = _described(cls, decoded, sent)
    retry_after = parse_retry_after(headers, now_epoch, max_s=retry_after_max_s)
    if retry_after is None:
        retry_after = body_retry_after(decoded.data, retry_after_max_s)
    if cls is EndpointNotFoundError:
        return EndpointNotFoundError(
            message,
            provider=adapter.provider,
            model=model,
            status=status,
            retry_after=retry_after,
            request_id=request_id,
            url=None if sent is None else sent.request_line(),
        )
    return cls(
        message,
        provider=adapter.provider,
        model=model,
        status=status,
        retry_after=retry_after,
        request_id=request_id,
    )


def embedded_error(
    adapter: Classifier, model: str, body: bytes | str, status: int = 200
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
    if cls is EndpointNotFoundError:
        # The URL answered: a "not found" inside its body is about what was asked for.
        cls = ModelNotFoundError
    message = _described(cls, decoded, None)
    return cls(message, provider=adapter.provider, model=model, status=stated or status)


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


def stream_error(adapter: Classifier, model: str, payload: str) -> ProviderError:
    """The typed error for an error event inside a 200 stream."""
    return embedded_error(adapter, model, payload) or ServerError(
        f"error event: {decode_error_body(payload.encode()).message}",
        provider=adapter.provider,
        model=model,
        status=200,
    )
