"""``aclose()`` with calls in flight: every call ends promptly with RouterClosedError, the
caller's own cancellation (and only it) raises CancelledError, and nothing stays held.

Real local servers on 127.0.0.1; calls are caught in every place a call can wait: a
request the upstream never answers, a max_concurrency queue, a Retry-After pause, a
stream waiting for its first token or its next chunk, and a stream whose consumer is
busy elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from router import RouterClosedError, RouterError
from router.router import Router
from router.transport import DEFAULT_MAX_CONNECTIONS
from tests.routerkit import write_config
from tests.upstream import Upstream, hang_before_headers, reply, stream

Factory = Callable[..., Awaitable[Upstream]]
CHAT = "/v1/chat/completions"
# aclose() must end every call "promptly": well under the deadline of any call.
PROMPT_S = 0.5


def config(hung: str, limited: str, sse: str) -> str:
    price = "{input_per_mtok: 1, output_per_mtok: 2}"
    return (
        "providers:\n"
        f"  hung: {{kind: openai, base_url: '{hung}/v1', models: {{m: {{price: {price}}}}},"
        " limits: {max_concurrency: 100}}\n"
        f"  limited: {{kind: openai, base_url: '{limited}/v1',"
        f" models: {{m: {{price: {price}}}}}}}\n"
        f"  sse: {{kind: openai, base_url: '{sse}/v1', models: {{m: {{price: {price}}}}}}}\n"
        f"  pooled: {{kind: openai, base_url: '{hung}/v1', models: {{m: {{price: {price}}}}}}}\n"
        "settings: {retries: 2, deadline_s: 20}\n"
        "budgets:\n  all: {limit_usd: 100, period: total}\n"
        "routes:\n"
        "  hang: {prompt: hi, fallback: [hung/m]}\n"
        "  wait: {prompt: hi, fallback: [limited/m]}\n"
        "  talk: {prompt: hi, fallback: [sse/m]}\n"
        "  pool: {prompt: hi, fallback: [pooled/m]}\n"
    )


def chunk(text: str) -> bytes:
    doc = {"id": "c", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def outcome(aw: Awaitable[Any]) -> BaseException | Any:
    try:
        return await aw
    except BaseException as exc:  # CancelledError included: that is what is checked
        return exc


async def test_aclose_ends_every_complete_in_flight_with_router_closed_error(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    """250 calls: 100 on requests a hung upstream never answers, 140 queued behind its
    max_concurrency, 10 sleeping in a 5 s Retry-After pause. aclose() ends all of them
    at once with RouterClosedError, not one bare CancelledError, nothing left held."""
    hung, limited, sse = [await upstream_factory() for _ in range(3)]
    hung.route(CHAT, hang_before_headers())
    limited.route(CHAT, reply(429, {"error": {"message": "slow"}}, {"retry-after": "5"}))
    router = Router.from_yaml(write_config(tmp_path, config(hung.url, limited.url, sse.url)))
    await router.start()
    calls = [asyncio.create_task(outcome(router.complete("hang"))) for _ in range(240)]
    calls += [asyncio.create_task(outcome(router.complete("wait"))) for _ in range(10)]
    await hung.wait_until(lambda: len(hung.requests) == 100)
    await limited.wait_until(lambda: len(limited.requests) == 10)
    await asyncio.sleep(0.05)
    assert not any(c.done() for c in calls)
    t0 = time.monotonic()
    await router.aclose()
    results = await asyncio.gather(*calls)
    elapsed = time.monotonic() - t0
    kinds = {type(r).__name__ for r in results}
    print(f"\naclose() with 250 calls in flight: all ended in {elapsed * 1000:.1f} ms")
    assert kinds == {"RouterClosedError"}, kinds
    assert elapsed < PROMPT_S
    closed = results[0]
    assert isinstance(closed, RouterError) and "closed" in str(closed)
    assert closed.route == "hang" and closed.attempts == []
    assert router.reserved_usd == 0
    assert all(st.in_flight == 0 for st in router.provider_states().values())


async def test_aclose_ends_calls_queued_for_a_pooled_connection(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    """250 calls on a provider with no max_concurrency: 100 hold the pool's connections
    (DEFAULT_MAX_CONNECTIONS) and 150 wait in the HTTP client's own queue for one. Closing
    the pool must not hand those 150 a bare CancelledError: all 250 get RouterClosedError."""
    hung, limited, sse = [await upstream_factory() for _ in range(3)]
    hung.route(CHAT, hang_before_headers())
    router = Router.from_yaml(write_config(tmp_path, config(hung.url, limited.url, sse.url)))
    await router.start()
    calls = [asyncio.create_task(outcome(router.complete("pool"))) for _ in range(250)]
    await hung.wait_until(lambda: len(hung.requests) == DEFAULT_MAX_CONNECTIONS)
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await router.aclose()
    results = await asyncio.gather(*calls)
    elapsed = time.monotonic() - t0
    counts: dict[str, int] = {}
    for r in results:
        counts[type(r).__name__] = counts.get(type(r).__name__, 0) + 1
    print(f"\naclose() with 250 calls on a full pool: {counts} in {elapsed * 1000:.1f} ms")
    assert counts == {"RouterClosedError": 250}
    assert elapsed < PROMPT_S
    assert router.reserved_usd == 0


async def test_only_the_callers_own_cancellation_raises_cancelled_error(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    hung, limited, sse = [await upstream_factory() for _ in range(3)]
    hung.route(CHAT, hang_before_headers())
    router = Router.from_yaml(write_config(tmp_path, config(hung.url, limited.url, sse.url)))
    await router.start()
    calls = [asyncio.create_task(router.complete("hang")) for _ in range(3)]
    await hung.wait_until(lambda: len(hung.requests) == 3)
    calls[1].cancel()  # the caller's own cancellation, in the same loop turn as aclose()
    await router.aclose()
    results = [await outcome(c) for c in calls]
    assert isinstance(results[0], RouterClosedError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[2], RouterClosedError)
    assert router.reserved_usd == 0


async def test_aclose_ends_streams_wherever_they_wait(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    """Three streams: one waiting for its first token, one waiting for its next chunk,
    one whose consumer is busy in its own code. The first two end at once with
    RouterClosedError; the busy consumer is not interrupted (nobody cancelled it), and
    its next read raises RouterClosedError. What was generated is billed."""
    hung, limited, sse = [await upstream_factory() for _ in range(3)]
    hung.route(CHAT, hang_before_headers())
    sse.route(CHAT, stream([chunk("Hello "), chunk("there")], [0, 0], end="hang"))
    router = Router.from_yaml(write_config(tmp_path, config(hung.url, limited.url, sse.url)))
    await router.start()
    busy = asyncio.Event()
    released = asyncio.Event()
    got: dict[str, list[str]] = {"reading": [], "busy": []}

    async def first_token() -> None:
        async with router.stream("hang"):
            raise AssertionError("no token ever comes")

    async def reading() -> None:
        async with router.stream("talk") as s:
            async for delta in s:
                got["reading"].append(delta)

    async def consumer_busy() -> str:
        async with router.stream("talk") as s:
            got["busy"].append(await anext(s))
            busy.set()
            await released.wait()  # the app's own work: must not be cancelled
            try:
                await anext(s)
            except RouterClosedError:
                return "worked"
        return "not closed"

    tasks = [
        asyncio.create_task(outcome(first_token())),
        asyncio.create_task(outcome(reading())),
        asyncio.create_task(outcome(consumer_busy())),
    ]
    await hung.wait_until(lambda: len(hung.requests) == 1)
    await busy.wait()
    await sse.wait_until(lambda: len(sse.requests) == 2)
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await router.aclose()
    first, second = await asyncio.gather(tasks[0], tasks[1])
    elapsed = time.monotonic() - t0
    print(f"\naclose() with 2 streams waiting: both ended in {elapsed * 1000:.1f} ms")
    assert isinstance(first, RouterClosedError), first
    assert isinstance(second, RouterClosedError), second
    assert elapsed < PROMPT_S
    assert got["reading"] == ["Hello ", "there"]
    assert not tasks[2].done()  # the busy consumer was left alone
    released.set()
    assert await tasks[2] == "worked"
    assert router.reserved_usd == 0
    [everything] = router.spend()
    assert everything.spent_usd > 0  # both streams' text was billed
    assert all(st.in_flight == 0 for st in router.provider_states().values())


async def test_a_stream_cancelled_by_its_caller_during_aclose_raises_cancelled_error(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    hung, limited, sse = [await upstream_factory() for _ in range(3)]
    hung.route(CHAT, hang_before_headers())
    sse.route(CHAT, stream([chunk("Hello ")], [0], end="hang"))
    router = Router.from_yaml(write_config(tmp_path, config(hung.url, limited.url, sse.url)))
    await router.start()

    async def first_token() -> None:
        async with router.stream("hang"):
            raise AssertionError("no token ever comes")

    async def reading() -> None:
        async with router.stream("talk") as s:
            async for _ in s:
                pass

    mine = [asyncio.create_task(first_token()), asyncio.create_task(reading())]
    theirs = [asyncio.create_task(first_token()), asyncio.create_task(reading())]
    await hung.wait_until(lambda: len(hung.requests) == 2)
    await sse.wait_until(lambda: len(sse.requests) == 2)
    await asyncio.sleep(0.05)
    for task in mine:
        task.cancel()  # the callers' own cancellations, in the same loop turn as aclose()
    await router.aclose()
    assert [type(await outcome(t)).__name__ for t in mine] == ["CancelledError"] * 2
    assert [type(await outcome(t)).__name__ for t in theirs] == ["RouterClosedError"] * 2
    assert router.reserved_usd == 0
