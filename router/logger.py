"""The router's loggers: stdlib ``logging`` under ``router``, structured and redacted.

The library logs the Python way: through the standard logger hierarchy, and it
prints nothing unless the app configures logging (a ``NullHandler`` on the
``router`` logger keeps Python's last-resort handler from writing warnings to
stderr). An app's ``logging`` configuration, uvicorn's, or structlog's stdlib
integration all apply as they do to any library. The loggers:

- ``router.calls``: ``llm_attempt`` (info; warning when the attempt failed) and
  ``llm_call`` (info when ok, warning when failed);
- ``router.providers``: ``cooldown_started`` (warning), ``cooldown_ended`` (info);
- ``router.money``: budgets, usage billing and the spend ledger;
- ``router.config``: loading and reloading providers.yaml;
- ``router``: the router's own life cycle (closing with calls still running).

Each event is one ``LogRecord``: its message reads ``event key=value ...``, and
the event name and every field are also attributes of the record
(``record.event``, ``record.provider``, ...; :func:`fields_of` returns them as a
dict). Every field and the message are redacted (router.redact) *before* the
record exists, so no handler, filter or formatter of the app ever sees a key.
An event whose level is disabled is not built at all (``isEnabledFor`` first).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from router.redact import redact

__all__ = ["LOGGER_NAMES", "Log", "fields_of", "get_logger", "scrub"]

# Every logger the router writes to (docs/operations.md, "Logging").
LOGGER_NAMES = ("router", "router.calls", "router.providers", "router.money", "router.config")

logging.getLogger("router").addHandler(logging.NullHandler())

# The attributes every LogRecord has: an event field with one of these names is
# stored with a trailing underscore instead (``extra`` may not overwrite them).
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def scrub(value: Any) -> Any:
    """``value`` with every string in it redacted (containers walked, exceptions as
    ``Class: message``, other objects as their ``str``); numbers, booleans and None
    unchanged."""
    kind = type(value)
    if kind is str:
        return redact(value)
    if value is None or kind in _AS_IS:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if isinstance(value, bool | int | float):
        return value
    return redact(str(value))


_AS_IS = frozenset({bool, int, float})
# A value shown bare in the message; anything else (spaces, quotes, =, empty) is quoted.
_BARE = re.compile(r"[^\s\"'=]+")


class Log:
    """One of the router's loggers: ``log.warning("event", provider=..., ...)``."""

    __slots__ = ("logger",)

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def __repr__(self) -> str:
        return f"<Log {self.logger.name}>"

    def enabled(self, level: int) -> bool:
        """Would an event at ``level`` reach a handler? (Check before building one.)"""
        return self.logger.isEnabledFor(level)

    def log(self, level: int, event: str, **fields: Any) -> None:
        """Emit ``event`` at ``level`` with ``fields`` (None values are left out of the
        message but kept as attributes), all redacted first."""
        if self.logger.isEnabledFor(level):
            self.emit(level, event, fields, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.emit(logging.DEBUG, event, fields, stacklevel=3)

    def info(self, event: str, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self.emit(logging.INFO, event, fields, stacklevel=3)

    def warning(self, event: str, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.WARNING):
            self.emit(logging.WARNING, event, fields, stacklevel=3)

    def error(self, event: str, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.ERROR):
            self.emit(logging.ERROR, event, fields, stacklevel=3)

    def emit(self, level: int, event: str, fields: Mapping[str, Any], stacklevel: int = 2) -> None:
        """Emit without checking the level: for a caller that checked :meth:`enabled`
        before building ``fields``."""
        extra: dict[str, Any] = {"event": event}
        shown = [event]
        for key, value in fields.items():
            clean = scrub(value)
            extra[f"{key}_" if key in _RECORD_ATTRS else key] = clean
            if clean is None:
                continue
            text = clean if type(clean) is str else str(clean)
            shown.append(f"{key}={text}" if _BARE.fullmatch(text) else f"{key}={text!r}")
        # The record names the line that logged, not this module.
        self.logger.log(level, " ".join(shown), extra=extra, stacklevel=stacklevel)


def get_logger(name: str = "router") -> Log:
    """The router's logger ``name`` (one of :data:`LOGGER_NAMES`)."""
    return Log(name)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """An event's name and fields from its record (``{"event": ..., "provider": ...}``);
    for a record the router did not make, whatever ``extra`` attributes it has."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
