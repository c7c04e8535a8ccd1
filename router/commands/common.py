"""What every command shares: exit codes, usage errors, where output goes, the config.

Results go to stdout; errors, warnings and log lines go to stderr. With ``--json``
a result is JSON on stdout and an error is one JSON line on stderr (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TextIO

from router.money import usd

if TYPE_CHECKING:
    from router.plan import Plan

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "CommandError",
    "Exit",
    "Interrupted",
    "Output",
    "UsageError",
    "WouldOverwriteError",
    "config_path",
    "dumps",
    "load_plan",
    "positive_float",
]

CONFIG_ENV = "ROUTER_CONFIG"
DEFAULT_CONFIG = "providers.yaml"


class Exit(IntEnum):
    """The exit codes of every command (a stable table: docs/cli.md)."""

    OK = 0
    # The command ran and its answer is "no": a call failed (every step failed, the
    # deadline was spent, a budget refused, the stream broke), a provider is
    # unhealthy, the config is invalid (validate), init would overwrite a file.
    FAILED = 1
    USAGE = 2  # bad arguments: unknown option, malformed --var, unreadable @FILE
    CONFIG = 3  # cannot start: providers.yaml invalid or missing, a key unset, ledger unusable
    REQUEST = 4  # nothing sent: unknown route, variables that do not fit its templates
    INTERRUPTED = 130  # Ctrl-C


class CommandError(Exception):
    """A command refused or failed outside the router's own errors; ``code`` is its exit code."""

    code: Exit = Exit.FAILED

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class UsageError(CommandError):
    """The command line itself is wrong (exit 2)."""

    code = Exit.USAGE


class WouldOverwriteError(CommandError):
    """``init`` would overwrite existing files (exit 1); ``paths`` lists them."""

    def __init__(self, message: str, paths: list[str]) -> None:
        self.paths = paths
        super().__init__(message)


class Interrupted(CommandError):
    """Ctrl-C (exit 130)."""

    code = Exit.INTERRUPTED


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def _json_default(value: Any) -> Any:
    # Money is never a float in JSON: a string of its exact digits (router.money).
    if isinstance(value, Decimal):
        return usd(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(doc: Any, *, indent: int | None = None) -> str:
    """JSON text: ASCII, money as exact strings, one line unless ``indent``."""
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(doc, indent=indent, separators=separators, default=_json_default)


@dataclass(slots=True)
class Output:
    """Where a command writes: results to ``out``, errors and notes to ``err``."""

    out: TextIO
    err: TextIO
    json: bool = False

    def text(self, text: str) -> None:
        """Write result text to stdout (``text`` ends its own lines)."""
        self.out.write(text)

    def document(self, doc: Any) -> None:
        """Write one JSON document (the result of a ``--json`` command) to stdout."""
        self.out.write(dumps(doc, indent=2) + "\n")

    def event(self, doc: Any) -> None:
        """Write one NDJSON line to stdout and flush it (``stream --json``)."""
        self.out.write(dumps(doc) + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line for the human at the terminal, on stderr (never in JSON mode)."""
        if not self.json:
            self.err.write(text + "\n")


def config_path(args: argparse.Namespace) -> str:
    """The config file: ``--config``, else ``$ROUTER_CONFIG``, else ./providers.yaml."""
    explicit: str | None = getattr(args, "config", None)
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def load_plan(args: argparse.Namespace, *, keys: bool) -> Plan:
    """Load the config for a command, then log as its ``settings.log`` says (JSON lines
    under ``--json``, so that stderr stays machine-readable).

    Args:
        args: the parsed command line (``--config``, ``--no-env``, ``--json``).
        keys: whether the command sends requests (complete, stream, health). Such a
            command needs every non-optional provider's key unless ``--no-env``
            (which disables keyless providers, with a warning each). A command that
            sends nothing (render, routes, spend) never needs a key: providers
            without one are shown as disabled in its output, not logged.

    Raises:
        ConfigError: the file is missing or invalid, or (``keys``) a key is unset.
    """
    from router.logging import configure
    from router.plan import load_config

    path = config_path(args)
    if keys:
        plan = load_config(path, require_env=not args.no_env)
    else:
        with _dropped(_DISABLED_EVENT, "router.config"):
            plan = load_config(path, require_env=False)
    configure(plan.settings.log, format="json" if args.json else None)
    return plan


# The loader's event for a provider left out because its key variable is unset.
_DISABLED_EVENT = "provider_disabled"


class _DropEvent(logging.Filter):
    def __init__(self, event: str) -> None:
        super().__init__()
        self.event = event

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "event", None) != self.event


@contextmanager
def _dropped(event: str, logger: str) -> Iterator[None]:
    """Leave ``event`` out of ``logger``'s records while the block runs."""
    drop = _DropEvent(event)
    target = logging.getLogger(logger)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)
