"""Per-provider admission: request rate, token rate, concurrency, cooldown.

A :class:`ProviderGate` decides whether an attempt may go to its provider now,
and how long it would have to wait. Nothing here waits past the time the
caller allows: a wait that cannot fit is refused with a :class:`~router.types.Skip`
(its kind and a human reason), and the router records it as a skipped attempt
and moves on.

Loop-bound objects (limiters, the semaphore) are created on first use inside
the running loop; the Router checks that it is always used from that loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

from router.config import Cooldown, Limits
from router.errors import ProviderError, short_error
from router.logger import get_logger
from router.policy import Rule
from router.types import ProviderState, Skip, SkipKind

# Cooldowns starting (warning) and ending (info): docs/operations.md, "Logging".
_log = get_logger("router.providers")


class Bucket:
    """One aiolimiter leaky bucket, used through its public API only.

    aiolimiter says whether there is capacity now (``has_capacity``) and waits
    for it (``acquire``), but not how long a wait would be. The router needs
    that figure to refuse at once a wait that cannot fit the attempt's share of
    the deadline, so it keeps its own account of the same bucket: every
    acquisition goes through here, the level drains at ``max_rate /
    time_period`` per second of loop time (aiolimiter's clock), and the amounts
    of callers still queued count as ahead of a new one (a caller that gives up
    stops counting at once). The estimate only decides whether to try; the wait
    itself is aiolimiter's ``acquire``, bounded by the caller's allowance.
    """

    __slots__ = ("_at", "_level", "_rate", "_time", "limiter", "queued")

    def __init__(self, max_rate: float, time_period: float) -> None:
        self.limiter = AsyncLimiter(max_rate, time_period)
        self._rate = max_rate / time_period  # per second
        self._level = 0.0  # our account of the bucket's level ...
        self._at = 0.0  # ... at this loop time
        self.queued = 0.0  # amounts our callers are waiting to acquire
        # The loop's clock, kept at first use so headroom() can be read from any thread.
        self._time: Callable[[], float] | None = None

    @property
    def max_rate(self) -> float:
        return self.limiter.max_rate

    def _level_now(self) -> float:
        loop_time = self._time
        if loop_time is None:
            loop_time = self._time = asyncio.get_running_loop().time
        now = loop_time()
        self._level = max(self._level - (now - self._at) * self._rate, 0.0)
        self._at = now
        return self._level

    def headroom(self) -> float:
        """What could be granted now without waiting (our estimate; changes nothing)."""
        if self._time is None:
            return self.max_rate - self.queued
        level = max(self._level - (self._time() - self._at) * self._rate, 0.0)
        return max(self.max_rate - level - self.queued, 0.0)

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` can be granted, counting callers queued ahead."""
        if not self.queued and self.limiter.has_capacity(amount):
            return 0.0
        excess = self._level_now() + self.queued + amount - self.max_rate
        return max(excess, 0.0) / self._rate

    async def acquire(self, amount: float, timeout_s: float) -> bool:
        """Take ``amount``, waiting at most ``timeout_s``; False when it did not fit."""
        self.queued += amount
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self.limiter.acquire(amount)
        except TimeoutError:
            return False
        finally:
            self.queued -= amount
        self._level = self._level_now() + amount
        return True


def readable_seconds(seconds: float) -> str:
    """A wait as people read it: ``0.25s``, ``42.0s``, ``10m00s``, ``1h02m05s``."""
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class ProviderGate:
    """Admission and health state of one provider, shared by all calls."""

    def __init__(
        self,
        name: str,
        limits: Limits,
        cooldown: Cooldown,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.limits = limits
        self.cooldown = cooldown
        self._clock = clock
        self._sleep = sleep
        # Limiters and semaphore, created lazily in the running loop.
        self._rpm: Bucket | None = None
        self._tpm: Bucket | None = None
        self._sem: asyncio.Semaphore | None = None
        self._started = False
        # No rate, token or concurrency limit: admission is a Retry-After check only.
        self._unlimited = not (
            limits.requests_per_minute or limits.tokens_per_minute or limits.max_concurrency
        )
        # Consecutive failures that count towards a cooldown.
        self.failures = 0
        # Monotonic time until which the provider is cooling down (0: not).
        self.cooldown_until = 0.0
        # True while the single half-open probe after a cooldown is in flight.
        self.probing = False
        # Monotonic time before which the provider asked not to be called (Retry-After).
        self.not_before = 0.0
        # Attempts admitted and not yet released.
        self.in_flight = 0

    def _start(self) -> None:
        lim = self.limits
        if lim.requests_per_minute:
            self._rpm = Bucket(lim.requests_per_minute, 60.0)
        if lim.tokens_per_minute:
            self._tpm = Bucket(lim.tokens_per_minute, 60.0)
        if lim.max_concurrency:
            self._sem = asyncio.Semaphore(lim.max_concurrency)
        self._started = True

    def unavailable(self) -> Skip | None:
        """Why the provider must be skipped right now (cooldown), or None.

        After a cooldown ends, exactly one call goes through as a probe
        (half-open); others keep skipping until it has answered.
        """
        if self.cooldown_until == 0.0:
            return None
        now = self._clock()
        if now < self.cooldown_until:
            return Skip(
                SkipKind.COOLDOWN, f"cooling down for {self.cooldown_until - now:.1f}s more"
            )
        if self.probing:
            return Skip(SkipKind.COOLDOWN, "cooling down: a probe call is in flight")
        self.probing = True
        _log.debug("cooldown_probe", provider=self.name)
        return None

    async def admit(self, tokens: int, wait_s: float) -> Skip | None:
        """Take a slot for one attempt, waiting at most ``wait_s``.

        Returns None when admitted (then :meth:`release` must follow), or the
        reason the attempt is skipped.
        """
        reason = await self.take(tokens, wait_s)
        if reason is not None and self.probing:
            self.probing = False  # the probe never went out; let another call try
        return reason

    def take_now(self) -> bool:
        """Take a slot at once when nothing can hold an attempt back: no rate, token
        or concurrency limit and no Retry-After ever received (the common case; no
        buckets, no clock read). False: go through :meth:`take`."""
        if self._unlimited and not self.not_before:
            self.in_flight += 1
            return True
        return False

    async def take(self, tokens: int, wait_s: float) -> Skip | None:
        """:meth:`admit` without the probe bookkeeping (the caller does it: a
        :class:`~router.state.LocalTicket`)."""
        if self.take_now():
            return None
        if not self._started:
            self._start()
        start = self._clock()
        wait = self.not_before - start
        if wait > 0:
            if wait > wait_s:
                return Skip(
                    SkipKind.RETRY_AFTER,
                    f"provider asked to wait {readable_seconds(wait)} (Retry-After),"
                    " past this attempt's share",
                )
            await self._sleep(wait)
        tpm = self._tpm
        if tpm is not None and tokens > tpm.max_rate:
            return Skip(
                SkipKind.TOKENS,
                f"request of ~{tokens} tokens exceeds tokens_per_minute={int(tpm.max_rate)}",
            )
        for bucket, amount, what, kind in (
            (self._rpm, 1, "requests", SkipKind.RATE),
            (tpm, tokens, "tokens", SkipKind.TOKENS),
        ):
            if bucket is None:
                continue
            left = wait_s - (self._clock() - start)
            need = bucket.wait(amount)
            if need > left:
                return Skip(
                    kind,
                    f"{what}_per_minute limit would need {need:.2f}s,"
                    f" only {max(left, 0):.2f}s left",
                )
            if not await bucket.acquire(amount, left):
                return Skip(
                    kind, f"{what}_per_minute limit did not admit within {max(left, 0):.2f}s"
                )
        sem = self._sem
        if sem is not None:
            left = wait_s - (self._clock() - start)
            if sem.locked():
                if left <= 0:
                    return Skip(
                        SkipKind.CONCURRENCY,
                        f"max_concurrency={self.limits.max_concurrency} reached",
                    )
                try:
                    async with asyncio.timeout(left):
                        await sem.acquire()
                except TimeoutError:
                    return Skip(
                        SkipKind.CONCURRENCY,
                        f"max_concurrency={self.limits.max_concurrency} full for {left:.2f}s",
                    )
            else:
                await sem.acquire()
        self.in_flight += 1
        return None

    def release(self) -> None:
        """Give back the slot taken by a successful :meth:`admit`."""
        self.in_flight -= 1
        if self._sem is not None:
            self._sem.release()

    def succeeded(self) -> None:
        """An attempt got a valid answer: the provider is healthy."""
        self.failures = 0
        if self.cooldown_until:
            self._end_cooldown("a call to it succeeded")
        self.probing = False

    def failed(
        self, rule: Rule, retry_after: float | None = None, err: ProviderError | None = None
    ) -> None:
        """An attempt failed (with ``err``, named in the log line when a cooldown
        starts); update cooldown and Retry-After state by the policy rule."""
        now = self._clock()
        if retry_after:
            self.not_before = max(self.not_before, now + retry_after)
        was_probe = self.probing
        self.probing = False
        if rule.cooldown_now:
            self._start_cooldown(now, "its key was rejected (cools down at once)", err)
        elif was_probe and rule.counts_failure:
            self._start_cooldown(now, "the probe call after a cooldown failed", err)
        elif rule.counts_failure:
            self.failures += 1
            if self.failures >= self.cooldown.failures:
                self._start_cooldown(now, f"{self.failures} consecutive failures", err)
                self.failures = 0

    def _start_cooldown(self, now: float, why: str, err: ProviderError | None) -> None:
        self.cooldown_until = now + self.cooldown.seconds
        _log.warning(
            "cooldown_started",
            provider=self.name,
            seconds=self.cooldown.seconds,
            reason=why,
            error=None if err is None else short_error(err),
        )

    def _end_cooldown(self, why: str) -> None:
        self.cooldown_until = 0.0
        _log.info("cooldown_ended", provider=self.name, reason=why)

    def reset_probe(self) -> None:
        """The probe's outcome said nothing about health (e.g. a bad request)."""
        if self.probing:
            self.probing = False
            self._end_cooldown("the probe call's error does not count against the provider")

    def state(self) -> ProviderState:
        """A snapshot of this gate (safe to read from another thread: it changes nothing)."""
        now = self._clock()
        cooling = self.cooldown_until > now
        lim = self.limits
        rpm, tpm = self._rpm, self._tpm
        requests: float | None = None
        tokens: float | None = None
        if lim.requests_per_minute:
            requests = rpm.headroom() if rpm is not None else float(lim.requests_per_minute)
        if lim.tokens_per_minute:
            tokens = tpm.headroom() if tpm is not None else float(lim.tokens_per_minute)
        concurrency = None
        if lim.max_concurrency:
            concurrency = max(lim.max_concurrency - self.in_flight, 0)
        return ProviderState(
            provider=self.name,
            cooling_down=cooling,
            cooldown_remaining_s=self.cooldown_until - now if cooling else 0.0,
            probing=self.probing,
            failures=self.failures,
            in_flight=self.in_flight,
            retry_after_s=max(self.not_before - now, 0.0),
            requests_available=requests,
            tokens_available=tokens,
            concurrency_available=concurrency,
        )

    @property
    def idle(self) -> bool:
        """No attempt holds a slot."""
        return self.in_flight == 0

    def __repr__(self) -> str:
        state = []
        if self.cooldown_until:
            state.append(f"cooldown_until={self.cooldown_until:.1f}")
        if self.failures:
            state.append(f"failures={self.failures}")
        return f"<ProviderGate {self.name} in_flight={self.in_flight} {' '.join(state)}>".rstrip()
