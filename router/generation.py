"""A Generation: one loaded Config compiled into provider runtimes and routes.

The Router serves from its current generation. A reload builds a new one —
reusing the runtime (connection pool, limiters, cooldown state) of every
provider whose effective settings did not change — and swaps it in at once.
Calls hold the generation they started on until they end, so they finish on
the config they started with; a retired generation's own providers are closed
once its last call has ended.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from router.call import Provider, Route, Runtime, Step
from router.config import Config, MockSettings, RouteConfig
from router.deadline import Clock
from router.limits import ProviderGate
from router.providers import build_adapter
from router.providers.mock import MockUpstream
from router.transport import Handler, Transport

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


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


def fingerprint(config: Config, name: str) -> tuple[Any, ...]:
    """Everything that shapes a provider's runtime; equal fingerprints can share one.

    The key enters as a digest, so the fingerprint itself holds no secret.
    """
    key = config.api_key(name)
    digest = hashlib.sha256(key.get_secret_value().encode()).hexdigest() if key else None
    s = config.settings
    return (
        config.providers[name],
        digest,
        config.resolved_base_url(name),
        s.cooldown,
        s.max_response_bytes,
    )


def build_provider(config: Config, name: str, clock: Clock, sleep: Sleep) -> Provider:
    """A provider's runtime: adapter, (unstarted) transport and admission gate."""
    pconf = config.providers[name]
    settings = config.settings
    key = config.api_key(name)
    adapter = build_adapter(
        pconf.kind, name, key.get_secret_value() if key else None, pconf.headers
    )
    handler = None
    if pconf.kind == "mock":  # offline: an in-process upstream behind the same transport
        handler = _mock_handler(MockUpstream(pconf.mock or MockSettings(), pconf.models))
    transport = Transport(
        name,
        config.resolved_base_url(name),
        headers=adapter.auth_headers(),
        connect_timeout_s=pconf.connect_timeout_s,
        max_connections=pconf.limits.max_concurrency,
        max_response_bytes=settings.max_response_bytes,
        handler=handler,
    )
    gate = ProviderGate(name, pconf.limits, settings.cooldown, clock, sleep)
    return Provider(name, pconf, adapter, transport, gate)


def compile_route(config: Config, providers: dict[str, Provider], name: str) -> Route:
    """Resolve a route's chain, per-step parameters and caps once, at load."""
    rconf: RouteConfig = config.routes[name]
    settings = config.settings
    steps = []
    for s in config.chain(name):
        provider = providers[s.provider_name]
        pconf = provider.config
        mconf = pconf.models[s.model_name]
        timeout = pconf.timeout_s if s.timeout_s is None else min(pconf.timeout_s, s.timeout_s)
        steps.append(
            Step(
                provider=provider,
                model=s.model_name,
                params={**pconf.extra, **mconf.extra, **s.params},
                retries=_first(s.retries, rconf.retries, settings.retries),
                timeout_s=timeout,
                price=config.price(s.provider_name, s.model_name),
                max_output_tokens=mconf.max_output_tokens,
                first_token_s=_first(
                    rconf.first_token_timeout_s,
                    pconf.first_token_timeout_s,
                    settings.first_token_timeout_s,
                ),
                idle_s=_first(rconf.idle_timeout_s, pconf.idle_timeout_s, settings.idle_timeout_s),
                input_overhead=config.input_overhead(s.provider_name),
            )
        )
    fallback_on = rconf.fallback_on if rconf.fallback_on is not None else settings.fallback_on
    return Route(
        name=name,
        templates=config.templates[name],
        steps=steps,
        deadline_s=_first(rconf.deadline_s, settings.deadline_s),
        max_tokens=_first(rconf.max_tokens, settings.max_tokens),
        temperature=rconf.temperature,
        max_cost_usd=rconf.max_cost_usd,
        fallback_on=None if fallback_on is None else frozenset(fallback_on),
    )


@dataclass(slots=True)
class Generation:
    """What the Router serves from: a config, its provider runtimes and compiled routes."""

    config: Config
    providers: dict[str, Provider]
    routes: dict[str, Route]
    rt: Runtime
    # Calls (and open streams) running on this generation.
    active: int = 0
    # Replaced by a reload; its providers not shared with newer generations close when idle.
    retired: bool = False
