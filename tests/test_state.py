"""The state seam (router.state): the chain walk decides admission and money only
through a State and the Ticket it hands out, so another backend plugs in without
touching the walk. A scripted State written here (no BudgetBook, no ProviderGate)
drives complete() and stream(); LocalState keeps a provider's state across a reload
that leaves the provider unchanged."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from router import (
    AllProvidersFailedError,
    BudgetExceededError,
    BudgetStatus,
    LedgerStatus,
    LocalState,
    Plan,
    ProviderError,
    ProviderPlan,
    ProviderState,
    Refusal,
    Router,
    Skip,
    SkipKind,
    State,
    Ticket,
)
from router.errors import BadRequestError, RateLimitError, ServerError
from tests.fakeclock import FakeClock
from tests.routerkit import make_config, write_config

ROOT = Path(__file__).resolve().parents[1]

TWO = """
settings: {retries: 0}
providers:
  a: {kind: mock, models: {m: {price: {input_per_mtok: 1, output_per_mtok: 2}}}, mock: MOCK_A}
  b: {kind: mock, models: {m: {price: {input_per_mtok: 1, output_per_mtok: 2}}}}
routes:
  r: {prompt: "hi {{ who }}", fallback: [a/m, b/m]}
"""


def _two(tmp_path: Path, mock_a: str = "{}") -> Plan:
    return make_config(tmp_path, TWO.replace("MOCK_A", mock_a))


@dataclass(frozen=True)
class FakeHandle:
    name: str
    serial: int  # which provider() call made it


class FakeTicket(Ticket):
    """Logs every call the chain walk makes, as (what, provider, detail)."""

    def __init__(self, state: ScriptedState, provider: str, reserved: Decimal) -> None:
        super().__init__(est_in=1, max_tokens=1, reserved=reserved)
        self.state = state
        self.provider = provider

    def _log(self, what: str, detail: object = None) -> None:
        self.state.log.append((what, self.provider, detail))

    async def admit(self, tokens: int, wait_s: float) -> Skip | None:
        self._log("admit", tokens)
        return self.state.admission

    def free_slot(self) -> None:
        self._log("free_slot")

    async def settle(self, cost: Decimal) -> None:
        self._log("settle", cost)

    def release(self) -> None:
        self._log("release")

    def succeeded(self) -> None:
        self._log("succeeded")

    def failed(self, err: ProviderError) -> None:
        self._log("failed", err.kind)


class ScriptedState(State):
    """A State that answers as scripted: refuse all money, cool named providers,
    refuse admission — and otherwise admits everything for free."""

    def __init__(
        self,
        *,
        refuse: bool = False,
        cooling: frozenset[str] = frozenset(),
        admission: Skip | None = None,
    ) -> None:
        self.refuse = refuse
        self.cooling = cooling
        self.admission = admission
        self.log: list[tuple[str, str, object]] = []
        self.built: list[str] = []  # provider() calls, in order

    async def start(self) -> None:
        self.log.append(("start", "", None))

    async def aclose(self) -> None:
        self.log.append(("aclose", "", None))

    async def flush(self) -> None:
        pass

    def provider(self, plan: ProviderPlan) -> FakeHandle:
        self.built.append(plan.name)
        return FakeHandle(plan.name, len(self.built))

    def provider_state(self, handle: object) -> ProviderState:
        assert isinstance(handle, FakeHandle)
        return ProviderState(
            provider=handle.name,
            cooling_down=handle.name in self.cooling,
            cooldown_remaining_s=0.0,
            probing=False,
            failures=handle.serial,  # tells the tests which handle serves
            in_flight=0,
            retry_after_s=0.0,
            requests_available=None,
            tokens_available=None,
            concurrency_available=None,
        )

    def begin(
        self,
        handle: object,
        *,
        route: str,
        model: str,
        amount: Decimal,
        max_cost_usd: Decimal | None,
        est_in: int,
        max_tokens: int,
    ) -> Ticket | Skip | Refusal:
        assert isinstance(handle, FakeHandle)
        self.log.append(("begin", handle.name, amount))
        if handle.name in self.cooling:
            return Skip(SkipKind.COOLDOWN, "cooling down (scripted)")
        if self.refuse:
            return Refusal("scripted", Decimal(0), Decimal(0), Decimal(0), amount)
        return FakeTicket(self, handle.name, amount)

    async def prepare(self, plan: Plan) -> Callable[[], None]:
        return lambda: None

    def spend(self) -> list[BudgetStatus]:
        return []

    def ledger_status(self) -> LedgerStatus:
        return LedgerStatus(0, 0, None)

    @property
    def reserved_usd(self) -> Decimal:
        return Decimal(0)


def _calls(state: ScriptedState, provider: str) -> list[str]:
    """The ticket calls made for ``provider``, in order (a repeat of the idempotent
    free_slot counted once)."""
    out: list[str] = []
    for what, p, _ in state.log:
        if p == provider and not (what == "free_slot" and out[-1:] == ["free_slot"]):
            out.append(what)
    return out


async def test_a_state_that_refuses_every_reservation_skips_every_step_for_budget(
    tmp_path: Path,
) -> None:
    state = ScriptedState(refuse=True)
    async with Router(_two(tmp_path), state=state) as router:
        with pytest.raises(BudgetExceededError, match="scripted") as info:
            await router.complete("r", {"who": 1})
    attempts = info.value.attempts
    assert [(a.provider, a.outcome, a.skip) for a in attempts] == [
        ("a", "skipped", SkipKind.BUDGET),
        ("b", "skipped", SkipKind.BUDGET),
    ]
    assert _calls(state, "a") == _calls(state, "b") == ["begin"]  # nothing admitted or sent
    assert state.log[0][0] == "start" and state.log[-1][0] == "aclose"


async def test_a_state_that_cools_a_provider_makes_the_walk_skip_it(tmp_path: Path) -> None:
    state = ScriptedState(cooling=frozenset({"a"}))
    async with Router(_two(tmp_path), state=state) as router:
        result = await router.complete("r", {"who": 1})
        assert router.provider_states()["a"].cooling_down
    assert result.provider == "b"
    skipped = result.attempts[0]
    assert (skipped.provider, skipped.skip, skipped.reason) == (
        "a",
        SkipKind.COOLDOWN,
        "cooling down (scripted)",
    )
    assert _calls(state, "a") == ["begin"]
    # The whole life of b's ticket, in order: the money settles to the call's cost.
    assert _calls(state, "b") == ["begin", "admit", "free_slot", "settle", "succeeded", "release"]
    assert ("settle", "b", result.cost_usd) in state.log

    state.cooling = frozenset({"a", "b"})
    async with Router(_two(tmp_path), state=state) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"who": 1})
    assert [a.skip for a in info.value.attempts] == [SkipKind.COOLDOWN, SkipKind.COOLDOWN]


async def test_a_failure_reaches_the_state_through_the_ticket_and_frees_it(
    tmp_path: Path,
) -> None:
    state = ScriptedState()
    async with Router(_two(tmp_path, "{failures: [503]}"), state=state) as router:
        result = await router.complete("r", {"who": 1})
    assert result.provider == "b"
    assert _calls(state, "a") == ["begin", "admit", "free_slot", "failed", "release"]
    assert ("failed", "a", "server") in state.log


async def test_an_admission_refused_by_the_state_is_a_skip_of_its_kind(tmp_path: Path) -> None:
    state = ScriptedState(admission=Skip(SkipKind.RATE, "no room (scripted)"))
    async with Router(_two(tmp_path), state=state) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"who": 1})
    assert [(a.skip, a.reason) for a in info.value.attempts] == [
        (SkipKind.RATE, "no room (scripted)"),
        (SkipKind.RATE, "no room (scripted)"),
    ]
    assert _calls(state, "a") == ["begin", "admit", "release"]  # no slot to free


async def test_a_stream_settles_and_releases_through_its_ticket(tmp_path: Path) -> None:
    state = ScriptedState()
    router = Router(_two(tmp_path), state=state)
    async with router, router.stream("r", {"who": 1}) as stream:
        # The stream is open: its ticket is held, not yet settled or released.
        assert _calls(state, "a") == ["begin", "admit"]
        text = "".join([d async for d in stream])
    assert text and stream.completion is not None
    # Settled; the stream's exit stack still calls release(), a no-op after a settle.
    assert _calls(state, "a") == ["begin", "admit", "free_slot", "settle", "succeeded", "release"]
    assert ("settle", "a", stream.completion.cost_usd) in state.log


async def test_reload_asks_the_state_only_for_added_or_changed_providers(
    tmp_path: Path,
) -> None:
    state = ScriptedState()
    path = write_config(tmp_path, TWO.replace("MOCK_A", "{}"))
    async with Router.from_yaml(path, state=state) as router:
        assert state.built == ["a", "b"]
        path.write_text(path.read_text().replace("  b:\n", "  b:\n    timeout_s: 5\n", 1))
        report = await router.reload()
        assert report.providers_changed == ["b"]
        assert state.built == ["a", "b", "b"]
        states = router.provider_states()
        assert (states["a"].failures, states["b"].failures) == (1, 3)  # a kept its handle


COOLING = """
settings: {retries: 0, cooldown: {failures: 1, seconds: 600}}
providers:
  a: {kind: mock, models: {m: {}}, mock: {failures: [503]}}
  b: {kind: mock, models: {m: {}}}
