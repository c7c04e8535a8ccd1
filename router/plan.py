"""The Plan: one providers.yaml, resolved — what the router runs from.

Loading is parse → resolve → run. :func:`router.config.read_config` parses
and checks the YAML against the schema (every problem with its file:line:col);
:func:`resolve` then settles everything the schema leaves open, once:

- per provider: kind, base URL (or the kind's default), key, proxy, headers, limits,
  cooldown, timeouts, body size cap, HTTP backend, hidden input overhead, and
  each model's price (free when it declares none), window and output cap;
- per route: compiled templates, the chain of enabled steps with each step's
  effective settings (step > route > provider > settings), the deadline, the
  token cap, the error kinds that fall back and the prompt-cache marks;
- the budgets, the ledger (only with budgets), the chain-wide numbers (attempt floor, backoff,
  Retry-After cap, health TTL) and the files a watcher must follow.

A Plan is frozen (dataclasses with slots: cheap to read on the hot path) and
compares by value: a reload keeps a provider's runtime (connection pool,
limiter, cooldown state) exactly when its :class:`ProviderPlan` is equal, and
reports a route as changed when its :class:`RoutePlan` is not. A dry run
(:meth:`Plan.render`, :meth:`Plan.chain`) needs nothing but a Plan.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pydantic import SecretStr

from router.config import (
    DEFAULT_INPUT_OVERHEAD_TOKENS,
    DEFAULT_MAX_TOOL_CALLS,
    FREE,
    Backoff,
    BudgetConfig,
    Config,
    Cooldown,
    HedgeBudget,
    HedgeConfig,
    LedgerPlan,
    Limits,
    Loaded,
    MockSettings,
    PoolConfig,
    Price,
    PromptCache,
    ProviderConfig,
    RouteConfig,
    ServerTool,
    Settings,
    StateSettings,
    StepConfig,
    default_base_url,
    read_config,
)
from router.conversation import compose
from router.errors import UnknownRouteError
from router.images import images_tokens
from router.output import DEFAULT_MODES, Mode, OutputSpec
from router.providers.azure_openai import DEFAULT_API_VERSION, AzureSettings
from router.proxy import Proxy
from router.templates import RouteTemplates
from router.tools import Tool, ToolSet
from router.types import Image, Message

__all__ = [
    "ChainStep",
    "ModelPlan",
    "Plan",
    "ProviderPlan",
    "ReloadReport",
    "RoutePlan",
    "StepFit",
    "StepPlan",
    "compare",
    "load_config",
    "resolve",
]


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """One model of a provider, resolved."""

    price: Price  # FREE when the model declares none (ollama, mock)
    context_window: int | None
    max_output_tokens: int | None
    extra: Mapping[str, Any]  # body fields sent with every request to this model
    tools: bool = True  # whether the model takes tools (models.<m>.tools)
    structured_output: Mode = "json_schema"  # its own, or its provider kind's default
    image_tokens: int | None = None  # per image; None: the provider kind's formula
    # Server-side tools (kind openai_responses): the model's, else its provider's.
    server_tools: tuple[ServerTool, ...] = ()
    max_tool_calls: int | None = None  # the model's, else its provider's; None: unset


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """Everything a provider's runtime (adapter, pooled transport, admission gate) is
    built from. Two equal ProviderPlans can share one runtime."""

    name: str
    kind: str
    base_url: str  # its own, or its kind's default; no trailing '/'
    # The loaded key (None: keyless). SecretStr: never in a repr; compares by value.
    key: SecretStr | None
    key_env: str | None  # the NAME of the variable the key came from (api_key_env)
    headers: Mapping[str, str]
    limits: Limits
    cooldown: Cooldown  # settings.cooldown
    timeout_s: float  # cap on one attempt (a step may lower it)
    connect_timeout_s: float
    # The provider's own stream waits; None: it inherits the settings' (each
    # StepPlan holds the effective value, the route's first).
    first_token_timeout_s: float | None
    idle_timeout_s: float | None
    input_overhead: int  # hidden prompt tokens billed per request
    max_response_bytes: int  # settings.max_response_bytes
    extra: Mapping[str, Any]  # body fields sent with every request
    models: Mapping[str, ModelPlan]
    mock: MockSettings | None  # kind mock only: how the offline upstream answers
    # The proxy its requests go through (router.proxy), None for a direct connection.
    # Part of the plan: a reload that changes it (or its credentials) rebuilds the pool.
    proxy: Proxy | None = None
    # kind azure_openai only: api-version, auth and each model's deployment.
    azure: AzureSettings | None = None
    # How many hedges slow attempts on this provider may start (providers.<p>.hedge_budget).
    hedge_budget: HedgeBudget = field(default_factory=HedgeBudget)


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One chain step with its effective settings (step > route > provider > settings)."""

    provider: str
    model: str
    params: Mapping[str, Any]  # provider extra < model extra < step params
    retries: int
    timeout_s: float  # cap on one attempt: the step's, at most the provider's
    price: Price
    context_window: int | None
    max_output_tokens: int | None
    first_token_timeout_s: float  # streams: longest wait for the first text delta
    idle_timeout_s: float  # streams: longest wait between two chunks
    input_overhead: int  # hidden prompt tokens the provider bills per request
    # context_window less input_overhead: the most the messages' estimate plus the
    # output cap may be (None: no window, never checked). One comparison per step.
    window_room: int | None = None
    # Whether the model takes tools (models.<m>.tools): a call with tools skips the
    # step when it does not (skip kind tools_unsupported).
    tools: bool = True
    # How structured output is asked of this model (router.output).
    structured_output: Mode = "json_schema"
    # Tokens each image is estimated at (models.<m>.image_tokens); None: the
    # provider kind's formula (router.images).
    image_tokens: int | None = None
    # Server-side tools the step's requests carry (the route's, else the model's, else
    # the provider's), by name; in ``params`` as ``server_tools`` (their wire form and
    # the call cap).
    server_tools: tuple[str, ...] = ()
    # Most server-tool calls one response may make (sent as max_tool_calls); 0 when
    # the step has no server tools.
    max_tool_calls: int = 0
    # What the reservation adds for them: max_tool_calls at the dearest per-call
    # price among the step's server tools (docs/money.md).
    tool_calls_reserve_usd: Decimal = Decimal(0)
    # Hedged requests for this step (the step's, else the route's); None: no hedging.
    hedge: HedgeConfig | None = None
    # A ``pool:NAME`` step: the pool's name, strategy and enabled members (each a
    # StepPlan of its own, with its weight); the step's own provider and model are
    # its first member's. Empty ``members``: a plain provider/model step.
    pool: str | None = None
    strategy: str = "least_latency"
    members: tuple[StepPlan, ...] = ()
    weight: int = 1

    @property
    def targets(self) -> tuple[StepPlan, ...]:
        """The deployments the step may send to: its pool's members, else itself."""
        return self.members or (self,)


