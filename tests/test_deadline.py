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
    assert d.share(3, floor_s=0.1) == pytest.approx(1.0)
    clock.advance(1.0)
    assert d.share(2, floor_s=0.1) == pytest.approx(1.0)
    assert d.share(1, floor_s=0.1) == pytest.approx(2.0)  # the last step gets all that is left


def test_share_has_a_floor_but_never_exceeds_what_remains() -> None:
    clock = FakeClock()
    d = Deadline(1.0, clock)
    assert d.share(10, floor_s=0.5) == pytest.approx(0.5)  # floor beats 0.1 each
    clock.advance(0.8)
    assert d.share(10, floor_s=0.5) == pytest.approx(0.2)  # but only 0.2 s is left


@given(
    total=st.floats(0.01, 100),
    used=st.floats(0, 200),
    steps=st.integers(1, 20),
    floor=st.floats(0, 10),
)
def test_share_is_within_bounds(total: float, used: float, steps: int, floor: float) -> None:
    """A share is never negative, never past the deadline, and leaves later steps time."""
    clock = FakeClock()
    d = Deadline(total, clock)
    clock.advance(used)
    share = d.share(steps, floor)
    left = d.remaining()
    assert 0.0 <= share <= left
    if steps > 1 and floor * steps <= left:
        assert share <= max(left / steps, floor) + 1e-9
