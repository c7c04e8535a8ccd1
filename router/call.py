"""One call walking its chain: skips, reservations, admission, retries, fallback.

:class:`Call` holds the policy walk shared by ``complete()`` and ``stream()``;
subclasses supply only the exchange with the provider (:meth:`Call._exchange`).
Everything that decides admission or money goes through the router's
:class:`~router.state.State`: every attempt holds the :class:`~router.state.Ticket`
it hands out — its budget reservation and provider slot — in a ``try``/``finally``
that gives both back whatever happens, cancellation included; an exchange that
keeps the ticket past the attempt (an open stream, :attr:`Call.keeps_ticket`)
takes it over in its own exit stack once it returns.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from router.billing import bill, final_usage
from router.config import Backoff
from router.deadline import Clock, Deadline
from router.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    ContentFilterError,
    DeadlineExceededError,
    InvalidOutputError,
    LedgerError,
    ProviderError,
    ProviderTimeoutError,
    RouterClosedError,
    RouterError,
    StateUnavailableError,
    sever_foreign,
)
from router.images import images_tokens
from router.output import TOOL_NAME, OutputRequest, OutputSpec, checked_answer
from router.plan import ProviderPlan, StepPlan
from router.policy import Rule, rule_for
from router.pool import PoolPicker
from router.providers.base import Adapter
from router.providers.error_body import Sent, error_from_response
from router.race import CURRENT_LANE, Race
from router.state import ProviderHandle, Refusal, State, Ticket, worst_case_usd
from router.templates import RouteTemplates
from router.tools import ToolSet
from router.transport import Transport
from router.types import (
    Attempt,
    Completion,
    Image,
    Message,
    Reply,
    Skip,
    SkipKind,
    ToolCall,
    Usage,
    WireRequest,
)

R = TypeVar("R")

# Params the router itself sets on every request (not provider extras).
_ROUTER_PARAMS = frozenset({"max_tokens", "temperature"})

_SHARE_USED = Skip(SkipKind.DEADLINE, "admission used the attempt's whole deadline share")


_runtime_ids = itertools.count(1)


@dataclass(slots=True)
class Provider:
    """A provider's runtime: its adapter, pooled transport and its handle in the State."""

    name: str
    plan: ProviderPlan  # what it was built from; an equal plan can reuse it
    adapter: Adapter
    transport: Transport
    gate: ProviderHandle  # admission and health state (State.provider)
    # Names this runtime in ProviderState: unique in the process, never reused.
    runtime_id: int = field(default_factory=lambda: next(_runtime_ids))

    def describe(self, request: WireRequest, extras: Iterable[str] = ()) -> Sent:
        """What ``request`` was, for the hints of its error (names only, no values)."""
        return Sent(
            request.method,
            self.transport.display_url(request.path),
            self.adapter.api_root,
            tuple(sorted(extras)),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One chain step at run time: its resolved plan bound to the provider's runtime."""

    provider: Provider
    plan: StepPlan  # model, params, retries, caps, price: resolved once, at load
    # The request params and max_tokens of a call that overrides none of the route's
    # (request_params with the route's max_tokens and temperature), made once.
    defaults: tuple[Mapping[str, Any], int] | None = None
    # The route's tools in this step's wire form (already in ``defaults``), or the
    # skip of a step that cannot take them; None: the route declares no tools.
    tools: Mapping[str, Any] | Skip | None = None
    # A pool step (``pool:NAME``): its members, each a Step of its own, and the
    # pool's choice state (router.pool); empty for a provider/model step.
    members: tuple[Step, ...] = ()
    picker: PoolPicker | None = None


def step_tools(plan: StepPlan, adapter: Adapter, tools: ToolSet) -> Mapping[str, Any] | Skip:
    """The body fields that offer ``tools`` to a step, or the skip of a step whose
    model takes no tools or whose provider cannot honour the tool_choice."""
    if not plan.tools:
        return Skip(
            SkipKind.TOOLS_UNSUPPORTED,
            f"the call has tools and model {plan.model!r} is declared tools: false",
        )
    fields = adapter.tool_fields(tools)
    if isinstance(fields, str):
        return Skip(SkipKind.TOOLS_UNSUPPORTED, fields)
    return MappingProxyType(fields)


def request_params(
    plan: StepPlan,
    max_tokens: int,
    temperature: float | None,
    params: Mapping[str, Any] | None,
    tools: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], int]:
    """A step's request params (its extras, then the call's, then the tools' wire
    fields, then max_tokens and temperature) and its max_tokens: the call's, cut to
    the model's ``max_output_tokens``."""
    if plan.max_output_tokens is not None and max_tokens > plan.max_output_tokens:
        max_tokens = plan.max_output_tokens
    merged = dict(plan.params)
    if params:
        merged.update(params)
    if tools:
        merged.update(tools)
    merged["max_tokens"] = max_tokens
    if temperature is not None:
        merged["temperature"] = temperature
    return merged, max_tokens


