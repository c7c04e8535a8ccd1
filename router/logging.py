"""Logging setup for apps and the CLI, the redaction processor, and the per-call log lines.

The router logs through stdlib ``logging`` (router.logger: the logger names, the
record layout) and configures nothing on import: an app that configures
``logging`` (or uvicorn, or structlog's stdlib integration) gets the router's
events like any library's; an app that configures nothing sees nothing.

:func:`configure` is the one-line setup for an app (and the CLI) that wants the
router's own console or JSON output: it takes ``settings.log`` from
providers.yaml (``configure(router.plan.settings.log)``), adds one handler to
the ``router`` logger and configures structlog for the app's own events, both
rendered alike and passed through :class:`RedactSecrets`. Apps with their own
structlog chain add :class:`RedactSecrets` to it.

:class:`LogEvents` is the observer on every Router's event channel
(router.observe) that writes ``llm_attempt`` and ``llm_call`` to
``router.calls``. An event whose level is disabled is not built at all.
"""

from __future__ import annotations

import logging as _stdlib_logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

from router.config import LogSettings
from router.errors import ProviderError, short_error
from router.logger import fields_of, get_logger, scrub
from router.money import usd
from router.observe import CallRecord
from router.types import Attempt

__all__ = ["LogEvents", "RedactSecrets", "configure"]

Format = Literal["console", "json"]
Level = Literal["debug", "info", "warning", "error"]

_LEVELS = {
    "debug": _stdlib_logging.DEBUG,
    "info": _stdlib_logging.INFO,
    "warning": _stdlib_logging.WARNING,
    "error": _stdlib_logging.ERROR,
}


class RedactSecrets:
    """A structlog processor that removes key values and credential shapes from every field."""

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            if not isinstance(value, int | float | bool) and value is not None:
                event_dict[key] = scrub(value)
        return event_dict


def _record_fields(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog pre-chain step for a stdlib record: the event's name and fields (not
    its rendered message) and the logger's name."""
    record = event_dict.get("_record")
    if isinstance(record, _stdlib_logging.LogRecord):
        event_dict.update(fields_of(record))
        event_dict["logger"] = record.name
    return event_dict


class _RouterHandler(_stdlib_logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` puts on the ``router`` logger (replaced by a later call)."""


def configure(
    settings: LogSettings | None = None,
    *,
    format: Format | None = None,
    level: Level | None = None,
    stream: TextIO | None = None,
) -> None:
    """Show the router's events (and the app's structlog events) as console or JSON lines.

    Args:
        settings: ``settings.log`` from providers.yaml (``router.plan.settings.log``);
            None: console at info.
        format, level: override the settings' ``format`` / ``level``.
        stream: where lines go (default: stderr).

    The ``router`` logger gets one handler (a second call replaces it, and a later
    call's level applies) and the level; records still propagate to the app's own
    handlers. structlog is configured for the app's events, at the same level.
    Both outputs pass through :class:`RedactSecrets`.
    """
    # Imported here: an app that never calls configure() never imports structlog
    # (about 0.1 s of import time).
    import structlog

    chosen = settings or LogSettings()
    fmt = format or chosen.format
    floor = _LEVELS[level or chosen.level]
    out = stream or sys.stderr
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    finish = [structlog.processors.format_exc_info, RedactSecrets(), renderer]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            *finish,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(floor),
        logger_factory=structlog.PrintLoggerFactory(out),
        # No caching: a later configure() (or structlog.testing.capture_logs()) must
        # reach loggers that already logged.
        cache_logger_on_first_use=False,
    )
    handler = _RouterHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                stamp,
                _record_fields,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    logger = _stdlib_logging.getLogger("router")
    for old in [h for h in logger.handlers if isinstance(h, _RouterHandler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(floor)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class LogEvents:
    """The router's per-call log lines, as an observer, on the ``router.calls`` logger:
    ``llm_attempt`` for every attempt (info; warning with the error's text when it
    failed) and ``llm_call`` for every call (info when ok, warning when failed)."""

    __slots__ = ("_log",)

    def __init__(self) -> None:
        self._log = get_logger("router.calls")

    def __repr__(self) -> str:
        return "<LogEvents>"

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        err = attempt.error
        level = _stdlib_logging.INFO if err is None else _stdlib_logging.WARNING
        if not self._log.enabled(level):
            return
        left = attempt.deadline_left_s
        fields = {
            "route": route,
            "provider": attempt.provider,
            "model": attempt.model,
            "outcome": attempt.outcome,
            "status": attempt.status,
            "error_type": err.kind if isinstance(err, ProviderError) else None,
            "error": None if err is None else short_error(err),
            "skip": attempt.skip.value if attempt.skip is not None else None,
            "reason": attempt.reason,
            "latency_ms": _ms(attempt.latency_s),
            "ttft_ms": None if attempt.ttft_s is None else _ms(attempt.ttft_s),
            "deadline_left_ms": None if left is None else _ms(left),
        }
        if attempt.hedged or attempt.won is not None:  # a hedge race (docs/latency.md)
            fields["hedged"] = attempt.hedged
            fields["won"] = attempt.won
            fields["cost_usd"] = usd(attempt.cost_usd)
        self._log.emit(level, "llm_attempt", fields)

    def on_call(self, record: CallRecord) -> None:
        result = record.result
        if result is not None:
            if not self._log.enabled(_stdlib_logging.INFO):
                return
            fields: dict[str, Any] = {
                "route": record.route,
                "outcome": "ok",
                "provider": result.provider,
                "model": result.model,
                "attempts": len(result.attempts),
                "latency_ms": _ms(result.latency_s),
                "input_tokens": result.usage.input_tokens,
                "output_tokens": result.usage.output_tokens,
                "cost_usd": usd(result.cost_usd),
            }
            self._log.emit(_stdlib_logging.INFO, "llm_call", fields)
            return
        if not self._log.enabled(_stdlib_logging.WARNING):
            return
        err = record.error
        fields = {
            "route": record.route,
            "outcome": "error",
            "error_type": type(err).__name__,
            "error": None if err is None else short_error(err),
            "attempts": len(record.attempts),
            "latency_ms": _ms(record.latency_s),
        }
        self._log.emit(_stdlib_logging.WARNING, "llm_call", fields)
