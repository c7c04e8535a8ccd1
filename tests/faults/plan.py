"""The fault catalogue and the seeded choices of the fault-injection suite.

Shared by the fault server (``server.py``, a process of its own) and the suite.
Every random choice is drawn from a ``random.Random`` seeded with the run's seed
and *what* is being decided (which call, which provider, which try), never from
a shared stream: a seed therefore fixes the fault each request of each call
meets and what each call does, however the concurrent calls interleave. (Which
faults then *win* still depends on timing: a slow answer may or may not beat a
deadline.)

A request names its call in the prompt (``fault-call 17``, rendered by the
route's template), so the server can tell calls apart. A prompt may also force
the faults of a call: ``fault-call 17 force=http_500,ok`` answers the call's
first request with a 500 and every later one (the retry, the next provider)
with a success. The catalogue tests use that; the mixed run does not.

Faults that expose a router bug are in the catalogue with weight 0 (forced only,
by the strict-xfail tests), so the mixed run stays green while the bug is open.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tests.upstream import (
    Behaviour,
    Exchange,
    StreamEnd,
    close,
    drip,
    hang_before_headers,
    hang_mid_body,
    reply,
    reset,
    stream,
)

PROVIDERS = ("alpha", "beta", "gamma")
# How long a normal success takes, seconds (uniform): an upstream that answers in
# microseconds would let 100 closed-loop callers spin the client's CPU flat out, and a
# saturated event loop fires every timer late, the deadline's included. The fault
# server reads FAULTS_OK_LATENCY ("lo,hi") to override it, e.g. "0,0" for that stress.
OK_LATENCY_S = (0.02, 0.25)
MODELS = {p: f"m-{p}" for p in PROVIDERS}
# settings.max_response_bytes of the suite's config, and the size of a body over it.
MAX_RESPONSE_BYTES = 64 * 1024
OVERSIZE_BYTES = 100 * 1024
# Retry-After of a "small" 429 (milliseconds, retry-after-ms) and a "large" one
# (seconds: longer than any deadline of the run, so the provider is skipped meanwhile).
RETRY_AFTER_SMALL_MS = 60
RETRY_AFTER_LARGE_S = 2
# Prices per million tokens, as in the suite's YAML (alpha bills cached input at the
# input price; beta and gamma have a cached price of their own).
PRICES: dict[str, tuple[Decimal, Decimal, Decimal]] = {  # input, cached input, output
    "alpha": (Decimal("2.5"), Decimal("2.5"), Decimal("10")),
    "beta": (Decimal("0.15"), Decimal("0.075"), Decimal("0.6")),
    "gamma": (Decimal("3"), Decimal("0.3"), Decimal("15")),
}


def expected_cost(provider: str, input_tokens: int, cached: int, output: int) -> Decimal:
    """The bill for a usage at the YAML prices, computed here independently of the router."""
    price_in, price_cached, price_out = PRICES[provider]
    micro = (input_tokens - cached) * price_in + cached * price_cached + output * price_out
    return micro / Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class UsagePlan:
    """The usage a successful answer reports: prompt (cached part included) and output."""

    prompt: int
    cached: int
    output: int


def usage_for(seed: int, call: int, provider: str) -> UsagePlan:
    """What ``provider`` bills for ``call`` when it answers (kept below the router's
    reservation, so a budget is never overspent by the estimate error)."""
    rng = random.Random(f"{seed}/usage/{call}/{provider}")
    prompt = rng.randint(5, 60)
    cached = rng.randint(0, prompt) if rng.random() < 0.3 else 0
    return UsagePlan(prompt, cached, rng.randint(1, 40))


# ---------------------------------------------------------------------------- bodies


@dataclass(slots=True)
class Ctx:
    """What a fault builder knows about the request it answers."""

    seed: int
    call: int
    provider: str
    stream: bool
    rng: random.Random
    # The Authorization header the request carried: echoed by some error bodies,
    # as real providers and proxies sometimes do, to prove it never surfaces.
    echo: str
    # Range of a success's latency before its headers (see OK_LATENCY_S).
    ok_latency_s: tuple[float, float]

    @property
    def usage(self) -> UsagePlan:
        return usage_for(self.seed, self.call, self.provider)

    @property
    def model(self) -> str:
        return MODELS[self.provider]


def _usage_json(u: UsagePlan) -> dict[str, object]:
    return {
        "prompt_tokens": u.prompt,
        "completion_tokens": u.output,
        "total_tokens": u.prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def ok_body(ctx: Ctx, usage: dict[str, object] | None = None) -> bytes:
    """An OpenAI ``chat.completion`` with usage."""
    return json.dumps(
        {
            "id": f"chatcmpl-{ctx.provider}-{ctx.call}",
            "object": "chat.completion",
            "created": 1755690953,
            "model": ctx.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": f"answer to call {ctx.call} from {ctx.provider}",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage if usage is not None else _usage_json(ctx.usage),
            "service_tier": "default",
            "system_fingerprint": None,
        }
    ).encode()


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def sse_events(ctx: Ctx) -> list[bytes]:
    """An OpenAI ``chat.completion.chunk`` stream with ``include_usage``: role, words,
    finish, usage, ``[DONE]`` (one SSE event per item)."""
    rid = f"chatcmpl-{ctx.provider}-{ctx.call}"

    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "model": ctx.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": None,
            }
        )

    u = ctx.usage
    words = [f"w{k} " for k in range(1 + u.output % 6)]
    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": w}) for w in words),
        chunk({}, "stop"),
        _sse(
            {"id": rid, "object": "chat.completion.chunk", "choices": [], "usage": _usage_json(u)}
        ),
        b"data: [DONE]\n\n",
    ]


# ---------------------------------------------------------------------------- faults

Build = Callable[[Ctx], Behaviour]


def _answer(ctx: Ctx) -> Behaviour:
    if ctx.stream:
        events = sse_events(ctx)
        return stream(events, [ctx.rng.uniform(0, 0.01) for _ in events])
    return reply(200, ok_body(ctx))


def _delayed(seconds: float, then: Behaviour, label: str) -> Behaviour:
    async def run(ex: Exchange) -> bool:
        if not await ex.pause(seconds):
            return False
        return await then.run(ex)

    return Behaviour(f"{label} after {seconds:.2f}s", run)


def _ok(ctx: Ctx) -> Behaviour:
    """A success after the upstream's usual thinking time (``Ctx.ok_latency_s``)."""
    lo, hi = ctx.ok_latency_s
    return _delayed(ctx.rng.uniform(lo, hi), _answer(ctx), "ok")


