"""Deadline: one monotonic budget, shared fairly among the steps left."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.deadline import Deadline
from tests.fakeclock import FakeClock


def test_remaining_counts_down_and_never_goes_negative() -> None:
    clock = FakeClock()
    d = Deadline(2.0, clock)
    assert d.remaining() == 2.0
    clock.advance(0.5)
    assert d.remaining() == pytest.approx(1.5)
    assert d.elapsed() == pytest.approx(0.5)
    assert not d.expired
    clock.advance(5)
    assert d.remaining() == 0.0
    assert d.expired


def test_share_splits_what_remains_among_steps_left() -> None:
    clock = FakeClock()
    d = Deadline(3.0, clock)
    assert d.share(3) == pytest.approx(1.0)
    clock.advance(1.0)
    assert d.share(2) == pytest.approx(1.0)
    assert d.share(1) == pytest.approx(2.0)  # the last step gets all that is left


def test_a_retry_waits_only_if_every_remaining_step_keeps_its_floor() -> None:
    clock = FakeClock()
    d = Deadline(3.0, clock)
    assert d.can_wait(0.5, steps_left=2, floor_s=1.0)  # 2.5 left >= 2 x 1.0
    assert not d.can_wait(1.5, steps_left=2, floor_s=1.0)  # 1.5 left < 2 x 1.0
    assert d.can_wait(1.5, steps_left=1, floor_s=1.0)
    assert not d.can_wait(3.0, steps_left=1, floor_s=0.0)  # nothing left to retry in
    clock.advance(2.9)
    assert not d.can_wait(0.05, steps_left=1, floor_s=0.5)


@given(total=st.floats(0.01, 100), used=st.floats(0, 200), steps=st.integers(1, 20))
def test_share_is_within_bounds(total: float, used: float, steps: int) -> None:
    """A share is never negative, never past the deadline, and leaves later steps theirs."""
    clock = FakeClock()
    d = Deadline(total, clock)
    clock.advance(used)
    share = d.share(steps)
    left = d.remaining()
    assert 0.0 <= share <= left
    assert share * steps == pytest.approx(left)