def server_tools_plan(
    tools: Sequence[ServerTool], max_calls: int | None, price: Price
) -> tuple[dict[str, Any], tuple[str, ...], int, Decimal]:
    """A step's server tools: the param they add (``server_tools``: the tools in wire
    form and ``max_tool_calls``, which the adapter sends and a call's params may only
    lower), their names, the call cap and its worst-case cost."""
    if not tools:
        return {}, (), 0, Decimal(0)
    names = tuple(dict.fromkeys(t.type for t in tools))
    cap = max_calls if max_calls is not None else DEFAULT_MAX_TOOL_CALLS
    dearest = max(price.per_call.get(n, Decimal(0)) for n in names)
    params = {"server_tools": {"tools": [t.wire() for t in tools], "max_tool_calls": cap}}
    return params, names, cap, cap * dearest


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """A route, resolved: its templates, enabled steps and call defaults."""

    name: str
    steps: tuple[StepPlan, ...]  # the enabled steps, in order
    deadline_s: float
    max_tokens: int
    temperature: float | None
    max_cost_usd: Decimal | None
    fallback_on: frozenset[str] | None  # error kinds that move on; None: all
    vars: Mapping[str, str] | None  # declared variables and their types; None: undeclared
    # Parts of the prompt marked for the provider's prompt cache (the templates mark
    # the rendered messages: Message.cache; adapters that cannot cache ignore it).
    prompt_cache: PromptCache
    # The route as written (template sources included), so that an edit to a
    # template compares unequal even when everything resolved above is the same.
    source: RouteConfig
    templates: RouteTemplates = field(compare=False)
    # The route's tools and tool_choice (None: the route declares no tools). Each
    # adapter's wire form of them is built once, with the route's runtime.
    tools: ToolSet | None = None
    # The answer's schema (route ``output:``), checked at load; None: plain text.
    output: OutputSpec | None = None
    # Return an empty or cut-off answer as a success (route ``accept_truncated``).
    accept_truncated: bool = False