def _slow_ok(ctx: Ctx) -> Behaviour:
    return _delayed(ctx.rng.uniform(0.05, 0.6), _answer(ctx), "slow ok")


def _drip(ctx: Ctx) -> Behaviour:
    interval = ctx.rng.uniform(0.001, 0.012)
    if ctx.stream:
        data = b"".join(sse_events(ctx))
        pieces, i = [], 0
        while i < len(data):
            n = ctx.rng.randint(1, 8)
            pieces.append(data[i : i + n])
            i += n
        return stream(pieces, interval)
    # The smallest body the adapter accepts, one byte per interval: some finish in time.
    u = ctx.usage
    usage: dict[str, object] = {"prompt_tokens": u.prompt, "completion_tokens": u.output}
    if u.cached:
        usage["prompt_tokens_details"] = {"cached_tokens": u.cached}
    body = json.dumps(
        {"choices": [{"message": {"content": "drip"}, "finish_reason": "stop"}], "usage": usage},
        separators=(",", ":"),
    )
    return drip(body, 1, interval)


def _hang_mid_body(ctx: Ctx) -> Behaviour:
    if ctx.stream:
        return _stream_cut(ctx, "hang")
    body = ok_body(ctx)
    return hang_mid_body(body[: ctx.rng.randint(1, len(body) - 1)], total=len(body))


def _error_json(status: int, message: str, kind: str, **headers: str) -> Behaviour:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return reply(status, body, headers or None)


def _http_500(ctx: Ctx) -> Behaviour:
    return _error_json(500, "The server had an error while processing your request.", "server")


def _http_502_html(ctx: Ctx) -> Behaviour:
    page = (
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
        f"</h1></center><hr><center>nginx</center><!-- forwarded {ctx.echo} --></body></html>"
    )
    return reply(502, page, {"content-type": "text/html"})


def _http_503_text(ctx: Ctx) -> Behaviour:
    text = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    return reply(503, text, {"content-type": "text/plain"})


def _http_529(ctx: Ctx) -> Behaviour:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return reply(529, body)


def _rate_limit_small(ctx: Ctx) -> Behaviour:
    return _error_json(
        429,
        "Rate limit reached for requests. Please try again in 60ms.",
        "requests",
        **{"retry-after-ms": str(RETRY_AFTER_SMALL_MS), "retry-after": "1"},
    )


