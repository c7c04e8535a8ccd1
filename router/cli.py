"""``router`` / ``python -m router``: validate, schema, render, complete, health, spend."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TextIO

from router.errors import ProviderError, RouterError
from router.plan import Plan, StepFit, load_config
from router.types import Attempt, Completion


def _parse_vars(pairs: Sequence[str], declared: Mapping[str, str] | None) -> dict[str, Any]:
    """``k=v`` pairs; a value is JSON unless its declared type is ``str``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--var {pair!r}: expected NAME=VALUE")
        if declared is not None and declared.get(key) == "str":
            out[key] = raw
            continue
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _load(args: argparse.Namespace) -> Plan:
    from router.logging import configure

    plan = load_config(args.config, require_env=not args.no_env)
    configure(plan.settings.log)  # the file's settings.log from here on
    return plan


def _vars(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """The ``--var`` values for ``args.route``, typed by the route's declared vars."""
    route = plan.routes.get(args.route)
    return _parse_vars(args.var, route.vars if route else None)


def _money(value: Decimal) -> str:
    return f"${value:.6f}"


def _trail(attempts: Sequence[Attempt], out: TextIO, verbose: bool = False) -> None:
    """One line per attempt; ``verbose`` adds when it started, time to first token, tokens."""
    for i, a in enumerate(attempts, 1):
        what = a.reason or ""
        if isinstance(a.error, ProviderError):
            what = f"{a.error.kind}: {a.error.detail}"
        elif a.error is not None:
            what = str(a.error)
        status = a.status if a.status is not None else "-"
        step = f"{a.provider}/{a.model}"
        line = f"  {i}. {step:<32} {a.outcome:<7} status={status:<4}"
        line += f" {a.latency_s * 1000:8.1f} ms"
        if verbose:
            line += f"  at +{a.start_s * 1000:.1f} ms"
            if a.ttft_s is not None:
                line += f", first token {a.ttft_s * 1000:.1f} ms"
            if a.usage is not None:
                line += f", {a.usage.input_tokens} in / {a.usage.output_tokens} out"
        if a.outcome == "ok":
            line += f"  {_money(a.cost_usd)}"
        out.write(line + (f"  {what}" if what else "") + "\n")


def _summary(c: Completion) -> str:
    est = " (estimated)" if c.usage.estimated else ""
    return (
        f"answered by {c.provider}/{c.model} in {c.latency_s * 1000:.1f} ms: "
        f"{c.usage.input_tokens} in / {c.usage.output_tokens} out tokens{est}, "
        f"cost {_money(c.cost_usd)}"
    )


def _print_completion(c: Completion, as_json: bool, out: TextIO, verbose: bool) -> None:
    if as_json:
        doc = {
            "text": c.text,
            "route": c.route,
            "provider": c.provider,
            "model": c.model,
            "usage": {
                "input_tokens": c.usage.input_tokens,
                "output_tokens": c.usage.output_tokens,
                "cached_input_tokens": c.usage.cached_input_tokens,
                "cache_write_tokens": c.usage.cache_write_tokens,
                "reasoning_tokens": c.usage.reasoning_tokens,
                "estimated": c.usage.estimated,
            },
            "cost_usd": str(c.cost_usd),
            "finish_reason": c.finish_reason,
            "latency_s": round(c.latency_s, 6),
            "attempts": [
                {
                    "provider": a.provider,
                    "model": a.model,
                    "outcome": a.outcome,
                    "status": a.status,
                    "error": str(a.error) if a.error else None,
                    "reason": a.reason,
                    "latency_s": round(a.latency_s, 6),
                    "cost_usd": str(a.cost_usd),
                }
                for a in c.attempts
            ],
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return
    out.write(c.text.rstrip("\n") + "\n\n")
    out.write(_summary(c) + "\nattempts:\n")
    _trail(c.attempts, out, verbose)


async def _call(args: argparse.Namespace, out: TextIO) -> int:
    """``complete`` and ``stream``: run the route and print the answer (a stream's as it
    arrives), then who answered, tokens, cost and the attempts; on a RouterError, the
    error and the attempts made."""
    from router.router import Router

    plan = _load(args)
    variables = _vars(args, plan)
    streaming = args.command == "stream"
    async with Router(plan) as router:
        try:
            if streaming:
                async with router.stream(args.route, variables, deadline_s=args.deadline) as s:
                    async for delta in s:
                        out.write(delta)
                        out.flush()
                result = s.completion
                assert result is not None  # the stream ended normally
            else:
                result = await router.complete(args.route, variables, deadline_s=args.deadline)
        except RouterError as exc:
            # A stream's error follows the text it printed: on a line of its own.
            out.write(("\n" if streaming else "") + f"error: {exc}\n")
            attempts = getattr(exc, "attempts", None)
            if attempts:
                out.write("attempts:\n")
                _trail(attempts, out, args.verbose)
            return 1
    if not streaming:
        _print_completion(result, args.json, out, args.verbose)
        return 0
    ttft = result.attempts[-1].ttft_s
    first = f", first token after {ttft * 1000:.1f} ms" if ttft is not None else ""
    out.write(f"\n\n{_summary(result)}{first}\nattempts:\n")
    _trail(result.attempts, out, args.verbose)
    return 0


def _render(args: argparse.Namespace, out: TextIO) -> int:
    # A dry run needs only the plan: no router, no transport, no ledger.
    plan = _load(args)
    variables = _vars(args, plan)
    messages = plan.render(args.route, variables)
    for m in messages:
        mark = " (prompt cache breakpoint)" if m.cache else ""
        out.write(f"--- {m.role}{mark} ---\n{m.content.rstrip()}\n")
    out.write("--- chain (dry run: nothing sent) ---\n")
    fits = plan.fit(args.route, variables)
    for i, (s, f) in enumerate(zip(plan.chain(args.route), fits, strict=True), 1):
        out.write(
            f"  {i}. {s.provider}/{s.model}: ${s.price.input_per_mtok}/M in,"
            f" ${s.price.output_per_mtok}/M out, retries={s.retries}, {_window(f)},"
            f" attempt cap {s.attempt_cap_s:g}s\n"
        )
    return 0


def _window(f: StepFit) -> str:
    """Whether a dry-run step's input and output fit its model's context window."""
    need = f"~{f.input_tokens} tokens in (estimate) + {f.max_tokens} out"
    if f.context_window is None:
        return f"{need} (context window unknown: not checked)"
    if f.fits:
        return f"{need} fit its context window of {f.context_window}"
    return f"{need} do NOT fit its context window of {f.context_window}: a call skips this step"


async def _health(args: argparse.Namespace, out: TextIO) -> int:
    from router.router import Router

    async with Router(_load(args)) as router:
        reports = await router.health()
    bad = 0
    for r in reports:
        status = "ok" if r.ok else "FAIL"
        bad += not r.ok
        line = f"  {r.provider:<14} {status:<5} {r.latency_s * 1000:7.1f} ms"
        if r.url:
            line += f"  {r.url}"
        if r.missing_models:
            line += f"  missing: {', '.join(r.missing_models)}"
        if r.error:
            line += f"  {r.error}"
        out.write(line + "\n")
    return 1 if bad else 0


async def _spend(args: argparse.Namespace, out: TextIO) -> int:
    from router.budget import BudgetBook
    from router.ledger import open_ledger

    # Read-only: works beside a running router (which holds the ledger for writing).
    plan = _load(args)
    if plan.ledger is None:
        # No budgets: no ledger is kept, so nothing is opened (or created).
        if args.json:
            out.write("[]\n")
        else:
            out.write(
                f"no budgets in {args.config}: no spend ledger is kept (each call's cost"
                " is in its result and in the metrics)\n"
            )
        return 0
    book = BudgetBook(plan.budgets, open_ledger(plan.ledger, read_only=True))
    await book.start()
    try:
        rows = book.spend()
    finally:
        await book.aclose()
    if args.json:
        out.write(
            json.dumps(
                [
                    {
                        "budget": s.name,
                        "period": s.period,
                        "period_start": s.period_start.isoformat() if s.period_start else None,
                        "limit_usd": str(s.limit_usd),
                        "spent_usd": str(s.spent_usd),
                        "reserved_usd": str(s.reserved_usd),
                        "remaining_usd": str(s.remaining_usd),
                        "provider": s.provider,
                        "route": s.route,
                    }
                    for s in rows
                ],
                indent=2,
            )
            + "\n"
        )
        return 0
    out.write(
        f"{'budget':<18}{'period':<8}{'limit':>12}{'spent':>14}{'reserved':>12}{'remaining':>14}\n"
    )
    for s in rows:
        out.write(
            f"{s.name:<18}{s.period:<8}{s.limit_usd:>12.2f}{s.spent_usd:>14.6f}"
            f"{s.reserved_usd:>12.6f}{s.remaining_usd:>14.6f}\n"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="router", description="Declarative LLM router")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", default="providers.yaml", help="path to providers.yaml")
        sp.add_argument(
            "--no-env",
            action="store_true",
            help="disable providers whose key env var is missing instead of failing",
        )

    sub.add_parser(
        "validate",
        help="validate a providers.yaml (see scripts/validate_config.py)",
        add_help=False,
    )
    sub.add_parser("schema", help="print the JSON Schema of providers.yaml")

    for name, help_text in (
        ("render", "render a route's messages and show its chain; sends nothing"),
        ("complete", "run a route and print the answer, cost and attempt trail"),
        ("stream", "run a route, printing tokens as they arrive, then cost and attempts"),
    ):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("route")
        sp.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
        with_config(sp)
        if name != "render":
            sp.add_argument("--deadline", type=float, default=None, metavar="SECONDS")
            sp.add_argument(
                "--verbose",
                action="store_true",
                help="attempt trail with start offsets, time to first token and tokens",
            )
        if name == "complete":
            sp.add_argument("--json", action="store_true")

    sp = sub.add_parser("health", help="check each provider with free listing endpoints")
    with_config(sp)
    sp = sub.add_parser("spend", help="per-budget spend for the current period")
    sp.add_argument("--json", action="store_true")
    with_config(sp)
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    if argv and argv[0] == "validate":
        from router.validate import main as validate_main

        return validate_main(argv[1:])
    args = _parser().parse_args(argv)
    from router.logging import configure

    configure(level="warning")  # while the config loads: its warnings are shown
    try:
        if args.command == "schema":
            from router.config import config_json_schema

            out.write(json.dumps(config_json_schema(), indent=2) + "\n")
            return 0
        if args.command == "render":
            return _render(args, out)
        if args.command in ("complete", "stream"):
            return asyncio.run(_call(args, out))
        if args.command == "health":
            return asyncio.run(_health(args, out))
        if args.command == "spend":
            return asyncio.run(_spend(args, out))
    except RouterError as exc:
        out.write(f"error: {exc}\n")
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