class ChainStep(NamedTuple):
    """A step a route would try, as a dry run shows it."""

    provider: str
    model: str
    price: Price
    retries: int
    # The longest any attempt of the step can last: its timeout, or the route's
    # deadline if shorter (a call's deadline share may cut it further).
    attempt_cap_s: float


class StepFit(NamedTuple):
    """Whether a call's input and output fit a step's model (:meth:`Plan.fit`)."""

    provider: str
    model: str
    # The model's context_window (None: unknown, so a step is never skipped for it).
    context_window: int | None
    # The output cap the step would send: the call's max_tokens, at most the model's
    # max_output_tokens.
    max_tokens: int
    # The estimated input tokens (the messages plus the provider's hidden overhead);
    # None when no variables were given to render the messages with.
    input_tokens: int | None
    # Whether a call with these variables is sent to the step: input_tokens +
    # max_tokens <= context_window (always true when the window is unknown). False: a
    # call skips the step (skip kind context_window). None: not known without variables.
    fits: bool | None


@dataclass(frozen=True, slots=True)
class StatePlan:
    """settings.state with backend redis: where the shared state lives."""

    # The URL from settings.state.url_env (None: the variable was unset and the config
    # was loaded with require_env=False; opening the state then fails, naming it).
    url: SecretStr | None
    settings: StateSettings

    def __repr__(self) -> str:
        s = self.settings
        return f"<StatePlan redis {s.url_env} prefix={s.key_prefix!r}>"


