"""Observers: how metrics, traces and apps see every attempt and every call.

An observer receives finished facts (an :class:`~router.types.Attempt`, a
:class:`CallRecord`), never live state, so it cannot slow down or break a call
beyond the time it takes to record them. Register with
``Router(config, observers=[...])`` or ``router.add_observer(...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from router.errors import RouterError
from router.types import Attempt, Completion, Message


@dataclass(slots=True, frozen=True)
class CallRecord:
    """One finished call (``complete()`` or a stream), as observers see it."""

    route: str
    stream: bool
    result: Completion | None  # None when the call failed
    error: RouterError | None  # None when the call succeeded
    attempts: list[Attempt]
    deadline_s: float
    max_tokens: int
    latency_s: float
    started_at: float  # wall-clock (epoch) seconds when the call started
    messages: Sequence[Message] = ()  # the rendered prompt (for opt-in content capture)


class Observer(Protocol):
    """Receives every attempt and every call of a Router."""

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        """An attempt was recorded (ok, error or skipped)."""
        ...

    def on_call(self, record: CallRecord) -> None:
        """A call ended."""
        ...
