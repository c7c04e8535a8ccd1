"""``router`` / ``python -m router``: the command line (docs/cli.md).

This module builds the parser and dispatches; the commands live in router/commands/.
Every command takes ``--config PATH`` (else ``$ROUTER_CONFIG``, else
./providers.yaml), ``--no-env`` and ``--json``, before or after its name. Results
go to stdout, errors to stderr, and the exit code follows one table (Exit).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

from router.commands import calls, check, init, inspect
from router.commands.common import (
    CONFIG_ENV,
    CommandError,
    Exit,
    Interrupted,
    Output,
    UsageError,
)
from router.commands.report import report_error
from router.errors import RouterError

__all__ = ["COMMANDS", "main"]

Run = Callable[[argparse.Namespace, Output], int]
AddArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: its name, one line of help, what runs it, its own arguments."""

    name: str
    help: str
    run: Run
    add_arguments: AddArguments | None = None


COMMANDS: tuple[Command, ...] = (
    Command(
        "init",
        "write a commented starter providers.yaml and its templates into DIR",
        init.init,
        init.add_arguments,
    ),
    Command(
        "validate",
        "check a providers.yaml: every problem with file:line:col (exit 1 when invalid)",
        check.validate,
        check.add_validate_arguments,
    ),
    Command("schema", "print the JSON Schema of providers.yaml", check.schema),
    Command(
        "routes",
        "list the routes: their variables (with types) and chains; needs no key",
        inspect.routes,
    ),
    Command(
        "render",
        "render a route's messages and show its chain; sends nothing, needs no key",
        inspect.render,
        inspect.add_render_arguments,
    ),
    Command(
        "complete",
        "run a route and print the answer, cost and attempt trail",
        calls.run,
        calls.add_arguments,
    ),
    Command(
        "stream",
        "run a route, printing text as it arrives, then cost and attempts",
        calls.run,
        calls.add_arguments,
    ),
    Command(
        "health",
        "check each provider with its free model-listing endpoint (never a completion)",
        inspect.health,
        inspect.add_health_arguments,
    ),
    Command(
        "spend",
        "per-budget spend for the current period, from the ledger (or Redis); needs no key",
        inspect.spend,
        inspect.add_spend_arguments,
    ),
)


class _ArgumentError(UsageError):
    """argparse refused the command line; ``usage`` is the usage text to show with it."""

    def __init__(self, message: str, usage: str) -> None:
        self.usage = usage
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised (and so reported like any other
    error, as JSON under ``--json``) instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(f"{self.prog}: {message}", self.format_usage())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("yaml-llm-router")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--config``, ``--no-env`` and ``--json``: on the main parser (before the command)
    and on every subcommand (after it). A subcommand's copy leaves the attribute
    unset unless given, so that one given before the command is kept."""
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"the providers.yaml to use (default: ${CONFIG_ENV}, else ./providers.yaml)",
        **({"default": None} if top else unset),
    )
    parser.add_argument(
        "--no-env",
        action="store_true",
        help=(
            "disable providers whose key variable is unset instead of failing "
            "(commands that send nothing never need a key)"
        ),
        **unset,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: JSON on stdout, errors as one JSON line on stderr",
        **unset,
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command, option and help text."""
    parser = _Parser(
        prog="router",
        description="Declarative LLM router: one providers.yaml, routes with fallback chains.",
        epilog=(
            "exit codes: 0 ok, 1 failed (call failed, provider unhealthy, config invalid for "
            "validate), 2 usage error, 3 config error, 4 bad request (unknown route, "
            "variables), 130 interrupted. Full reference: docs/cli.md"
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    _common_options(parser, top=True)
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to do (`router COMMAND --help` for its options)",
    )
    for command in COMMANDS:
        sp = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(sp)
        _common_options(sp, top=False)
    return parser


def _wants_json(argv: Sequence[str]) -> bool:
    """``--json`` anywhere among the options: errors in parsing are JSON too."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _start_logging(output: Output) -> None:
    from router.logging import configure

    # Log lines go to stderr (under --json as JSON too): warnings while the config
    # loads; then its settings.log (router.commands.common.load_plan).
    configure(format="json" if output.json else "console", level="warning")


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    output = Output(out or sys.stdout, err or sys.stderr, json=_wants_json(argv))
    try:
        args = build_parser().parse_args(argv)
    except _ArgumentError as exc:
        if not output.json:
            output.err.write(exc.usage)
        return report_error(exc, output)
    output.json = bool(args.json)
    _start_logging(output)
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        return command.run(args, output)
    except (RouterError, CommandError) as exc:
        return report_error(exc, output, verbose=bool(getattr(args, "verbose", False)))
    except KeyboardInterrupt:
        return report_error(Interrupted("interrupted"), output)
    except BrokenPipeError:
        # The reader went away (`router routes | head -1`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return Exit.FAILED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