routes:
  r: {prompt: hi, fallback: [a/m, b/m]}
"""


async def test_reload_keeps_an_unchanged_providers_cooldown_and_resets_a_changed_one(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, COOLING)
    async with Router.from_yaml(path) as router:
        assert isinstance(router.state, LocalState)
        assert (await router.complete("r")).provider == "b"
        assert router.provider_states()["a"].cooling_down
        # b changes, a does not: a is still cooling down.
        text = path.read_text()
        path.write_text(text.replace("  b:\n", "  b:\n    timeout_s: 5\n", 1))
        assert (await router.reload()).providers_changed == ["b"]
        assert router.provider_states()["a"].cooling_down
        result = await router.complete("r")
        assert [a.skip for a in result.attempts] == [SkipKind.COOLDOWN, None]
        # a changes: its new runtime starts healthy.
        path.write_text(path.read_text().replace("  a:\n", "  a:\n    timeout_s: 5\n", 1))
        assert (await router.reload()).providers_changed == ["a"]
        assert not router.provider_states()["a"].cooling_down


@pytest.mark.parametrize("module", ["call.py", "streaming.py"])
def test_the_chain_walk_imports_no_state_implementation(module: str) -> None:
    """call.py and streaming.py reach budgets, ledger and gates only through router.state."""
    tree = ast.parse((ROOT / "router" / module).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported.isdisjoint({"router.budget", "router.limits", "router.ledger"}), imported


# -- LocalState through the State API ------------------------------------------------

PAID = """
settings: {cooldown: {failures: FAILURES, seconds: 60}}
providers:
  p: {kind: mock, models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}}
