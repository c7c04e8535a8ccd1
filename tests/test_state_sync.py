"""The synchronous Ticket path (router.state): a State whose admission and settle
never wait answers them without a coroutine; any other State keeps the awaitable
methods, which the chain walk falls back to."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from router import LocalState, Router, Ticket
from router.errors import ProviderError
from router.types import Skip
from tests.fakeclock import FakeClock
from tests.routerkit import make_config

LIMITED = """
providers:
  p: {kind: mock, models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}}
  q:
    kind: mock
    limits: {max_concurrency: 1}
    models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}
budgets: {cap: {limit_usd: 1}}
routes:
  r: {prompt: hi, fallback: [p/m]}
"""


def _ticket(state: LocalState, handle: object) -> Ticket:
    ticket = state.begin(
        handle,  # type: ignore[arg-type]
        route="r",
        model="m",
        amount=Decimal("0.1"),
        max_cost_usd=None,
        est_in=10,
        max_tokens=10,
    )
    assert isinstance(ticket, Ticket)
    return ticket


async def test_local_ticket_admits_and_settles_synchronously(tmp_path: Path) -> None:
    """An unlimited provider: admit_now() takes the slot, settle_now() bills at once."""
    plan = make_config(tmp_path, LIMITED)
    state = LocalState(plan, clock=FakeClock())
    await state.start()
    try:
        p = state.provider(plan.providers["p"])
        ticket = _ticket(state, p)
        assert ticket.admit_now() is True
        assert state.provider_state(p).in_flight == 1
        ticket.free_slot()
        assert ticket.settle_now(Decimal("0.04")) is True
        ticket.release()  # after a settle: frees nothing more
        assert state.spend()[0].spent_usd == Decimal("0.04")
        assert state.reserved_usd == 0
        assert state.provider_state(p).in_flight == 0
    finally:
        await state.aclose()


async def test_a_limited_provider_is_admitted_through_admit(tmp_path: Path) -> None:
    """A concurrency limit needs the gate's accounting: admit_now() declines, holding
    nothing, and admit() still decides."""
    plan = make_config(tmp_path, LIMITED)
    state = LocalState(plan, clock=FakeClock())
    await state.start()
    try:
        q = state.provider(plan.providers["q"])
        ticket = _ticket(state, q)
        assert ticket.admit_now() is False
        assert state.provider_state(q).in_flight == 0
        assert await ticket.admit(20, 1.0) is None
        assert state.provider_state(q).in_flight == 1
        ticket.release()
        assert state.provider_state(q).in_flight == 0
    finally:
        await state.aclose()


class AwaitOnly(Ticket):
    """A ticket of a State that must wait: only the abstract, awaitable methods."""

    def __init__(self) -> None:
        super().__init__(est_in=1, max_tokens=1, reserved=Decimal(0))
        self.calls: list[str] = []

    async def admit(self, tokens: int, wait_s: float) -> Skip | None:
        self.calls.append("admit")
        return None

    def free_slot(self) -> None:
        self.calls.append("free_slot")

    async def settle(self, cost: Decimal) -> None:
        self.calls.append("settle")

    def release(self) -> None:
        self.calls.append("release")

    def succeeded(self) -> None:
        self.calls.append("succeeded")

    def failed(self, err: ProviderError) -> None:
        self.calls.append("failed")


def test_a_ticket_without_a_synchronous_path_declines_it() -> None:
    """The defaults decline without doing anything, so the walk awaits admit/settle."""
    ticket = AwaitOnly()
    assert ticket.admit_now() is False
    assert ticket.settle_now(Decimal(1)) is False
    assert ticket.calls == []


async def test_complete_settles_through_the_synchronous_path(tmp_path: Path) -> None:
    """A whole call on LocalState: billed once, nothing left reserved or in flight."""
    plan = make_config(tmp_path, LIMITED)
    async with Router(plan) as router:
        result = await router.complete("r")
        assert result.cost_usd > 0
        assert router.spend()[0].spent_usd == result.cost_usd
        assert router.reserved_usd == 0
