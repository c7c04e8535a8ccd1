"""``complete`` and ``stream``: run a route and print the answer, who answered, the
tokens, the exact cost and the attempt trail."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from router.transcript import load_messages
from router.types import Completion, Message

from . import report
from .common import Exit, Output, UsageError, load_plan, positive_float
from .vars import add_var_argument, parse_vars

__all__ = ["add_arguments", "run"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer of at least 1, got {text!r}")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("route", help="the route to run (see `router routes`)")
    add_var_argument(parser)
    parser.add_argument(
        "--deadline",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="whole-call deadline (default: the route's deadline_s)",
    )
    parser.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="output token cap (default: the route's max_tokens)",
    )
    parser.add_argument(
        "--temperature",
        type=_temperature,
        default=None,
        metavar="T",
        help="sampling temperature, 0-2 (default: the route's, else the provider's)",
    )
    parser.add_argument(
        "--messages",
        default=None,
        metavar="FILE",
        help="a conversation's history, as JSON (docs/conversations.md, 'Keeping a"
        " conversation'): it goes between the route's system and prompt templates",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="attempt trail with start offsets, time to first token and tokens",
    )


def run(args: argparse.Namespace, output: Output) -> int:
    """Run ``complete`` or ``stream``; a RouterError propagates (the caller reports it)."""
    return asyncio.run(_call(args, output))


async def _call(args: argparse.Namespace, output: Output) -> int:
    from router.router import Router

    plan = load_plan(args, keys=True)
    route = plan.route(args.route)
    variables = parse_vars(args.var, route.vars, sys.stdin)
    options: dict[str, Any] = {
        "deadline_s": args.deadline,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "messages": None if args.messages is None else _history(args.messages),
    }
    async with Router(plan) as router:
        if args.command == "complete":
            result = await router.complete(args.route, variables, **options)
            _print_completion(result, output, args.verbose)
            return Exit.OK
        printed = False
        try:
            async with router.stream(args.route, variables, **options) as stream:
                async for delta in stream:
                    printed = True
                    if output.json:
                        output.event({"event": "delta", "text": delta})
                    else:
                        output.text(delta)
                        output.out.flush()
        except BaseException:
            # The error goes to stderr: end the line of text printed so far.
            if printed and not output.json:
                output.text("\n")
                output.out.flush()
            raise
        done = stream.completion
        assert done is not None  # the stream ended normally
    if output.json:
        output.event({"event": "done", **report.completion_dict(done)})
        return Exit.OK
    ttft = done.attempts[-1].ttft_s
    first = f", first token after {ttft * 1000:.1f} ms" if ttft is not None else ""
    output.text(f"\n\n{report.summary(done)}{first}\nattempts:\n")
    output.text(report.trail(done.attempts, args.verbose))
    return Exit.OK


def _history(path: str) -> list[Message]:
    """The ``--messages`` file's conversation (a RequestError names a bad message)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--messages {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--messages {path}: cannot read: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"--messages {path}: not JSON: {exc}") from None
    return load_messages(data)


def _print_completion(c: Completion, output: Output, verbose: bool) -> None:
    if output.json:
        output.document(report.completion_dict(c))
        return
    output.text(c.text.rstrip("\n") + "\n\n")
    if c.output is not None:
        shown = json.dumps(report.output_json(c.output), indent=2, ensure_ascii=False)
        output.text(f"output (checked against the route's schema):\n{shown}\n\n")
    output.text(report.summary(c) + "\nattempts:\n")
    output.text(report.trail(c.attempts, verbose))