@dataclass(slots=True)
class Route:
    """A compiled route."""

    name: str
    templates: RouteTemplates
    steps: list[Step]
    deadline_s: float
    max_tokens: int
    temperature: float | None
    max_cost_usd: Decimal | None
    # Error kinds that may fall back to the next step (None: all).
    fallback_on: frozenset[str] | None
    # The route's tools and tool_choice (None: none declared).
    tools: ToolSet | None = None
    # The answer's schema (route ``output:``); None: plain text.
    output: OutputSpec | None = None
    # Return an empty or cut-off answer as a success (route ``accept_truncated``).
    accept_truncated: bool = False
    # The walk of a route that hedges or has a pool step (router.hedge); None: the
    # plain walk (Call.run), which does no work for either.
    walker: Callable[[Call[Any]], Awaitable[Any]] | None = None


@dataclass(slots=True)
class Runtime:
    """What calls share with their Router: clock, sleep, state, policy numbers, hooks."""

    clock: Clock
    sleep: Callable[[float], Awaitable[None]]
    state: State  # admission and money
    floor_s: float
    backoff: Backoff
    # settings.retry_after_max_s: the longest Retry-After honoured.
    retry_after_max_s: float
    # Called with every attempt as it is recorded (the Router's event channel).
    on_attempt: Callable[[str, Attempt], None]
    # Set by Router.aclose(): calls still running stop before their next try.
    closed: bool = False


def retry_limit(rule: Rule, retries: int) -> int:
    """How many times a step retries a failure of ``rule``'s kind: its ``retries``,
    at most the kind's own limit (router.policy)."""
    return retries if rule.max_retries is None else min(retries, rule.max_retries)


def billed(
    step: Step, lease: Ticket, usage: Usage, text: str, details: Mapping[str, Any]
) -> tuple[Usage, Decimal]:
    """The usage and cost to settle for an attempt: ``usage`` checked against what its
    ticket was reserved for (router.billing)."""
    return bill(
        usage,
        est_in=lease.est_in,
        text=text,
        details=details,
        max_tokens=lease.max_tokens,
        reserved=lease.reserved,
        price=step.plan.price,
        provider=step.provider.name,
        model=step.plan.model,
    )