def _rate_limit_large(ctx: Ctx) -> Behaviour:
    return _error_json(
        429,
        f"Rate limit reached. Please try again in {RETRY_AFTER_LARGE_S}s.",
        "requests",
        **{"retry-after": str(RETRY_AFTER_LARGE_S)},
    )


def _http_401_echo(ctx: Ctx) -> Behaviour:
    return _error_json(401, f"Incorrect API key provided: {ctx.echo}.", "invalid_request_error")


def _http_400_echo(ctx: Ctx) -> Behaviour:
    return _error_json(
        400, f"Invalid value for header 'authorization': {ctx.echo!r}", "invalid_request_error"
    )


def _truncated_json(ctx: Ctx) -> Behaviour:
    body = ok_body(ctx)
    return reply(200, body[: ctx.rng.randint(1, len(body) - 1)])


def _invalid_shape_echo(ctx: Ctx) -> Behaviour:
    if ctx.stream:
        events = [*sse_events(ctx)[:1], _sse({"choices": f"echo {ctx.echo}"})]
        return stream(events)
    return reply(200, {"object": "chat.completion", "choices": f"echo {ctx.echo}"})


def _embedded_error_echo(ctx: Ctx) -> Behaviour:
    """A 200 whose body is an error object (a stream: an error event after some text)."""
    err = {"error": {"message": f"internal error for {ctx.echo}", "type": "server_error"}}
    if ctx.stream:
        events = sse_events(ctx)
        j = ctx.rng.randint(1, len(events) - 2)
        return stream([*events[:j], _sse(err)])
    return reply(200, err)


def _oversize(ctx: Ctx) -> Behaviour:
    return reply(200, b"x" * OVERSIZE_BYTES)


def _oversize_chunked(ctx: Ctx) -> Behaviour:
    """Over the cap with no Content-Length: the cap must be counted while reading."""
    return reply(200, b" " * OVERSIZE_BYTES + ok_body(ctx), chunked=True)


def _stream_oversize(ctx: Ctx) -> Behaviour:
    events = sse_events(ctx)
    j = ctx.rng.randint(1, len(events) - 2)
    big = _sse({"choices": [{"index": 0, "delta": {"content": "x" * OVERSIZE_BYTES}}]})
    return stream([*events[:j], big, *events[j:]])


def _stream_cut(ctx: Ctx, end: StreamEnd) -> Behaviour:
    """The stream stops after ``j`` events (maybe before the first text, maybe after
    the usage event but before ``[DONE]``), by closing, resetting or hanging."""
    events = sse_events(ctx)
    j = ctx.rng.randint(1, len(events) - 1)
    return stream(events[:j], [ctx.rng.uniform(0, 0.01) for _ in range(j)], end=end)


def _stream_bad_json(ctx: Ctx) -> Behaviour:
    events = sse_events(ctx)
    j = ctx.rng.randint(1, len(events) - 2)
    return stream([*events[:j], b'data: {"id":"x","choices":[{"delta":{"content":"tru\n\n'])


def _stream_not_sse(ctx: Ctx) -> Behaviour:
    """A stream request answered with a plain JSON body (some proxies do)."""
    return reply(200, ok_body(ctx))


def _key_at_cut(ctx: Ctx) -> Behaviour:
    """A plain-text 503 from a proxy that echoes the bare key right where the router
    cuts an error text to one line (router.providers.error_body.ERROR_TEXT_LIMIT, 300)."""
    key = ctx.echo.removeprefix("Bearer ")
    text = "upstream rejected the request; credentials sent: ".ljust(295, ".") + key
    return reply(503, text + " (end)", {"content-type": "text/plain"})


def _usage_inconsistent(ctx: Ctx) -> Behaviour:
    """A 200 whose usage says more prompt tokens were cached than were sent."""
    u = ctx.usage
    usage = {
        "prompt_tokens": u.prompt,
        "completion_tokens": u.output,
        "total_tokens": u.prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.prompt + 50},
    }
    if ctx.stream:
        events = sse_events(ctx)
        rid = f"chatcmpl-{ctx.provider}-{ctx.call}"
        events[-2] = _sse({"id": rid, "choices": [], "usage": usage})
        return stream(events)
    return reply(200, ok_body(ctx, usage))


@dataclass(frozen=True, slots=True)
class Fault:
    """One way a request can go, and how often in the mix (complete / stream requests)."""

    name: str
    build: Build
    weight: float  # in the mix of non-streamed requests
    stream_weight: float  # in the mix of streamed requests


