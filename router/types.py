"""Result and message types shared by every layer.

These are slotted dataclasses, not pydantic models: they are built on every
call, and the hot path allocates nothing it does not need. pydantic is kept for
the config and for validating wire bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from router.errors import RouterError, short_error

Role = Literal["system", "user", "assistant", "tool"]
# cancelled: a hedged attempt that lost the race (docs/latency.md): billed as sent.
Outcome = Literal["ok", "error", "skipped", "cancelled"]


class SkipKind(StrEnum):
    """Why a chain step was skipped without sending: a fixed vocabulary.

    Metrics label skips by these values (``Attempt.skip``); the human detail is
    ``Attempt.reason``. Every kind has a metric label (router.metrics.stats).
    """

    COOLDOWN = "cooldown"  # the provider is cooling down (or its half-open probe is out)
    RETRY_AFTER = "retry_after"  # the provider's Retry-After reaches past the attempt's share
    RATE = "rate"  # requests_per_minute cannot admit within the attempt's share
    TOKENS = "tokens"  # tokens_per_minute cannot admit it (or the request exceeds it)
    CONCURRENCY = "concurrency"  # max_concurrency stays full past the attempt's share
    BUDGET = "budget"  # a budget cannot take the worst-case cost
    MAX_COST = "max_cost"  # the route's max_cost_usd is below the worst-case cost
    LEDGER = "ledger"  # the spend ledger cannot write: paid steps are refused
    STATE = "state"  # the shared state (Redis) is unavailable: paid steps are refused
    DEADLINE = "deadline"  # admission used the attempt's whole share of the deadline
    # the estimated input plus max_tokens is more than the model's context_window
    CONTEXT_WINDOW = "context_window"
    # the call has tools and the step's model has ``tools: false`` (or the provider
    # cannot honour the call's tool_choice)
    TOOLS_UNSUPPORTED = "tools_unsupported"


@dataclass(slots=True, frozen=True)
class Skip:
    """A decision not to send a step: its kind and one human line saying why."""

    kind: SkipKind
    reason: str


@dataclass(slots=True, frozen=True)
class ProviderState:
    """One provider's live admission and health state (``Router.provider_states()``).

    Times are seconds on the router's clock, relative to the moment of reading.
    Headroom fields are None when the provider has no such limit.

    ``runtime_id`` names the provider's runtime (connection pool, limiters,
    cooldown state): it stays the same across a reload that leaves the provider's
    plan unchanged, and is new when a reload rebuilds the provider. It is unique
    within the process; compare it only for equality.
    """

    provider: str
    cooling_down: bool  # skipped by every call until the cooldown ends
    cooldown_remaining_s: float  # 0.0 when not cooling down
    probing: bool  # the half-open probe after a cooldown is in flight
    failures: int  # consecutive failures counting towards a cooldown
    in_flight: int  # attempts admitted and not yet finished
    retry_after_s: float  # Retry-After: seconds before the provider may be called (0.0: now)
    requests_available: float | None  # requests_per_minute headroom now (estimate)
    tokens_available: float | None  # tokens_per_minute headroom now (estimate)
    concurrency_available: int | None  # free max_concurrency slots
    # Filled in by the Router (the gate knows neither its runtime nor its pool):
    runtime_id: int = 0  # the provider's runtime; new when a reload rebuilds it
    connections_open: int = 0  # connections in the provider's pool (idle + in use)
    connections_idle: int = 0  # open and waiting for a request (keep-alive)
    connections_in_use: int = 0  # carrying a request or response now


@dataclass(slots=True, frozen=True)
class Text:
    """A part of a message: plain text."""

    text: str


@dataclass(slots=True, frozen=True)
class Image:
    """A part of a user message (or of a tool result): an image, by ``url`` or as
    ``data`` bytes with their ``mime`` type (``image/png``, ``image/jpeg``...).

    Exactly one of ``url`` and ``data`` is given. Bytes are sent base64-encoded (a
    ``data:`` URL for OpenAI); a URL is passed as it is, to providers that take one
    (Ollama takes none: a RequestError).
    """

    url: str | None = None
    data: bytes | None = None
    mime: str | None = None


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A part of an assistant message: the model asks for tool ``name`` with ``arguments``.

    In an answer (``Completion.tool_calls``) ``id`` is the provider's call id (Ollama
    gives none: ``call_<index>``, stable for the same answer). When the provider sent
    arguments that are not a JSON object, ``arguments`` is ``{}`` and
    ``arguments_raw`` holds the text as received (:attr:`invalid_arguments` is
    true); such a call is passed back in a history as that raw text.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    arguments_raw: str | None = None
    # An opaque token the provider gave with the call and wants back with it in the
    # history (Gemini's ``thoughtSignature``); None for the other providers.
    signature: str | None = field(default=None, repr=False)

    @property
    def invalid_arguments(self) -> bool:
        """True when the provider's arguments were not a JSON object (see ``arguments_raw``)."""
        return self.arguments_raw is not None


