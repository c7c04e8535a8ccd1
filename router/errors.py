"""The router's exceptions: one tree, every error a caller can see is a RouterError.

::

    RouterError
    ├── ConfigError                  providers.yaml (or a template) is wrong; lists every problem
    ├── TemplateError                a call's variables do not fit the route's templates
    ├── RequestError                 a call's history (messages=) is malformed, or a
    │                                provider's wire format cannot carry it
    ├── UnknownRouteError            no route of that name
    ├── BudgetExceededError          no step of the chain fits a budget
    ├── LedgerError                  the spend ledger cannot be opened, read or written
    ├── DeadlineExceededError        the call's deadline was spent (carries the attempts)
    ├── AllProvidersFailedError      every step failed (carries the attempts)
    ├── RouterClosedError            aclose() ended the call while it was in flight
    └── ProviderError                one provider call failed (provider, model, status, ...)
        ├── RateLimitError           429
        ├── ServerError              5xx, Anthropic 529 overloaded
        ├── ProviderTimeoutError     connect/read/attempt timeout
        ├── ProviderConnectionError  connection refused/reset, protocol error
        ├── AuthenticationError      401/403: the key is bad
        ├── ModelNotFoundError       404 / unknown model
        ├── EndpointNotFoundError    404 that names no model: the URL is wrong (check base_url)
        ├── BadRequestError          other 4xx
        │   ├── ContextLengthError   the prompt does not fit the model's context
        │   ├── ContentFilterError   refused by the provider's content policy
        │   └── GoneError            410: the provider retired something the request uses
        ├── InvalidResponseError     a body that does not match the wire format
        ├── InvalidOutputError       the answer did not parse or match the requested schema
        ├── EmptyResponseError       an answer with no text, no tool call and no output
        └── StreamInterruptedError   a stream failed after text was delivered

Every message passes through :func:`router.redact.redact`, so no error text,
``str()`` or ``repr()`` carries an API key. No error carries a foreign exception
either (an HTTP parser's error may quote the raw bytes of a header line that
echoes the key): :func:`sever_foreign` cuts them off the chain and keeps a
redacted summary in :attr:`ProviderError.cause_summary` (also shown as a note in
the traceback).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from router.redact import redact, redact_foreign

if TYPE_CHECKING:
    from router.types import Attempt, Usage

__all__ = [
    "AllProvidersFailedError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "ConfigProblem",
    "ContentFilterError",
    "ContextLengthError",
    "DeadlineExceededError",
    "EmptyResponseError",
    "EndpointNotFoundError",
    "GoneError",
    "InvalidOutputError",
    "InvalidResponseError",
    "LedgerError",
    "ModelNotFoundError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RequestError",
    "RouterClosedError",
    "RouterError",
    "ServerError",
    "StateUnavailableError",
    "StreamInterruptedError",
    "TemplateError",
    "UnknownRouteError",
]

# Longest request id kept from an upstream's header (real ones are under 64 characters).
REQUEST_ID_LIMIT = 128


class RouterError(Exception):
    """Base of every error the router raises to a caller."""

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in a config: where it is and what is wrong."""

    file: str
    line: int | None
    col: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(RouterError):
    """The config is invalid. ``problems`` lists every problem found, each with its place;
    ``warnings`` what was found besides (not counted: e.g. a value left unchecked)."""

    def __init__(
        self, problems: Sequence[ConfigProblem], warnings: Sequence[ConfigProblem] = ()
    ) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in config"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class RequestError(RouterError):
    """A call's conversation cannot be sent (raised before any traffic to that provider).

    Raised for a malformed history passed as ``messages=`` (before any traffic), and
    by an adapter whose wire format cannot carry a part (Ollama and an image URL).

    Attributes:
        route: the route's name, when known.
        index: the position in ``messages`` of the message at fault, or None when
            the fault is not one message's (a route without a prompt and no history).
        provider: the provider whose wire format cannot carry the conversation, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        route: str | None = None,
        index: int | None = None,
        provider: str | None = None,
    ) -> None:
        self.route = route
        self.index = index
        self.provider = provider
        super().__init__(message)


class TemplateError(RouterError):
    """A route's templates cannot be rendered with these variables (raised before any traffic).

    Attributes:
        route: the route's name.
        template: the template that failed (or the route's prompt, for a check of
            declared variables).
        variables: every variable at fault, all at once: unexpected, missing and
            mistyped names (for a route without declared ``vars``: the name that
            failed, then the other names its templates use that were not passed).
        variable: the first of ``variables``, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        route: str | None = None,
        template: str | None = None,
        variable: str | None = None,
        variables: Sequence[str] = (),
    ) -> None:
        self.route = route
        self.template = template
        self.variables = tuple(variables) or ((variable,) if variable is not None else ())
        self.variable = self.variables[0] if self.variables else None
        super().__init__(message)


