"""``router.stream()``: text deltas as they come, with the router's promises kept.

The chain falls back (and retries) only until the first text delta; after that
a failure raises :class:`~router.errors.StreamInterruptedError` carrying the
partial text — never a silent truncated success, never a spliced
continuation. A stream that ends without the provider's end-of-stream marker
is a failure too. The call's deadline bounds the whole stream;
``first_token_timeout_s`` and ``idle_timeout_s`` bound the waits within it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from router.budget import cost_usd
from router.call import Call, Lease, Step, final_usage
from router.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RouterError,
    StreamInterruptedError,
)
from router.providers.base import Adapter, WireRequest, error_from_response
from router.transport import StreamResponse
from router.types import Completion, Reply, StreamEvent, Usage


def merge_usage(known: Usage | None, new: Usage) -> Usage:
    """Field-wise max: stream events carry cumulative counts for the fields they report."""
    if known is None:
        return new
    return Usage(
        input_tokens=max(known.input_tokens, new.input_tokens),
        output_tokens=max(known.output_tokens, new.output_tokens),
        cached_input_tokens=max(known.cached_input_tokens, new.cached_input_tokens),
        cache_write_tokens=max(known.cache_write_tokens, new.cache_write_tokens),
        reasoning_tokens=max(known.reasoning_tokens, new.reasoning_tokens),
        estimated=known.estimated and new.estimated,
    )


async def _events(
    adapter: Adapter, model: str, resp: StreamResponse
) -> AsyncGenerator[StreamEvent, None]:
    if adapter.stream_format == "sse":
        async for event, data in resp.sse():
            ev = adapter.parse_stream_event(model, event, data)
            if ev is not None:
                yield ev
    else:
        async for line in resp.lines():
            ev = adapter.parse_stream_event(model, "", line)
            if ev is not None:
                yield ev


class LiveStream:
    """An attempt whose stream is open: it owns the response and the attempt's lease."""

    def __init__(
        self,
        call: StreamCall,
        step: Step,
        t0: float,
        lease: Lease,
        stack: AsyncExitStack,
        events: AsyncGenerator[StreamEvent, None],
        status: int,
    ) -> None:
        self.call = call
        self.step = step
        self.t0 = t0
        self.lease = lease
        self.stack = stack
        self.events = events
        self.status = status
        self.parts: list[str] = []  # text delivered (or pending delivery)
        self.pending: str | None = None  # a delta read but not yet handed to the consumer
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.details: dict[str, Any] = {}
        self.ttft_s: float | None = None
        self.done = False  # the provider's end-of-stream marker arrived
        self.closed = False

    def _absorb(self, ev: StreamEvent) -> None:
        if ev.usage is not None:
            self.usage = merge_usage(self.usage, ev.usage)
        if ev.finish_reason is not None:
            self.finish_reason = ev.finish_reason
        if ev.response_id is not None and self.response_id is None:
            self.response_id = ev.response_id
        if ev.details:
            for key, value in ev.details.items():
                if isinstance(value, str):
                    self.details[key] = self.details.get(key, "") + value
                elif isinstance(value, list):
                    self.details.setdefault(key, []).extend(value)
                else:
                    self.details[key] = value
        if ev.done:
            self.done = True

    async def read_delta(self, wait_s: float) -> str | None:
        """The next text delta, or None at the provider's end of stream.

        Raises ProviderTimeoutError when nothing arrives within ``wait_s`` and
        ProviderConnectionError when the body ends without an end-of-stream marker.
        """
        call = self.call
        try:
            async with asyncio.timeout(wait_s):
                while not self.done:
                    try:
                        ev = await anext(self.events)
                    except StopAsyncIteration:
                        raise ProviderConnectionError(
                            "stream ended without the provider's end-of-stream marker",
                            provider=self.step.provider.name,
                            model=self.step.model,
                            status=self.status,
                        ) from None
                    self._absorb(ev)
                    if ev.text:
                        if self.ttft_s is None:
                            self.ttft_s = call.rt.clock() - self.t0
                        self.parts.append(ev.text)
                        return ev.text
        except TimeoutError:
            what = "first token" if self.ttft_s is None else "next chunk"
            raise ProviderTimeoutError(
                f"no {what} within {wait_s:.3g}s",
                provider=self.step.provider.name,
                model=self.step.model,
                status=self.status,
            ) from None
        return None

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.stack.aclose()

    def _usage_now(self) -> Usage:
        return final_usage(self.usage, self.call.est_in, "".join(self.parts))

    async def finish(self, stopped_early: bool = False) -> Completion:
        """The stream ended (or the caller stopped reading): settle and record success."""
        await self.close()
        self.lease.free_slot()
        usage = self._usage_now()
        cost = cost_usd(usage, self.step.price)
        await self.lease.settle(cost)
        reply = Reply(
            text="".join(self.parts),
            finish_reason=self.finish_reason if not stopped_early else "stopped_by_caller",
            usage=usage,
            response_id=self.response_id,
            details=self.details,
        )
        return self.call.succeeded(
            self.step, reply, self.status, self.t0, cost, usage, ttft_s=self.ttft_s
        )

    async def fail(self, err: ProviderError) -> StreamInterruptedError:
        """A failure after text was delivered: settle what was billed, record, and wrap."""
        await self.close()
        self.lease.free_slot()
        usage = self._usage_now()
        cost = cost_usd(usage, self.step.price)
        await self.lease.settle(cost)
        text = "".join(self.parts)
        interrupted = StreamInterruptedError(
            f"stream interrupted after {len(text)} characters: {err.detail}",
            provider=self.step.provider.name,
            model=self.step.model,
            partial_text=text,
            usage=usage,
            cause=err,
            status=err.status,
        )
        self.call.failed(self.step, interrupted, self.t0, usage=usage)
        self.call.attempts[-1].cost_usd = cost
        return interrupted

    def abandon(self) -> None:
        """Give back the lease without settling (used when the stream is torn down)."""
        self.lease.release()


