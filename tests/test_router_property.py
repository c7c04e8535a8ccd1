"""Property: for any scripted outcomes and deadline, a call follows the policy table.

Time is simulated: a fake clock that the fake transport and the router's sleeps
advance, so thousands of chains with hangs and Retry-After values run in
milliseconds and the deadline can be checked exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import (
    AllProvidersFailedError,
    DeadlineExceededError,
    ProviderError,
    ProviderTimeoutError,
)
from router.policy import rule_for
from router.router import Router
from router.transport import RawResponse
from router.types import WireRequest
from tests.fakeclock import FakeClock
from tests.routerkit import make_config

STATUS_KIND = {
    429: "rate_limit",
    500: "server",
    503: "server",
    529: "server",
    401: "auth",
    404: "endpoint_not_found",  # the scripted body names no model: a wrong URL
    410: "gone",
    400: "bad_request",
}

OK_BODY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "fine"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


@dataclass
class Outcome:
    kind: str  # "ok", "status", "hang"
    latency: float = 0.01
    status: int = 200
    retry_after: float | None = None


@dataclass
class FakeTransport:
    """Plays a script of outcomes in simulated time."""

    name: str
    clock: FakeClock
    script: list[Outcome]
    sent: list[float] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def display_url(self, path: str) -> str:
        return f"https://{self.name}.example{path}"

    async def send(self, req: WireRequest, *, model: str, timeout_s: float) -> RawResponse:
        self.sent.append(timeout_s)
        o = self.script.pop(0) if self.script else Outcome("ok")
        latency = 1e9 if o.kind == "hang" else o.latency
        if latency > timeout_s:
            self.clock.advance(timeout_s)
            await asyncio.sleep(0)
            raise ProviderTimeoutError(
                f"no response within {timeout_s:.3f}s", provider=self.name, model=model
            )
        self.clock.advance(latency)
        await asyncio.sleep(0)
        if o.kind == "ok":
            return RawResponse(200, {"content-type": "application/json"}, OK_BODY)
        headers = {"content-type": "application/json"}
        if o.retry_after is not None:
            headers["retry-after"] = str(o.retry_after)
        body = json.dumps({"error": {"message": f"scripted {o.status}", "type": "x"}}).encode()
        return RawResponse(o.status, headers, body)


outcome_st = st.one_of(
    st.builds(Outcome, kind=st.just("ok"), latency=st.floats(0.001, 3)),
    st.builds(Outcome, kind=st.just("hang")),
    st.builds(
        Outcome,
        kind=st.just("status"),
        latency=st.floats(0.001, 1),
        status=st.sampled_from(sorted(STATUS_KIND)),
        retry_after=st.one_of(st.none(), st.floats(0, 40)),
    ),
)

chain_st = st.lists(
    st.tuples(st.integers(0, 2), st.lists(outcome_st, max_size=4)), min_size=1, max_size=3
)


def _config_body(chain: list[tuple[int, list[Outcome]]]) -> str:
    providers = "".join(f"  p{i}: {{kind: mock, models: {{m: {{}}}}}}\n" for i in range(len(chain)))
    steps = "".join(f"      - {{model: p{i}/m, retries: {r}}}\n" for i, (r, _) in enumerate(chain))
    return (
        "settings: {attempt_floor_s: 0.2, cooldown: {failures: 100, seconds: 1},"
        " retry_after_max_s: 86400}\n"
        f"providers:\n{providers}"
        f"routes:\n  r:\n    prompt: hi\n    fallback:\n{steps}"
    )


def _expected_without_pressure(chain: list[tuple[int, list[Outcome]]]) -> Iterator[tuple[int, str]]:
    """The (step, kind) sequence of tries when time is plentiful and nothing hangs."""
    for i, (retries, script) in enumerate(chain):
        for tries, o in enumerate([*script, Outcome("ok")]):
            kind = "ok" if o.kind == "ok" else STATUS_KIND[o.status]
            yield i, kind
            if kind == "ok":
                return
            rule = rule_for(kind)
            limit = retries if rule.max_retries is None else min(retries, rule.max_retries)
            if not rule.retry or tries >= limit:
                break
            # Retry-After beyond the share moves on at once.
            if o.retry_after is not None and o.retry_after >= 1000 / (len(chain) - i):
                break


async def _run(tmp_path: Path, chain: list[tuple[int, list[Outcome]]], deadline: float):
    clock = FakeClock()

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    router = Router(make_config(tmp_path, _config_body(chain)), clock=clock, sleep=sleep)
    fakes = []
    for i, (_, script) in enumerate(chain):
        fake = FakeTransport(f"p{i}", clock, list(script))
        router._providers[f"p{i}"].transport = fake  # type: ignore[assignment]
        fakes.append(fake)
    start = clock.now
    async with router:
        try:
            result = await router.complete("r", deadline_s=deadline)
            error = None
        except (AllProvidersFailedError, DeadlineExceededError) as exc:
            result, error = None, exc
    return result, error, clock.now - start, fakes


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chain=chain_st, deadline=st.floats(0.05, 20))
def test_any_outcomes_any_deadline(
    tmp_path: Path, chain: list[tuple[int, list[Outcome]]], deadline: float
) -> None:
    """Never past the deadline; attempts in chain order, within retry counts; the right error."""
    result, error, elapsed, _ = asyncio.run(_run(tmp_path, chain, deadline))
    assert elapsed <= deadline + 1e-9
    attempts = result.attempts if result else error.attempts  # type: ignore[union-attr]
    steps = [int(a.provider[1:]) for a in attempts]
    assert steps == sorted(steps), "attempts go down the chain in order"
    for i, (retries, _) in enumerate(chain):
        tried = [a for a in attempts if a.provider == f"p{i}" and a.outcome != "skipped"]
        assert len(tried) <= retries + 1
    for a, b in itertools.pairwise(attempts):
        if a.provider == b.provider and a.error is not None:
            assert isinstance(a.error, ProviderError) and rule_for(a.error.kind).retry
    if result is not None:
        assert attempts[-1].outcome == "ok"
        assert all(a.outcome != "ok" for a in attempts[:-1])
    elif isinstance(error, DeadlineExceededError):
        assert elapsed >= deadline - 1e-9
    else:
        assert elapsed < deadline


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chain=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.lists(
                st.builds(
                    Outcome,
                    kind=st.just("status"),
                    latency=st.just(0.01),
                    status=st.sampled_from(sorted(STATUS_KIND)),
                    retry_after=st.one_of(st.none(), st.sampled_from([0.5, 5000.0])),
                ),
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_with_time_to_spare_the_first_success_in_chain_order_wins(
    tmp_path: Path, chain: list[tuple[int, list[Outcome]]]
) -> None:
    """With a generous deadline, the tries are exactly what the policy table prescribes."""
    result, error, _, _ = asyncio.run(_run(tmp_path, chain, 1000.0))
    attempts = result.attempts if result else error.attempts  # type: ignore[union-attr]
    got = [
        (int(a.provider[1:]), "ok" if a.outcome == "ok" else a.error.kind)  # type: ignore[union-attr]
        for a in attempts
    ]
    assert got == list(_expected_without_pressure(chain))
    if result is None:
        assert isinstance(error, AllProvidersFailedError)
