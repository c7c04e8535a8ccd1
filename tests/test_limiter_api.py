"""The rate limiters use aiolimiter through its public API only (``has_capacity``,
``acquire``, ``max_rate``, ``time_period``), and pyproject pins the aiolimiter versions
the code is tested with. The wait estimate is the router's own arithmetic.

Every test here runs the gate on a limiter that has nothing *but* the public API: a
router that reads aiolimiter's internals fails with AttributeError.
"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import aiolimiter
import pytest
from packaging.requirements import Requirement

import router.limits
from router.config import Cooldown, Limits
from router.limits import ProviderGate
from router.types import Skip, SkipKind

ROOT = Path(__file__).resolve().parent.parent


class PublicOnly:
    """aiolimiter.AsyncLimiter's documented surface, and nothing else."""

    __slots__ = ("__inner", "max_rate", "time_period")

    def __init__(self, max_rate: float, time_period: float = 60) -> None:
        self.__inner = aiolimiter.AsyncLimiter(max_rate, time_period)
        self.max_rate = max_rate
        self.time_period = time_period

    def has_capacity(self, amount: float = 1) -> bool:
        return self.__inner.has_capacity(amount)

    async def acquire(self, amount: float = 1) -> None:
        await self.__inner.acquire(amount)


@pytest.fixture(autouse=True)
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router.limits, "AsyncLimiter", PublicOnly)


async def test_a_wait_that_cannot_fit_is_refused_at_once() -> None:
    gate = ProviderGate("p", Limits(requests_per_minute=2), Cooldown())
    assert await gate.admit(1, wait_s=1.0) is None
    assert await gate.admit(1, wait_s=1.0) is None
    t0 = time.monotonic()
    skip = await gate.admit(1, wait_s=1.0)
    assert skip == Skip(
        SkipKind.RATE, "requests_per_minute limit would need 30.00s, only 1.00s left"
    )
    assert time.monotonic() - t0 < 0.05


async def test_a_wait_that_fits_is_waited_for_within_the_allowance() -> None:
    gate = ProviderGate("p", Limits(tokens_per_minute=6000), Cooldown())  # 100 tokens/s
    assert await gate.admit(6000, wait_s=1.0) is None
    t0 = time.monotonic()
    assert await gate.admit(10, wait_s=1.0) is None  # ~0.1 s for 10 tokens to drain
    assert 0.07 <= time.monotonic() - t0 < 0.3
    assert gate.in_flight == 2


async def test_callers_queued_ahead_count_until_they_give_up() -> None:
    gate = ProviderGate("p", Limits(tokens_per_minute=6000), Cooldown())  # 100 tokens/s
    assert await gate.admit(6000, 1.0) is None
    gate.release()
    ahead = asyncio.create_task(gate.admit(40, 5.0))  # ~0.4 s
    await asyncio.sleep(0.01)
    skip = await gate.admit(10, 0.3)  # behind 40 queued tokens: ~0.5 s
    assert skip is not None and skip.kind is SkipKind.TOKENS
    assert "tokens_per_minute limit would need 0.4" in skip.reason
    ahead.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ahead
    t0 = time.monotonic()
    assert await gate.admit(10, 0.3) is None  # the cancelled caller no longer counts
    assert time.monotonic() - t0 < 0.2


async def test_an_acquire_cut_by_the_allowance_is_a_skip_not_an_error() -> None:
    """The estimate says the wait fits, but aiolimiter serves smaller requests first and
    a later, smaller one takes the capacity: aiolimiter's acquire is bounded by what is
    left of the allowance, and the attempt is skipped with a reason."""
    gate = ProviderGate("p", Limits(tokens_per_minute=6000), Cooldown())  # 100 tokens/s
    assert await gate.admit(6000, 1.0) is None
    small = asyncio.create_task(gate.admit(10, 5.0))  # ~0.1 s
    await asyncio.sleep(0)
    t0 = time.monotonic()
    big = asyncio.create_task(gate.admit(50, 0.65))  # estimate: (10 + 50) / 100 = 0.6 s
    await asyncio.sleep(0)
    later = asyncio.create_task(gate.admit(20, 5.0))  # smaller: served before `big`
    skip = await big
    assert skip is not None and skip.kind is SkipKind.TOKENS
    assert skip.reason.startswith("tokens_per_minute limit did not admit within")
    assert 0.6 <= time.monotonic() - t0 < 0.9
    assert await small is None and await later is None
    assert gate.in_flight == 3


def test_pyproject_pins_the_aiolimiter_versions_it_is_tested_with() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [spec] = [r for r in project["dependencies"] if re.match(r"aiolimiter\b", r)]
    req = Requirement(spec)
    assert req.specifier.contains(version("aiolimiter"))
    uppers = [s for s in req.specifier if s.operator in ("<", "<=", "~=", "==")]
    lowers = [s for s in req.specifier if s.operator in (">=", "~=", "==")]
    assert uppers and lowers, f"{spec}: needs a lower and an upper bound"
    assert not req.specifier.contains("1.1.0")  # its internals differ; never tested
    assert not req.specifier.contains("2.0")
