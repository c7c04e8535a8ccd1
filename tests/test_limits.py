"""Per-provider admission: limits never wait past the caller's allowance; cooldown is half-open."""

from __future__ import annotations

import asyncio
import time

from router.config import Cooldown, Limits
from router.limits import ProviderGate
from router.policy import rule_for
from router.types import Skip, SkipKind
from tests.fakeclock import FakeClock


async def test_request_rate_limit_refuses_at_once_when_the_wait_cannot_fit() -> None:
    gate = ProviderGate("p", Limits(requests_per_minute=2), Cooldown())
    assert await gate.admit(10, wait_s=1.0) is None
    assert await gate.admit(10, wait_s=1.0) is None
    t0 = time.monotonic()
    skip = await gate.admit(10, wait_s=1.0)
    assert skip is not None and skip.kind is SkipKind.RATE
    assert "requests_per_minute" in skip.reason
    assert time.monotonic() - t0 < 0.05  # refused without waiting
    assert gate.in_flight == 2


async def test_request_rate_limit_waits_when_the_wait_fits() -> None:
    # 2 per second: filling the bucket takes milliseconds even on a loaded machine, so
    # the next admission must wait ~0.5 s for it to drain by one.
    gate = ProviderGate("p", Limits(requests_per_minute=120), Cooldown())
    for _ in range(120):
        assert await gate.admit(1, wait_s=2.0) is None
        gate.release()
    t0 = time.monotonic()
    assert await gate.admit(1, wait_s=2.0) is None
    assert 0.2 <= time.monotonic() - t0 < 1.5


async def test_token_rate_limit_refuses_a_request_larger_than_the_limit() -> None:
    gate = ProviderGate("p", Limits(tokens_per_minute=1000), Cooldown())
    skip = await gate.admit(5000, wait_s=10)
    assert skip is not None and skip.kind is SkipKind.TOKENS
    assert "exceeds tokens_per_minute=1000" in skip.reason
    assert gate.in_flight == 0


async def test_concurrency_cap_waits_only_its_allowance_then_skips() -> None:
    gate = ProviderGate("p", Limits(max_concurrency=1), Cooldown())
    assert await gate.admit(1, wait_s=1) is None
    t0 = time.monotonic()
    skip = await gate.admit(1, wait_s=0.05)
    elapsed = time.monotonic() - t0
    assert skip is not None and skip.kind is SkipKind.CONCURRENCY
    assert "max_concurrency=1" in skip.reason
    assert 0.04 <= elapsed < 0.2
    gate.release()
    assert await gate.admit(1, wait_s=0.05) is None
    gate.release()
    assert gate.in_flight == 0


async def test_concurrency_slot_freed_by_release_admits_a_waiter() -> None:
    gate = ProviderGate("p", Limits(max_concurrency=1), Cooldown())
    assert await gate.admit(1, wait_s=1) is None
    waiter = asyncio.create_task(gate.admit(1, wait_s=1))
    await asyncio.sleep(0.01)
    gate.release()
    assert await waiter is None
    gate.release()
    assert gate.in_flight == 0


async def test_retry_after_past_the_allowance_is_skipped_not_waited() -> None:
    clock = FakeClock()
    gate = ProviderGate("p", Limits(), Cooldown(), clock)
    gate.failed(rule_for("rate_limit"), retry_after=30)
    skip = await gate.admit(1, wait_s=2)
    assert skip is not None and skip.kind is SkipKind.RETRY_AFTER
    assert "Retry-After" in skip.reason
    clock.advance(31)
    assert await gate.admit(1, wait_s=2) is None


def test_consecutive_failures_start_a_cooldown_then_one_probe_goes_through() -> None:
    clock = FakeClock()
    gate = ProviderGate("p", Limits(), Cooldown(failures=3, seconds=10), clock)
    server = rule_for("server")
    gate.failed(server)
    gate.failed(server)
    assert gate.unavailable() is None
    gate.failed(server)
    skip = gate.unavailable()
    assert skip is not None and skip.kind is SkipKind.COOLDOWN
    assert "cooling down" in skip.reason
    clock.advance(10.5)
    assert gate.unavailable() is None  # this caller is the probe
    assert gate.probing
    assert gate.unavailable() == Skip(SkipKind.COOLDOWN, "cooling down: a probe call is in flight")
    gate.succeeded()
    assert gate.unavailable() is None
    assert not gate.probing


def test_a_failed_probe_restarts_the_cooldown() -> None:
    clock = FakeClock()
    gate = ProviderGate("p", Limits(), Cooldown(failures=1, seconds=5), clock)
    gate.failed(rule_for("timeout"))
    clock.advance(6)
    assert gate.unavailable() is None  # probe
    gate.failed(rule_for("timeout"))
    assert gate.unavailable() is not None
    clock.advance(6)
    assert gate.unavailable() is None


def test_a_rejected_key_cools_down_at_once() -> None:
    clock = FakeClock()
    gate = ProviderGate("p", Limits(), Cooldown(failures=5, seconds=60), clock)
    gate.failed(rule_for("auth"))
    assert gate.unavailable() is not None


def test_request_errors_do_not_count_towards_cooldown() -> None:
    gate = ProviderGate("p", Limits(), Cooldown(failures=1, seconds=60), FakeClock())
    gate.failed(rule_for("context_length"))
    gate.failed(rule_for("bad_request"))
    assert gate.unavailable() is None


def test_a_success_resets_the_failure_count() -> None:
    gate = ProviderGate("p", Limits(), Cooldown(failures=2, seconds=60), FakeClock())
    gate.failed(rule_for("server"))
    gate.succeeded()
    gate.failed(rule_for("server"))
    assert gate.unavailable() is None
