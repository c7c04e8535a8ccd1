"""structlog setup for apps and the CLI, the redaction processor, and the router's
own log lines.

The library never configures structlog on import. Apps (and the CLI) call
:func:`configure`; apps that configure structlog themselves should add
:class:`RedactSecrets` to their processor chain. The router's own events never
carry key values in the first place (errors are redacted when built); the
processor is the second line of defence for everything else that is logged.

:class:`LogEvents` is the observer on every Router's event channel
(router.observe) that writes ``llm_attempt`` and ``llm_call``. An event whose
level the structlog configuration filters out is not built at all.
"""

from __future__ import annotations

import logging as _stdlib_logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

from router.errors import ProviderError
from router.money import usd
from router.observe import CallRecord
from router.redact import redact
from router.types import Attempt

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


# The filtering loggers structlog makes (make_filtering_bound_logger returns one class
# per level) -> their level: what lets an event be dropped before it is built.
_FILTERING: dict[Any, int] = {
    structlog.make_filtering_bound_logger(level): level
    for level in (0, *_LEVELS.values(), _stdlib_logging.CRITICAL)
}


def enabled(level: int) -> bool:
    """Would an event at ``level`` be emitted under the current structlog configuration?

    Exact for structlog's filtering loggers (what :func:`configure` sets up, and
    structlog's default); True for any other wrapper class, which decides itself.
    """
    floor = _FILTERING.get(structlog.get_config()["wrapper_class"])
    return floor is None or level >= floor


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class LogEvents:
    """The router's log lines, as an observer: ``llm_attempt`` (info) for every
    attempt and ``llm_call`` (info when ok, warning when failed) for every call."""

    __slots__ = ("_log",)

    def __init__(self) -> None:
        self._log = get_logger()  # a lazy proxy: a later configure() still applies

    def __repr__(self) -> str:
        return "<LogEvents>"

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        if not enabled(_stdlib_logging.INFO):
            return
        err = attempt.error
        left = attempt.deadline_left_s
        self._log.info(
            "llm_attempt",
            route=route,
            provider=attempt.provider,
            model=attempt.model,
            outcome=attempt.outcome,
            status=attempt.status,
            error_type=err.kind if isinstance(err, ProviderError) else None,
            skip=attempt.skip.value if attempt.skip is not None else None,
            reason=attempt.reason,
            latency_ms=_ms(attempt.latency_s),
            ttft_ms=None if attempt.ttft_s is None else _ms(attempt.ttft_s),
            deadline_left_ms=None if left is None else _ms(left),
        )

    def on_call(self, record: CallRecord) -> None:
        result = record.result
        if result is not None:
            if not enabled(_stdlib_logging.INFO):
                return
            self._log.info(
                "llm_call",
                route=record.route,
                outcome="ok",
                provider=result.provider,
                model=result.model,
                attempts=len(result.attempts),
                latency_ms=_ms(result.latency_s),
                input_tokens=result.usage.input_tokens,
                output_tokens=result.usage.output_tokens,
                cost_usd=usd(result.cost_usd),
            )
            return
        if not enabled(_stdlib_logging.WARNING):
            return
        self._log.warning(
            "llm_call",
            route=record.route,
            outcome="error",
            error_type=type(record.error).__name__,
            attempts=len(record.attempts),
            latency_ms=_ms(record.latency_s),
        )