# fmt: off
FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("ok",                  _ok,                  60,  60),
    Fault("slow_ok",             _slow_ok,             5,   4),
    Fault("drip",                _drip,                3,   3),
    Fault("hang_before_headers", lambda c: hang_before_headers(), 3, 3),
    Fault("hang_mid_body",       _hang_mid_body,       3,   3),
    Fault("reset",               lambda c: reset(),    3,   3),
    Fault("close",               lambda c: close(),    2,   2),
    Fault("http_500",            _http_500,            3,   3),
    Fault("http_502_html",       _http_502_html,       3,   3),
    Fault("http_503_text",       _http_503_text,       2,   2),
    Fault("http_529",            _http_529,            2,   2),
    Fault("rate_limit_small",    _rate_limit_small,    1,   1),
    # Scheduled, not drawn: see choose_fault.
    Fault("rate_limit_large",    _rate_limit_large,    0,   0),
    Fault("http_401_echo",       _http_401_echo,       0.05, 0.05),
    Fault("http_400_echo",       _http_400_echo,       0.5, 0.5),
    Fault("truncated_json",      _truncated_json,      3,   0),
    Fault("invalid_shape_echo",  _invalid_shape_echo,  1.5, 1.5),
    Fault("embedded_error_echo", _embedded_error_echo, 1,   3),
    Fault("oversize",            _oversize,            1.5, 0),
    Fault("oversize_chunked",    _oversize_chunked,    1,   0),
    Fault("stream_oversize",     _stream_oversize,     0,   2),
    Fault("stream_cut_close",    lambda c: _stream_cut(c, "close"), 0, 4),
    Fault("stream_cut_reset",    lambda c: _stream_cut(c, "reset"), 0, 3),
    Fault("stream_bad_json",     _stream_bad_json,     0,   2),
    Fault("stream_not_sse",      _stream_not_sse,      0,   1),
    Fault("key_at_cut",          _key_at_cut,          0.5, 0.5),
    # Forced only: shows a router bug (see the strict-xfail tests using it).
    Fault("usage_inconsistent",  _usage_inconsistent,  0,   0),
)}
# fmt: on
_NAMES = list(FAULTS)
_WEIGHTS = [FAULTS[n].weight for n in _NAMES]
_STREAM_WEIGHTS = [FAULTS[n].stream_weight for n in _NAMES]


# Every this many calls, three calls in a row meet a large Retry-After from the first
# provider, which then sits out for RETRY_AFTER_LARGE_S. Provider-wide effects
# (Retry-After, the cooldown after a 401) hold a provider out for every call, so they
# are kept rare: drawn per request at a hundred requests a second, they would keep the
# providers out most of the time.
RATE_LIMIT_LARGE_EVERY = 1000


def choose_fault(seed: int, call: int, provider: str, nth: int, is_stream: bool) -> str:
    """The fault met by the ``nth`` request (1-based) of ``call`` to ``provider``."""
    scheduled = 0 <= call % RATE_LIMIT_LARGE_EVERY - RATE_LIMIT_LARGE_EVERY // 2 < 3
    if scheduled and nth == 1 and provider == PROVIDERS[0]:
        return "rate_limit_large"
    rng = random.Random(f"{seed}/fault/{call}/{provider}/{nth}")
    return rng.choices(_NAMES, _STREAM_WEIGHTS if is_stream else _WEIGHTS)[0]


def build_fault(name: str, ctx: Ctx) -> Behaviour:
    return FAULTS[name].build(ctx)


# ---------------------------------------------------------------------------- calls


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What the suite does with one call."""

    kind: str  # a key of CALL_KINDS
    deadline_s: float
    stop_after: int  # stream_early: deltas read before leaving the block
    cancel_after_s: float  # cancel_*: when the caller gives up (before the deadline)


# kind -> weight. complete/stream are plain calls; stream_early leaves the block after a
# delta or two; cancel_* are cancelled by the caller (asyncio.timeout) before the
# deadline; over_budget asks for a max_tokens whose worst case no step may reserve.
CALL_KINDS = {
    "complete": 68,
    "stream": 18,
    "stream_early": 5,
    "cancel_complete": 3,
    "cancel_stream": 3,
    "over_budget": 3,
}


def call_plan(seed: int, call: int, min_deadline_s: float, max_deadline_s: float) -> CallPlan:
    rng = random.Random(f"{seed}/call/{call}")
    kind = rng.choices(list(CALL_KINDS), list(CALL_KINDS.values()))[0]
    deadline = rng.uniform(min_deadline_s, max_deadline_s)
    return CallPlan(kind, deadline, rng.randint(1, 2), rng.uniform(0.02, deadline * 0.9))
