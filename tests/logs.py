"""Capture the router's log events in a test, as dicts (``{"event": ..., "log_level": ...,
"logger": ..., **fields}``), whatever the process's logging configuration."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from router.logger import fields_of


class _Collect(logging.Handler):
    def __init__(self, into: list[dict[str, Any]]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(
            {"log_level": record.levelname.lower(), "logger": record.name, **fields_of(record)}
        )


@contextmanager
def capture_logs(level: int = logging.DEBUG) -> Iterator[list[dict[str, Any]]]:
    """Every event the router logs at ``level`` or above inside the block."""
    events: list[dict[str, Any]] = []
    logger = logging.getLogger("router")
    handler, saved = _Collect(events), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