class UnknownRouteError(RouterError):
    """A call or a dry run named a route the config does not have."""

    def __init__(self, message: str, *, route: str) -> None:
        self.route = route
        super().__init__(message)


class BudgetExceededError(RouterError):
    """No step of the chain could reserve its worst-case cost within a budget."""

    def __init__(
        self,
        message: str,
        *,
        budget: str,
        limit_usd: Decimal,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        attempts: Sequence[Attempt] = (),
    ) -> None:
        self.budget = budget
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.attempts = list(attempts)
        super().__init__(message)


class LedgerError(RouterError):
    """The spend ledger cannot be opened, read or written (never read as zero spend).

    Attributes:
        path: the ledger's location (a file path), or None for an in-memory ledger.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class StateUnavailableError(RouterError):
    """The shared state (settings.state, backend redis) cannot be reached in time, and
    ``on_unavailable: closed`` refuses paid steps until it answers again; free steps
    still run. Its attempts name the skip (kind ``state``).

    Attributes:
        attempts: every attempt of the call, the refused ones skipped with kind ``state``.
    """

    def __init__(self, message: str, *, attempts: Sequence[Attempt] = ()) -> None:
        self.attempts = list(attempts)
        super().__init__(message)


# Longest error text in an attempt's repr, a failed call's message or a log line.
SHORT_ERROR_LIMIT = 200


def short_error(err: BaseException, limit: int = SHORT_ERROR_LIMIT) -> str:
    """One redacted line of at most ``limit`` characters saying what ``err`` was:
    ``ServerError HTTP 503: overloaded`` (a provider error, without the provider
    prefix, which its attempt already names), ``Class: message`` for anything else."""
    if isinstance(err, ProviderError):
        status = f" HTTP {err.status}" if err.status is not None else ""
        text = f"{type(err).__name__}{status}: {err.detail}"
    else:
        message = err.message if isinstance(err, RouterError) else str(err)
        text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    text = " ".join(redact(text).split())  # one line
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _trail(attempts: Sequence[Attempt]) -> str:
    parts = []
    for a in attempts:
        what = a.reason or (short_error(a.error) if a.error else a.outcome)
        parts.append(f"{a.provider}/{a.model}: {what}")
    return "; ".join(parts)


class DeadlineExceededError(RouterError):
    """The call's deadline was spent before any step succeeded."""

    def __init__(self, deadline_s: float, attempts: Sequence[Attempt], route: str = "") -> None:
        self.deadline_s = deadline_s
        self.route = route
        self.attempts = list(attempts)
        n = len(self.attempts)
        msg = f"route {route!r}: deadline of {deadline_s:g}s spent after {n} attempt(s)"
        if self.attempts:
            msg += f" [{_trail(self.attempts)}]"
        super().__init__(msg)


class AllProvidersFailedError(RouterError):
    """Every step of the chain failed or was skipped."""

    def __init__(self, attempts: Sequence[Attempt], route: str = "") -> None:
        self.route = route
        self.attempts = list(attempts)
        n = len(self.attempts)
        if n and all(a.outcome == "skipped" for a in self.attempts):
            # Nothing was sent: say so, and why when every step had the same reason.
            kinds = {a.skip for a in self.attempts}
            why = ""
            if kinds == {"context_window"}:
                why = " (the input does not fit any step's context_window)"
            head = f"every step was skipped, nothing was sent{why}"
        else:
            head = f"all {n} attempt(s) failed"
        super().__init__(f"route {route!r}: {head} [{_trail(self.attempts)}]")


