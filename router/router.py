"""The Router: compiles a Config into chains and runs calls under one deadline.

``complete()`` renders the route's templates (before any traffic), then walks
the chain: for each step it checks cooldown, reserves the worst-case cost,
takes an admission slot within the attempt's share of the deadline, sends,
and applies the outcome policy (router.policy) — retry, fall back or stop.
The router knows no provider's details: adapters translate, the transport
sends.
"""

from __future__ import annotations

import asyncio
import difflib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from router.budget import BudgetBook, BudgetStatus, Refusal, cost_usd, worst_case_usd
from router.config import Config, MockSettings, Price, ProviderConfig, RouteConfig, load_config
from router.deadline import Clock, Deadline
from router.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    DeadlineExceededError,
    ProviderError,
    RouterError,
)
from router.estimate import estimate_tokens
from router.ledger import open_ledger
from router.limits import ProviderGate
from router.logging import get_logger
from router.policy import rule_for
from router.providers import build_adapter
from router.providers.base import Adapter, error_from_response
from router.providers.mock import MockUpstream
from router.templates import RouteTemplates
from router.transport import Handler, Transport
from router.types import Attempt, Completion, HealthReport, Message, Usage

AttemptHook = Callable[[str, Attempt], None]
CallHook = Callable[[str, Completion | None, RouterError | None], None]

_log = get_logger()


@dataclass(slots=True)
class _Provider:
    """A provider's runtime: its adapter, pooled transport and admission gate."""

    name: str
    config: ProviderConfig
    adapter: Adapter
    transport: Transport
    gate: ProviderGate


@dataclass(slots=True)
class _Step:
    """One compiled chain step: everything a call needs, resolved at load."""

    provider: _Provider
    model: str
    params: dict[str, Any]  # provider extra < model extra < step params
    retries: int
    timeout_s: float  # cap on one attempt: the step's or the provider's
    price: Price
    max_output_tokens: int | None


@dataclass(slots=True)
class _Route:
    name: str
    templates: RouteTemplates
    steps: list[_Step]
    deadline_s: float
    max_tokens: int
    temperature: float | None
    max_cost_usd: Decimal | None
    # Error kinds that may fall back to the next step (None: all).
    fallback_on: frozenset[str] | None