budgets: {cap: {limit_usd: 1}}
routes:
  r: {prompt: hi, fallback: [p/m]}
"""


async def _local(tmp_path: Path, clock: FakeClock, failures: int = 1) -> tuple[LocalState, object]:
    plan = make_config(tmp_path, PAID.replace("FAILURES", str(failures)))
    state = LocalState(plan, clock=clock)
    await state.start()
    return state, state.provider(plan.providers["p"])


def _begin(state: State, handle: object, amount: str = "0.1") -> Ticket | Skip | Refusal:
    return state.begin(
        handle,  # type: ignore[arg-type]
        route="r",
        model="m",
        amount=Decimal(amount),
        max_cost_usd=None,
        est_in=10,
        max_tokens=10,
    )


def _error(cls: type[ProviderError], retry_after: float | None = None) -> ProviderError:
    return cls("scripted", provider="p", model="m", status=503, retry_after=retry_after)


async def test_local_state_cools_a_provider_then_lets_one_probe_through(tmp_path: Path) -> None:
    clock = FakeClock()
    state, p = await _local(tmp_path, clock)
    try:
        ticket = _begin(state, p)
        assert isinstance(ticket, Ticket)
        assert await ticket.admit(20, 1.0) is None
        assert state.provider_state(p).in_flight == 1
        ticket.free_slot()
        ticket.failed(_error(ServerError))
        ticket.release()
        assert state.provider_state(p).cooling_down
        skip = _begin(state, p)
        assert isinstance(skip, Skip) and skip.kind is SkipKind.COOLDOWN
        clock.advance(61)
        probe = _begin(state, p)
        assert isinstance(probe, Ticket) and state.provider_state(p).probing
        other = _begin(state, p)
        assert isinstance(other, Skip) and "probe" in other.reason
        probe.release()  # ended without a verdict: another call may probe
        assert not state.provider_state(p).probing
        probe = _begin(state, p)
        assert isinstance(probe, Ticket)
        assert await probe.admit(20, 1.0) is None
        probe.free_slot()
        await probe.settle(Decimal("0.05"))
        probe.succeeded()
        probe.release()  # after a settle: nothing left to give back
        probe.free_slot()
        now = state.provider_state(p)
        assert (now.cooling_down, now.probing, now.in_flight) == (False, False, 0)
        assert state.spend()[0].spent_usd == Decimal("0.05")
        assert state.reserved_usd == 0
    finally:
        await state.aclose()


async def test_local_state_gives_the_probe_back_when_the_budget_refuses(tmp_path: Path) -> None:
    clock = FakeClock()
    state, p = await _local(tmp_path, clock)
    try:
        ticket = _begin(state, p)
        assert isinstance(ticket, Ticket)
        ticket.failed(_error(ServerError))
        ticket.release()
        clock.advance(61)
        refusal = _begin(state, p, amount="2")  # over the 1 USD budget
        assert isinstance(refusal, Refusal) and refusal.kind is SkipKind.BUDGET
        assert not state.provider_state(p).probing
        probe = _begin(state, p)
        assert isinstance(probe, Ticket)  # the probe was still available ...
        assert isinstance(_begin(state, p), Skip)  # ... and is now taken
        # An outcome that says nothing about the provider's health ends the cooldown.
        probe.failed(_error(BadRequestError))
        probe.release()
        assert not state.provider_state(p).cooling_down
    finally:
        await state.aclose()


async def test_local_state_keeps_retry_after_and_refuses_a_wait_that_does_not_fit(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    state, p = await _local(tmp_path, clock, failures=5)
    try:
        ticket = _begin(state, p)
        assert isinstance(ticket, Ticket)
        ticket.failed(_error(RateLimitError, retry_after=30))
        ticket.release()
        assert state.provider_state(p).retry_after_s == 30
        ticket = _begin(state, p)
        assert isinstance(ticket, Ticket)
        skip = await ticket.admit(20, 1.0)
        assert skip is not None and skip.kind is SkipKind.RETRY_AFTER
        assert state.provider_state(p).in_flight == 0
        ticket.release()
        assert state.reserved_usd == 0
        # A bad request counts no failure and leaves the provider as it was.
        ticket = _begin(state, p)
        assert isinstance(ticket, Ticket)
        ticket.failed(_error(BadRequestError))
        ticket.release()
        assert state.provider_state(p).failures == 1  # the rate limit's, only
    finally:
        await state.aclose()


async def test_a_ticket_settles_once(tmp_path: Path) -> None:
    state, p = await _local(tmp_path, FakeClock())
    try:
        ticket = _begin(state, p)
        assert isinstance(ticket, Ticket)
        await ticket.settle(Decimal("0.01"))
        with pytest.raises(RuntimeError, match="settled or released twice"):
            await ticket.settle(Decimal("0.01"))
        ticket.release()
        assert state.spend()[0].spent_usd == Decimal("0.01")
    finally:
        await state.aclose()