class Call(Generic[R]):
    """The state of one call while it walks its chain."""

    __slots__ = (
        "attempts",
        "billed_out",
        "deadline",
        "est_in",
        "images",
        "max_tokens",
        "messages",
        "output",
        "params",
        "race",
        "refusal",
        "route",
        "rt",
        "temperature",
        "tools",
    )

    def __init__(
        self,
        rt: Runtime,
        route: Route,
        messages: list[Message],
        deadline: Deadline,
        max_tokens: int | None,
        temperature: float | None,
        params: Mapping[str, Any] | None,
        tools: ToolSet | None = None,
        output: OutputSpec | None = None,
    ) -> None:
        self.rt = rt
        self.route = route
        self.messages = messages
        self.deadline = deadline
        self.max_tokens = max_tokens or route.max_tokens
        self.temperature = temperature if temperature is not None else route.temperature
        self.params = params
        # The messages' estimate without their images, which count per provider.
        images: list[Image] = []
        self.est_in = route.templates.estimate_tokens(messages, images)
        self.images = images
        self.attempts: list[Attempt] = []
        # The last budget refusal, for BudgetExceededError if nothing else ran.
        self.refusal: Refusal | None = None
        # The tools offered (the route's, or the call's own); None: no tools.
        self.tools = tools
        if tools is not None:
            self.est_in += tools.tokens  # the definitions are billed as prompt
        # The usage and cost of an answer that was billed and then refused (an
        # InvalidOutputError or EmptyResponseError), for its attempt.
        self.billed_out: tuple[Usage, Decimal] | None = None
        # The answer's schema: the call's, else the route's (None: plain text).
        self.output = output if output is not None else route.output
        # The attempts running at once of a call that hedges (router.race); None: one at a time.
        self.race: Race | None = None

    # -- the exchange: what subclasses supply ----------------------------------------

    stream = False
    # True when a successful exchange keeps its ticket past the attempt (an open
    # stream releases it when it ends); else the attempt releases it on leaving.
    keeps_ticket = False

    async def _exchange(
        self, step: Step, request: WireRequest, timeout_s: float, t0: float, lease: Ticket
    ) -> R:
        """Talk to the provider. Raise ProviderError on failure (the attempt then
        releases ``lease``). On success settle ``lease``, or, when the class
        :attr:`keeps_ticket`, own it from the return on."""
        raise NotImplementedError

    # -- bookkeeping -----------------------------------------------------------------

    def input_estimate(self, step: Step) -> int:
        """Input tokens to reserve and admit for ``step``: the messages' estimate plus
        the hidden prompt its provider bills (``input_overhead_tokens``)."""
        return self.messages_estimate(step) + step.plan.input_overhead

    def messages_estimate(self, step: Step) -> int:
        """The messages' estimate for ``step``: their text, and their images with the
        formula of the step's provider (router.images)."""
        if not self.images:
            return self.est_in
        kind = step.provider.plan.kind
        return self.est_in + images_tokens(kind, self.images, step.plan.image_tokens)

    def sent(self, step: Step, request: WireRequest) -> Sent:
        """What ``request`` to ``step`` was, for its error's hints: the URL and the
        names of the extra body fields (the step's and the call's params)."""
        extras = {*step.plan.params, *(self.params or ())} - _ROUTER_PARAMS
        return step.provider.describe(request, extras)

    def record(self, attempt: Attempt, now: float | None = None) -> None:
        attempt.deadline_left_s = self.deadline.remaining(now)
        if self.race is not None:
            self.race.mark(attempt)
        self.attempts.append(attempt)
        self.rt.on_attempt(self.route.name, attempt)

    def _skip(self, step: Step, skip: Skip, t0: float) -> None:
        start = t0 - self.deadline.started_at
        self.record(
            Attempt(
                step.provider.name,
                step.plan.model,
                "skipped",
                reason=skip.reason,
                start_s=start,
                skip=skip.kind,
            )
        )

    def failed(
        self,
        step: Step,
        lease: Ticket,
        err: ProviderError,
        t0: float,
        usage: Usage | None = None,
        *,
        cost: Decimal = Decimal(0),
        ttft_s: float | None = None,
    ) -> None:
        """Record a failed attempt and tell the State (through the attempt's ticket)."""
        lease.failed(err)
        now = self.rt.clock()
        self.record(
            Attempt(
                step.provider.name,
                step.plan.model,
                "error",
                error=err,
                status=err.status,
                latency_s=now - t0,
                start_s=t0 - self.deadline.started_at,
                usage=usage,
                cost_usd=cost,
                ttft_s=ttft_s,
            )
        )

    def succeeded(
        self,
        step: Step,
        lease: Ticket,
        reply: Reply,
        status: int,
        t0: float,
        cost: Decimal,
        usage: Usage,
        ttft_s: float | None = None,
    ) -> Completion:
        """Record the successful attempt (telling the State) and build the Completion."""
        lease.succeeded()
        now = self.rt.clock()  # one reading for the attempt, the deadline and the call
        started = self.deadline.started_at
        # Positional (cheaper per call), in the fields' order.
        self.record(
            Attempt(
                step.provider.name,
                step.plan.model,
                "ok",
                None,  # error
                status,
                now - t0,  # latency_s
                cost,  # cost_usd
                None,  # reason
                t0 - started,  # start_s
                ttft_s,
                usage,
            ),
            now,
        )
        return Completion(
            reply.text,
            self.route.name,  # route
            step.provider.name,  # provider
            step.plan.model,  # model
            usage,
            cost,  # cost_usd
            reply.finish_reason,
            now - started,  # latency_s
            self.attempts,
            reply.response_id,
            reply.details,
            reply.tool_calls,
            citations=reply.citations,
        )

    # -- the walk --------------------------------------------------------------------

    async def run(self) -> R:
        """Walk the chain: each step with its retries, until one gives a result."""
        # One frame for the whole walk (no coroutine per step): awaiting a coroutine
        # costs a frame per call on the hot path.
        walker = self.route.walker
        if walker is not None:
            result: R = await walker(self)
            return result
        deadline = self.deadline
        rt = self.rt
        steps = self.route.steps
        n = len(steps)
        for i, step in enumerate(steps):
            steps_left = n - i
            prepared = self.prepare(step)
            if isinstance(prepared, Skip):
                self._skip(step, prepared, rt.clock())
                continue
            request, max_tokens, worst = prepared
            tries = 0
            while True:
                if rt.closed:
                    raise self.closed_error()
                t0 = rt.clock()
                if t0 >= deadline.end:
                    raise DeadlineExceededError(deadline.seconds, self.attempts, self.route.name)
                outcome = await self._attempt(step, steps_left, request, max_tokens, worst, t0)
                if not isinstance(outcome, ProviderError):
                    if outcome is None:
                        break  # skipped: the next step
                    return outcome
                # Retries follow the policy table; fallback_on only decides what
                # happens once the step gives up: the next step, or the end of the call.
                rule = rule_for(outcome.kind)
                if not rule.retry or tries >= retry_limit(rule, step.plan.retries):
                    self._give_up(outcome)
                    break
                tries += 1
                pause = self._pause(tries, outcome.retry_after) if rule.backoff else 0.0
                # A wait that would eat the time later steps need moves on at once.
                if not deadline.can_wait(pause, steps_left, rt.floor_s):
                    self._give_up(outcome)
                    break
                if pause > 0:
                    await rt.sleep(pause)
        raise self._failure()

    def prepare(self, step: Step) -> tuple[WireRequest, int, Decimal] | Skip:
        """What this call sends to ``step`` (its request, output cap and worst-case
        cost), or the skip of a step that cannot take the call (tools, context window)."""
        tools = None
        if self.tools is not None:
            offer = self._tool_fields(step)
            if isinstance(offer, Skip):
                return offer
            tools = offer
        params, max_tokens = self._request_params(step, tools)
        room = step.plan.window_room
        if room is not None and self.messages_estimate(step) + max_tokens > room:
            return self._too_long(step, max_tokens)
        worst = worst_case_usd(self.input_estimate(step), max_tokens, step.plan.price)
        # Server tools: every call the step allows, at its dearest per-call price.
        worst += step.plan.tool_calls_reserve_usd
        if self.output is None:
            request = step.provider.adapter.chat_request(
                step.plan.model, self.messages, params, stream=self.stream
            )
        else:
            request = step.provider.adapter.chat_request(
                step.plan.model,
                self.messages,
                params,
                stream=self.stream,
                output=OutputRequest(
                    self.output,
                    step.plan.structured_output,
                    None if self.tools is None else self.tools.choice,
                ),
            )
        return request, max_tokens, worst

    def _too_long(self, step: Step, max_tokens: int) -> Skip:
        """The skip of a step whose model cannot hold this call's input and output."""
        est = self.input_estimate(step)
        window = step.plan.context_window
        return Skip(
            SkipKind.CONTEXT_WINDOW,
            f"estimated input {est} + max_tokens {max_tokens} = {est + max_tokens} tokens"
            f" is more than the model's context_window {window}",
        )

    def closed_error(self) -> RouterClosedError:
        """What the call raises when ``Router.aclose()`` ends it."""
        return RouterClosedError(self.route.name, self.attempts)

    def _failure(self) -> RouterError:
        route = self.route.name
        if self.deadline.expired:
            return DeadlineExceededError(self.deadline.seconds, self.attempts, route)
        ran = [a for a in self.attempts if a.outcome != "skipped"]
        if not ran and self.refusal is not None:
            r = self.refusal
            if r.ledger_error is not None:
                return LedgerError(f"route {route!r}: {r.reason}", path=r.ledger_error.path)
            if r.state_error is not None:
                return StateUnavailableError(f"route {route!r}: {r.reason}", attempts=self.attempts)
            return BudgetExceededError(
                f"route {route!r}: no step fits the budget: {r.reason}",
                budget=r.budget,
                limit_usd=r.limit_usd,
                spent_usd=r.spent_usd,
                reserved_usd=r.reserved_usd,
                attempts=self.attempts,
            )
        return AllProvidersFailedError(self.attempts, route)

    def _tool_fields(self, step: Step) -> Mapping[str, Any] | Skip:
        """The tools' wire fields for ``step`` (made at load for the route's own), or
        the skip of a step that cannot take them."""
        tools = self.tools
        assert tools is not None
        if (
            self.output is not None
            and step.plan.structured_output == "tool"
            and tools.offers(TOOL_NAME)
        ):
            return Skip(
                SkipKind.TOOLS_UNSUPPORTED,
                f"tool name {TOOL_NAME!r} is taken by structured output on model"
                f" {step.plan.model!r} (structured_output: tool); rename the tool",
            )
        if tools is self.route.tools and step.tools is not None:
            return step.tools
        return step_tools(step.plan, step.provider.adapter, tools)

    def _request_params(
        self, step: Step, tools: Mapping[str, Any] | None = None
    ) -> tuple[Mapping[str, Any], int]:
        route = self.route
        if (
            step.defaults is not None
            and not self.params
            and self.max_tokens == route.max_tokens
            and self.temperature == route.temperature
            and self.tools is route.tools
        ):
            return step.defaults  # read-only: adapters build their body from it
        return request_params(step.plan, self.max_tokens, self.temperature, self.params, tools)

    def check_tool_calls(self, step: Step, calls: list[ToolCall]) -> None:
        """Raise InvalidOutputError when an answer's tool calls do not match the tools
        offered (arguments not a JSON object, a tool not offered, the schema)."""
        tools = self.tools
        if tools is None or not calls:
            return
        if self.output is not None and step.plan.structured_output == "tool":
            # The forced answer call is the output's, checked against its schema.
            calls = [c for c in calls if c.name != TOOL_NAME]
        problems = tools.problems(calls)
        if problems:
            raw = json.dumps(
                [{"name": c.name, "arguments": c.arguments_raw or c.arguments} for c in calls],
                ensure_ascii=False,
            )
            raise InvalidOutputError(
                "tool call arguments do not match the tools offered: " + "; ".join(problems[:3]),
                provider=step.provider.name,
                model=step.plan.model,
                raw=raw,
                problems=problems,
            )

    def _give_up(self, err: ProviderError) -> None:
        """The step is done with ``err``: go on to the next step if fallback_on allows it."""
        fallback_on = self.route.fallback_on
        if fallback_on is not None and err.kind not in fallback_on:
            raise AllProvidersFailedError(self.attempts, self.route.name)

    def _pause(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        b = self.rt.backoff
        ceiling = min(b.max_s, b.initial_s * b.multiplier ** (retry - 1))
        return random.uniform(0.0, ceiling)  # full jitter

    async def _attempt(
        self,
        step: Step,
        steps_left: int,
        request: WireRequest,
        max_tokens: int,
        worst: Decimal,
        t0: float,
    ) -> R | ProviderError | None:
        """One try: cooldown and reservation, admission, exchange — all through the
        State. Never leaks a slot or a reservation."""
        rt = self.rt
        est_in = self.input_estimate(step)
        lease = rt.state.begin(
            step.provider.gate,
            route=self.route.name,
            model=step.plan.model,
            amount=worst,
            max_cost_usd=self.route.max_cost_usd,
            est_in=est_in,
            max_tokens=max_tokens,
        )
        if isinstance(lease, Skip):  # cooling down
            self._skip(step, lease, t0)
            return None
        if isinstance(lease, Refusal):
            self.refusal = lease
            self._skip(step, Skip(lease.kind, lease.reason), t0)
            return None
        share = self.deadline.share(steps_left, t0)
        cap = step.plan.timeout_s if step.plan.timeout_s < share else share
        # A plain try/finally gives the ticket back when the attempt ends (cheaper per
        # call than an exit stack); an exchange that keeps it (keeps_ticket: an open
        # stream) owns it once it has returned.
        kept = False
        try:
            if lease.admit_now():
                left = cap  # nothing awaited since t0: the whole cap is left
            else:  # a coroutine, and maybe a wait
                skip = await lease.admit(est_in + max_tokens, cap)
                if skip is not None:
                    if isinstance(skip, Refusal):  # a State that reserves at admission
                        self.refusal = skip
                        skip = Skip(skip.kind, skip.reason)
                    self._skip(step, skip, t0)
                    return None
                left = cap - (rt.clock() - t0)
                if left <= 0:
                    self._skip(step, _SHARE_USED, t0)
                    return None
            try:
                result = await self._exchange(step, request, left, t0, lease)
            except ProviderError as err:
                # No foreign exception travels on with it (kept as a redacted summary).
                sever_foreign(err)
                lease.free_slot()
                billed_out, self.billed_out = self.billed_out, None
                timed_out = isinstance(err, ProviderTimeoutError)
                if billed_out is None and (timed_out or err.status is None):
                    lane = CURRENT_LANE.get()
                    if lane is not None and lane.lost:
                        # Lost the race, and the cancel surfaced as a transport error
                        # (it raced a timeout): billed and recorded as a loser.
                        await self._settle_lost(step, lease, t0)
                        return None
                    if lane is not None and isinstance(err, ProviderTimeoutError) and err.sent:
                        # A hedging call bills a request it gave up on as sent (docs/latency.md);
                        # one whose connection never came (sent False) reached no provider.
                        billed_out = await self._settle_input(step, lease)
                if billed_out is None:  # before the release: a probe's failure counts
                    self.failed(step, lease, err, t0)
                else:  # billed, then failed (InvalidOutputError): the attempt shows its cost
                    self.failed(step, lease, err, t0, billed_out[0], cost=billed_out[1])
                return err
            except asyncio.CancelledError:
                # Sent, then cancelled: a hedge that lost the race is billed as sent.
                lane = CURRENT_LANE.get()
                if lane is not None and lane.lost:
                    await self._settle_lost(step, lease, t0)
                raise
            kept = self.keeps_ticket
            return result
        finally:
            if not kept:
                lease.release()

    async def _settle_lost(self, step: Step, lease: Ticket, t0: float) -> None:
        """A sent attempt cancelled because another won the race: its connection is
        closed; it is billed its input estimate (the provider processed the prompt and
        reports nothing) and recorded as ``cancelled``."""
        usage, cost = await self._settle_input(step, lease)
        self.record_lost(step, t0, usage, cost)

    async def _settle_input(self, step: Step, lease: Ticket) -> tuple[Usage, Decimal]:
        """Settle a sent request that was not answered at its input estimate (the
        provider read the prompt and reports nothing): the documented estimate."""
        lease.free_slot()
        usage, cost = billed(step, lease, Usage(lease.est_in, estimated=True), "", {})
        if not lease.settle_now(cost):
            await lease.settle(cost)
        return usage, cost

    def record_lost(
        self, step: Step, t0: float, usage: Usage, cost: Decimal, ttft_s: float | None = None
    ) -> None:
        """Record an attempt that lost a hedge race (settled at ``cost``)."""
        self.record(
            Attempt(
                step.provider.name,
                step.plan.model,
                "cancelled",
                reason="another attempt answered first (hedge)",
                latency_s=self.rt.clock() - t0,
                start_s=t0 - self.deadline.started_at,
                cost_usd=cost,
                usage=usage,
                ttft_s=ttft_s,
            )
        )

    async def discard(self, result: R) -> None:
        """A result that lost the race after it was made (it came in with the winner's):
        a complete answer is settled and recorded already; a stream is closed and
        settled (StreamCall)."""


class CompleteCall(Call[Completion]):
    """``complete()``: send, read the whole body, parse, settle."""

    __slots__ = ()

    async def _exchange(
        self, step: Step, request: WireRequest, timeout_s: float, t0: float, lease: Ticket
    ) -> Completion:
        provider = step.provider
        try:
            raw = await provider.transport.send(request, model=step.plan.model, timeout_s=timeout_s)
        finally:
            lease.free_slot()
        if not 200 <= raw.status < 300:
            raise error_from_response(
                provider.adapter,
                step.plan.model,
                raw.status,
                raw.headers,
                raw.body,
                time.time(),  # to read an HTTP-date Retry-After
                self.rt.retry_after_max_s,
                self.sent(step, request),
            )
        try:
            reply = provider.adapter.parse_reply(step.plan.model, raw.body)
        except ContentFilterError as err:
            # A blocked answer is billed: the counts it reported, else the prompt's estimate.
            usage, cost = billed(step, lease, final_usage(err.usage, lease.est_in, ""), "", {})
            if not lease.settle_now(cost):
                await lease.settle(cost)
            self.billed_out = (usage, cost)
            raise
        usage = final_usage(reply.usage, lease.est_in, reply.text)
        usage, cost = billed(step, lease, usage, reply.text, reply.details)
        if not lease.settle_now(cost):
            await lease.settle(cost)
        if self.tools is not None and reply.tool_calls:
            self.billed_out = (usage, cost)
            self.check_tool_calls(step, reply.tool_calls)
            self.billed_out = None
        if self.output is None and (reply.text or reply.tool_calls):
            return self.succeeded(step, lease, reply, raw.status, t0, cost, usage)
        # Structured output, or an empty answer: checked after billing (it was billed
        # whatever the router makes of it).
        try:
            output = checked_answer(
                reply,
                self.output,
                step.plan.structured_output,
                accept_truncated=self.route.accept_truncated,
                provider=step.provider.name,
                model=step.plan.model,
            )
        except ProviderError:
            self.billed_out = (usage, cost)
            raise
        done = self.succeeded(step, lease, reply, raw.status, t0, cost, usage)
        done.output = output
        return done
