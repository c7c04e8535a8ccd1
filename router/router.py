"""The Router: serves named routes from a resolved plan, under one deadline per call.

``complete()`` renders the route's templates (before any traffic), then walks
the chain (router.call): for each step it checks cooldown, reserves the
worst-case cost, takes an admission slot within the attempt's share of the
deadline — all three through the router's State (router.state) — sends, and
applies the outcome policy (router.policy) — retry, fall back or stop. The
router knows no provider's details: adapters translate, the transport sends.
It is built from a resolved :class:`~router.plan.Plan`; ``reload()`` resolves
the file again and swaps the new plan in without dropping a call.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from router.budget import BudgetStatus, LedgerStatus
from router.call import Call, CompleteCall, Provider, Route, Runtime
from router.config import Config
from router.conversation import compose
from router.deadline import Clock, Deadline
from router.errors import (
    ConfigError,
    ConfigProblem,
    RequestError,
    RouterError,
)
from router.generation import Generation, build_provider, compile_route
from router.health import KEY_CHECK_TIMEOUT_S, check_provider
from router.health import verify_keys as check_keys
from router.inflight import InFlight
from router.logger import get_logger
from router.logging import LogEvents
from router.metrics.stats import Stats
from router.observe import AttemptHook, CallHook, CallRecord, Events, Hooks, Observer
from router.output import OutputSpec, call_output
from router.plan import ChainStep, Plan, ReloadReport, StepFit, compare, load_config
from router.pool import PoolPicker
from router.state import State, open_state
from router.streaming import RouteStream, StreamCall
from router.tools import Tool, call_tools
from router.types import Completion, HealthReport, KeyCheck, Message, ProviderState

Sleep = Callable[[float], Awaitable[None]]
R = TypeVar("R")
C = TypeVar("C", bound="Call[Any]")
# A call's output=: a pydantic model class or a JSON Schema mapping (None: the route's).
OutputArg = type[BaseModel] | Mapping[str, Any] | None

_log = get_logger()
_config_log = get_logger("router.config")


__all__ = ["ReloadReport", "Router"]


class Router:
    """Routes named calls through fallback chains defined in providers.yaml.

    Use as ``async with Router.from_yaml("providers.yaml") as router:``; the
    router is bound to the event loop it starts on.

    Args:
        plan: a Plan from :func:`router.load_config`.
        on_attempt, on_call: simple hooks called with every attempt / finished call
            (a convenience: one observer on the event channel).
        observers: metrics, tracing and other observers of every attempt and call,
            on the router's one event channel with its log lines and stats
            (see router.observe).
        clock, sleep: the monotonic clock and sleep every wait uses (tests drive them).
        state: where admission and money are decided (router.state); default a
            :class:`~router.state.LocalState` for ``plan`` (in this process), or the
            shared Redis state when ``settings.state.backend`` is redis.
        verify_keys: check every key when the router starts (``async with``, or
            :meth:`start`): a key its provider refuses fails the start
            (:meth:`verify_keys`).
    """

    def __init__(
        self,
        plan: Plan,
        *,
        on_attempt: AttemptHook | None = None,
        on_call: CallHook | None = None,
        observers: Sequence[Observer] = (),
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        state: State | None = None,
        verify_keys: bool = False,
    ) -> None:
        if not isinstance(plan, Plan):
            raise TypeError(
                f"Router needs a Plan from router.load_config(), not {type(plan).__name__}"
            )
        # The event channel (router/observe.py): the router's own log lines, the
        # hooks, the always-on counters behind stats() (router/metrics/stats.py),
        # then the app's metrics, traces and other observers of every attempt and call.
        self._stats = Stats()
        hooks = [Hooks(on_attempt, on_call)] if on_attempt or on_call else []
        self._events = Events([LogEvents(), *hooks, self._stats, *observers])
        self._clock = clock
        self._sleep = sleep
        # Everything that decides admission or money: budgets, the ledger, and per
        # provider rate, tokens, concurrency, cooldown and Retry-After.
        self._state = state if state is not None else open_state(plan, clock=clock, sleep=sleep)
        providers = {name: build_provider(p, self._state) for name, p in plan.providers.items()}
        # Pool pickers (the weighted and round-robin cursors) by pool as configured: a
        # reload that leaves a pool as it was keeps its turn.
        self._pickers: dict[str, PoolPicker] = {}
        self._gen = self._generation(plan, providers)
        # Generations replaced by reloads that still have calls running.
        self._retired: list[Generation] = []
        # Transport closes scheduled for providers no generation uses any more.
        self._closing: set[asyncio.Task[None]] = set()
        # How to re-read the config: the file and load_config's keyword arguments.
        self._source: Path = plan.source
        # The spend ledger the state opened at start (None: no budgets, none opened);
        # a reload cannot change it.
        self._ledger = plan.ledger
        self._state_settings = plan.settings.state
        self._load_kwargs: dict[str, Any] = {}
        self._watch_interval_s: float | None = None
        self._watch_settle_s = 0.25
        self._watcher: asyncio.Task[None] | None = None
        self._reload_lock: asyncio.Lock | None = None
        # The loop the router was started on (None until start()).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Calls waiting inside the router and open streams, for aclose() to end.
        self._inflight = InFlight()
        # Cached health results: provider -> (monotonic time checked, report).
        self._health: dict[str, tuple[float, HealthReport]] = {}
        # Whether start() checks the keys (from_yaml(verify_keys=True)), and what the
        # last check found.
        self._verify_keys_at_start = verify_keys
        self._key_check: KeyCheck | None = None

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        require_env: bool = True,
        watch: bool = False,
        watch_interval_s: float = 1.0,
        watch_settle_s: float = 0.25,
        verify_keys: bool = False,
        **kwargs: Any,
    ) -> Router:
        """Load and validate ``path`` (see :func:`router.load_config`) and build a Router.

        Args:
            env, require_env: passed to load_config, now and on every reload.
            watch: reload when the YAML file or a file under its templates_dir
                changes (polled every ``watch_interval_s`` seconds; an invalid edit
                is logged and the old config keeps serving). A change is loaded
                only once the files are stable: the same size, mtime and content
                hash on two reads ``watch_settle_s`` apart, so a file still being
                written is not loaded half-way.
            verify_keys: check every key when the router starts (as for the
                constructor).
        """
        load_kwargs: dict[str, Any] = {"env": env, "require_env": require_env}
        router = cls(load_config(path, **load_kwargs), verify_keys=verify_keys, **kwargs)
        router._load_kwargs = load_kwargs
        if watch:
            router._watch_interval_s = watch_interval_s
            router._watch_settle_s = watch_settle_s
        return router

    def _generation(self, plan: Plan, providers: dict[str, Provider]) -> Generation:
        rt = Runtime(
            clock=self._clock,
            sleep=self._sleep,
            state=self._state,
            floor_s=plan.attempt_floor_s,
            backoff=plan.backoff,
            retry_after_max_s=plan.retry_after_max_s,
            on_attempt=self._events.attempt,  # straight to the channel (hot path)
        )
        pickers = self._pickers
        routes = {name: compile_route(r, providers, pickers) for name, r in plan.routes.items()}
        used = {s.picker for route in routes.values() for s in route.steps if s.picker}
        for key in [k for k, p in pickers.items() if p not in used]:
            del pickers[key]  # a pool that changed or went: its old cursor is not needed
        return Generation(plan, providers, routes, rt)

    @property
    def plan(self) -> Plan:
        """The plan new calls are served from."""
        return self._gen.plan

    @property
    def config(self) -> Config:
        """The validated providers.yaml new calls are served from (``plan.config``)."""
        return self._gen.plan.config

    @property
    def state(self) -> State:
        """Where this router's admission and money are decided (router.state)."""
        return self._state

    @property
    def _providers(self) -> dict[str, Provider]:
        return self._gen.providers

    # -- lifecycle ----------------------------------------------------------------

    async def start(
        self, *, verify_keys: bool | None = None, verify_timeout_s: float = KEY_CHECK_TIMEOUT_S
    ) -> None:
        """Open transports and the spend ledger. Calls no provider, unless ``verify_keys``.

        Args:
            verify_keys: check every key with its provider's free model listing
                before returning (:meth:`verify_keys`); a rejected key closes the
                router again and raises ConfigError. None: as the constructor
                (or ``from_yaml``) was told; false by default.
            verify_timeout_s: how long the key check waits for each provider.
        """
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._reload_lock = asyncio.Lock()
        await self._state.start()
        for p in self._gen.providers.values():
            await p.transport.start()
        if self._verify_keys_at_start if verify_keys is None else verify_keys:
            try:
                await self.verify_keys(timeout_s=verify_timeout_s)
            except BaseException:
                await self.aclose()  # `async with` does not call __aexit__ on a failed enter
                raise
        if self._watch_interval_s is not None:
            seen = self._watched()  # before returning, so no later edit is missed
            self._watcher = asyncio.create_task(self._watch(seen, self._watch_interval_s))

    async def aclose(self) -> None:
        """Close every transport and the ledger. Idempotent.

        New calls are refused at once. Every call in flight ends promptly with
        RouterClosedError: its request is cut, its slot and reservation are given
        back, and what a stream generated is billed. An open stream the app is not
        reading at that moment is settled too; its next read raises
        RouterClosedError. Only a caller's own cancellation raises CancelledError.
        """
        if self._closed:
            return
        self._closed = True
        for gen in [self._gen, *self._retired]:
            gen.rt.closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        unfinished = await self._inflight.close()
        if unfinished:
            _log.error("aclose_calls_still_running", calls=unfinished)
        seen: set[int] = set()
        for gen in [self._gen, *self._retired]:
            for p in gen.providers.values():
                if id(p) not in seen:
                    seen.add(id(p))
                    await p.transport.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self._state.aclose()

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

    def _route(self, gen: Generation, name: str) -> Route:
        route = gen.routes.get(name)
        if route is None:
            gen.plan.route(name)  # raises RouterError naming the closest route
        assert route is not None
        return route

    def render(
        self,
        route: str,
        vars: Mapping[str, Any] | None = None,
        *,
        messages: Sequence[Message] | None = None,
    ) -> list[Message]:
        """The conversation a call would send, without sending anything (:meth:`Plan.render`):
        the route's system message, the history ``messages`` (checked), then its prompt."""
        return self._gen.plan.render(route, vars, messages=messages)

    def chain(self, route: str) -> list[ChainStep]:
        """The steps a route would try (:meth:`Plan.chain`): provider, model, price,
        retries and attempt cap — the longest any attempt of the step can last: its
        timeout, or the route's deadline if shorter (the deadline share may cut it further).
        """
        return self._gen.plan.chain(route)

    def pool_order(self, route: str) -> list[list[str] | None]:
        """Per step of ``route``: None, or for a pool step (``pool:NAME``) its members as
        ``provider/model`` in the order the next call would try them now — by the
        pool's strategy on the live latencies, load and health (docs/latency.md). Only
        looks: the weighted and round-robin turn is not taken."""
        r = self._route(self._gen, route)
        out: list[list[str] | None] = []
        for step in r.steps:
            if step.picker is None:
                out.append(None)
                continue
            idx = step.picker.order(step.members, self._state, stream=False, advance=False)
            out.append(
                [f"{m.provider.name}/{m.plan.model}" for m in (step.members[i] for i in idx)]
            )
        return out

    def fit(
        self,
        route: str,
        vars: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        messages: Sequence[Message] | None = None,
    ) -> list[StepFit]:
        """Per step, whether a call with ``vars`` (and the history ``messages``) fits its
        model's context window (:meth:`Plan.fit`); a step that does not is skipped
        without sending."""
        return self._gen.plan.fit(route, vars, max_tokens=max_tokens, messages=messages)

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
        messages: Sequence[Message] | None = None,
        tools: Sequence[Tool] | None = None,
        tool_choice: str | None = None,
        output: OutputArg = None,
    ) -> Completion:
        """Run ``route`` with ``vars`` and return the first successful answer.

        ``messages`` is a conversation history, sent after the route's system
        message and before its prompt (docs/conversations.md). ``tools`` replaces the
        route's tools for this call (``[]``: none) and ``tool_choice`` its choice:
        ``"auto"``, ``"none"``, ``"required"`` or a tool's name (docs/conversations.md,
        "Tools").

        ``output`` asks for a structured answer (a pydantic model class, or a JSON
        Schema mapping; it replaces the route's ``output:``): ``Completion.output``
        is the checked answer (docs/conversations.md, "Structured output").

        Raises:
            TemplateError: the variables do not fit the route (before any traffic).
            RequestError: ``messages`` is malformed (before any traffic; names the
                index), a provider's format cannot carry it, or ``output`` is not a
                model class or a valid JSON Schema.
            DeadlineExceededError: the deadline was spent; carries the attempts.
            BudgetExceededError: no step fitted a budget.
            AllProvidersFailedError: every step failed; carries the attempts.
            RouterClosedError: ``aclose()`` ended the call while it was in flight.
        """
        # What _scope() and _Scope do for a stream, inline: a frame, an object and two
        # method calls per call less (nothing awaits between the loop check and the walk).
        self._check_loop()  # before any work
        gen = self._gen
        call = self._build(
            gen,
            CompleteCall,
            route,
            vars,
            deadline_s,
            max_tokens,
            temperature,
            params,
            messages,
            tools,
            tool_choice,
            output,
        )
        gen.active += 1
        try:
            with self._inflight.track() as tracked:
                try:
                    result = await call.run()
                except asyncio.CancelledError:
                    if not tracked.closed_by_router():
                        raise  # the caller's own cancellation
                    raise call.closed_error() from None
        except BaseException as exc:
            self._release(gen)
            if isinstance(exc, RouterError):
                self._finish(call, None, exc)
            raise
        self._release(gen)
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
        messages: Sequence[Message] | None = None,
        tools: Sequence[Tool] | None = None,
        tool_choice: str | None = None,
        output: OutputArg = None,
    ) -> RouteStream:
        """Stream ``route``'s answer as text deltas (``messages``: a history, ``tools``
        and ``tool_choice``, as for :meth:`complete`).

        ::

            async with router.stream("analysis", vars) as stream:
                async for delta in stream:
                    print(delta, end="")
            stream.completion  # full text, usage, cost, attempts

        The chain falls back until a provider delivers its first text delta;
        errors before that raise at ``async with`` (as for :meth:`complete`).
        A failure after it raises StreamInterruptedError with the partial text.
        Leaving the block early closes the response and settles what was billed.
        With ``output`` (as for :meth:`complete`) the whole text is checked when the
        stream ends: ``stream.completion.output``, or StreamInterruptedError.
        """
        scope = self._scope(
            StreamCall,
            route,
            vars,
            deadline_s,
            max_tokens,
            temperature,
            params,
            messages,
            tools,
            tool_choice,
            output,
        )
        return RouteStream(scope, self._inflight)

    def _scope(
        self,
        kind: type[Call[R]],
        route: str,
        vars: Mapping[str, Any] | None,
        deadline_s: float | None,
        max_tokens: int | None,
        temperature: float | None,
        params: Mapping[str, Any] | None,
        history: Sequence[Message] | None = None,
        tools: Sequence[Tool] | None = None,
        tool_choice: str | None = None,
        output: OutputArg = None,
    ) -> _Scope[R]:
        """What complete() and stream() share before the call runs: the route on the
        current generation, its messages rendered (before any traffic), the deadline
        started, the call built, in its scope."""
        gen = self._gen
        call = self._build(
            gen,
            kind,
            route,
            vars,
            deadline_s,
            max_tokens,
            temperature,
            params,
            history,
            tools,
            tool_choice,
            output,
        )
        return _Scope(self, gen, call)

    def _build(
        self,
        gen: Generation,
        kind: type[C],
        route: str,
        vars: Mapping[str, Any] | None,
        deadline_s: float | None,
        max_tokens: int | None,
        temperature: float | None,
        params: Mapping[str, Any] | None,
        history: Sequence[Message] | None,
        tools: Sequence[Tool] | None,
        tool_choice: str | None,
        output: OutputArg,
    ) -> C:
        """A call on ``gen`` before it runs: the route found, its messages rendered and
        composed with the history (before any traffic), its tools and output schema
        chosen, the deadline started."""
        r = self._route(gen, route)
        templates = r.templates
        messages = templates.render(vars)
        if history is not None or not templates.has_prompt:
            messages = compose(
                route,
                messages,
                history or (),
                has_prompt=templates.has_prompt,
                max_image_bytes=templates.max_image_bytes,
            )
        deadline = Deadline(deadline_s if deadline_s is not None else r.deadline_s, self._clock)
        offered = r.tools
        if tools is not None or tool_choice is not None:
            offered = call_tools(route, r.tools, tools, tool_choice)
        spec = None if output is None else _call_output(route, output)
        return kind(gen.rt, r, messages, deadline, max_tokens, temperature, params, offered, spec)

    def _release(self, gen: Generation) -> None:
        gen.active -= 1
        if gen.retired and gen.active == 0:
            self._drain(gen)

    def _finish(
        self, call: Call[Any], result: Completion | None, error: RouterError | None
    ) -> None:
        """The call ended: one CallRecord to every observer (logs, hooks, stats, app's)."""
        deadline = call.deadline
        # A result's latency was read as it was made: the call's end.
        elapsed = deadline.elapsed() if result is None else result.latency_s
        self._events.call(
            CallRecord(  # positional (cheaper per call), in the fields' order
                call.route.name,  # route
                call.stream,  # stream
                result,
                error,
                call.attempts,  # attempts
                deadline.seconds,  # deadline_s
                call.max_tokens,  # max_tokens
                elapsed,  # latency_s
                time.time() - elapsed,  # started_at
                call.messages,  # messages
            )
        )

    @property
    def observers(self) -> tuple[Observer, ...]:
        """Everything on the event channel, in the order it is told: the router's log
        lines, the on_attempt/on_call hooks, its stats, then the observers added."""
        return self._events.observers

    def add_observer(self, observer: Observer) -> None:
        """Send every attempt and call from now on to ``observer`` (metrics, traces)."""
        self._events.add(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop sending events to ``observer`` (ValueError if it is not registered)."""
        self._events.remove(observer)

    # -- reload -------------------------------------------------------------------

    async def reload(self) -> ReloadReport:
        """Re-read the YAML this router was built from and swap it in if valid.

        The file is loaded, validated and resolved into a new Plan completely
        (keys, templates, everything) before anything changes. Invalid: the old
        plan keeps serving and ConfigError is raised (and logged). Valid: the
        swap is atomic; calls already running finish on the plan they started
        with; a provider whose ProviderPlan is equal to the old one keeps its
        connection pool, limiter and cooldown state; removed or changed providers
        are closed once their in-flight calls end; budgets keep their spend. The
        report is the comparison of the two plans (:func:`router.plan.compare`).
        """
        self._check_loop()
        assert self._reload_lock is not None  # set by start()
        async with self._reload_lock:
            return await self._reload(self._source)

    async def _reload(self, source: Path) -> ReloadReport:
        old = self._gen
        try:
            # Read and resolved off the event loop: a large file (up to the 1 MiB cap)
            # takes seconds to parse, and calls in flight must not wait for it.
            plan = await asyncio.to_thread(load_config, source, **self._load_kwargs)
            self._check_ledger(source, plan)
            self._check_state(source, plan)
        except ConfigError as exc:
            _config_log.error(
                "reload_failed", path=str(source), problems=[str(p) for p in exc.problems]
            )
            raise
        report = compare(old.plan, plan)
        # A provider whose plan is unchanged keeps its runtime (pool, limiter, cooldown).
        providers: dict[str, Provider] = {}
        built: list[Provider] = []
        for name, pplan in plan.providers.items():
            kept = old.providers.get(name)
            if kept is not None and kept.plan == pplan:
                providers[name] = kept
            else:
                providers[name] = p = build_provider(pplan, self._state)
                built.append(p)
        try:
            for p in built:
                await p.transport.start()
            install_budgets = await self._state.prepare(plan)
        except BaseException:
            for p in built:
                await p.transport.aclose()
            raise
        # The swap: no await from here on, so no call sees half of it.
        install_budgets()
        self._gen = self._generation(plan, providers)
        old.retired = True
        self._retired.append(old)
        for p in built:
            self._health.pop(p.name, None)
        if old.active == 0:
            self._drain(old)
        _config_log.info(
            "reload",
            path=str(source),
            changed=report.changed,
            providers_added=report.providers_added,
            providers_removed=report.providers_removed,
            providers_changed=report.providers_changed,
            routes_added=report.routes_added,
            routes_removed=report.routes_removed,
            routes_changed=report.routes_changed,
            budgets_changed=report.budgets_changed,
            settings_changed=report.settings_changed,
        )
        if report.budgets_removed or report.providers_removed or report.routes_removed:
            # Removing money limits or things callers use is legitimate, but it must
            # never pass unnoticed (a half-saved file looks exactly like this).
            _config_log.warning(
                "reload_removed",
                path=str(source),
                budgets_removed=report.budgets_removed,
                all_budgets_removed=bool(old.plan.budgets) and not plan.budgets,
                routes_removed=report.routes_removed,
                providers_removed=report.providers_removed,
            )
        return report

    def _check_ledger(self, source: Path, plan: Plan) -> None:
        """A reload keeps the ledger opened at start: a plan whose budgets need another
        one (or one when the router started without budgets, so without a ledger) is
        refused. A plan without budgets needs none and is fine either way."""
        if plan.ledger is None or plan.ledger == self._ledger:
            return
        if self._ledger is None:
            where = "budgets"
            msg = (
                "budgets need a spend ledger, and this router started without budgets, so"
                " it opened none; restart to apply"
            )
        else:
            where = "settings.ledger"
            msg = "the spend ledger cannot change while running; restart to apply"
        raise ConfigError([ConfigProblem(source.name, None, None, where, msg)])

    def _check_state(self, source: Path, plan: Plan) -> None:
        """A reload keeps the state opened at start (in this process, or a Redis
        connection): a plan whose settings.state differs is refused."""
        if plan.settings.state != self._state_settings:
            raise ConfigError(
                [
                    ConfigProblem(
                        source.name,
                        None,
                        None,
                        "settings.state",
                        "where the state lives cannot change while running; restart to apply",
                    )
                ]
            )

    def _drain(self, gen: Generation) -> None:
        """A retired generation has no calls left: close the providers nobody uses now."""
        if gen in self._retired:
            self._retired.remove(gen)
        in_use = {id(p) for g in [self._gen, *self._retired] for p in g.providers.values()}
        for p in gen.providers.values():
            if id(p) not in in_use:
                task = asyncio.get_running_loop().create_task(p.transport.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def _watched(self) -> dict[Path, tuple[int, int, str]]:
        """The YAML file and every file under its templates_dir: (mtime_ns, size, sha256).

        The content hash is part of it because an edit that keeps the size within
        one tick of the file system's clock leaves mtime and size as they were.
        The files are small (each at most 1 MiB), so hashing them every poll is cheap.
        """
        out = {}
        for path in self._gen.plan.watched_files():
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                st = path.stat()
            except OSError:
                continue
            out[path] = (st.st_mtime_ns, st.st_size, digest)
        return out

    async def _stable(self) -> dict[Path, tuple[int, int, str]] | None:
        """The watched files if they are stable: the same set, sizes, mtimes and
        content on two reads ``watch_settle_s`` apart; None while they still change."""
        first = self._watched()
        await asyncio.sleep(self._watch_settle_s)
        now = self._watched()
        return now if now == first else None

    async def _watch(self, seen: dict[Path, tuple[int, int, str]], interval_s: float) -> None:
        """Poll the config's files; reload on any change once the files are stable (an
        invalid edit is only logged)."""
        while True:
            await asyncio.sleep(interval_s)
            if self._watched() == seen:
                continue
            stable = await self._stable()
            if stable is None:
                continue  # still being written: look again at the next poll
            seen = stable
            try:
                await self.reload()
            except ConfigError:
                pass  # logged by reload(); the old config keeps serving
            except Exception as exc:  # the watcher must survive anything
                _config_log.error("reload_failed", path=str(self._source), error=str(exc))

    # -- health ---------------------------------------------------------------------

    async def health(self, *, timeout_s: float = 10.0, force: bool = False) -> list[HealthReport]:
        """Check every enabled provider with its free model-listing endpoint.

        Never sends a completion. Results are cached for ``settings.health_ttl_s``
        unless ``force``. ``timeout_s`` caps each check (they run concurrently).
        """
        self._check_loop()
        gen = self._gen
        ttl = gen.plan.health_ttl_s
        now = self._clock()
        stale = [
            p
            for p in gen.providers.values()
            if force or p.name not in self._health or now - self._health[p.name][0] > ttl
        ]
        if stale:
            fresh = await asyncio.gather(
                *(check_provider(p, timeout_s, self._clock) for p in stale)
            )
            for p, report in zip(stale, fresh, strict=True):
                self._health[p.name] = (self._clock(), report)
        return [self._health[name][1] for name in gen.providers]

    async def verify_keys(self, *, timeout_s: float = KEY_CHECK_TIMEOUT_S) -> KeyCheck:
        """Check every provider's key with one free model-listing request, concurrently.

        Providers without a key (keyless, ``kind: mock``) are skipped. A 401 or 403
        (or a status whose body says the key is bad, such as Gemini's 400) raises
        ConfigError naming each provider and its key's environment variable
        (never the key). A provider that cannot be checked (connection refused, no
        answer within ``timeout_s``, a 5xx or any other status) is logged as a
        warning (``key_check_unverified``) and listed in ``KeyCheck.unverified``;
        it does not fail. The listings also refresh the health cache.
        """
        self._check_loop()
        gen = self._gen
        check, reports = await check_keys(
            list(gen.providers.values()), gen.plan.source, self._clock, timeout_s
        )
        now = self._clock()
        for report in reports:
            self._health[report.provider] = (now, report)
        self._key_check = check
        return check

    @property
    def key_check(self) -> KeyCheck | None:
        """What the last key check found (:meth:`verify_keys`); None before one ran."""
        return self._key_check

    # -- metrics --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per route and provider: calls, outcomes, attempts, retries, fallbacks, tokens,
        cost, latency percentiles, cooldowns and budget remaining (JSON-serializable;
        see docs/operations.md)."""
        return self._stats.snapshot(self)

    def provider_states(self) -> dict[str, ProviderState]:
        """Per enabled provider, its live admission and health state: cooldown,
        in-flight attempts, Retry-After wait, limiter headroom, its connection pool
        and the runtime serving it (see ProviderState).

        Reads only; safe to call from another thread (a metrics scrape)."""
        state = self._state
        out: dict[str, ProviderState] = {}
        for name, p in list(self._gen.providers.items()):
            total, idle = p.transport.pool_counts()  # reads only
            # The State knows the gate's part; the runtime and its pool are the router's.
            out[name] = replace(
                state.provider_state(p.gate),
                runtime_id=p.runtime_id,
                connections_open=total,
                connections_idle=idle,
                connections_in_use=total - idle,
            )
        return out

    @property
    def calls_in_flight(self) -> int:
        """Calls running and streams open, on the current plan and on plans replaced
        by a reload that still have calls (0 when idle)."""
        return sum(g.active for g in [self._gen, *self._retired])

    # -- money ----------------------------------------------------------------------

    def spend(self) -> list[BudgetStatus]:
        """Per budget: limit, spent, reserved and remaining for the current period."""
        return self._state.spend()

    def ledger_status(self) -> LedgerStatus:
        """The spend ledger: costs waiting to be written, failed writes, the current error."""
        return self._state.ledger_status()

    @property
    def reserved_usd(self) -> Decimal:
        """Money reserved by calls in flight (0 when idle)."""
        return self._state.reserved_usd


def _call_output(route: str, output: type[BaseModel] | Mapping[str, Any]) -> OutputSpec:
    """A call's ``output=`` as an OutputSpec, or RequestError (before any traffic)."""
    try:
        return call_output(output)
    except ValueError as exc:
        raise RequestError(f"route {route!r}: {exc}", route=route) from None


class _Scope(Generic[R]):
    """One call's stay in its router, shared by complete() and stream() (a context
    manager around the call; see :class:`router.streaming.CallScope`).

    Entering checks the event loop and holds the plan generation the call runs on (a
    reload closes that generation's providers after its last call); leaving lets go
    of it and reports a RouterError that ends the call to the event channel. A call
    that succeeds is reported with :meth:`done`; one cancelled by its caller is not
    a call outcome and is not reported.
    """

    __slots__ = ("call", "gen", "router")

    def __init__(self, router: Router, gen: Generation, call: Call[R]) -> None:
        self.router = router
        self.gen = gen
        self.call = call

    def __enter__(self) -> _Scope[R]:
        self.router._check_loop()
        self.gen.active += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.router._release(self.gen)
        if isinstance(exc, RouterError):
            self.router._finish(self.call, None, exc)

    async def walk(self) -> R:
        """Walk the call's chain where ``aclose()`` can end it (router.inflight): then it
        raises RouterClosedError; only the caller's own cancellation raises CancelledError."""
        call = self.call
        with self.router._inflight.track() as tracked:
            try:
                return await call.run()
            except asyncio.CancelledError:
                if not tracked.closed_by_router():
                    raise  # the caller's own cancellation
                raise call.closed_error() from None

    def done(self, result: Completion) -> None:
        self.router._finish(self.call, result, None)
