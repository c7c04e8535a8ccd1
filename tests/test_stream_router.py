"""router.stream() end to end against a local server: fallback, interruption, release, time.

Step 1 of every chain is ``p1`` and step 2 is ``p2`` (OpenAI wire format), both
served by one local :class:`~tests.upstream.Upstream` under their own path, so a
test can tell which step was asked and how often.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router.budget import cost_usd
from router.config import Price
from router.errors import (
    AllProvidersFailedError,
    BadRequestError,
    BudgetExceededError,
    DeadlineExceededError,
    EndpointNotFoundError,
    GoneError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ServerError,
    StreamInterruptedError,
    TemplateError,
)
from router.estimate import estimate_text_tokens, estimate_tokens
from router.router import Router
from router.streaming import RouteStream
from router.types import Attempt, Message, Usage
from tests.logs import capture_logs
from tests.routerkit import make_config
from tests.upstream import (
    Behaviour,
    Upstream,
    hang_before_headers,
    replay,
    reply,
    stream,
)

P1 = "/p1/v1/chat/completions"
P2 = "/p2/v1/chat/completions"
A1 = "/a1/v1/messages"  # an Anthropic step 1
O1 = "/o1/api/chat"  # an Ollama step 1
PROMPT = "Tell me about {{ ticker }}."
PRICE = Price(input_per_mtok=Decimal(2), output_per_mtok=Decimal(8))
EST_IN = estimate_tokens([Message("user", "Tell me about ACME.")])
VARS = {"ticker": "ACME"}
# Allowed lateness of a deadline or timeout (docs/routing.md: under 50 ms).
SLACK_S = 0.05
STEP2_TEXT = "Step two answers."


def config_yaml(
    url: str,
    *,
    first: str = "p1",
    settings: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
    p1: dict[str, Any] | None = None,
) -> str:
    price = {"input_per_mtok": 2, "output_per_mtok": 8}
    providers: dict[str, Any] = {
        "p1": {"kind": "openai", "base_url": f"{url}/p1/v1", "models": {"m": {"price": price}}},
        "p2": {"kind": "openai", "base_url": f"{url}/p2/v1", "models": {"m": {"price": price}}},
        "a1": {"kind": "anthropic", "base_url": f"{url}/a1", "models": {"m": {"price": price}}},
        "o1": {"kind": "ollama", "base_url": f"{url}/o1", "models": {"m": {"price": price}}},
    }
    providers["p1"].update(p1 or {})
    return json.dumps(
        {
            "settings": {"retries": 0, **(settings or {})},
            "providers": providers,
            "budgets": {"everything": {"limit_usd": 100, "period": "total"}},
            "routes": {
                "r": {
                    "prompt": PROMPT,
                    "vars": {"ticker": "str"},
                    "max_tokens": 100,
                    "fallback": [f"{first}/m", "p2/m"],
                    **(route or {}),
                }
            },
        }
    )


def make_router(tmp_path: Path, up: Upstream, **kwargs: Any) -> Router:
    hooks = {k: kwargs.pop(k) for k in ("on_attempt",) if k in kwargs}
    return Router(make_config(tmp_path, config_yaml(up.url, **kwargs)), **hooks)


# ------------------------------------------------------------------ wire helpers


def oa(text: str | None = None, *, finish: str | None = None, usage: Any = None) -> bytes:
    """One OpenAI chat.completion.chunk as an SSE event."""
    doc: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk"}
    doc["choices"] = [] if usage else [{"index": 0, "delta": {}, "finish_reason": finish}]
    if text is not None:
        doc["choices"][0]["delta"]["content"] = text
    if usage:
        doc["usage"] = usage
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def oa_usage(prompt: int, completion: int) -> bytes:
    return oa(
        usage={
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    )


DONE = b"data: [DONE]\n\n"
ROLE = b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def oa_answer(text: str, words: int | None = None) -> list[bytes]:
    """A complete stream of ``text`` split at spaces, with usage and [DONE]."""
    pieces = text.split(" ")
    deltas = [p + " " for p in pieces[:-1]] + [pieces[-1]]
    return [ROLE, *(oa(d) for d in deltas), oa(finish="stop"), oa_usage(20, 7), DONE]


def step2_answers(up: Upstream) -> None:
    up.route(P2, stream(oa_answer(STEP2_TEXT)))


def anthropic(event: str, doc: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **doc})}\n\n".encode()


def a_start(input_tokens: int) -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return anthropic("message_start", {"message": message})


def a_text(text: str) -> bytes:
    return anthropic(
        "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}
    )


def a_delta(stop_reason: str, output_tokens: int) -> bytes:
    return anthropic(
        "message_delta",
        {"delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": output_tokens}},
    )


def ollama(text: str) -> bytes:
    doc = {"model": "m", "message": {"role": "assistant", "content": text}, "done": False}
    return json.dumps(doc).encode() + b"\n"


A_OVERLOADED = anthropic("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})


async def consume(s: RouteStream, into: list[str]) -> None:
    async for delta in s:
        into.append(delta)


def requests_to(up: Upstream, path: str) -> int:
    return sum(1 for r in up.requests if r.path == path)


def gates_idle(router: Router) -> bool:
    """No admission slot held, and no call holding the router's config generation."""
    return router.calls_in_flight == 0 and all(
        st.in_flight == 0 for st in router.provider_states().values()
    )