class StreamCall(Call[LiveStream]):
    """``stream()``: walks the chain until a step delivers its first text delta."""

    stream = True

    async def _exchange(
        self, step: Step, request: WireRequest, timeout_s: float, t0: float, lease: Lease
    ) -> LiveStream:
        provider = step.provider
        stack = AsyncExitStack()
        wait = min(timeout_s, step.first_token_s)
        try:
            try:
                async with asyncio.timeout(wait):
                    resp = await stack.enter_async_context(
                        provider.transport.stream(request, model=step.model)
                    )
                    if not 200 <= resp.status < 300:
                        body = await resp.read()
                        raise error_from_response(
                            provider.adapter,
                            step.model,
                            resp.status,
                            resp.headers,
                            body,
                            time.time(),
                        )
            except TimeoutError:
                raise ProviderTimeoutError(
                    f"no response within {wait:.3g}s", provider=provider.name, model=step.model
                ) from None
            events = _events(provider.adapter, step.model, resp)
            stack.push_async_callback(events.aclose)
            live = LiveStream(self, step, t0, lease, stack, events, resp.status)
            left = wait - (self.rt.clock() - t0)
            live.pending = await live.read_delta(max(left, 0.0))
        except BaseException:
            await stack.aclose()
            raise
        self.kept = True
        return live


class RouteStream:
    """What ``router.stream()`` returns: an async context manager and iterator of text deltas.

    ``async with`` walks the chain until a provider has said something (errors
    before the first token raise there); iterating yields the text deltas;
    ``completion`` holds the full Completion once the stream has ended.
    """

    def __init__(
        self,
        call: StreamCall,
        check_loop: Callable[[], None],
        finish: Callable[[Completion | None, RouterError | None], None],
    ) -> None:
        self._call = call
        self._check_loop = check_loop
        self._finish = finish
        self._live: LiveStream | None = None
        self._ended = False
        self.completion: Completion | None = None

    async def __aenter__(self) -> RouteStream:
        self._check_loop()
        try:
            self._live = await self._call.run()
        except RouterError as exc:
            self._finish(None, exc)
            raise
        return self

    def __aiter__(self) -> RouteStream:
        return self

    async def __anext__(self) -> str:
        live = self._live
        if live is None:
            raise RuntimeError("use 'async with router.stream(...) as stream:' before iterating")
        if self._ended:
            raise StopAsyncIteration
        pending = live.pending
        if pending is not None:
            live.pending = None
            return pending
        call = self._call
        left = call.deadline.remaining()
        try:
            if left <= 0:
                raise ProviderTimeoutError(
                    f"deadline of {call.deadline.seconds:g}s spent mid-stream",
                    provider=live.step.provider.name,
                    model=live.step.model,
                    status=live.status,
                )
            delta = await live.read_delta(min(live.step.idle_s, left))
        except ProviderError as err:
            self._ended = True
            interrupted = await live.fail(err)
            self._finish(None, interrupted)
            raise interrupted from err
        if delta is None:
            self._ended = True
            self.completion = await live.finish()
            self._finish(self.completion, None)
            raise StopAsyncIteration
        return delta

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        live = self._live
        if live is None or self._ended:
            return
        self._ended = True
        # The caller stopped reading early (break, exception, cancellation): close the
        # response first, then bill what was generated so far.
        try:
            self.completion = await live.finish(stopped_early=True)
        except BaseException:
            live.abandon()
            raise
        self._finish(self.completion, None)
