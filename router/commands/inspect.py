"""Commands that look without calling a model: ``render`` (a dry run), ``routes``,
``spend`` and ``health`` (free model-listing requests only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from router.call import request_params
from router.config import HedgeConfig
from router.conversation import shown
from router.errors import RouterError
from router.money import dollars, usd
from router.plan import Plan, StepFit
from router.pool import PoolPicker
from router.providers import build_adapter
from router.types import Message

from .common import CommandError, Exit, Output, config_path, load_plan, positive_float
from .vars import add_var_argument, parse_vars

__all__ = [
    "add_health_arguments",
    "add_render_arguments",
    "health",
    "render",
    "routes",
    "spend",
]


def disabled_reason(plan: Plan, provider: str) -> str | None:
    """Why ``provider`` is left out of every chain here (its key is unset), or None."""
    var = plan.disabled_because.get(provider)
    if var is None:
        return None
    if plan.config.providers[provider].optional:
        return f"{var} not set (optional: skipped)"
    return f"{var} not set (required: complete and stream need it, or --no-env)"


def _steps(plan: Plan, route: str) -> list[tuple[str, str, str | None]]:
    """Every step of ``route`` as written (a pool's members each): provider, model, why
    it is disabled (or None)."""
    out = []
    for s in plan.config.routes[route].fallback:
        uses = [s.model] if s.pool is None else [m.use for m in plan.config.pools[s.pool].members]
        for use in uses:
            provider, _, model = use.partition("/")
            out.append((provider, model, disabled_reason(plan, provider)))
    return out


def _route_steps(plan: Plan, route: str) -> list[dict[str, Any]]:
    """The steps of ``route`` as written, for ``router routes``: provider/model steps,
    and pool steps with their members (each enabled or why not) and current order."""
    out: list[dict[str, Any]] = []
    enabled_pools = {s.pool: s for s in plan.route(route).steps if s.pool is not None}
    for s in plan.config.routes[route].fallback:
        if s.pool is None:
            why = disabled_reason(plan, s.provider_name)
            out.append(
                {
                    "provider": s.provider_name,
                    "model": s.model_name,
                    "enabled": why is None,
                    "disabled": why,
                }
            )
            continue
        pool = plan.config.pools[s.pool]
        members = []
        for m in pool.members:
            provider, _, model = m.use.partition("/")
            why = disabled_reason(plan, provider)
            members.append(
                {
                    "provider": provider,
                    "model": model,
                    "weight": m.weight,
                    "enabled": why is None,
                    "disabled": why,
                }
            )
        live = enabled_pools.get(s.pool)
        order: list[str] = []
        if live is not None:
            picker = PoolPicker(s.pool, live.strategy, [m.weight for m in live.members])
            order = [
                f"{live.members[i].provider}/{live.members[i].model}" for i in picker.preview()
            ]
        out.append({"pool": s.pool, "strategy": pool.strategy, "members": members, "order": order})
    return out


def pool_doc(plan: Plan, route: str) -> list[dict[str, Any] | None]:
    """Per enabled step of ``route``: None, or its pool (name, strategy, members with
    their weights, and the order a freshly started router's next call tries them)."""
    docs: list[dict[str, Any] | None] = []
    for s in plan.route(route).steps:
        if s.pool is None:
            docs.append(None)
            continue
        picker = PoolPicker(s.pool, s.strategy, [m.weight for m in s.members])
        docs.append(
            {
                "pool": s.pool,
                "strategy": s.strategy,
                "members": [
                    {"provider": m.provider, "model": m.model, "weight": m.weight}
                    for m in s.members
                ],
                "order": [
                    f"{s.members[i].provider}/{s.members[i].model}" for i in picker.preview()
                ],
            }
        )
    return docs


def _pool_text(pool: dict[str, Any] | None, indent: str) -> str:
    if pool is None:
        return ""
    members = ", ".join(
        f"{m['provider']}/{m['model']} (weight {m['weight']})" for m in pool["members"]
    )
    return (
        f"{indent}pool {pool['pool']} ({pool['strategy']}): {members}\n"
        f"{indent}order now: {' > '.join(pool['order'])}\n"
    )


# ------------------------------------------------------------------ render


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("route", help="the route to render (see `router routes`)")
    add_var_argument(parser)


def render(args: argparse.Namespace, output: Output) -> int:
    """Render a route's messages and show its chain with prices; sends nothing and
    needs no key (no router, no transport, no ledger)."""
    plan = load_plan(args, keys=False)
    route = plan.route(args.route)
    variables = parse_vars(args.var, route.vars, sys.stdin)
    messages = plan.render(args.route, variables)
    chain = plan.chain(args.route)
    steps = route.steps  # the same steps as the chain, with their server tools
    fits = plan.fit(args.route, variables)
    pools = pool_doc(plan, args.route)
    hedges = [_hedge(s.hedge) for s in route.steps]
    disabled = [(p, m, why) for p, m, why in _steps(plan, args.route) if why is not None]
    requests = _requests(plan, args.route, messages)
    if output.json:
        output.document(
            {
                "route": args.route,
                "sent": False,
                "messages": [
                    {"role": m.role, "content": m.content, "cache": m.cache} for m in messages
                ],
                "chain": [
                    {
                        "provider": s.provider,
                        "model": s.model,
                        "price": {
                            "input_per_mtok": usd(s.price.input_per_mtok),
                            "output_per_mtok": usd(s.price.output_per_mtok),
                        },
                        "retries": s.retries,
                        "attempt_cap_s": s.attempt_cap_s,
                        "context_window": f.context_window,
                        "input_tokens_estimate": f.input_tokens,
                        "max_tokens": f.max_tokens,
                        "fits": f.fits,
                        "server_tools": list(p.server_tools),
                        "max_tool_calls": p.max_tool_calls,
                        "tool_calls_reserve_usd": usd(p.tool_calls_reserve_usd),
                        "request": request,
                        "pool": pool,
                        "hedge": hedge,
                    }
                    for s, f, p, request, pool, hedge in zip(
                        chain, fits, steps, requests, pools, hedges, strict=True
                    )
                ],
                "disabled": [{"provider": p, "model": m, "reason": why} for p, m, why in disabled],
            }
        )
        return Exit.OK
    for m in messages:
        mark = " (prompt cache breakpoint)" if m.cache else ""
        output.text(f"--- {m.role}{mark} ---\n{shown(m.content).rstrip()}\n")
    if requests:
        output.text("--- requests (dry run: what each step would send) ---\n")
        for i, (s, request) in enumerate(zip(chain, requests, strict=True), 1):
            output.text(f"  {i}. {s.provider}/{s.model}: {_request_text(request)}\n")
    output.text("--- chain (dry run: nothing sent) ---\n")
    for i, (s, f, p, pool, hedge) in enumerate(
        zip(chain, fits, steps, pools, hedges, strict=True), 1
    ):
        output.text(
            f"  {i}. {s.provider}/{s.model}: ${usd(s.price.input_per_mtok)}/M in,"
            f" ${usd(s.price.output_per_mtok)}/M out, retries={s.retries}, {_window(f)},"
            f" attempt cap {s.attempt_cap_s:g}s\n"
        )
        if p.server_tools:
            output.text(
                f"     server tools: {', '.join(p.server_tools)} (max_tool_calls"
                f" {p.max_tool_calls}, reserved ${usd(p.tool_calls_reserve_usd)})\n"
            )
        output.text(_pool_text(pool, "     "))
        if hedge is not None:
            output.text(f"     hedge: {_hedge_text(hedge)}\n")
    if not chain:
        output.text("  (no step is enabled in this environment)\n")
    if disabled:
        output.text("--- disabled here (no key) ---\n")
        for provider, model, why in disabled:
            output.text(f"  {provider}/{model}: {why}\n")
    return Exit.OK


# Body fields that carry the conversation (or the model), not a setting.
_CONVERSATION = frozenset(
    {"model", "messages", "system", "contents", "systemInstruction", "input", "instructions"}
)
# Stands for the key while the request is built (no key is read or shown).
_KEY = "<key>"


def _requests(plan: Plan, route: str, messages: list[Message]) -> list[dict[str, Any]]:
    """What each enabled step of ``route`` would send: method and URL (never a query
    string), the header that carries the key, and the body's settings (every field
    but the conversation), as the step's adapter builds them."""
    r = plan.route(route)
    out = []
    for step in r.steps:
        p = plan.providers[step.provider]
        keyed = p.key is not None or p.key_env is not None
        adapter = build_adapter(p.kind, p.name, _KEY if keyed else None, p.headers, p.azure)
        params, _ = request_params(step, r.max_tokens, r.temperature, None)
        key_header = next((h for h, v in adapter.auth_headers().items() if _KEY in v), None)
        doc: dict[str, Any] = {"key_header": key_header, "key_env": p.key_env}
        try:
            req = adapter.chat_request(step.model, messages, params)
        except RouterError as exc:
            out.append({**doc, "error": str(exc)})
            continue
        # base_url takes no query: one here is the adapter's (Azure's api-version).
        path = req.path.lstrip("/")
        settings = {k: v for k, v in (req.json or {}).items() if k not in _CONVERSATION}
        out.append(
            {**doc, "method": req.method, "url": f"{p.base_url}/{path}", "settings": settings}
        )
    return out


def _request_text(request: dict[str, Any]) -> str:
    if "error" in request:
        return f"cannot be built: {request['error']}"
    line = f"{request['method']} {request['url']}"
    if request["key_header"]:
        line += f", key in header {request['key_header']} (from {request['key_env']})"
    settings = request["settings"]
    if settings:
        line += "; " + ", ".join(
            f"{k}={json.dumps(v, sort_keys=True)}" for k, v in settings.items()
        )
    return line


def _window(f: StepFit) -> str:
    """Whether a dry-run step's input and output fit its model's context window."""
    need = f"~{f.input_tokens} tokens in (estimate) + {f.max_tokens} out"
    if f.context_window is None:
        return f"{need} (context window unknown: not checked)"
    if f.fits:
        return f"{need} fit its context window of {f.context_window}"
    return f"{need} do NOT fit its context window of {f.context_window}: a call skips this step"


def _hedge(h: HedgeConfig | None) -> dict[str, Any] | None:
    return None if h is None else h.model_dump()


def _hedge_text(h: dict[str, Any]) -> str:
    after = (
        f"after {h['after_s']:g}s"
        if h["after_s"] is not None
        else f"after {h['after']} of its latency ({h['min_s']:g}s-{h['max_s']:g}s)"
    )
    return f"{after}, at most {h['max_hedges']} per call"


# ------------------------------------------------------------------ routes


def routes(args: argparse.Namespace, output: Output) -> int:
    """List every route: its variables (with types) and its chain, step by step."""
    plan = load_plan(args, keys=False)
    docs = []
    for name, r in plan.routes.items():
        docs.append(
            {
                "name": name,
                # Declared {name: type}; None when the route declares none.
                "vars": dict(r.vars) if r.vars is not None else None,
                # The names a call passes: the declared ones, else those the templates use.
                "variables": sorted(r.templates.variables),
                "deadline_s": r.deadline_s,
                "max_tokens": r.max_tokens,
                "temperature": r.temperature,
                "max_cost_usd": usd(r.max_cost_usd) if r.max_cost_usd is not None else None,
                "steps": _route_steps(plan, name),
                "hedge": _hedge(r.source.hedge),
            }
        )
    if output.json:
        output.document(docs)
        return Exit.OK
    for doc in docs:
        output.text(_route_text(doc))
    return Exit.OK


def _route_text(doc: dict[str, Any]) -> str:
    lines = [doc["name"]]
    if doc["vars"] is not None:
        declared = ", ".join(f"{k}: {t}" for k, t in doc["vars"].items()) or "none"
        lines.append(f"  vars:   {declared}")
    else:
        used = ", ".join(doc["variables"]) or "none"
        lines.append(f"  vars:   not declared (the templates use: {used})")
    limits = f"deadline {doc['deadline_s']:g}s, max_tokens {doc['max_tokens']}"
    if doc["temperature"] is not None:
        limits += f", temperature {doc['temperature']:g}"
    if doc["max_cost_usd"] is not None:
        limits += f", max cost ${doc['max_cost_usd']}"
    lines.append(f"  limits: {limits}")
    lines.append("  chain:")
    for i, step in enumerate(doc["steps"], 1):
        if "pool" in step:
            lines.append(f"    {i}. pool {step['pool']} ({step['strategy']})")
            for m in step["members"]:
                line = f"         {m['provider']}/{m['model']} (weight {m['weight']})"
                if m["disabled"] is not None:
                    line += f"  [disabled: {m['disabled']}]"
                lines.append(line)
            if step["order"]:
                lines.append(f"         order now: {' > '.join(step['order'])}")
            continue
        line = f"    {i}. {step['provider']}/{step['model']}"
        if step["disabled"] is not None:
            line += f"  [disabled: {step['disabled']}]"
        lines.append(line)
    if doc["hedge"] is not None:
        lines.append(f"  hedge:  {_hedge_text(doc['hedge'])}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ spend


def add_spend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import-sqlite",
        metavar="PATH",
        help="settings.state is redis: add this SQLite ledger's current-period totals to"
        " Redis, once per file (the move from one process to several)",
    )


def spend(args: argparse.Namespace, output: Output) -> int:
    """Per-budget spend for the current period, from the ledger (read-only: works
    beside a running router, which holds the ledger for writing) or, with
    settings.state in Redis, from Redis. Needs no key."""
    plan = load_plan(args, keys=False)
    source = getattr(args, "import_sqlite", None)
    if source is not None:
        return _import_sqlite(plan, source, output)
    if plan.ledger is None:
        # No budgets: no ledger is kept, so nothing is opened (or created).
        if output.json:
            output.document([])
        else:
            output.text(
                f"no budgets in {config_path(args)}: no spend ledger is kept (each call's"
                " cost is in its result and in the metrics)\n"
            )
        return Exit.OK
    rows = asyncio.run(_spend_rows(plan))
    if output.json:
        output.document(
            [
                {
                    "budget": s.name,
                    "period": s.period,
                    "period_start": s.period_start.isoformat() if s.period_start else None,
                    "limit_usd": usd(s.limit_usd),
                    "spent_usd": usd(s.spent_usd),
                    "reserved_usd": usd(s.reserved_usd),
                    "remaining_usd": usd(s.remaining_usd),
                    "provider": s.provider,
                    "route": s.route,
                }
                for s in rows
            ]
        )
        return Exit.OK
    header = ("budget", "period", "limit", "spent", "reserved", "remaining")
    table = [header] + [
        (
            s.name,
            s.period,
            dollars(s.limit_usd),
            dollars(s.spent_usd),
            dollars(s.reserved_usd),
            dollars(s.remaining_usd),
        )
        for s in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        left = [f"{row[i]:<{widths[i]}}" for i in range(2)]
        right = [f"{row[i]:>{widths[i]}}" for i in range(2, len(header))]
        output.text("  ".join(left + right) + "\n")
    return Exit.OK


def _import_sqlite(plan: Plan, source: str, output: Output) -> int:
    """``spend --import-sqlite PATH``: add the file's period totals to Redis, once."""
    from pathlib import Path

    if plan.state is None:
        raise CommandError(
            "--import-sqlite adds a SQLite ledger to the shared state: set"
            " settings.state.backend: redis first"
        )
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise CommandError(f"--import-sqlite: no such file {path}")
    amounts = asyncio.run(_import(plan, path))
    if amounts is None:
        raise CommandError(
            f"{path} was already imported into this Redis (key_prefix"
            f" {plan.state.settings.key_prefix!r}); nothing was added"
        )
    if output.json:
        output.document({"imported": str(path), "budgets": {n: usd(a) for n, a in amounts.items()}})
    else:
        output.text(f"imported {path}:\n")
        for name, amount in amounts.items():
            output.text(f"  {name}: {dollars(amount)}\n")
    return Exit.OK


async def _import(plan: Plan, path: Any) -> Any:
    from router.state_redis import RedisState

    state = RedisState(plan)
    await state.connect()
    try:
        return await state.import_sqlite(path)
    finally:
        await state.aclose()


async def _spend_rows(plan: Plan) -> list[Any]:
    from router.budget import BudgetBook
    from router.ledger import open_ledger

    if plan.state is not None:
        from router.state_redis import RedisState

        state = RedisState(plan)
        await state.connect()
        try:
            return await state.read_spend()
        finally:
            await state.aclose()

    book = BudgetBook(plan.budgets, open_ledger(plan.ledger, read_only=True))
    await book.start()
    try:
        return book.spend()
    finally:
        await book.aclose()


# ------------------------------------------------------------------ health


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="cap on each provider's check (they run at once; default 10)",
    )


def health(args: argparse.Namespace, output: Output) -> int:
    """Check each enabled provider with its free model-listing endpoint (never a
    completion). Exit 1 when any check fails."""
    return asyncio.run(_health(args, output))


async def _health(args: argparse.Namespace, output: Output) -> int:
    from router.router import Router

    async with Router(load_plan(args, keys=True)) as router:
        reports = await router.health(timeout_s=args.timeout, force=True)
    bad = sum(not r.ok for r in reports)
    if output.json:
        output.document(
            [
                {
                    "provider": r.provider,
                    "ok": r.ok,
                    "reachable": r.reachable,
                    "status": r.status,
                    "latency_ms": round(r.latency_s * 1000, 3),
                    "url": r.url,
                    "missing_models": list(r.missing_models),
                    "error": r.error,
                }
                for r in reports
            ]
        )
    else:
        for r in reports:
            line = f"  {r.provider:<14} {'ok' if r.ok else 'FAIL':<5} {r.latency_s * 1000:7.1f} ms"
            if r.url:
                line += f"  {r.url}"
            if r.missing_models:
                line += f"  missing: {', '.join(r.missing_models)}"
            if r.error:
                line += f"  {r.error}"
            output.text(line + "\n")
    return Exit.FAILED if bad else Exit.OK