@dataclass(frozen=True, slots=True)
class Plan:
    """A providers.yaml resolved into what the router runs from. Build it with
    :func:`load_config`."""

    source: Path  # the YAML file (absolute)
    base_dir: Path  # relative paths (templates_dir, ledger path) are taken from here
    templates_dir: Path
    providers: Mapping[str, ProviderPlan]  # enabled providers only
    disabled_providers: frozenset[str]  # dropped: their key is not set
    # Why each disabled provider is: the environment variable that is not set.
    disabled_because: Mapping[str, str]
    routes: Mapping[str, RoutePlan]
    budgets: Mapping[str, BudgetConfig]
    # The spend ledger to keep: its backend and file. None when there are no budgets:
    # then no ledger is opened or created at all.
    ledger: LedgerPlan | None
    attempt_floor_s: float
    backoff: Backoff
    retry_after_max_s: float
    health_ttl_s: float
    settings: Settings  # the settings section as written
    # The validated document this plan was resolved from (read-only schema objects).
    config: Config = field(compare=False, repr=False)
    # settings.state with backend redis, resolved; None: state stays in this process.
    state: StatePlan | None = None

    def route(self, name: str) -> RoutePlan:
        """The route called ``name``.

        Raises:
            UnknownRouteError: no such route (with the closest name, if any).
        """
        route = self.routes.get(name)
        if route is None:
            close = difflib.get_close_matches(name, list(self.routes), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownRouteError(f"unknown route {name!r}{hint}", route=name)
        return route

    def render(
        self,
        route: str,
        vars: Mapping[str, Any] | None = None,
        *,
        messages: Sequence[Message] | None = None,
    ) -> list[Message]:
        """The conversation a call of ``route`` would send, without sending anything: its
        system message, the history ``messages`` (checked as a call checks it: a
        RequestError names the index at fault), then its prompt."""
        templates = self.route(route).templates
        rendered = templates.render(vars)
        if messages is None and templates.has_prompt:
            return rendered
        return compose(
            route,
            rendered,
            messages or (),
            has_prompt=templates.has_prompt,
            max_image_bytes=templates.max_image_bytes,
        )

    def chain(self, route: str) -> list[ChainStep]:
        """The steps ``route`` would try, in order, with their price, retries and cap."""
        r = self.route(route)
        return [
            ChainStep(s.provider, s.model, s.price, s.retries, min(s.timeout_s, r.deadline_s))
            for s in r.steps
        ]

    def fit(
        self,
        route: str,
        vars: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        messages: Sequence[Message] | None = None,
    ) -> list[StepFit]:
        """Per step of ``route``: its model's context window, the output cap it would
        send and, with ``vars`` or ``messages`` (the conversation is rendered and
        estimated as a call estimates it), whether input plus output fits the window.
        A step that does not fit is skipped by a call. ``max_tokens`` overrides the
        route's output cap, as a call's argument does. Without either only an output
        cap larger than the window is known not to fit."""
        r = self.route(route)
        est = None
        images: list[Image] = []  # counted per step, with its provider's formula
        if vars is not None or messages is not None:
            rendered = self.render(route, vars, messages=messages)
            est = r.templates.estimate_tokens(rendered, images)
            if r.tools is not None:
                est += r.tools.tokens  # the definitions are billed as prompt
        out = []
        for s in r.steps:
            cap = max_tokens or r.max_tokens
            if s.max_output_tokens is not None and cap > s.max_output_tokens:
                cap = s.max_output_tokens
            need = None
            if est is not None:
                kind = self.providers[s.provider].kind
                need = est + s.input_overhead + images_tokens(kind, images, s.image_tokens)
            window = s.context_window
            fits = None
            if window is None:
                fits = None if need is None else True
            elif need is not None:
                fits = need + cap <= window
            elif cap > window:
                fits = False  # the output cap alone is more than the window
            out.append(StepFit(s.provider, s.model, window, cap, need, fits))
        return out

    def watched_files(self) -> list[Path]:
        """The files this plan was read from: the YAML and every file under templates_dir."""
        paths = [self.source]
        if self.templates_dir.is_dir():
            paths += [p for p in sorted(self.templates_dir.rglob("*")) if p.is_file()]
        return paths


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    require_env: bool = True,
) -> Plan:
    """Read, validate and resolve a providers.yaml into the Plan the router runs from.

    Args:
        path: the YAML file. Problems are reported under this name as given.
        env: where API keys, ``${VAR}`` values and ``settings.ledger.path_env``
            are read from; defaults to ``os.environ`` (read at each load).
        require_env: when true, a non-optional provider whose key variable is
            unset is an error, and so is a ``${VAR}`` without a default whose
            variable is unset. When false, every provider whose key is unset is
            disabled instead, and such a ``${VAR}`` is a warning (for validating
            structure without secrets).

    Returns:
        The resolved :class:`Plan`: keys loaded (as ``SecretStr``, registered
        for redaction), disabled providers dropped from chains, templates compiled.

    Raises:
        ConfigError: listing every problem found, each with its file, line and path.
    """
    return resolve(read_config(path, env=env, require_env=require_env))


def _first(*values: Any) -> Any:
    """The first value that is set (the most specific level wins)."""
    return next((v for v in values if v is not None), None)


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