@dataclass(slots=True, frozen=True)
class ToolResult:
    """The only kind of part of a ``tool`` message: the result of the call ``call_id``.

    ``content`` is text, or a list of :class:`Text` and :class:`Image` parts;
    ``is_error`` marks a failed tool run (Anthropic sends it as ``is_error``; the
    OpenAI and Ollama formats have no such field, so say it in the content too).
    """

    call_id: str
    content: str | list[Text | Image]
    is_error: bool = False


# What a message's content may hold besides a plain string.
Part = Text | Image | ToolCall | ToolResult


@dataclass(slots=True, frozen=True)
class Message:
    """One chat message: a route's rendered template, or a turn of a caller's history.

    ``role`` is ``system`` (from a route's template), ``user``, ``assistant`` or
    ``tool``; ``content`` is a string or a list of parts (:class:`Text`,
    :class:`Image` in user messages, :class:`ToolCall` in assistant messages,
    :class:`ToolResult` in tool messages; docs/conversations.md).

    ``cache`` marks a prompt-cache breakpoint: the provider may cache the prompt up
    to and including this message (a route's ``prompt_cache``). Anthropic's adapter
    sends it as ``cache_control``; adapters whose providers cache on their own
    (OpenAI and compatibles) or not at all (Ollama) ignore it.
    """

    role: Role
    content: str | list[Part]
    cache: bool = False


@dataclass(slots=True, frozen=True)
class Citation:
    """A source the answer cites (a provider's ``url_citation`` annotation).

    ``start`` and ``end`` are character offsets of the cited span in the answer
    text (``text[start:end]``), as the provider gave them; ``title`` is the
    page title (xAI gives the citation's number, such as ``"1"``).
    """

    url: str
    title: str | None = None
    start: int | None = None
    end: int | None = None