class RouterClosedError(RouterError):
    """``Router.aclose()`` ended the call while it was in flight (carries the attempts)."""

    def __init__(self, route: str = "", attempts: Sequence[Attempt] = ()) -> None:
        self.route = route
        self.attempts = list(attempts)
        msg = f"route {route!r}: the router was closed during the call"
        if self.attempts:
            msg += f" [{_trail(self.attempts)}]"
        super().__init__(msg)


class ProviderError(RouterError):
    """One call to one provider failed.

    Attributes:
        provider: the provider's name in providers.yaml.
        model: the model asked for.
        status: the HTTP status, or None when there was no response.
        retryable: whether trying the same provider again may succeed.
        retry_after: seconds the provider asked us to wait, when it said so.
        request_id: the provider's request id header, when present: redacted like
            any upstream text, and at most :data:`REQUEST_ID_LIMIT` characters.
        cause_summary: what caused this error when it was another library's
            exception (an httpx/aiohttp error): its class and message, redacted and
            capped. The exception itself is never kept (see :func:`sever_foreign`).
    """

    # Short stable name used in logs, metrics and the YAML ``fallback_on`` list.
    kind: ClassVar[str] = "provider"
    retryable_default: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = self.retryable_default if retryable is None else retryable
        self.retry_after = retry_after
        self.request_id = (
            None if request_id is None else redact_foreign(request_id, limit=REQUEST_ID_LIMIT)
        )
        self.cause_summary: str | None = None
        where = f"{provider}/{model}"
        if status is not None:
            where += f" HTTP {status}"
        super().__init__(f"{where}: {message}")
        # The readable part alone, without the provider prefix.
        self.detail = redact(message)


class RateLimitError(ProviderError):
    """The provider refused for rate or quota (429); ``retry_after`` when it said."""

    kind = "rate_limit"
    retryable_default = True


class ServerError(ProviderError):
    """The provider failed (5xx) or is overloaded (Anthropic 529)."""

    kind = "server"
    retryable_default = True


class ProviderTimeoutError(ProviderError):
    """Nothing, or not all of the answer, arrived within the attempt's time.

    ``sent`` is False when the request never left: the connection (or a pooled
    one) was not had in time, so the provider saw nothing and bills nothing."""

    kind = "timeout"
    retryable_default = True
    sent = True


class ProviderConnectionError(ProviderError):
    """The connection failed: refused, reset, or a protocol error."""

    kind = "connection"
    retryable_default = True


class AuthenticationError(ProviderError):
    """The key was rejected (401/403) or the account cannot pay: the provider cools down."""

    kind = "auth"


class ModelNotFoundError(ProviderError):
    """The provider does not serve the model asked for: a 404 (or another status)
    whose body says so, naming the model."""

    kind = "model_not_found"


class EndpointNotFoundError(ProviderError):
    """A 404 whose body is not the provider's "no such model" error: the URL requested
    does not exist, which almost always means ``base_url`` is wrong (a missing ``/v1``,
    or an endpoint path pasted into it). Not retried; the next step is tried, and the
    failure counts towards the provider's cooldown (every request to it goes to the
    same wrong place).

    Attributes:
        url: what was requested, as ``METHOD scheme://host/path`` (never the query
            string), when the caller knew it.
    """

    kind = "endpoint_not_found"

    def __init__(self, message: str, *, url: str | None = None, **fields: Any) -> None:
        self.url = None if url is None else redact(url)
        super().__init__(message, **fields)


class BadRequestError(ProviderError):
    """The provider rejected the request itself (other 4xx)."""

    kind = "bad_request"


class ContextLengthError(BadRequestError):
    """The prompt (plus max_tokens) does not fit the model's context window."""

    kind = "context_length"


class ContentFilterError(BadRequestError):
    """The provider refused the prompt or the answer under its content policy.

    ``usage`` is what the provider reported on a blocked 200 answer (it bills the
    prompt, and the answer it generated before withholding it); None when the
    refusal came without counts (an HTTP error, or a body without usage)."""

    kind = "content_filter"
    usage: Usage | None = None


class GoneError(BadRequestError):
    """HTTP 410 Gone: the provider has retired something this request uses (a body
    parameter, a model or an endpoint), for good. Not retried; the next step is
    tried. The message names the parameter when the provider's body does, and the
    extra body fields the request carried (the usual culprit)."""

    kind = "gone"