def resolve(loaded: Loaded) -> Plan:
    """Settle every default and cascade of a checked document, once."""
    config = loaded.config
    s = config.settings
    base_dir = loaded.source.parent
    providers = {
        name: _provider(name, p, loaded.keys.get(name), loaded.proxies.get(name), s)
        for name, p in config.providers.items()
        if name not in loaded.disabled
    }
    routes = {
        name: _route(
            name,
            r,
            loaded.templates[name],
            providers,
            s,
            loaded.tools.get(name, ()),
            loaded.outputs.get(name),
            config.pools,
        )
        for name, r in config.routes.items()
    }
    tdir = Path(s.templates_dir)
    return Plan(
        source=loaded.source,
        base_dir=base_dir,
        templates_dir=tdir if tdir.is_absolute() else base_dir / tdir,
        providers=MappingProxyType(providers),
        disabled_providers=loaded.disabled,
        disabled_because=loaded.disabled_because,
        routes=MappingProxyType(routes),
        budgets=_frozen(config.budgets),
        ledger=loaded.ledger,
        attempt_floor_s=s.attempt_floor_s,
        backoff=s.backoff,
        retry_after_max_s=s.retry_after_max_s,
        health_ttl_s=s.health_ttl_s,
        settings=s,
        state=StatePlan(loaded.state_url, s.state) if s.state.backend == "redis" else None,
        config=config,
    )


def _azure(p: ProviderConfig) -> AzureSettings | None:
    """A kind azure_openai provider's settings, defaults filled in (None for other kinds)."""
    if p.kind != "azure_openai":
        return None
    return AzureSettings(
        api_version=p.api_version or DEFAULT_API_VERSION,
        auth=p.auth or "api_key_header",
        deployments=MappingProxyType({m: c.deployment or m for m, c in p.models.items()}),
    )


def _provider(
    name: str, p: ProviderConfig, key: SecretStr | None, proxy: Proxy | None, s: Settings
) -> ProviderPlan:
    base_url = (p.base_url or default_base_url(p.kind)).rstrip("/")
    overhead = p.input_overhead_tokens
    if overhead is None:
        host = (urlsplit(base_url).hostname or "").lower()
        overhead = DEFAULT_INPUT_OVERHEAD_TOKENS.get(host, 0)
    models = {
        model: ModelPlan(
            price=m.price or FREE,
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
            extra=_frozen(m.extra),
            tools=m.tools,
            structured_output=m.structured_output or DEFAULT_MODES[p.kind],
            image_tokens=m.image_tokens,
            server_tools=tuple(
                m.server_tools if m.server_tools is not None else p.server_tools or ()
            ),
            max_tool_calls=_first(m.max_tool_calls, p.max_tool_calls),
        )
        for model, m in p.models.items()
    }
    return ProviderPlan(
        name=name,
        kind=p.kind,
        base_url=base_url,
        key=key,
        key_env=p.api_key_env,
        headers=_frozen(p.headers),
        limits=p.limits,
        cooldown=s.cooldown,
        timeout_s=p.timeout_s,
        connect_timeout_s=p.connect_timeout_s,
        first_token_timeout_s=p.first_token_timeout_s,
        idle_timeout_s=p.idle_timeout_s,
        input_overhead=overhead,
        max_response_bytes=s.max_response_bytes,
        extra=_frozen(p.extra),
        models=MappingProxyType(models),
        mock=(p.mock or MockSettings()) if p.kind == "mock" else None,
        proxy=proxy,
        azure=_azure(p),
        hedge_budget=p.hedge_budget,
    )


def _target(
    r: RouteConfig,
    step: StepConfig,
    use: str,
    providers: Mapping[str, ProviderPlan],
    s: Settings,
    hedge: HedgeConfig | None,
    weight: int = 1,
) -> StepPlan | None:
    """The plan of one step (or pool member) ``use`` (provider/model) with the step's
    settings; None when its provider is disabled."""
    provider, _, model = use.partition("/")
    p = providers.get(provider)
    if p is None:
        return None
    m = p.models[model]
    server, names, max_calls, reserve = server_tools_plan(
        m.server_tools if r.server_tools is None else r.server_tools,
        _first(r.max_tool_calls, m.max_tool_calls),
        m.price,
    )
    return StepPlan(
        provider=p.name,
        model=model,
        params=_frozen({**p.extra, **m.extra, **step.params, **server}),
        retries=_first(step.retries, r.retries, s.retries),
        timeout_s=p.timeout_s if step.timeout_s is None else min(p.timeout_s, step.timeout_s),
        price=m.price,
        context_window=m.context_window,
        max_output_tokens=m.max_output_tokens,
        first_token_timeout_s=_first(
            r.first_token_timeout_s, p.first_token_timeout_s, s.first_token_timeout_s
        ),
        idle_timeout_s=_first(r.idle_timeout_s, p.idle_timeout_s, s.idle_timeout_s),
        input_overhead=p.input_overhead,
        window_room=None if m.context_window is None else m.context_window - p.input_overhead,
        tools=m.tools,
        structured_output=m.structured_output,
        image_tokens=m.image_tokens,
        server_tools=names,
        max_tool_calls=max_calls,
        tool_calls_reserve_usd=reserve,
        hedge=hedge,
        weight=weight,
    )