def _mock_handler(upstream: MockUpstream) -> Handler:
    async def handler(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        reply = upstream.respond(method, path, body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return reply.status, reply.headers, reply.body

    return handler


class Router:
    """Routes named calls through fallback chains defined in providers.yaml.

    Use as ``async with Router.from_yaml("providers.yaml") as router:``; the
    router is bound to the event loop it starts on.
    """

    def __init__(
        self,
        config: Config,
        *,
        on_attempt: AttemptHook | None = None,
        on_call: CallHook | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._on_attempt = on_attempt
        self._on_call = on_call
        self._clock = clock
        # Every wait of a call goes through these two, so tests can drive time by hand.
        self._sleep = sleep
        settings = config.settings
        self._floor_s = settings.attempt_floor_s
        self._backoff = settings.backoff
        self._providers: dict[str, _Provider] = {}
        for name, pconf in config.providers.items():
            if name in config.disabled_providers:
                continue
            self._providers[name] = self._build_provider(name, pconf)
        self._routes = {name: self._compile_route(name, r) for name, r in config.routes.items()}
        base_dir = config.base_dir
        self._book = BudgetBook(config.budgets, open_ledger(settings.ledger, base_dir))
        # The loop the router was started on (None until start()).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Cached health results: provider -> (monotonic time checked, report).
        self._health: dict[str, tuple[float, HealthReport]] = {}

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Router:
        """Load and validate ``path`` (see :func:`router.load_config`) and build a Router."""
        return cls(load_config(path), **kwargs)

    # -- construction -------------------------------------------------------------

    def _build_provider(self, name: str, pconf: ProviderConfig) -> _Provider:
        settings = self.config.settings
        key = self.config.api_key(name)
        adapter = build_adapter(
            pconf.kind, name, key.get_secret_value() if key else None, pconf.headers
        )
        handler = None
        if pconf.kind == "mock":  # offline: an in-process upstream behind the same transport
            handler = _mock_handler(MockUpstream(pconf.mock or MockSettings(), pconf.models))
        transport = Transport(
            name,
            self.config.resolved_base_url(name),
            headers=adapter.auth_headers(),
            connect_timeout_s=pconf.connect_timeout_s,
            max_connections=pconf.limits.max_concurrency,
            max_response_bytes=settings.max_response_bytes,
            handler=handler,
        )
        gate = ProviderGate(name, pconf.limits, settings.cooldown, self._clock, self._sleep)
        return _Provider(name, pconf, adapter, transport, gate)

    def _compile_route(self, name: str, rconf: RouteConfig) -> _Route:
        settings = self.config.settings
        steps = []
        for s in self.config.chain(name):
            provider = self._providers[s.provider_name]
            mconf = provider.config.models[s.model_name]
            params = {**provider.config.extra, **mconf.extra, **s.params}
            retries = next(r for r in (s.retries, rconf.retries, settings.retries) if r is not None)
            timeout = provider.config.timeout_s
            if s.timeout_s is not None:
                timeout = min(timeout, s.timeout_s)
            steps.append(
                _Step(
                    provider=provider,
                    model=s.model_name,
                    params=params,
                    retries=retries,
                    timeout_s=timeout,
                    price=self.config.price(s.provider_name, s.model_name),
                    max_output_tokens=mconf.max_output_tokens,
                )
            )
        fallback_on = rconf.fallback_on if rconf.fallback_on is not None else settings.fallback_on
        return _Route(
            name=name,
            templates=self.config.templates[name],
            steps=steps,
            deadline_s=rconf.deadline_s or settings.deadline_s,
            max_tokens=rconf.max_tokens or settings.max_tokens,
            temperature=rconf.temperature,
            max_cost_usd=rconf.max_cost_usd,
            fallback_on=frozenset(fallback_on) if fallback_on is not None else None,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Open transports and the spend ledger. Calls no provider."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        await self._book.start()
        for p in self._providers.values():
            await p.transport.start()

    async def aclose(self) -> None:
        """Close every transport and the ledger. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for p in self._providers.values():
            await p.transport.aclose()
        await self._book.aclose()

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is None or self._closed:
                raise RuntimeError(
                    "Router is not running: use 'async with Router.from_yaml(...)' or await start()"
                )
            raise RuntimeError(
                "Router used from a different event loop (or thread) than the one it started on; "
                "create one Router per event loop"
            )

    # -- dry run ------------------------------------------------------------------

    def _route(self, name: str) -> _Route:
        route = self._routes.get(name)
        if route is None:
            close = difflib.get_close_matches(name, self._routes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RouterError(f"unknown route {name!r}{hint}")
        return route

    def render(self, route: str, vars: Mapping[str, Any] | None = None) -> list[Message]:
        """Render a route's messages without sending anything."""
        return self._route(route).templates.render(vars)

    def chain(self, route: str) -> list[tuple[str, str, Price, int, float]]:
        """The steps a route would try: (provider, model, price, retries, attempt cap)."""
        return [
            (s.provider.name, s.model, s.price, s.retries, s.timeout_s)
            for s in self._route(route).steps
        ]

    # -- calls --------------------------------------------------------------------

    async def complete(
        self,
        route: str,
        vars: Mapping[str, Any] | None = None,
        *,
        deadline_s: float | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Run ``route`` with ``vars`` and return the first successful answer.

        Raises:
            TemplateError: the variables do not fit the route (before any traffic).
            DeadlineExceededError: the deadline was spent; carries the attempts.
            BudgetExceededError: no step fitted a budget.
            AllProvidersFailedError: every step failed; carries the attempts.
        """
        self._check_loop()
        r = self._route(route)
        messages = r.templates.render(vars)
        deadline = Deadline(deadline_s if deadline_s is not None else r.deadline_s, self._clock)
        call = _Call(self, r, messages, deadline, max_tokens, temperature, params)
        try:
            result = await call.run()
        except RouterError as exc:
            self._finish(r.name, None, exc, deadline)
            raise
        self._finish(r.name, result, None, deadline)
        return result

    def _finish(
        self, route: str, result: Completion | None, error: RouterError | None, deadline: Deadline
    ) -> None:
        if result is not None:
            _log.info(
                "llm_call",
                route=route,
                outcome="ok",
                provider=result.provider,
                model=result.model,
                attempts=len(result.attempts),
                latency_ms=round(result.latency_s * 1000, 2),
                input_tokens=result.usage.input_tokens,
                output_tokens=result.usage.output_tokens,
                cost_usd=str(result.cost_usd),
            )
        else:
            _log.warning(
                "llm_call",
                route=route,
                outcome="error",
                error_type=type(error).__name__,
                attempts=len(getattr(error, "attempts", ())),
                latency_ms=round(deadline.elapsed() * 1000, 2),
            )
        if self._on_call is not None:
            self._on_call(route, result, error)

    def _attempt_done(self, route: str, attempt: Attempt, deadline: Deadline) -> None:
        err = attempt.error
        _log.info(
            "llm_attempt",
            route=route,
            provider=attempt.provider,
            model=attempt.model,
            outcome=attempt.outcome,
            status=attempt.status,
            error_type=err.kind if isinstance(err, ProviderError) else None,
            reason=attempt.reason,
            latency_ms=round(attempt.latency_s * 1000, 2),
            deadline_left_ms=round(deadline.remaining() * 1000, 2),
        )
        if self._on_attempt is not None:
            self._on_attempt(route, attempt)

    # -- health ---------------------------------------------------------------------

    async def health(self, *, timeout_s: float = 10.0, force: bool = False) -> list[HealthReport]:
        """Check every enabled provider with its free model-listing endpoint.

        Never sends a completion. Results are cached for ``settings.health_ttl_s``
        unless ``force``. ``timeout_s`` caps each check (they run concurrently).
        """
        self._check_loop()
        ttl = self.config.settings.health_ttl_s
        now = self._clock()
        stale = [
            p
            for p in self._providers.values()
            if force or p.name not in self._health or now - self._health[p.name][0] > ttl
        ]
        if stale:
            fresh = await asyncio.gather(*(self._check(p, timeout_s) for p in stale))
            for p, report in zip(stale, fresh, strict=True):
                self._health[p.name] = (self._clock(), report)
        return [self._health[name][1] for name in self._providers]

    async def _check(self, p: _Provider, timeout_s: float) -> HealthReport:
        t0 = self._clock()
        try:
            raw = await p.transport.send(
                p.adapter.health_request(), model="-", timeout_s=min(timeout_s, p.config.timeout_s)
            )
            latency = self._clock() - t0
            if not 200 <= raw.status < 300:
                err = error_from_response(p.adapter, "-", raw.status, raw.headers, raw.body)
                return HealthReport(p.name, False, True, raw.status, latency, error=err.detail)
            listed = p.adapter.parse_models(raw.body)
        except ProviderError as exc:
            reachable = exc.status is not None
            return HealthReport(
                p.name, False, reachable, exc.status, self._clock() - t0, error=exc.detail
            )
        missing = [
            f"{m} ({p.adapter.missing_model_hint(m)})" for m in p.config.models if m not in listed
        ]
        return HealthReport(p.name, not missing, True, raw.status, latency, missing_models=missing)

    # -- money ----------------------------------------------------------------------

    def spend(self) -> list[BudgetStatus]:
        """Per budget: limit, spent, reserved and remaining for the current period."""
        return self._book.spend()

    @property
    def reserved_usd(self) -> Decimal:
        """Money reserved by calls in flight (0 when idle)."""
        return self._book.reserved_total


class _Call:
    """The state of one ``complete()`` call while it walks its chain."""

    __slots__ = (
        "attempts",
        "deadline",
        "est_in",
        "max_tokens",
        "messages",
        "params",
        "refusal",
        "route",
        "router",
        "temperature",
    )

    def __init__(
        self,
        router: Router,
        route: _Route,
        messages: list[Message],
        deadline: Deadline,
        max_tokens: int | None,
        temperature: float | None,
        params: Mapping[str, Any] | None,
    ) -> None:
        self.router = router
        self.route = route
        self.messages = messages
        self.deadline = deadline
        self.max_tokens = max_tokens or route.max_tokens
        self.temperature = temperature if temperature is not None else route.temperature
        self.params = params
        self.est_in = estimate_tokens(messages)
        self.attempts: list[Attempt] = []
        # The last budget refusal, for BudgetExceededError if nothing else ran.
        self.refusal: Refusal | None = None

    def _record(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        self.router._attempt_done(self.route.name, attempt, self.deadline)

    def _skip(self, step: _Step, reason: str) -> None:
        self._record(Attempt(step.provider.name, step.model, "skipped", reason=reason))

    async def run(self) -> Completion:
        steps = self.route.steps
        n = len(steps)
        for i, step in enumerate(steps):
            result = await self._run_step(step, n - i)
            if result is not None:
                return result
        raise self._failure()

    def _failure(self) -> RouterError:
        route = self.route.name
        if self.deadline.expired:
            return DeadlineExceededError(self.deadline.seconds, self.attempts, route)
        ran = [a for a in self.attempts if a.outcome != "skipped"]
        if not ran and self.refusal is not None:
            r = self.refusal
            return BudgetExceededError(
                f"route {route!r}: no step fits the budget: {r.reason}",
                budget=r.budget,
                limit_usd=r.limit_usd,
                spent_usd=r.spent_usd,
                reserved_usd=r.reserved_usd,
                attempts=self.attempts,
            )
        return AllProvidersFailedError(self.attempts, route)

    def _request_params(self, step: _Step) -> tuple[dict[str, Any], int]:
        max_tokens = self.max_tokens
        if step.max_output_tokens is not None and max_tokens > step.max_output_tokens:
            max_tokens = step.max_output_tokens
        params = dict(step.params)
        if self.params:
            params.update(self.params)
        params["max_tokens"] = max_tokens
        if self.temperature is not None:
            params["temperature"] = self.temperature
        return params, max_tokens

    async def _run_step(self, step: _Step, steps_left: int) -> Completion | None:
        """Try one step (with its retries). None means: go on to the next step."""
        provider = step.provider
        gate = provider.gate
        deadline = self.deadline
        params, max_tokens = self._request_params(step)
        worst = worst_case_usd(self.est_in, max_tokens, step.price)
        route = self.route
        if route.max_cost_usd is not None and worst > route.max_cost_usd:
            self._skip(
                step, f"worst-case cost ${worst} exceeds route max_cost_usd ${route.max_cost_usd}"
            )
            return None
        request = provider.adapter.chat_request(step.model, self.messages, params)
        tries = 0
        while True:
            if deadline.expired:
                raise DeadlineExceededError(deadline.seconds, self.attempts, route.name)
            reason = gate.unavailable()
            if reason is not None:
                self._skip(step, reason)
                return None
            probe = gate.probing
            outcome = await self._attempt(step, steps_left, request, max_tokens, worst, probe)
            if isinstance(outcome, Completion):
                return outcome
            if outcome is None:  # skipped
                return None
            err = outcome
            kind = err.kind
            if route.fallback_on is not None and kind not in route.fallback_on:
                raise AllProvidersFailedError(self.attempts, route.name)
            rule = rule_for(kind)
            limit = (
                step.retries if rule.max_retries is None else min(step.retries, rule.max_retries)
            )
            if not rule.retry or tries >= limit:
                return None
            tries += 1
            pause = self._pause(tries, err.retry_after)
            # A wait that cannot leave time for another try moves on at once.
            if pause >= deadline.share(steps_left, self.router._floor_s):
                return None
            if pause > 0:
                await self.router._sleep(pause)

    def _pause(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        b = self.router._backoff
        ceiling = min(b.max_s, b.initial_s * b.multiplier ** (retry - 1))
        return random.uniform(0.0, ceiling)  # full jitter

    async def _attempt(
        self,
        step: _Step,
        steps_left: int,
        request: Any,
        max_tokens: int,
        worst: Decimal,
        probe: bool,
    ) -> Completion | ProviderError | None:
        """One try: admission, reservation, send, parse. Never leaks a slot or a reservation."""
        router = self.router
        provider = step.provider
        gate = provider.gate
        deadline = self.deadline
        budget = deadline.share(steps_left, router._floor_s)
        cap = step.timeout_s if step.timeout_s < budget else budget
        reservation = router._book.reserve(
            route=self.route.name, provider=provider.name, model=step.model, amount=worst
        )
        if isinstance(reservation, Refusal):
            self.refusal = reservation
            if probe:
                gate.probing = False
            self._skip(step, reservation.reason)
            return None
        t0 = router._clock()
        settled = False
        try:
            reason = await gate.admit(self.est_in + max_tokens, cap)
            if reason is not None:
                self._skip(step, reason)
                return None
            try:
                left = cap - (router._clock() - t0)
                if left <= 0:
                    self._skip(step, "admission used the attempt's whole deadline share")
                    return None
                try:
                    raw = await provider.transport.send(request, model=step.model, timeout_s=left)
                    if 200 <= raw.status < 300:
                        reply = provider.adapter.parse_reply(step.model, raw.body)
                    else:
                        raise error_from_response(
                            provider.adapter,
                            step.model,
                            raw.status,
                            raw.headers,
                            raw.body,
                            time.time(),
                        )
                finally:
                    gate.release()
            except ProviderError as err:
                latency = router._clock() - t0
                rule = rule_for(err.kind)
                if rule.counts_failure or rule.cooldown_now:
                    gate.failed(rule, err.retry_after)
                else:
                    if err.retry_after:
                        gate.failed(rule, err.retry_after)
                    gate.reset_probe()
                self._record(
                    Attempt(
                        provider.name,
                        step.model,
                        "error",
                        error=err,
                        status=err.status,
                        latency_s=latency,
                    )
                )
                return err
            latency = router._clock() - t0
            gate.succeeded()
            usage = reply.usage
            if usage.estimated or (usage.input_tokens == 0 and usage.output_tokens == 0):
                usage = Usage(
                    input_tokens=usage.input_tokens or self.est_in,
                    output_tokens=usage.output_tokens
                    or estimate_tokens([Message("assistant", reply.text)]),
                    estimated=True,
                )
            cost = cost_usd(usage, step.price)
            settled = True
            await router._book.settle(reservation, cost)
            attempt = Attempt(
                provider.name, step.model, "ok", status=raw.status, latency_s=latency, cost_usd=cost
            )
            self._record(attempt)
            return Completion(
                text=reply.text,
                route=self.route.name,
                provider=provider.name,
                model=step.model,
                usage=usage,
                cost_usd=cost,
                finish_reason=reply.finish_reason,
                latency_s=deadline.elapsed(),
                attempts=self.attempts,
                response_id=reply.response_id,
                details=reply.details,
            )
        finally:
            if not settled:
                router._book.release(reservation)
                if probe and gate.probing:
                    gate.probing = False