def spent(router: Router) -> Decimal:
    [everything] = router.spend()
    return everything.spent_usd


async def settle_tasks() -> set[asyncio.Task[Any]]:
    """The tasks alive after a few loop turns and a GC pass (finalizers schedule tasks)."""
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0.005)
    return asyncio.all_tasks()


async def timed(coro: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    try:
        result = await coro
    except Exception as exc:
        result = exc
    return result, time.monotonic() - t0


# ----------------------------------------------------------------- the happy path


async def test_deltas_arrive_as_sent_and_completion_holds_usage_and_cost(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream(oa_answer("one two three four")), path=P1)
    deltas: list[str] = []
    async with make_router(tmp_path, upstream) as router:
        async with router.stream("r", VARS) as s:
            assert router.reserved_usd > 0  # the worst case is held while it streams
            assert router.provider_states()["p1"].in_flight == 1
            await consume(s, deltas)
        assert deltas == ["one ", "two ", "three ", "four"]
        c = s.completion
        assert c is not None and c.text == "one two three four"
        assert c.usage == Usage(20, 7) and c.finish_reason == "stop"
        assert c.cost_usd == cost_usd(Usage(20, 7), PRICE) == spent(router)
        assert router.reserved_usd == 0 and gates_idle(router)
        assert [(a.provider, a.outcome) for a in c.attempts] == [("p1", "ok")]
        assert upstream.requests[0].json()["stream"] is True


async def test_completed_stream_returns_its_connection_to_the_pool(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Reading to the end of the body after the end marker lets the next call reuse it."""
    upstream.route(P1, stream(oa_answer("a b c")))
    async with make_router(tmp_path, upstream) as router:
        for _ in range(3):
            async with router.stream("r", VARS) as s:
                await consume(s, [])
        assert upstream.connections_opened == 1
        assert upstream.disconnects == 0


async def test_attempt_and_log_carry_time_to_first_token(
    tmp_path: Path, upstream: Upstream
) -> None:
    chunks = oa_answer("late start")
    upstream.queue(stream(chunks, [0.12] + [0] * (len(chunks) - 1)), path=P1)
    async with make_router(tmp_path, upstream) as router:
        with capture_logs() as logs:
            async with router.stream("r", VARS) as s:
                await consume(s, [])
    assert s.completion is not None
    [attempt] = s.completion.attempts
    assert attempt.ttft_s is not None and 0.12 <= attempt.ttft_s < 0.12 + SLACK_S
    [log] = [e for e in logs if e["event"] == "llm_attempt"]
    assert log["ttft_ms"] == round(attempt.ttft_s * 1000, 2)


async def test_template_error_raises_from_stream_before_any_request(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with make_router(tmp_path, upstream) as router:
        with pytest.raises(TemplateError, match="ticker"):
            router.stream("r", {"tickr": "ACME"})
        assert router.reserved_usd == 0
    assert upstream.requests == []


async def test_iterating_without_async_with_is_a_clear_error(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with make_router(tmp_path, upstream) as router:
        s = router.stream("r", VARS)
        with pytest.raises(RuntimeError, match="async with"):
            await s.__anext__()
    assert upstream.requests == []


# ------------------------------------------------------- fallback before the first text


async def _falls_back(router: Router, up: Upstream, first: str = P1) -> list[Attempt]:
    step2_answers(up)
    deltas: list[str] = []
    async with router.stream("r", VARS) as s:
        await consume(s, deltas)
    assert "".join(deltas) == STEP2_TEXT
    c = s.completion
    assert c is not None and c.provider == "p2" and c.text == STEP2_TEXT
    assert requests_to(up, first) == 1 and requests_to(up, P2) == 1
    assert router.reserved_usd == 0 and gates_idle(router)
    assert spent(router) == c.cost_usd  # the failed step billed nothing
    assert [a.outcome for a in c.attempts] == ["error", "ok"]
    return c.attempts


async def test_falls_back_when_step_1_fails_before_the_first_byte(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(reply(503, {"error": {"message": "busy"}}), path=P1)
    async with make_router(tmp_path, upstream) as router:
        attempts = await _falls_back(router, upstream)
    assert isinstance(attempts[0].error, ServerError) and attempts[0].status == 503


async def test_falls_back_when_step_1_never_answers(tmp_path: Path, upstream: Upstream) -> None:
    upstream.queue(hang_before_headers(), path=P1)
    async with make_router(tmp_path, upstream, route={"first_token_timeout_s": 0.2}) as router:
        attempts = await _falls_back(router, upstream)
    assert isinstance(attempts[0].error, ProviderTimeoutError)
    assert 0.2 <= attempts[0].latency_s < 0.2 + SLACK_S
    await upstream.wait_until(lambda: upstream.disconnects >= 1)


async def test_falls_back_when_step_1_stalls_after_the_headers(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([], end="hang"), path=P1)
    async with make_router(tmp_path, upstream, p1={"first_token_timeout_s": 0.2}) as router:
        attempts = await _falls_back(router, upstream)
    err = attempts[0].error
    assert isinstance(err, ProviderTimeoutError) and "first token" in str(err)
    assert 0.2 <= attempts[0].latency_s < 0.2 + SLACK_S
    await upstream.wait_until(lambda: upstream.disconnects >= 1)  # the stalled one is closed


async def test_chunks_without_text_do_not_extend_the_first_token_wait(
    tmp_path: Path, upstream: Upstream
) -> None:
    """first_token_timeout_s bounds the wait for the first *text* delta, however busy."""
    upstream.queue(stream([ROLE] * 40, 0.01, end="hang"), path=P1)
    async with make_router(tmp_path, upstream, p1={"first_token_timeout_s": 0.2}) as router:
        attempts = await _falls_back(router, upstream)
    assert isinstance(attempts[0].error, ProviderTimeoutError)
    assert 0.2 <= attempts[0].latency_s < 0.2 + SLACK_S


async def test_falls_back_on_an_anthropic_overloaded_event_before_any_text(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(
        replay("anthropic/anthropic-messages-200-sse-error-overloaded.meta.json", chunk_size=7),
        path=A1,
    )
    async with make_router(tmp_path, upstream, first="a1") as router:
        attempts = await _falls_back(router, upstream, first=A1)
    err = attempts[0].error
    assert isinstance(err, ServerError) and "Overloaded" in str(err)


async def test_falls_back_on_groq_error_event_after_reasoning_but_before_text(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(
        replay(
            "openai-compatible/groq-chat-200-sse-midstream-error-event.meta.json", chunk_size=512
        ),
        path=P1,
    )
    async with make_router(tmp_path, upstream) as router:
        attempts = await _falls_back(router, upstream)
    err = attempts[0].error
    assert isinstance(err, BadRequestError) and "Tool call validation failed" in str(err)


async def test_falls_back_when_the_body_ends_cleanly_without_marker_or_text(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([ROLE, oa(finish="stop")]), path=P1)
    async with make_router(tmp_path, upstream) as router:
        attempts = await _falls_back(router, upstream)
    err = attempts[0].error
    assert isinstance(err, ProviderConnectionError) and "end-of-stream marker" in str(err)


async def test_step_1_is_retried_before_its_first_text(tmp_path: Path, upstream: Upstream) -> None:
    upstream.queue(reply(503, b"busy"), stream(oa_answer("second try")), path=P1)
    config = config_yaml(upstream.url, settings={"retries": 1, "backoff": {"initial_s": 0.001}})
    async with Router(make_config(tmp_path, config)) as router, router.stream("r", VARS) as s:
        await consume(s, [])
    assert s.completion is not None and s.completion.text == "second try"
    assert [(a.provider, a.outcome) for a in s.completion.attempts] == [
        ("p1", "error"),
        ("p1", "ok"),
    ]


async def test_every_step_failing_raises_at_async_with(tmp_path: Path, upstream: Upstream) -> None:
    upstream.route(P1, reply(503, b"busy"))
    upstream.route(P2, reply(500, b"down"))
    async with make_router(tmp_path, upstream) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            async with router.stream("r", VARS):
                raise AssertionError("not reached")
        assert [a.status for a in info.value.attempts] == [503, 500]
        assert router.reserved_usd == 0 and gates_idle(router) and spent(router) == 0


async def test_a_stream_to_a_wrong_base_url_names_the_url_and_falls_back(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Streams read the error the same way: a bare 404 at p1 (base_url without /v1) is
    EndpointNotFoundError naming the URL requested, and step two streams the answer."""
    upstream.route("/p1/chat/completions", reply(404, b'{"detail":"Not Found"}'))
    step2_answers(upstream)
    router = make_router(tmp_path, upstream, p1={"base_url": f"{upstream.url}/p1"})
    async with router, router.stream("r", VARS) as s:
        await consume(s, [])
    assert s.completion is not None and s.completion.text == STEP2_TEXT
    err = s.completion.attempts[0].error
    assert isinstance(err, EndpointNotFoundError)
    assert err.url == f"POST {upstream.url}/p1/chat/completions"
    assert "[Not Found]; check base_url" in err.detail


async def test_a_stream_answered_410_names_the_extras_sent(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.route(P1, reply(410, b'{"code":"x","error":"Live search is deprecated."}'))
    step2_answers(upstream)
    p1 = {"extra": {"search_parameters": {"mode": "off"}, "seed": 1}}
    router = make_router(tmp_path, upstream, p1=p1)
    async with router, router.stream("r", VARS) as s:
        await consume(s, [])
    assert s.completion is not None and s.completion.provider == "p2"
    err = s.completion.attempts[0].error
    assert isinstance(err, GoneError)
    assert "(extra body fields sent: search_parameters, seed)" in err.detail


# ------------------------------------------------------ failure after the first text


async def _interrupted(
    router: Router, up: Upstream, expect_text: str, path: str = P1
) -> tuple[StreamInterruptedError, list[str]]:
    step2_answers(up)
    deltas: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        async with router.stream("r", VARS) as s:
            await consume(s, deltas)
    err = info.value
    assert isinstance(err, ProviderError)
    assert "".join(deltas) == err.partial_text == expect_text
    assert s.completion is None  # never a truncated success
    assert requests_to(up, P2) == 0  # no fallback, no spliced continuation
    assert requests_to(up, path) == 1  # and no retry
    assert err.usage is not None and err.usage.output_tokens > 0
    assert router.reserved_usd == 0 and gates_idle(router)
    assert spent(router) == cost_usd(err.usage, PRICE) > 0
    return err, deltas


def _estimated(text: str, input_tokens: int = EST_IN) -> Usage:
    return Usage(input_tokens, estimate_text_tokens(text), estimated=True)


@pytest.mark.parametrize("end", ["reset", "close"])
async def test_connection_lost_after_text_raises_interrupted_with_the_partial_text(
    tmp_path: Path, upstream: Upstream, end: str
) -> None:
    upstream.queue(stream([ROLE, oa("Hello, "), oa("wor")], end=end), path=P1)  # type: ignore[arg-type]
    async with make_router(tmp_path, upstream, settings={"retries": 2}) as router:
        err, deltas = await _interrupted(router, upstream, "Hello, wor")
    assert deltas == ["Hello, ", "wor"]
    assert isinstance(err.cause, ProviderConnectionError)
    assert err.usage == _estimated("Hello, wor")  # the provider never sent usage
    assert (err.provider, err.model) == ("p1", "m")


async def test_clean_end_without_marker_after_text_is_interrupted(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([oa("partial "), oa("answer")]), path=P1)
    async with make_router(tmp_path, upstream) as router:
        err, _ = await _interrupted(router, upstream, "partial answer")
    assert isinstance(err.cause, ProviderConnectionError)


async def test_stall_past_idle_timeout_after_text_is_interrupted(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([oa("so far "), oa("so good")], end="hang"), path=P1)
    async with make_router(tmp_path, upstream, route={"idle_timeout_s": 0.2}) as router:
        (result, elapsed) = await timed(_interrupted(router, upstream, "so far so good"))
    err, _ = result
    assert isinstance(err.cause, ProviderTimeoutError) and "idle_timeout_s" in str(err)
    assert 0.2 <= elapsed < 0.2 + SLACK_S
    await upstream.wait_until(lambda: upstream.disconnects == 1)


async def test_error_event_after_text_is_interrupted_with_the_usage_reported_so_far(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Anthropic reported the input (41 tokens) up front; the output is estimated from the text."""
    text = "A fairly long first sentence, long enough to be many tokens. " * 4
    upstream.queue(stream([a_start(41), a_text(text), a_text("And"), A_OVERLOADED]), path=A1)
    async with make_router(tmp_path, upstream, first="a1") as router:
        err, _ = await _interrupted(router, upstream, text + "And", path=A1)
    assert isinstance(err.cause, ServerError)
    assert err.usage == _estimated(text + "And", input_tokens=41)


async def test_openai_error_object_after_text_is_interrupted(
    tmp_path: Path, upstream: Upstream
) -> None:
    error = b'data: {"error": {"message": "internal failure", "type": "server_error"}}\n\n'
    upstream.queue(stream([oa("first "), oa("bit"), error]), path=P1)
    async with make_router(tmp_path, upstream) as router:
        err, _ = await _interrupted(router, upstream, "first bit")
    assert "internal failure" in str(err)


async def test_interrupted_attempt_is_recorded_with_its_cost_and_ttft(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Observers and the attempt log see the interrupted attempt's cost and TTFT as it is logged."""
    seen: list[tuple[str, Decimal, float | None]] = []

    def on_attempt(route: str, a: Attempt) -> None:
        seen.append((a.outcome, a.cost_usd, a.ttft_s))

    upstream.queue(stream([oa("some "), oa("text")], end="reset"), path=P1)
    async with make_router(tmp_path, upstream, on_attempt=on_attempt) as router:
        with capture_logs() as logs:
            err, _ = await _interrupted(router, upstream, "some text")
    [(outcome, cost, ttft)] = seen
    assert outcome == "error" and cost == cost_usd(err.usage, PRICE) > 0  # type: ignore[arg-type]
    assert ttft is not None
    [log] = [e for e in logs if e["event"] == "llm_attempt"]
    assert log["ttft_ms"] is not None and log["error_type"] == "stream_interrupted"


# --------------------------------------------------------- leaving a stream early


def _slow_tail(n: int = 30) -> Behaviour:
    """Three deltas at once, then one every 50 ms: the server is mid-stream when we leave."""
    chunks = [oa(f"d{i} ") for i in range(n)]
    return stream(chunks, [0, 0, 0] + [0.05] * (n - 3), end="hang")


async def test_break_after_three_deltas_closes_and_releases_everything(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(_slow_tail(), path=P1)
    async with make_router(tmp_path, upstream) as router:
        before = asyncio.all_tasks()
        deltas: list[str] = []
        async with router.stream("r", VARS) as s:
            async for delta in s:
                deltas.append(delta)
                if len(deltas) == 3:
                    break
        assert router.reserved_usd == 0 and gates_idle(router)
        await upstream.wait_until(lambda: upstream.disconnects == 1)
        await upstream.wait_until(lambda: upstream.open_connections == 0)
        assert await settle_tasks() == before
        c = s.completion
        assert c is not None and c.text == "d0 d1 d2 " == "".join(deltas)
        assert c.finish_reason == "stopped_by_caller"
        assert c.usage == _estimated("d0 d1 d2 ")
        assert spent(router) == c.cost_usd == cost_usd(c.usage, PRICE) > 0
        # The connection pool is whole again: the next call goes through.
        upstream.queue(stream(oa_answer("next one")), path=P1)
        async with router.stream("r", VARS) as s2:
            await consume(s2, [])
        assert s2.completion is not None and s2.completion.text == "next one"


async def test_exception_in_the_block_releases_and_bills_what_was_read(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(_slow_tail(), path=P1)
    async with make_router(tmp_path, upstream) as router:
        s = router.stream("r", VARS)

        async def app_fails() -> None:
            async with s:
                async for _ in s:
                    raise KeyError("the app failed")

        with pytest.raises(KeyError):
            await app_fails()
        assert router.reserved_usd == 0 and gates_idle(router)
        assert s.completion is not None and s.completion.text == "d0 "
        assert spent(router) == s.completion.cost_usd > 0
        await upstream.wait_until(lambda: upstream.disconnects == 1)


async def test_cancelling_the_consumer_mid_stream_releases_everything(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(_slow_tail(), path=P1)
    async with make_router(tmp_path, upstream) as router:
        before = asyncio.all_tasks()
        deltas: list[str] = []
        holder: list[RouteStream] = []

        async def run() -> None:
            async with router.stream("r", VARS) as s:
                holder.append(s)
                await consume(s, deltas)

        task = asyncio.create_task(run())
        await upstream.wait_until(lambda: len(deltas) >= 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert router.reserved_usd == 0 and gates_idle(router)
        await upstream.wait_until(lambda: upstream.disconnects == 1)
        await upstream.wait_until(lambda: upstream.open_connections == 0)
        assert await settle_tasks() == before
        [s] = holder
        assert s.completion is not None and s.completion.text == "".join(deltas)
        assert s.completion.finish_reason == "stopped_by_caller"
        assert spent(router) == s.completion.cost_usd > 0


async def test_cancelling_while_waiting_for_the_first_token_releases_everything(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([], end="hang"), path=P1)
    async with make_router(tmp_path, upstream) as router:
        before = asyncio.all_tasks()

        async def run() -> None:
            async with router.stream("r", VARS) as s:
                await consume(s, [])

        task = asyncio.create_task(run())
        await upstream.wait_until(lambda: len(upstream.requests) == 1)
        await asyncio.sleep(0.02)
        assert router.reserved_usd > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert router.reserved_usd == 0 and gates_idle(router) and spent(router) == 0
        await upstream.wait_until(lambda: upstream.disconnects == 1)
        await upstream.wait_until(lambda: upstream.open_connections == 0)
        assert await settle_tasks() == before


async def test_leaving_before_iterating_bills_the_first_delta(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(_slow_tail(), path=P1)
    async with make_router(tmp_path, upstream) as router:
        async with router.stream("r", VARS) as s:
            pass
        assert s.completion is not None and s.completion.text == "d0 "
        assert router.reserved_usd == 0 and gates_idle(router)
        await upstream.wait_until(lambda: upstream.disconnects == 1)


# ------------------------------------------------------------------------ time


async def test_deadline_bounds_a_slow_dripping_stream(tmp_path: Path, upstream: Upstream) -> None:
    """A chunk every 40 ms, each within idle_timeout_s: only the deadline can stop it."""
    upstream.queue(stream([oa("tick ")] * 100, 0.04, end="hang"), path=P1)
    async with make_router(tmp_path, upstream) as router:
        deltas: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(StreamInterruptedError) as info:
            async with router.stream("r", VARS, deadline_s=0.5) as s:
                await consume(s, deltas)
        elapsed = time.monotonic() - t0
        assert 0.5 <= elapsed < 0.5 + SLACK_S
        assert isinstance(info.value.cause, ProviderTimeoutError)
        assert info.value.partial_text == "".join(deltas) and len(deltas) >= 8
        assert s.completion is None and router.reserved_usd == 0 and gates_idle(router)


async def test_deadline_caps_the_first_token_wait(tmp_path: Path, upstream: Upstream) -> None:
    upstream.route(P1, stream([], end="hang"))
    upstream.route(P2, stream([], end="hang"))
    async with make_router(tmp_path, upstream) as router:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            async with router.stream("r", VARS, deadline_s=0.3):
                raise AssertionError("not reached")
        assert time.monotonic() - t0 < 0.3 + SLACK_S
        assert router.reserved_usd == 0 and gates_idle(router)


async def test_idle_timeout_is_between_chunks_not_between_text_deltas(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Chunks without text (reasoning, tool-call arguments, pings) keep a stream alive."""
    reasoning = b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}\n\n'
    chunks = [oa("Let me think. "), *[reasoning] * 8, oa("Done."), oa_usage(5, 9), DONE]
    upstream.queue(stream(chunks, [0] + [0.06] * 8 + [0, 0, 0]), path=P1)
    router = make_router(tmp_path, upstream, route={"idle_timeout_s": 0.2})
    async with router, router.stream("r", VARS) as s:
        await consume(s, [])
    assert s.completion is not None and s.completion.text == "Let me think. Done."
    assert s.completion.details["reasoning"] == "hmm" * 8


async def test_sse_keepalive_comments_reset_the_idle_timer(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Any chunk counts: an SSE comment (``: ping``) every 60 ms keeps a stream whose
    idle_timeout_s is 200 ms alive for 0.54 s of silence in text."""
    ping = b": ping\n\n"
    chunks = [oa("Let me think. "), *[ping] * 9, oa("Done."), oa_usage(5, 9), DONE]
    upstream.queue(stream(chunks, [0] + [0.06] * 9 + [0, 0, 0]), path=P1)
    router = make_router(tmp_path, upstream, route={"idle_timeout_s": 0.2})
    async with router, router.stream("r", VARS) as s:
        await consume(s, [])
    assert s.completion is not None and s.completion.text == "Let me think. Done."


async def test_anthropic_ping_events_reset_the_idle_timer(
    tmp_path: Path, upstream: Upstream
) -> None:
    ping = anthropic("ping", {})
    stop = anthropic("message_stop", {})
    chunks = [a_start(5), a_text("Hold on. "), *[ping] * 9, a_text("Done."), a_delta("end_turn", 4)]
    upstream.queue(stream([*chunks, stop], [0, 0] + [0.06] * 9 + [0, 0, 0]), path=A1)
    router = make_router(tmp_path, upstream, first="a1", route={"idle_timeout_s": 0.2})
    async with router, router.stream("r", VARS) as s:
        await consume(s, [])
    assert s.completion is not None and s.completion.text == "Hold on. Done."


async def test_a_stream_of_pings_alone_still_ends_by_the_deadline(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Pings keep the idle timer from firing, never the deadline."""
    ping = b": ping\n\n"
    upstream.queue(stream([oa("a "), *[ping] * 40], [0] + [0.02] * 40, end="hang"), path=P1)
    router = make_router(tmp_path, upstream, route={"idle_timeout_s": 0.1})
    async with router:
        t0 = time.monotonic()
        with pytest.raises(StreamInterruptedError) as info:
            async with router.stream("r", VARS, deadline_s=0.3) as s:
                await consume(s, [])
        assert time.monotonic() - t0 < 0.3 + SLACK_S
        assert info.value.partial_text == "a "
        assert isinstance(info.value.cause, ProviderTimeoutError)
        assert "deadline" in str(info.value.cause)
        assert router.reserved_usd == 0 and gates_idle(router)


async def test_a_slow_consumer_still_ends_by_the_deadline(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([oa("a "), oa("b "), oa("c"), oa_usage(1, 3), DONE]), path=P1)
    async with make_router(tmp_path, upstream) as router:
        t0 = time.monotonic()

        async def slow_app() -> None:
            async with router.stream("r", VARS, deadline_s=0.2) as s:
                async for _ in s:
                    await asyncio.sleep(0.15)

        with pytest.raises(StreamInterruptedError) as info:
            await slow_app()
        assert time.monotonic() - t0 < 0.3 + SLACK_S
        assert info.value.partial_text == "a b "
        assert router.reserved_usd == 0 and gates_idle(router)


async def test_first_token_wait_starts_when_the_request_is_sent(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Time spent waiting for admission does not count against first_token_timeout_s."""
    first = oa_answer("first call")
    second = oa_answer("second call")
    upstream.queue(
        stream(first, [0.15] + [0] * (len(first) - 1)),
        stream(second, [0.2] + [0] * (len(second) - 1)),
        path=P1,
    )
    p1 = {"first_token_timeout_s": 0.3, "limits": {"max_concurrency": 1}}
    async with make_router(tmp_path, upstream, p1=p1) as router:

        async def one() -> str | None:
            async with router.stream("r", VARS) as s:
                await consume(s, [])
            assert s.completion is not None
            return s.completion.provider

        a = asyncio.create_task(one())
        await asyncio.sleep(0.01)  # a is admitted first; b waits ~0.15 s for the slot
        b = asyncio.create_task(one())
        assert await asyncio.gather(a, b) == ["p1", "p1"]
    assert requests_to(upstream, P2) == 0


async def test_budget_refusal_raises_at_async_with_before_any_request(
    tmp_path: Path, upstream: Upstream
) -> None:
    yaml = json.loads(config_yaml(upstream.url))
    yaml["budgets"]["everything"]["limit_usd"] = 0.0000001
    async with Router(make_config(tmp_path, json.dumps(yaml))) as router:
        with pytest.raises(BudgetExceededError):
            await router.stream("r", VARS).__aenter__()
        assert router.reserved_usd == 0 and gates_idle(router)
    assert upstream.requests == []


async def test_ollama_stream_cut_after_text_is_interrupted(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([ollama("Hi "), ollama("there")], end="reset"), path=O1)
    async with make_router(tmp_path, upstream, first="o1") as router:
        err, _ = await _interrupted(router, upstream, "Hi there", path=O1)
    assert isinstance(err.cause, ProviderConnectionError)
    assert err.usage == _estimated("Hi there")


async def test_cut_after_the_final_usage_bills_the_reported_usage_exactly(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Anthropic's message_delta carries the final count; only message_stop is missing."""
    chunks = [a_start(30), a_text("Hello"), a_text(" you"), a_delta("end_turn", 12)]
    upstream.queue(stream(chunks, end="reset"), path=A1)
    async with make_router(tmp_path, upstream, first="a1") as router:
        err, _ = await _interrupted(router, upstream, "Hello you", path=A1)
    assert err.usage == Usage(30, 12)


async def test_cut_stream_bills_the_reasoning_it_streamed(
    tmp_path: Path, upstream: Upstream
) -> None:
    thought = "Let me weigh the numbers carefully before answering. " * 3
    reasoning = oa().replace(
        b'"delta": {}', b'"delta": ' + json.dumps({"reasoning_content": thought}).encode()
    )
    upstream.queue(stream([reasoning, oa("The answer")], end="reset"), path=P1)
    async with make_router(tmp_path, upstream) as router:
        err, _ = await _interrupted(router, upstream, "The answer")
    est = estimate_text_tokens(thought)
    assert est > 10
    assert err.usage == Usage(
        EST_IN, estimate_text_tokens("The answer") + est, reasoning_tokens=est, estimated=True
    )


async def test_cli_stream_prints_deltas_then_the_summary(tmp_path: Path) -> None:
    body = {
        "providers": {
            "mock": {
                "kind": "mock",
                "mock": {"reply": "streamed answer about {prompt}"},
                "models": {"m": {}},
            }
        },
        "routes": {"r": {"prompt": "{{ ticker }}", "fallback": ["mock/m"]}},
    }
    from router.cli import main
    from tests.routerkit import write_config

    path = write_config(tmp_path, json.dumps(body))
    out = io.StringIO()
    code = await asyncio.to_thread(
        main, ["stream", "r", "--var", "ticker=ACME", "--config", str(path)], out
    )
    text = out.getvalue()
    assert code == 0, text
    assert text.startswith("streamed answer about ACME\n\n")
    assert "first token after" in text


async def test_the_callers_own_timeout_around_the_block_releases_everything(
    tmp_path: Path, upstream: Upstream
) -> None:
    """asyncio.timeout() around the stream nests with the router's own timers."""
    upstream.queue(_slow_tail(), path=P1)
    async with make_router(tmp_path, upstream) as router:
        deltas: list[str] = []
        s = router.stream("r", VARS)

        async def app() -> None:
            async with asyncio.timeout(0.12), s:
                await consume(s, deltas)

        with pytest.raises(TimeoutError):
            await app()
        assert router.reserved_usd == 0 and gates_idle(router)
        assert s.completion is not None and s.completion.text == "".join(deltas)
        assert s.completion.finish_reason == "stopped_by_caller" and len(deltas) >= 3
        await upstream.wait_until(lambda: upstream.disconnects == 1)


async def test_entering_twice_is_refused_and_holds_nothing(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream(oa_answer("only once")), path=P1)
    async with make_router(tmp_path, upstream) as router:
        s = router.stream("r", VARS)
        async with s:
            with pytest.raises(RuntimeError, match="only once"):
                await s.__aenter__()
            await consume(s, [])
        assert gates_idle(router) and router.reserved_usd == 0


async def test_a_stream_cancelled_before_it_answers_records_no_call(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(stream([], end="hang"), path=P1)
    calls: list[tuple[str, object, object]] = []
    config = make_config(tmp_path, config_yaml(upstream.url))
    async with Router(config, on_call=lambda *a: calls.append(a)) as router:

        async def run() -> None:
            async with router.stream("r", VARS) as s:
                await consume(s, [])

        task = asyncio.create_task(run())
        await upstream.wait_until(lambda: len(upstream.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gates_idle(router)
    assert calls == []
