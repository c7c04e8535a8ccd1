"""The event channel: how logging, metrics, traces and apps see every attempt and call.

A Router has one :class:`Events` channel. Every attempt (ok, error or skipped)
and every finished call goes, in order, to each :class:`Observer` on it: the
router's own log lines (router.logging), the ``on_attempt``/``on_call`` hooks
given to the Router (:class:`Hooks`), its always-on counters
(router.metrics.stats), then the observers the app added (Prometheus,
OpenTelemetry, its own). An observer receives finished facts (an
:class:`~router.types.Attempt`, a :class:`CallRecord`), never live state, so it
cannot slow down or break a call beyond the time it takes to record them.
Register with ``Router(config, observers=[...])`` or ``router.add_observer(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from router.errors import RouterError
from router.types import Attempt, Completion, Message

__all__ = ["AttemptHook", "CallHook", "CallRecord", "Events", "Hooks", "Observer"]

# Router(on_attempt=...): called with the route's name and every attempt.
AttemptHook = Callable[[str, Attempt], None]
# Router(on_call=...): called with the route's name and the result or the error of every call.
CallHook = Callable[[str, Completion | None, RouterError | None], None]


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


class Hooks:
    """The Router's ``on_attempt`` / ``on_call`` conveniences, as one observer."""

    __slots__ = ("_on_attempt", "_on_call")

    def __init__(self, on_attempt: AttemptHook | None, on_call: CallHook | None) -> None:
        self._on_attempt = on_attempt
        self._on_call = on_call

    def __repr__(self) -> str:
        return f"<Hooks on_attempt={self._on_attempt!r} on_call={self._on_call!r}>"

    @property
    def empty(self) -> bool:
        """No hook given: telling it anything does nothing."""
        return self._on_attempt is None and self._on_call is None

    def on_attempt(self, route: str, attempt: Attempt) -> None:
        if self._on_attempt is not None:
            self._on_attempt(route, attempt)

    def on_call(self, record: CallRecord) -> None:
        if self._on_call is not None:
            self._on_call(record.route, record.result, record.error)


class Events:
    """One ordered list of observers; every attempt and every call goes to each of them.

    Their ``on_attempt`` and ``on_call`` methods are looked up once, when the list
    changes, not per event; :class:`Hooks` without a hook is told nothing (it would
    do nothing).
    """

    __slots__ = ("_observers", "_on_attempt", "_on_call")

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: list[Observer] = list(observers)
        self._on_attempt: tuple[Callable[[str, Attempt], None], ...] = ()
        self._on_call: tuple[Callable[[CallRecord], None], ...] = ()
        self._bind()

    def __repr__(self) -> str:
        return f"<Events observers={len(self._observers)}>"

    def _bind(self) -> None:
        told = [o for o in self._observers if not (type(o) is Hooks and o.empty)]
        self._on_attempt = tuple(o.on_attempt for o in told)
        self._on_call = tuple(o.on_call for o in told)

    @property
    def observers(self) -> tuple[Observer, ...]:
        return tuple(self._observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)
        self._bind()

    def remove(self, observer: Observer) -> None:
        self._observers.remove(observer)
        self._bind()

    def attempt(self, route: str, attempt: Attempt) -> None:
        for on_attempt in self._on_attempt:
            on_attempt(route, attempt)

    def call(self, record: CallRecord) -> None:
        for on_call in self._on_call:
            on_call(record)
