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
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from router.budget import BudgetBook, BudgetStatus
from router.call import Call, CompleteCall, Provider, Route, Runtime, Step
from router.config import Config, MockSettings, Price, ProviderConfig, RouteConfig, load_config
from router.deadline import Clock, Deadline
from router.errors import ProviderError, RouterError
from router.ledger import open_ledger
from router.limits import ProviderGate
from router.logging import get_logger
from router.observe import CallRecord, Observer
from router.providers import build_adapter
from router.providers.base import error_from_response
from router.providers.mock import MockUpstream
from router.streaming import RouteStream, StreamCall
from router.transport import Handler, Transport
from router.types import Attempt, Completion, HealthReport, Message

AttemptHook = Callable[[str, Attempt], None]
CallHook = Callable[[str, Completion | None, RouterError | None], None]

_log = get_logger()


T = TypeVar("T")


def _first(*values: T | None) -> T:
    """The first value that is set (route over provider over settings)."""
    return next(v for v in values if v is not None)


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
        observers: Sequence[Observer] = (),
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._on_attempt = on_attempt
        self._on_call = on_call
        # Metrics, traces and other observers of every attempt and call.
        self._observers: list[Observer] = list(observers)
        self._clock = clock
        # Every wait of a call goes through these two, so tests can drive time by hand.
        self._sleep = sleep
        settings = config.settings
        self._providers: dict[str, Provider] = {}
        for name, pconf in config.providers.items():
            if name in config.disabled_providers:
                continue
            self._providers[name] = self._build_provider(name, pconf)
        self._routes = {name: self._compile_route(name, r) for name, r in config.routes.items()}
        self._book = BudgetBook(config.budgets, open_ledger(settings.ledger, config.base_dir))
        self._rt = Runtime(
            clock=clock,
            sleep=sleep,
            book=self._book,
            floor_s=settings.attempt_floor_s,
            backoff=settings.backoff,
            on_attempt=self._attempt_done,
        )
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

    def _build_provider(self, name: str, pconf: ProviderConfig) -> Provider:
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
        return Provider(name, pconf, adapter, transport, gate)

    def _compile_route(self, name: str, rconf: RouteConfig) -> Route:
        settings = self.config.settings
        steps = []
        for s in self.config.chain(name):
            provider = self._providers[s.provider_name]
            mconf = provider.config.models[s.model_name]
            params = {**provider.config.extra, **mconf.extra, **s.params}
            retries = _first(s.retries, rconf.retries, settings.retries)
            timeout = provider.config.timeout_s
            if s.timeout_s is not None:
                timeout = min(timeout, s.timeout_s)
            steps.append(
                Step(
                    provider=provider,
                    model=s.model_name,
                    params=params,
                    retries=retries,
                    timeout_s=timeout,
                    price=self.config.price(s.provider_name, s.model_name),
                    max_output_tokens=mconf.max_output_tokens,
                    first_token_s=_first(
                        rconf.first_token_timeout_s,
                        provider.config.first_token_timeout_s,
                        settings.first_token_timeout_s,
                    ),
                    idle_s=_first(
                        rconf.idle_timeout_s,
                        provider.config.idle_timeout_s,
                        settings.idle_timeout_s,
                    ),
                )
            )
        fallback_on = rconf.fallback_on if rconf.fallback_on is not None else settings.fallback_on
        return Route(
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

    def _route(self, name: str) -> Route:
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
        call = CompleteCall(self._rt, r, messages, deadline, max_tokens, temperature, params)
        try:
            result = await call.run()
        except RouterError as exc:
            self._finish(call, None, exc)
            raise
        self._finish(call, result, None)
        return result

    def stream(
        self,
        route: str,
        vars: Mapping[str, Any] | None = None,
        *,
        deadline_s: float | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> RouteStream:
        """Stream ``route``'s answer as text deltas.

        ::

            async with router.stream("analysis", vars) as stream:
                async for delta in stream:
                    print(delta, end="")
            stream.completion  # full text, usage, cost, attempts

        The chain falls back until a provider delivers its first text delta;
        errors before that raise at ``async with`` (as for :meth:`complete`).
        A failure after it raises StreamInterruptedError with the partial text.
        Leaving the block early closes the response and settles what was billed.
        """
        r = self._route(route)
        messages = r.templates.render(vars)
        deadline = Deadline(deadline_s if deadline_s is not None else r.deadline_s, self._clock)
        call = StreamCall(self._rt, r, messages, deadline, max_tokens, temperature, params)

        def finish(result: Completion | None, error: RouterError | None) -> None:
            self._finish(call, result, error)

        return RouteStream(call, self._check_loop, finish)

    def add_observer(self, observer: Observer) -> None:
        """Send every attempt and call from now on to ``observer`` (metrics, traces)."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def _finish(
        self, call: Call[Any], result: Completion | None, error: RouterError | None
    ) -> None:
        route = call.route.name
        deadline = call.deadline
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
                attempts=len(call.attempts),
                latency_ms=round(deadline.elapsed() * 1000, 2),
            )
        if self._on_call is not None:
            self._on_call(route, result, error)
        if self._observers:
            elapsed = deadline.elapsed()
            record = CallRecord(
                route=route,
                stream=call.stream,
                result=result,
                error=error,
                attempts=call.attempts,
                deadline_s=deadline.seconds,
                max_tokens=call.max_tokens,
                latency_s=elapsed,
                started_at=time.time() - elapsed,
            )
            for observer in self._observers:
                observer.on_call(record)

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
            ttft_ms=None if attempt.ttft_s is None else round(attempt.ttft_s * 1000, 2),
            deadline_left_ms=round(deadline.remaining() * 1000, 2),
        )
        if self._on_attempt is not None:
            self._on_attempt(route, attempt)
        for observer in self._observers:
            observer.on_attempt(route, attempt)

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

    async def _check(self, p: Provider, timeout_s: float) -> HealthReport:
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