@dataclass(slots=True)
class Usage:
    """Token usage in one convention for every provider.

    ``input_tokens`` counts every prompt token processed, cached or not;
    ``cached_input_tokens`` and ``cache_write_tokens`` are parts of it.
    ``output_tokens`` includes reasoning; ``reasoning_tokens`` is the part of it
    spent thinking. ``server_tool_calls`` counts the calls the provider made to its
    own tools (``web_search``, ``x_search``...), each billed at the model's
    ``price.per_call``. ``estimated`` is true when the counts are not the provider's
    report as it stands: it reported none, or reported what could not be billed
    as it was (then ``suspect`` says why, in one line: malformed or impossible
    counts, output above ``max_tokens``, a cost far above the reservation; see
    docs/money.md).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    suspect: str | None = None
    # Server-side tool calls by tool name (web_search, x_search...); empty: none.
    server_tool_calls: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Reply:
    """What an adapter makes of a successful response body: the provider-neutral core."""

    text: str
    finish_reason: str | None
    usage: Usage
    response_id: str | None = None
    # Vendor fields with no common meaning (reasoning text, citations, tool calls...).
    details: dict[str, Any] = field(default_factory=dict)
    # The tools the model asked for, in the order it gave them.
    tool_calls: list[ToolCall] = field(default_factory=list)
    # The sources the answer cites (server-side search), in the text's order.
    citations: list[Citation] = field(default_factory=list)


@dataclass(slots=True)
class Attempt:
    """One try (or skip) of one chain step during a call."""

    provider: str
    model: str
    outcome: Outcome
    error: RouterError | None = None
    status: int | None = None
    latency_s: float = 0.0
    cost_usd: Decimal = Decimal(0)
    # Why a step was skipped, in one human line (cooldown, limiter past deadline, budget...).
    reason: str | None = None
    # When the attempt started, in seconds since the call started.
    start_s: float = 0.0
    # Streams only: seconds from the attempt's start to its first text delta.
    ttft_s: float | None = None
    # Usage the provider reported for this attempt (ok attempts; partial for interrupted streams).
    usage: Usage | None = None
    # Skipped attempts: the kind of skip (metrics label by it; ``reason`` is the detail).
    skip: SkipKind | None = None
    # Seconds left on the call's deadline when the attempt was recorded.
    deadline_left_s: float | None = None
    # Started as a hedge: while an earlier attempt of the call was still running.
    hedged: bool = False
    # When attempts of the call ran at once: True for the one whose answer was
    # returned, False for the others (cancelled, or answered later); else None.
    won: bool | None = None

    def __repr__(self) -> str:
        extra = f" status={self.status}" if self.status is not None else ""
        if self.reason:
            extra += f" reason={self.reason!r}"
        if self.error is not None:
            extra += f" error={short_error(self.error)!r}"
        if self.hedged:
            extra += " hedged"
        if self.won is not None:
            extra += " won" if self.won else " lost"
        return (
            f"<Attempt {self.provider}/{self.model} {self.outcome}{extra}"
            f" latency={self.latency_s * 1000:.1f}ms>"
        )


@dataclass(slots=True)
class Completion:
    """The answer to one routed call."""

    text: str
    route: str
    provider: str
    model: str
    usage: Usage
    cost_usd: Decimal
    finish_reason: str | None
    latency_s: float
    attempts: list[Attempt]
    response_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # The tools the model asked for (empty when it asked for none).
    tool_calls: list[ToolCall] = field(default_factory=list)
    # The checked structured answer (a call or route with ``output``): an instance of
    # the pydantic model asked for, or the parsed JSON; None when no output was asked
    # (or an accept_truncated route returned an answer that did not validate).
    output: Any = None
    # The sources the answer cites (server-side web or X search); empty: none.
    citations: list[Citation] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class StreamEvent:
    """One decoded event of a streamed response (adapters produce these from bytes).

    ``text`` is a visible text delta (may be empty); ``usage`` and
    ``finish_reason`` are set when the event carries them; ``done`` marks the
    provider's end-of-stream; ``details`` carries vendor deltas such as
    reasoning text.
    """

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    done: bool = False
    details: dict[str, Any] | None = None
    # Sources cited (known at the end of a Responses stream); None: none here.
    citations: tuple[Citation, ...] | None = None


@dataclass(slots=True, frozen=True)
class HealthReport:
    """One provider's health, from a free model-listing request."""

    provider: str
    ok: bool
    reachable: bool
    status: int | None
    latency_s: float
    # Configured models the provider did not list (with a hint), empty when all present.
    missing_models: list[str] = field(default_factory=list)
    error: str | None = None
    # What was requested: ``METHOD scheme://host/path`` (no query string, no key).
    url: str | None = None
    # The proxy the check went through, credentials redacted; None: a direct connection.
    proxy: str | None = None
    # The error's kind (``auth``, ``rate_limit``...; ProviderError.kind), None when ok.
    error_kind: str | None = None


@dataclass(slots=True, frozen=True)
class KeyCheck:
    """What checking every provider's key at start found (``Router.start(verify_keys=True)``).

    A rejected key is not here: it fails the start with a ConfigError.
    """

    # Providers whose key the model listing accepted.
    verified: tuple[str, ...]
    # Providers that could not be checked (unreachable, timed out, 5xx, another
    # status): a warning, not a failure. Each report says why.
    unverified: tuple[HealthReport, ...]
    # Providers with no key to check (keyless, or kind mock).
    skipped: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class WireRequest:
    """An HTTP request as data: the transport sends it, the adapter built it."""

    method: str
    path: str  # relative to the provider's base_url
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
