"""A Generation: one Plan built into provider runtimes and routes.

The Router serves from its current generation. A reload builds a new one —
reusing the runtime (connection pool, and its handle in the
:class:`~router.state.State`: limiters, cooldown state) of every
provider whose :class:`~router.plan.ProviderPlan` is equal to the one it was
built from — and swaps it in at once. Calls hold the generation they started
on until they end, so they finish on the plan they started with; a retired
generation's own providers are closed once its last call has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from router.call import Provider, Route, Runtime, Step, request_params, step_tools
from router.hedge import hedged_walk
from router.plan import Plan, ProviderPlan, RoutePlan, StepPlan
from router.pool import PoolPicker
from router.providers import build_adapter
from router.providers.mock import MockUpstream
from router.state import State
from router.transport import Handler, Transport
from router.types import Skip


def _mock_handler(upstream: MockUpstream) -> Handler:
    async def handler(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        reply = upstream.respond(method, path, body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return reply.status, reply.headers, reply.body

    return handler


def build_provider(plan: ProviderPlan, state: State) -> Provider:
    """A provider's runtime: adapter, (unstarted) transport and its handle in ``state``."""
    key = plan.key.get_secret_value() if plan.key is not None else None
    adapter = build_adapter(plan.kind, plan.name, key, plan.headers, plan.azure)
    handler = None
    if plan.mock is not None:  # offline: an in-process upstream behind the same transport
        handler = _mock_handler(MockUpstream(plan.mock, plan.models))
    transport = Transport(
        plan.name,
        plan.base_url,
        headers=adapter.auth_headers(),
        connect_timeout_s=plan.connect_timeout_s,
        max_connections=plan.limits.max_concurrency,
        max_response_bytes=plan.max_response_bytes,
        handler=handler,
        proxy=plan.proxy,
    )
    return Provider(plan.name, plan, adapter, transport, state.provider(plan))


def _frozen(defaults: tuple[dict[str, Any], int]) -> tuple[Mapping[str, Any], int]:
    params, max_tokens = defaults
    return MappingProxyType(params), max_tokens


def _step(
    plan: RoutePlan,
    s: StepPlan,
    providers: Mapping[str, Provider],
    pickers: dict[str, PoolPicker] | None = None,
) -> Step:
    """A step bound to its provider's runtime, with the request params of a call that
    overrides none of the route's, and the route's tools in the provider's wire form;
    a pool step with its members, each bound likewise."""
    provider = providers[s.provider]
    tools = None if plan.tools is None else step_tools(s, provider.adapter, plan.tools)
    fields = None if isinstance(tools, Skip) else tools
    # Read-only: shared by every call that overrides none of the route's params.
    defaults = _frozen(request_params(s, plan.max_tokens, plan.temperature, None, fields))
    if not s.members or s.pool is None:
        return Step(provider, s, defaults, tools)
    members = tuple(_step(plan, m, providers) for m in s.members)
    key = f"{s.pool}:{s.strategy}:" + ",".join(
        f"{m.provider}/{m.model}*{m.weight}" for m in s.members
    )
    if pickers is None:
        pickers = {}
    picker = pickers.get(key)
    if picker is None:  # one per pool (as enabled) in a generation, shared by its routes
        picker = pickers[key] = PoolPicker(s.pool, s.strategy, [m.weight for m in s.members])
    return Step(provider, s, defaults, tools, members, picker)


def compile_route(
    plan: RoutePlan,
    providers: dict[str, Provider],
    pickers: dict[str, PoolPicker] | None = None,
) -> Route:
    """A route's runtime: its planned steps bound to the providers' runtimes. A route
    that hedges or has a pool step walks its chain with router.hedge."""
    steps = [_step(plan, s, providers, pickers) for s in plan.steps]
    general = any(s.plan.hedge is not None or s.members for s in steps)
    return Route(
        name=plan.name,
        templates=plan.templates,
        steps=steps,
        deadline_s=plan.deadline_s,
        max_tokens=plan.max_tokens,
        temperature=plan.temperature,
        max_cost_usd=plan.max_cost_usd,
        fallback_on=plan.fallback_on,
        tools=plan.tools,
        output=plan.output,
        accept_truncated=plan.accept_truncated,
        walker=hedged_walk if general else None,
    )


@dataclass(slots=True)
class Generation:
    """What the Router serves from: a plan, its provider runtimes and compiled routes."""

    plan: Plan
    providers: dict[str, Provider]
    routes: dict[str, Route]
    rt: Runtime
    # Calls (and open streams) running on this generation.
    active: int = 0
    # Replaced by a reload; its providers not shared with newer generations close when idle.
    retired: bool = False
