"""``router.stream()``: text deltas as they come, with the router's promises kept.

The chain falls back (and retries) only until the first text delta; after that
a failure raises :class:`~router.errors.StreamInterruptedError` carrying the
partial text and the usage billed for it — never a silent truncated success,
never a spliced continuation. A stream that ends without the provider's
end-of-stream marker is a failure too. The call's deadline bounds the whole
stream; ``first_token_timeout_s`` bounds the wait for the first text delta and
``idle_timeout_s`` the gap between two chunks, both within the deadline.

Pieces: :class:`StreamCall` walks the chain (router.call) until a step has
said something; that attempt's lease then passes to the :class:`LiveStream`,
whose exit stack holds it with the open response until the stream ends;
:class:`RouteStream` is what the caller holds: one async generator, the
stream's whole life. See docs/streaming.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import AbstractContextManager, AsyncExitStack, suppress
from decimal import Decimal
from types import AsyncGeneratorType, TracebackType
from typing import Any, Protocol, cast

from router.billing import estimated_output, final_usage, max_counts, server_calls_seen
from router.call import Call, Step, billed
from router.conversation import streamed_calls
from router.errors import (
    ContentFilterError,
    InvalidOutputError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RouterClosedError,
    StreamInterruptedError,
    sever_foreign,
)
from router.inflight import InFlight
from router.output import checked_answer
from router.providers.base import Adapter
from router.providers.error_body import error_from_response
from router.state import Ticket
from router.transport import StreamResponse
from router.types import Citation, Completion, Reply, StreamEvent, Usage, WireRequest

# After the end-of-stream marker, how long to wait for the rest of the body (the
# chunked-encoding terminator, normally in the same packet): a body read to its
# end lets the connection go back to the pool instead of being closed.
_DRAIN_S = 0.05


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
        suspect=known.suspect or new.suspect,  # one malformed event: bill the estimate
        server_tool_calls=max_counts(known.server_tool_calls, new.server_tool_calls),
    )


def cut_usage(reported: Usage | None, est_in: int, text: str, details: dict[str, Any]) -> Usage:
    """The usage of a stream that ended before the provider's final count (marked estimated).

    What was reported so far is a floor (Anthropic sends the input count first
    and the output count last; OpenAI sends everything at the end). The output
    is estimated from what arrived: the text, reasoning, and tool-call arguments.
    Server-side tool calls (kind openai_responses) are the ones reported or seen
    finished in the stream, whichever is more: the provider bills each one.
    """
    if reported is not None and reported.suspect is not None:
        return reported  # malformed: router.billing bills the whole estimate
    output, reasoning = estimated_output(text, details)
    # Server-tool calls the provider finished before the cut: billed per call.
    calls = max_counts(reported.server_tool_calls if reported else {}, server_calls_seen(details))
    if reported is None or not reported.input_tokens:
        return Usage(
            input_tokens=est_in,
            output_tokens=max(output, reported.output_tokens if reported else 0),
            reasoning_tokens=max(reasoning, reported.reasoning_tokens if reported else 0),
            estimated=True,
            server_tool_calls=calls,
        )
    return Usage(
        input_tokens=reported.input_tokens,
        output_tokens=max(output, reported.output_tokens),
        cached_input_tokens=reported.cached_input_tokens,
        cache_write_tokens=reported.cache_write_tokens,
        reasoning_tokens=max(reasoning, reported.reasoning_tokens),
        estimated=True,
        server_tool_calls=calls,
    )


async def _events(
    adapter: Adapter, model: str, resp: StreamResponse
) -> AsyncGenerator[StreamEvent, None]:
    """The adapter's events from the response; closes the transport's reader when closed."""
    if adapter.stream_format == "sse":
        # StreamResponse.sse() and .lines() are async generators; close them
        # ourselves rather than leave them to the loop's GC finalizer (a task).
        sse = cast(AsyncGenerator[tuple[str, str], None], resp.sse())
        try:
            async for event, data in sse:
                ev = adapter.parse_stream_event(model, event, data)
                if ev is not None:
                    yield ev
        finally:
            await sse.aclose()
    else:
        lines = cast(AsyncGenerator[str, None], resp.lines())
        try:
            async for line in lines:
                ev = adapter.parse_stream_event(model, "", line)
                if ev is not None:
                    yield ev
        finally:
            await lines.aclose()


async def _close(conn: AsyncExitStack) -> None:
    """Close a response and its event reader; a close error changes nothing (the
    attempt's outcome is already known, and the connection is dropped either way)."""
    with suppress(ProviderError):
        await conn.aclose()


class LiveStream:
    """An attempt whose stream is open: it holds the response and the attempt's lease.

    ``held`` takes the attempt's lease over from the call once the stream is open
    (router.call, ``keeps_ticket``): it closes the response (``conn``: the event
    reader, then the response) and then gives back whatever the lease still holds,
    however the stream ends; settling closes the response earlier, before billing.
    """

    __slots__ = (
        "call",
        "citations",
        "conn",
        "details",
        "done",
        "events",
        "final",
        "finish_reason",
        "first",
        "held",
        "lease",
        "parts",
        "response",
        "response_id",
        "status",
        "step",
        "t0",
        "ttft_s",
        "usage",
    )

    def __init__(
        self,
        call: StreamCall,
        step: Step,
        t0: float,
        lease: Ticket,
        conn: AsyncExitStack,
        response: StreamResponse,
        events: AsyncGenerator[StreamEvent, None],
    ) -> None:
        self.call = call
        self.step = step
        self.t0 = t0  # the attempt's start (call clock)
        self.lease = lease
        # Once the stream is open: closes the response, then gives the lease back.
        self.held = AsyncExitStack()
        self.conn = conn  # closes the event reader, then the response
        self.response = response
        self.events = events
        self.status = response.status
        self.parts: list[str] = []  # text delivered (or read ahead for delivery)
        self.first: str | None = None  # the first text delta, read while walking the chain
        self.usage: Usage | None = None  # merged usage reported so far
        self.final = False  # usage arrived with or after the finish reason: the final count
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.details: dict[str, Any] = {}
        self.citations: list[Citation] = []
        self.ttft_s: float | None = None
        self.done = False  # the provider's end-of-stream marker arrived

    def __repr__(self) -> str:
        state = "done" if self.done else "open"
        chars = sum(len(p) for p in self.parts)
        return (
            f"<LiveStream {self.step.provider.name}/{self.step.plan.model} {state} {chars} chars>"
        )

    def _absorb(self, ev: StreamEvent) -> None:
        if ev.finish_reason is not None:
            self.finish_reason = ev.finish_reason
        if ev.usage is not None:
            self.usage = merge_usage(self.usage, ev.usage)
            if self.finish_reason is not None:
                self.final = True
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
        if ev.citations:
            self.citations.extend(ev.citations)
        if ev.done:
            self.done = True

    def timeout_error(self, detail: str) -> ProviderTimeoutError:
        step = self.step
        return ProviderTimeoutError(
            detail, provider=step.provider.name, model=step.plan.model, status=self.status
        )

    async def read_delta(self, until: float, idle_s: float | None, limit: str) -> str | None:
        """The next text delta, or None at the provider's end of stream.

        Args:
            until: call-clock time by which a text delta must have arrived.
            idle_s: longest wait for any chunk (None: only ``until`` applies).
            limit: what ``until`` is, for the timeout message.

        Raises:
            ProviderTimeoutError: ``until`` passed, or no chunk for ``idle_s``.
            ProviderConnectionError: the body ended without an end-of-stream marker.
            ProviderError: the provider sent an error event, or the transport failed.
        """
        clock = self.call.rt.clock
        loop = asyncio.get_running_loop()

        by_idle = False  # the nearer limit is the idle wait, not ``until``

        def expiry() -> float:  # in loop time
            nonlocal by_idle
            left = until - clock()
            by_idle = idle_s is not None and idle_s < left
            return loop.time() + (idle_s if by_idle and idle_s is not None else left)

        response = self.response
        try:
            async with asyncio.timeout_at(expiry()) as timer:
                if idle_s is not None:
                    # Any chunk counts, text or not (keep-alive comments and ping
                    # events included): each one starts the idle wait again.
                    response.on_chunk = lambda: timer.reschedule(expiry())
                while not self.done:
                    try:
                        ev = await anext(self.events)
                    except StopAsyncIteration:
                        raise ProviderConnectionError(
                            "stream ended without the provider's end-of-stream marker",
                            provider=self.step.provider.name,
                            model=self.step.plan.model,
                            status=self.status,
                        ) from None
                    self._absorb(ev)
                    if ev.text:
                        if self.ttft_s is None:
                            self.ttft_s = clock() - self.t0
                        self.parts.append(ev.text)
                        return ev.text
        except TimeoutError:
            if by_idle:
                raise self.timeout_error(
                    f"no chunk within idle_timeout_s ({idle_s:.3g}s)"
                ) from None
            raise self.timeout_error(limit) from None
        finally:
            response.on_chunk = None
        return None

    async def _drain(self) -> None:
        """Read the rest of the body after the end marker, briefly, so the connection is reused."""
        wait = min(_DRAIN_S, self.call.deadline.remaining())
        try:
            async with asyncio.timeout(wait):
                async for _ in self.events:
                    pass
        except (TimeoutError, ProviderError):
            pass  # a server that holds the body open (or garbles it) just loses the connection

    def _usage_now(self) -> Usage:
        text = "".join(self.parts)
        est_in = self.lease.est_in
        if self.done or self.final:
            return final_usage(self.usage, est_in, text)
        return cut_usage(self.usage, est_in, text, self.details)

    async def _settle(self) -> tuple[Usage, Decimal]:
        """Close the response, give back the slot, and bill what was generated."""
        if self.done:
            await self._drain()
        await _close(self.conn)
        self.lease.free_slot()
        usage, cost = billed(
            self.step, self.lease, self._usage_now(), "".join(self.parts), self.details
        )
        await self.lease.settle(cost)
        return usage, cost

    async def check_tool_calls(self) -> None:
        """A stream that ended without text (its answer is tool calls, read whole while
        walking the chain): check the calls as ``complete()`` does, so that invalid
        ones fall back. Raises InvalidOutputError after billing the answer."""
        calls = streamed_calls(self.details.get("tool_calls"))
        if not calls:
            return
        call = self.call
        try:
            call.check_tool_calls(self.step, calls)
        except InvalidOutputError:
            call.billed_out = await self._settle()
            raise

    async def finish(self, stopped_early: bool = False) -> Completion:
        """The stream ended (or the caller stopped reading): settle and record success.

        With output asked (and the stream read to its end), the whole text is checked
        first: an answer that does not pass fails the stream (:meth:`fail`: settled,
        recorded, StreamInterruptedError carrying the text) — never a silent success.
        """
        reply = Reply(
            text="".join(self.parts),
            finish_reason="stopped_by_caller"
            if stopped_early and not self.done
            else self.finish_reason,
            usage=Usage(),  # set once settled
            response_id=self.response_id,
            details=self.details,
            tool_calls=streamed_calls(self.details.get("tool_calls")),
            citations=self.citations,
        )
        spec = self.call.output
        output = None
        if spec is not None and not stopped_early:
            try:  # mode tool: the forced call's arguments become the text
                output = checked_answer(
                    reply,
                    spec,
                    self.step.plan.structured_output,
                    accept_truncated=self.call.route.accept_truncated,
                    provider=self.step.provider.name,
                    model=self.step.plan.model,
                )
            except ProviderError as err:
                raise await self.fail(err) from None
        usage, cost = await self._settle()
        reply.usage = usage
        done = self.call.succeeded(
            self.step, self.lease, reply, self.status, self.t0, cost, usage, ttft_s=self.ttft_s
        )
        done.output = output
        return done

    async def fail(self, err: ProviderError) -> StreamInterruptedError:
        """A failure after text was delivered: settle what was generated, record, and wrap."""
        usage, cost = await self._settle()
        text = "".join(self.parts)
        interrupted = StreamInterruptedError(
            f"stream interrupted after {len(text)} characters: {err.detail}",
            provider=self.step.provider.name,
            model=self.step.plan.model,
            partial_text=text,
            usage=usage,
            cause=err,
            status=err.status if err.status is not None else self.status,
        )
        self.call.failed(
            self.step,
            self.lease,
            interrupted,
            self.t0,
            usage=usage,
            cost=cost,
            ttft_s=self.ttft_s,
        )
        return interrupted

    async def end_by_close(self) -> RouterClosedError:
        """The router is closing with this stream open: settle it as interrupted (close
        the response, bill what was generated); the error the caller gets."""
        step = self.step
        cause = ProviderConnectionError(
            "the router was closed mid-stream",
            provider=step.provider.name,
            model=step.plan.model,
            status=self.status,
        )
        await self.fail(cause)
        return self.call.closed_error()


class StreamCall(Call[LiveStream]):
    """``stream()``: walks the chain until a step delivers its first text delta."""

    __slots__ = ()

    async def discard(self, result: LiveStream) -> None:
        """A stream that lost a hedge race after its first text delta: closed, billed
        what it generated (router.billing, as a cut-off stream), recorded ``cancelled``."""
        usage, cost = await result._settle()
        self.record_lost(result.step, result.t0, usage, cost, result.ttft_s)
        await result.held.aclose()  # gives back what the lease still holds

    stream = True
    keeps_ticket = True  # the open stream releases it (LiveStream.held)

    async def _exchange(
        self, step: Step, request: WireRequest, timeout_s: float, t0: float, lease: Ticket
    ) -> LiveStream:
        provider = step.provider
        # The first text delta must arrive within first_token_timeout_s of sending,
        # and within the attempt's share of the deadline (timeout_s, already net of
        # any wait for admission).
        wait = min(timeout_s, step.plan.first_token_timeout_s)
        until = self.rt.clock() + wait
        conn = AsyncExitStack()  # the response and its event reader
        try:
            try:
                async with asyncio.timeout(wait):
                    resp = await conn.enter_async_context(
                        provider.transport.stream(request, model=step.plan.model)
                    )
                    if not 200 <= resp.status < 300:
                        body = await resp.read()
                        raise error_from_response(
                            provider.adapter,
                            step.plan.model,
                            resp.status,
                            resp.headers,
                            body,
                            time.time(),  # to read an HTTP-date Retry-After
                            self.rt.retry_after_max_s,
                            self.sent(step, request),
                        )
            except TimeoutError:
                raise ProviderTimeoutError(
                    f"no response within {wait:.3g}s", provider=provider.name, model=step.plan.model
                ) from None
            events = _events(provider.adapter, step.plan.model, resp)
            conn.push_async_callback(events.aclose)
            live = LiveStream(self, step, t0, lease, conn, resp, events)
            try:
                live.first = await live.read_delta(
                    until, None, f"no first token within {wait:.3g}s"
                )
            except ContentFilterError:
                # Blocked before any text: the provider bills the prompt, so does the router.
                self.billed_out = await live._settle()
                raise
            if live.first is None and self.tools is not None:
                await live.check_tool_calls()
        except BaseException:
            await _close(conn)  # before the attempt records its failure and frees the lease
            raise
        # The stream is open: it takes the lease over from the attempt (nothing can
        # fail between here and the return, so the attempt's release is not needed).
        held = live.held
        held.callback(lease.release)
        held.push_async_callback(_close, conn)  # first: the response, then the lease
        return live


class CallScope(AbstractContextManager[object], Protocol):
    """The router's side of one stream's call (router.router): entering holds the
    router's plan generation for the call (and checks the event loop); a RouterError
    leaving it is the call's outcome, reported once; :meth:`walk` runs the chain where
    ``aclose()`` can end it; :meth:`done` reports the Completion."""

    @property
    def call(self) -> Call[LiveStream]: ...

    async def walk(self) -> LiveStream: ...

    def done(self, result: Completion) -> None: ...


class _RouterClosing(Exception):
    """Thrown into an open stream nobody is reading when the router closes."""


class RouteStream:
    """What ``router.stream()`` returns: an async context manager and iterator of text deltas.

    ``async with`` walks the chain until a provider has said something (errors
    before the first token raise there); iterating yields the text deltas;
    ``completion`` holds the full Completion once the stream has ended (or the
    caller left it early).

    The stream's whole life is one async generator (:meth:`_run`), started on
    entering: it yields ``""`` once the stream is open, then each text delta, or an
    exception for the read to raise while the stream stays as it is (the caller's
    own cancellation; RouterClosedError, for every read once the router has closed
    the stream). Leaving the block closes the generator: a stream still open is
    settled as left early. ``inflight`` is the router's register of calls in flight
    (router.inflight).
    """

    __slots__ = ("_inflight", "_scope", "_steps", "completion")

    def __init__(self, scope: CallScope, inflight: InFlight) -> None:
        self._scope = scope
        self._inflight = inflight
        self._steps: AsyncGeneratorType[str | BaseException, None] | None = None
        # The full answer, set when the stream ends normally or is left early.
        self.completion: Completion | None = None

    def __repr__(self) -> str:
        steps = self._steps
        state = "not entered" if steps is None else "ended" if steps.ag_frame is None else "open"
        return f"<RouteStream {self._scope.call.route.name} {state}>"

    async def __aenter__(self) -> RouteStream:
        if self._steps is not None:
            raise RuntimeError("a router.stream(...) can be entered only once")
        self._steps = steps = cast(AsyncGeneratorType[str | BaseException, None], self._run())
        opened = await anext(steps)
        if not isinstance(opened, str):  # the router closed while the chain was walked
            await steps.aclose()
            raise opened
        return self

    def __aiter__(self) -> RouteStream:
        return self

    async def __anext__(self) -> str:
        steps = self._steps
        if steps is None:
            raise RuntimeError("use 'async with router.stream(...) as stream:' before iterating")
        delta = await steps.__anext__()
        if not isinstance(delta, str):
            raise delta
        return delta

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        steps = self._steps
        if steps is not None:
            await steps.aclose()

    async def _run(self) -> AsyncGenerator[str | BaseException, None]:
        """The stream's life: walk the chain, hand out the deltas, settle, report."""
        scope = self._scope
        inflight = self._inflight
        try:
            with scope:
                live = await scope.walk()
                async with live.held:  # whatever happens: the response closed, the lease freed
                    inflight.open_stream(self, self._end_unread)
                    try:
                        yield ""  # open: ``async with`` returns
                        ready = live.first
                        while True:
                            try:
                                delta = await self._next(live, ready)
                            except asyncio.CancelledError as exc:
                                # The caller's own: its read raises it, the stream stays open.
                                yield exc
                                continue
                            if delta is None:
                                result = await live.finish()
                                break
                            ready = None
                            yield delta
                    except GeneratorExit:
                        # The caller stopped reading early (break, exception, cancellation):
                        # close the response first, then bill what was generated so far.
                        result = await live.finish(stopped_early=True)
                    except _RouterClosing:  # the router closed while the app was elsewhere
                        raise await live.end_by_close() from None
                    finally:
                        inflight.stream_ended(self)
                self.completion = result
                scope.done(result)
            return
        except RouterClosedError as exc:
            closed = exc
        # The router closed the stream: every read from now on raises RouterClosedError.
        while True:
            yield closed
            closed = scope.call.closed_error()

    async def _next(self, live: LiveStream, ready: str | None) -> str | None:
        """The next delta (``ready``: one read already), None at the end of the stream;
        after the first, within the call's deadline and the step's idle timeout.

        Raises:
            StreamInterruptedError: the stream failed (it is settled and recorded).
            RouterClosedError: the router closed (the stream is settled and recorded).
            CancelledError: the caller's own cancellation.
        """
        inflight = self._inflight
        if inflight.closed:  # the app was busy elsewhere when the router closed
            raise await live.end_by_close()
        if ready is not None:
            return ready
        deadline = live.call.deadline
        with inflight.track() as tracked:
            try:
                spent = f"deadline of {deadline.seconds:g}s spent mid-stream"
                try:
                    if deadline.expired:  # checked first: a buffered chunk would not wait
                        raise live.timeout_error(spent)
                    until = live.call.rt.clock() + deadline.remaining()
                    return await live.read_delta(until, live.step.plan.idle_timeout_s, spent)
                except ProviderError as err:
                    sever_foreign(err)  # no foreign exception travels on (a redacted summary)
                    raise await live.fail(err) from err
            except asyncio.CancelledError:
                if not tracked.closed_by_router():
                    raise  # the caller's own cancellation
                raise await live.end_by_close() from None  # still tracked: aclose() waits

    async def _end_unread(self) -> None:
        """The router is closing with this stream open and no read in progress: settle
        it now; its next read raises RouterClosedError."""
        steps = self._steps
        if steps is not None and not steps.ag_running:  # a running one is settling already
            await steps.athrow(_RouterClosing())
