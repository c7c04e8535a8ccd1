"""structlog setup for apps and the CLI, and the redaction processor.

The library never configures structlog on import. Apps (and the CLI) call
:func:`configure`; apps that configure structlog themselves should add
:class:`RedactSecrets` to their processor chain. The router's own events never
carry key values in the first place (errors are redacted when built); the
processor is the second line of defence for everything else that is logged.
"""

from __future__ import annotations

import logging as _stdlib_logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

from router.redact import redact

_LEVELS = {
    "debug": _stdlib_logging.DEBUG,
    "info": _stdlib_logging.INFO,
    "warning": _stdlib_logging.WARNING,
    "error": _stdlib_logging.ERROR,
}


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class RedactSecrets:
    """A structlog processor that removes key values and credential shapes from every field."""

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            if not isinstance(value, int | float | bool) and value is not None:
                event_dict[key] = _scrub(value)
        return event_dict


def configure(
    format: Literal["console", "json"] = "console",
    level: Literal["debug", "info", "warning", "error"] = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the router's events (call once, from the app or CLI)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactSecrets(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        # No caching: a later configure() (or structlog.testing.capture_logs()) must
        # reach loggers that already logged.
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    """The router's logger (resolved lazily, so an app's later configure() applies)."""
    return structlog.get_logger("router")
