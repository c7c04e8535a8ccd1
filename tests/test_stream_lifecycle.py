"""A stream's lifecycle at its edges: what its lease gives back, and in which order.

The attempt's lease (slot and reservation) is held by the call, then by the open
stream; these pin down what must hold whichever object holds it: a half-open probe
that fails mid-stream is judged before its lease lets go of it, a caller's own
timeout on one read leaves the stream to be settled when the block is left, and a
stream the router closed stays closed for every read.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from router import RouterClosedError
from router.errors import AllProvidersFailedError, StreamInterruptedError
from router.router import Router
from tests.routerkit import make_config
from tests.test_stream_router import P1, VARS, config_yaml, oa
from tests.upstream import Upstream, reply, stream


def gates_idle(router: Router) -> bool:
    return all(st.in_flight == 0 for st in router.provider_states().values())


def spent(router: Router) -> object:
    [everything] = router.spend()
    return everything.spent_usd


async def test_a_probe_cut_after_its_first_text_puts_the_provider_back_in_cooldown(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The interrupted probe is judged as a probe (cooldown again at once), not as one
    more failure towards the threshold: the failure is recorded before the lease,
    which gives back the probe, is released."""
    now = [0.0]
    settings = {"cooldown": {"failures": 5, "seconds": 10}}
    body = config_yaml(upstream.url, settings=settings, route={"fallback": ["p1/m"]})
    plan = make_config(tmp_path, body)
    upstream.queue(reply(401, {"error": {"message": "bad key"}}), path=P1)
    upstream.queue(stream([oa("Hello ")], end="close"), path=P1)
    async with Router(plan, clock=lambda: now[0]) as router:
        with pytest.raises(AllProvidersFailedError):
            async with router.stream("r", VARS):
                pass
        assert router.provider_states()["p1"].cooling_down  # the bad key: at once
        now[0] += 11  # the cooldown is over: the next call is the half-open probe
        async with router.stream("r", VARS) as s:
            assert router.provider_states()["p1"].probing
            assert await anext(s) == "Hello "
            with pytest.raises(StreamInterruptedError):
                await anext(s)
        state = router.provider_states()["p1"]
        assert state.cooling_down and state.cooldown_remaining_s == 10
        assert state.failures == 0 and not state.probing
        assert router.reserved_usd == 0 and gates_idle(router)


async def test_a_callers_timeout_on_one_read_leaves_the_stream_to_be_settled_on_leaving(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The caller's own cancellation raises from its read and settles nothing by
    itself: the stream stays the caller's until it leaves the block, which closes
    the response and bills what arrived (finish_reason "stopped_by_caller")."""
    upstream.queue(stream([oa("Hello ")], end="hang"), path=P1)
    plan = make_config(tmp_path, config_yaml(upstream.url))
    async with Router(plan) as router:
        async with router.stream("r", VARS) as s:
            assert await anext(s) == "Hello "
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await anext(s)
            assert router.reserved_usd > 0  # still open: nothing settled yet
            assert s.completion is None
        assert s.completion is not None and s.completion.text == "Hello "
        assert s.completion.finish_reason == "stopped_by_caller"
        assert spent(router) == s.completion.cost_usd > 0
        assert router.reserved_usd == 0 and gates_idle(router)
        await upstream.wait_until(lambda: upstream.disconnects == 1)


async def test_every_read_after_aclose_ended_a_stream_raises_router_closed_error(
    tmp_path: Path, upstream: Upstream
) -> None:
    chunk = b"data: " + json.dumps({"choices": [{"delta": {"content": "Hi "}}]}).encode()
    upstream.queue(stream([chunk + b"\n\n"], end="hang"), path=P1)
    router = Router(make_config(tmp_path, config_yaml(upstream.url)))
    await router.start()
    async with router.stream("r", VARS) as s:
        assert await anext(s) == "Hi "
        await router.aclose()  # this task is not reading: the close settles the stream
        assert router.reserved_usd == 0 and spent(router) > 0
        for _ in range(3):
            with pytest.raises(RouterClosedError) as info:
                await anext(s)
            assert info.value.route == "r" and info.value.attempts[-1].outcome == "error"
    assert s.completion is None