class InvalidResponseError(ProviderError):
    """The body does not match the provider's wire format (or is over the size cap)."""

    kind = "invalid_response"
    retryable_default = True


# Longest raw answer an InvalidOutputError keeps.
RAW_OUTPUT_LIMIT = 2000


class InvalidOutputError(ProviderError):
    """The answer did not parse or did not match the requested schema (structured output or tool
    arguments): retried once on the same step, then the next step."""

    kind = "invalid_output"
    retryable_default = True

    def __init__(
        self, message: str, *, raw: str = "", problems: Sequence[str] = (), **fields: Any
    ) -> None:
        self.raw = redact(raw)[
            :RAW_OUTPUT_LIMIT
        ]  # redacted first: a cut never leaves part of a key
        self.problems = tuple(redact(p) for p in problems)
        fields.setdefault("status", 200)  # the answer itself arrived
        super().__init__(message, **fields)


class EmptyResponseError(ProviderError):
    """An answer with no text, no tool call and no output (e.g. a reasoning model that spent
    max_tokens thinking): billed, then the next step."""

    kind = "empty_response"
    retryable_default = False


class StreamInterruptedError(ProviderError):
    """A stream failed after text had been delivered; carries what arrived."""

    kind = "stream_interrupted"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        partial_text: str,
        usage: Usage | None = None,
        cause: ProviderError | None = None,
        status: int | None = None,
    ) -> None:
        self.partial_text = partial_text
        self.usage = usage
        self.cause = cause
        super().__init__(message, provider=provider, model=model, status=status, retryable=False)


E = TypeVar("E", bound=RouterError)


def summarize(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """``module.Class: message`` of a foreign exception, redacted (``secrets`` too) and capped."""
    cls = type(exc)
    module = cls.__module__.partition(".")[0]
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return redact_foreign(f"{name}: {exc}" if str(exc) else name, secrets)


def sever_foreign(err: E, cause: BaseException | None = None, secrets: Iterable[str] = ()) -> E:
    """Cut every exception that is not a RouterError off ``err``'s chain; return ``err``.

    ``__cause__`` and ``__context__`` of ``err`` (and of the RouterErrors it chains)
    are cleared where they hold a foreign exception, so neither the object nor the
    bytes it quotes travel with the error. The first foreign cause (``cause``, when
    given: the exception ``err`` was mapped from) is kept on a ProviderError as a
    redacted :attr:`~ProviderError.cause_summary`, and added as a traceback note.
    """
    first = cause
    seen: set[int] = set()
    link: BaseException | None = err
    while isinstance(link, RouterError) and id(link) not in seen:
        seen.add(id(link))
        nxt: BaseException | None = None
        for attr in ("__cause__", "__context__"):
            linked = getattr(link, attr)
            if linked is None:
                continue
            if isinstance(linked, RouterError):
                nxt = nxt or linked
                continue
            if first is None and attr == "__cause__":
                first = linked
            setattr(link, attr, None)
        link = nxt
    if first is not None and isinstance(err, ProviderError) and err.cause_summary is None:
        summary = summarize(first, secrets)
        err.cause_summary = summary
        err.add_note(f"Caused by (redacted): {summary}")
    return err


# Every ProviderError kind, for validating ``fallback_on`` and labelling metrics.
ERROR_KINDS: dict[str, type[ProviderError]] = {
    cls.kind: cls
    for cls in (
        RateLimitError,
        ServerError,
        ProviderTimeoutError,
        ProviderConnectionError,
        AuthenticationError,
        ModelNotFoundError,
        EndpointNotFoundError,
        BadRequestError,
        ContextLengthError,
        ContentFilterError,
        GoneError,
        InvalidResponseError,
        InvalidOutputError,
        EmptyResponseError,
    )
}


# Status -> error type when an adapter has nothing more specific to say.
STATUS_ERRORS: dict[int, type[ProviderError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    # A 404 that the adapter's rules did not recognise as "no such model" (those
    # bodies name the model) is a URL that does not exist: base_url is wrong.
    404: EndpointNotFoundError,
    408: ServerError,
    409: ServerError,
    410: GoneError,
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