def _route(
    name: str,
    r: RouteConfig,
    templates: RouteTemplates,
    providers: Mapping[str, ProviderPlan],
    s: Settings,
    tools: tuple[Tool, ...] = (),
    output: OutputSpec | None = None,
    pools: Mapping[str, PoolConfig] = MappingProxyType({}),
) -> RoutePlan:
    steps = []
    for step in r.fallback:
        hedge = step.hedge or r.hedge
        if step.pool is None:
            one = _target(r, step, step.model, providers, s, hedge)
            if one is not None:  # else disabled: its key is not set
                steps.append(one)
            continue
        pool = pools[step.pool]
        members = [
            m
            for member in pool.members
            if (m := _target(r, step, member.use, providers, s, hedge, member.weight)) is not None
        ]
        if members:  # else every member's provider is disabled
            steps.append(
                replace(members[0], pool=step.pool, strategy=pool.strategy, members=tuple(members))
            )
    fallback_on = r.fallback_on if r.fallback_on is not None else s.fallback_on
    return RoutePlan(
        name=name,
        steps=tuple(steps),
        deadline_s=_first(r.deadline_s, s.deadline_s),
        max_tokens=_first(r.max_tokens, s.max_tokens),
        temperature=r.temperature,
        max_cost_usd=r.max_cost_usd,
        fallback_on=None if fallback_on is None else frozenset(fallback_on),
        vars=None if r.vars is None else _frozen(r.vars),
        prompt_cache=r.prompt_cache,
        source=r,
        templates=templates,
        tools=ToolSet(tools, r.tool_choice or "auto") if tools else None,
        output=output,
        accept_truncated=r.accept_truncated,
    )


@dataclass(slots=True, frozen=True)
class ReloadReport:
    """What a successful reload changed (names only), from comparing two Plans."""

    providers_added: list[str] = field(default_factory=list)
    providers_removed: list[str] = field(default_factory=list)
    providers_changed: list[str] = field(default_factory=list)
    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    routes_changed: list[str] = field(default_factory=list)
    budgets_changed: bool = False
    budgets_removed: list[str] = field(default_factory=list)
    settings_changed: bool = False

    @property
    def changed(self) -> bool:
        return any(
            (
                self.providers_added,
                self.providers_removed,
                self.providers_changed,
                self.routes_added,
                self.routes_removed,
                self.routes_changed,
                self.budgets_changed,
                self.settings_changed,
            )
        )


def compare(old: Plan, new: Plan) -> ReloadReport:
    """What changes from ``old`` to ``new``. A provider changed when its ProviderPlan is
    not equal (its runtime is rebuilt); a route changed when its RoutePlan is not equal
    or one of its steps runs on a changed provider."""
    changed_providers = {
        name
        for name, p in new.providers.items()
        if name in old.providers and old.providers[name] != p
    }
    return ReloadReport(
        providers_added=[n for n in new.providers if n not in old.providers],
        providers_removed=[n for n in old.providers if n not in new.providers],
        providers_changed=[n for n in new.providers if n in changed_providers],
        routes_added=[n for n in new.routes if n not in old.routes],
        routes_removed=[n for n in old.routes if n not in new.routes],
        routes_changed=[
            n
            for n, r in new.routes.items()
            if n in old.routes
            and (
                old.routes[n] != r
                or any(t.provider in changed_providers for s in r.steps for t in s.targets)
            )
        ],
        budgets_changed=dict(new.budgets) != dict(old.budgets),
        budgets_removed=[b for b in old.budgets if b not in new.budgets],
        settings_changed=new.settings != old.settings,
    )
