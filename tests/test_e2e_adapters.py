"""End to end: Router.from_yaml + complete() against a local server
on 127.0.0.1 replaying real recorded provider responses with their status and headers.

Every test goes through the public path: YAML on disk, keys from the environment,
the router's chain walk, the pooled transport, a real HTTP/1.1 exchange, the
adapter. Expected numbers are read by hand from the recorded bodies (the sweep at
the end reuses the per-fixture tables of tests/test_adapter_fixtures.py, which were
read the same way).
"""

from __future__ import annotations

import ast
import asyncio
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from router import (
    AllProvidersFailedError,
    AuthenticationError,
    Completion,
    ContextLengthError,
    EndpointNotFoundError,
    GoneError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    Router,
    RouterError,
    ServerError,
    Usage,
)
from tests.fixtures_util import load, manifest
from tests.routerkit import write_config
from tests.test_adapter_fixtures import ERRORS, SUCCESS
from tests.upstream import (
    Upstream,
    hang_before_headers,
    replay,
    reply,
)

ROOT = Path(__file__).resolve().parents[1]
# Where each kind sends its chat request, relative to the server root (openai-kind
# base_urls carry /v1, as the real ones do).
CHAT_PATH = {
    "openai": "/v1/chat/completions",
    "openai_responses": "/v1/responses",
    "anthropic": "/v1/messages",
    "gemini": "/models/m:generateContent",
    "ollama": "/api/chat",
    # base_url is the resource endpoint; model m is deployed under its own name.
    "azure_openai": "/openai/deployments/m/chat/completions",
}
PRICE = "{input_per_mtok: 2, output_per_mtok: 8, cached_input_per_mtok: 0.5}"


def canary() -> str:
    return "sk-canary-" + secrets.token_hex(20)


def base_url(kind: str, url: str) -> str:
    return url + "/v1" if kind in ("openai", "openai_responses") else url


def one_step_yaml(kind: str, url: str, *, key_env: str | None = "E2E_KEY") -> str:
    key = f"    api_key_env: {key_env}\n" if key_env else ""
    return f"""\
providers:
  p:
    kind: {kind}
    base_url: {base_url(kind, url)}
{key}    models:
      m: {{price: {PRICE}}}
settings: {{retries: 0}}
routes:
  r:
    system: "You are terse."
    prompt: "Say {{{{ word }}}}"
    # Above every recorded reply's output (the longest, a DeepSeek reasoner's, is
    # 5074 tokens): the recordings were made without the router's default cap, and
    # output above the request's max_tokens is capped as absurd (docs/money.md).
    max_tokens: 8192
    fallback: [p/m]
"""


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = canary()
    monkeypatch.setenv("E2E_KEY", value)
    return value


async def run_fixture(
    tmp_path: Path, up: Upstream, kind: str, meta: str, *, key_env: str | None = "E2E_KEY"
) -> Completion | AllProvidersFailedError:
    """Serve ``meta`` at the kind's chat path and make one routed call."""
    if not meta.endswith(".meta.json"):
        meta += ".meta.json"
    up.route(CHAT_PATH[kind], replay(meta))
    path = write_config(tmp_path, one_step_yaml(kind, up.url, key_env=key_env))
    async with Router.from_yaml(path) as router:
        try:
            return await router.complete("r", {"word": "hi"}, deadline_s=5)
        except AllProvidersFailedError as exc:
            return exc


def U(inp: int, out: int, cached: int = 0, write: int = 0, reasoning: int = 0) -> Usage:
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
    )


# ------------------------------------------------------------------ successes

# (kind, fixture, exact text, usage as reported, finish reason)
SUCCESS_CASES = [
    ("openai", "openai/openai-chat-200-json-cached-tokens", "Hello!", U(1144, 2, cached=1024)),
    (
        "openai",
        "openai/openai-chat-200-json-basic-reasoning-usage",
        "2 + 2 = 4.",
        U(13, 209, reasoning=192),
    ),
    (
        "openai",
        "deepseek/deepseek-chat-200-json-cache-hit",
        'The query "test data" has been processed successfully. The result returned is:'
        ' **"Processed: test data"**.',
        U(359, 25, cached=256),
    ),
    ("openai", "deepseek/deepseek-chat-200-json-reasoning-content", "4", U(97, 17, reasoning=15)),
    # xAI counts reasoning beside completion_tokens (total 254 = 137 + 1 + 116).
    ("openai", "xai/xai-chat-200-json-basic", "4", U(137, 1 + 116, cached=128, reasoning=116)),
    ("anthropic", "anthropic/anthropic-messages-200-json-basic", "2 + 2 = 4", U(16, 13)),
    # Anthropic: input = input_tokens 10 + cache_read 7351 + cache_creation 0.
    (
        "anthropic",
        "anthropic/anthropic-messages-200-json-cache-read",
        "OK",
        U(10 + 7351, 4, cached=7351),
    ),
    # Gemini: thoughtsTokenCount (23) is beside candidatesTokenCount (8).
    ("gemini", "gemini/gemini-generatecontent-200-json", "2 + 2 = **4**", U(10, 31, reasoning=23)),
    # Gemini: cachedContentTokenCount (9609) is inside promptTokenCount (9622).
    (
        "gemini",
        "gemini/gemini-generatecontent-200-json-cached-content",
        "The RubyLLM release engineering handbook describes the essential checks every change"
        " must pass before release, including cassette hygiene, provider wire format drift,"
        " backwards compatibility, and documentation accuracy reviews.",
        U(9622, 35 + 136, cached=9609, reasoning=136),
    ),
    (
        "ollama",
        "ollama/ollama-chat-200-json-basic",
        "I'm just a language model, so I don't have feelings or emotions like humans do."
        " However, I'm functioning properly and ready to help with any questions or tasks you"
        " may have! How can I assist you today?",
        U(31, 46),
    ),
]


@pytest.mark.parametrize(
    ("kind", "meta", "text", "usage"), SUCCESS_CASES, ids=[c[1] for c in SUCCESS_CASES]
)
async def test_recorded_success_gives_exact_text_and_usage(
    tmp_path: Path, upstream: Upstream, key: str, kind: str, meta: str, text: str, usage: Usage
) -> None:
    """A replayed 200 comes back as the exact visible text and the usage the provider reported,
    billed from that usage at the YAML price."""
    key_env = None if kind == "ollama" else "E2E_KEY"
    result = await run_fixture(tmp_path, upstream, kind, meta, key_env=key_env)
    assert isinstance(result, Completion)
    assert result.text == text
    assert result.usage == usage
    assert not result.usage.estimated
    assert (result.route, result.provider, result.model) == ("r", "p", "m")
    assert result.finish_reason == "stop"
    expected = (
        (usage.input_tokens - usage.cached_input_tokens) * Decimal(2)
        + usage.cached_input_tokens * Decimal("0.5")
        + usage.output_tokens * Decimal(8)
    ) / 1_000_000
    assert result.cost_usd == expected
    assert [(a.outcome, a.status) for a in result.attempts] == [("ok", 200)]
    # One request, to the protocol's path, carrying the key the way the protocol wants.
    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", CHAT_PATH[kind])
    body = request.json()
    if kind == "gemini":
        # The key rides in its header, never in the URL (Gemini also accepts ?key=).
        assert request.headers["x-goog-api-key"] == key
        assert key not in request.target and "key=" not in request.target
        assert "authorization" not in request.headers
        assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hi"}]}]
        assert body["generationConfig"]["maxOutputTokens"] == 8192
        return
    assert body["model"] == "m"
    if kind == "openai":
        assert request.headers["authorization"] == f"Bearer {key}"
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    elif kind == "anthropic":
        assert request.headers["x-api-key"] == key
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert body["system"] == "You are terse."
        assert body["messages"] == [{"role": "user", "content": "Say hi"}]
    else:
        assert "authorization" not in request.headers
        assert body["stream"] is False


async def test_reasoning_text_stays_out_of_the_answer(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """DeepSeek's reasoning_content goes to details, never into Completion.text."""
    meta = "deepseek/deepseek-chat-200-json-reasoning-content"
    result = await run_fixture(tmp_path, upstream, "openai", meta)
    assert isinstance(result, Completion)
    assert result.text == "4"
    assert result.details["reasoning"] == "We need answer simple. 2+2=4. Just number."
    assert result.response_id == "2c181a80-6a33-49e6-8add-70999edef402"


# ------------------------------------------------------------------ errors

# (kind, fixture, error type, status, readable message start, retry_after)
ERROR_CASES = [
    (
        "openai",
        "openai/openai-chat-401-invalid-api-key",
        AuthenticationError,
        401,
        "Incorrect API key provided: invalid-key.",
        None,
    ),
    (
        "anthropic",
        "anthropic/anthropic-messages-401-invalid-x-api-key",
        AuthenticationError,
        401,
        "invalid x-api-key",
        None,
    ),
    (
        "openai",
        "openai/openai-chat-404-model-not-found",
        ModelNotFoundError,
        404,
        "The model `gpt-4.1-nano-wrong` does not exist",
        None,
    ),
    (
        "ollama",
        "ollama/ollama-chat-404-model-not-found",
        ModelNotFoundError,
        404,
        "model 'nonexistent-model:latest' not found",
        None,
    ),
    (
        "openai",
        "openai/openai-chat-429-rpm-retry-after",
        RateLimitError,
        429,
        "Rate limit reached for gpt-3.5-turbo",
        20.0,
    ),
    (
        "anthropic",
        "anthropic/anthropic-messages-429-rate-limit-retry-after",
        RateLimitError,
        429,
        "Number of requests has exceeded your per-minute rate limit",
        7.0,
    ),
    (
        "openai",
        "xai/xai-chat-400-context-length",
        ContextLengthError,
        400,
        "This model's maximum prompt length is 131072",
        None,
    ),
    (
        "anthropic",
        "anthropic/anthropic-messages-400-prompt-too-long",
        ContextLengthError,
        400,
        "prompt is too long: 3333404 tokens > 200000 maximum",
        None,
    ),
    (
        "openai",
        "deepseek/deepseek-chat-400-context-length-octet-stream",
        ContextLengthError,
        400,
        "This model's maximum context length is 1048565 tokens.",
        None,
    ),
    (
        "anthropic",
        "anthropic/anthropic-messages-500-api-error",
        ServerError,
        500,
        "Internal server error",
        None,
    ),
    (
        "openai",
        "xai/xai-chat-503-model-at-capacity",
        ServerError,
        503,
        "Service temporarily unavailable. The model is at capacity",
        None,
    ),
    (
        "anthropic",
        "anthropic/anthropic-messages-529-overloaded",
        ServerError,
        529,
        "Overloaded",
        None,
    ),
    (
        "openai",
        "openai-compatible/perplexity-chat-401-html-openresty",
        AuthenticationError,
        401,
        "401 Authorization Required",
        None,
    ),
    (
        "openai",
        "openai/openai-chat-503-envoy-plain-text",
        ServerError,
        503,
        "upstream connect error or disconnect/reset before headers.",
        None,
    ),
    (
        "openai",
        "openai-compatible/perplexity-models-404-empty-body",
        EndpointNotFoundError,  # a 404 that names no model: the URL is wrong
        404,
        "no such endpoint: POST http://127.0.0.1:",
        None,
    ),
]


@pytest.mark.parametrize(
    ("kind", "meta", "cls", "status", "message", "retry_after"),
    ERROR_CASES,
    ids=[c[1].split("/")[1] for c in ERROR_CASES],
)
async def test_recorded_error_lands_typed_on_the_attempt(
    tmp_path: Path,
    upstream: Upstream,
    key: str,
    kind: str,
    meta: str,
    cls: type[ProviderError],
    status: int,
    message: str,
    retry_after: float | None,
) -> None:
    """A replayed error response becomes the right ProviderError type on
    AllProvidersFailedError.attempts[0].error, with its status, a readable one-line
    message from the body (JSON message, HTML title, plain text, or "(empty body)")
    and the Retry-After the provider sent."""
    result = await run_fixture(tmp_path, upstream, kind, meta)
    assert isinstance(result, AllProvidersFailedError)
    (attempt,) = result.attempts  # retries: 0
    err = attempt.error
    assert type(err) is cls
    assert isinstance(err, ProviderError)
    assert (attempt.outcome, attempt.status, err.status) == ("error", status, status)
    assert (err.provider, err.model) == ("p", "m")
    assert err.detail.startswith(message)
    assert "\n" not in str(err) and "<" not in err.detail  # one line, no markup
    assert err.retry_after == retry_after
    assert key not in str(result) and key not in repr(result)
    assert len(upstream.requests) == 1


# ------------------------------------------------------------------ the whole corpus


def meta_of(fixture_id: str) -> str:
    return next(m["meta"] for m in manifest() if m["id"] == fixture_id)


def _non_streaming(table: dict[str, object]) -> list[str]:
    return [fid for fid in table if not load(fid).streaming]


@pytest.mark.parametrize("fixture_id", _non_streaming(SUCCESS))
async def test_every_recorded_success_survives_the_router(
    tmp_path: Path, upstream: Upstream, key: str, fixture_id: str
) -> None:
    """Every non-streamed success fixture, replayed over HTTP through the router, gives
    the text, finish reason and usage the adapter tables expect."""
    fx = load(fixture_id)
    expected = SUCCESS[fixture_id]
    result = await run_fixture(tmp_path, upstream, fx.kind, meta_of(fixture_id))
    assert isinstance(result, Completion), result
    if expected.prefix:
        assert result.text.startswith(expected.text)
    else:
        assert result.text == expected.text
    assert result.finish_reason == expected.finish
    if expected.usage is not None:
        assert result.usage == expected.usage


@pytest.mark.parametrize("fixture_id", _non_streaming(ERRORS))
async def test_every_recorded_error_survives_the_router(
    tmp_path: Path, upstream: Upstream, key: str, fixture_id: str
) -> None:
    """Every error fixture, replayed over HTTP through the router, lands as the expected
    error type with its status and message on the attempt."""
    fx = load(fixture_id)
    expected = ERRORS[fixture_id]
    result = await run_fixture(tmp_path, upstream, fx.kind, meta_of(fixture_id))
    assert isinstance(result, AllProvidersFailedError), result
    err = result.attempts[0].error
    assert type(err) is expected.cls
    assert isinstance(err, ProviderError) and err.status == fx.status
    if expected.prefix:
        assert err.detail.startswith(expected.message)
    else:
        assert err.detail == expected.message
    assert err.retry_after == expected.retry_after


# ------------------------------------------------------------------ the httpx boundary


def _httpx_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [n for n in names if n.split(".")[0] in ("httpx", "httpx_sse", "httpcore")]
    return found


def test_only_the_transport_imports_httpx() -> None:
    """Parsed with ast (so imports inside functions and TYPE_CHECKING blocks count too):
    no module under router/ but router/transport.py imports httpx, httpx_sse or httpcore."""
    modules = sorted((ROOT / "router").rglob("*.py"))
    assert len(modules) > 10
    offenders = {
        str(p.relative_to(ROOT)): names
        for p in modules
        if p.name != "transport.py" and (names := _httpx_imports(p))
    }
    assert offenders == {}
    assert "httpx" in _httpx_imports(ROOT / "router" / "transport.py")  # the walk can see one


# ------------------------------------------------------------------ pooling and closing


async def test_fifty_sequential_calls_reuse_one_connection(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """50 routed calls in a row go over ONE keep-alive connection (the seed's CRIT-1:
    a new session per request)."""
    upstream.route(
        CHAT_PATH["openai"], replay("openai/openai-chat-200-json-cached-tokens.meta.json")
    )
    path = write_config(tmp_path, one_step_yaml("openai", upstream.url))
    async with Router.from_yaml(path) as router:
        for _ in range(50):
            result = await router.complete("r", {"word": "hi"}, deadline_s=5)
            assert result.text == "Hello!"
        st = router.provider_states()["p"]
        assert (st.connections_open, st.connections_idle, st.connections_in_use) == (1, 1, 0)
    assert len(upstream.requests) == 50
    assert {r.conn for r in upstream.requests} == {1}
    assert upstream.connections_opened == 1


async def test_closing_the_router_closes_every_client(
    tmp_path: Path, upstream_factory: object, key: str
) -> None:
    """aclose() closes each provider's pooled client: every upstream sees its connection
    closed by the client, no connection stays open, and the transports refuse new work."""
    make = upstream_factory
    servers = [await make() for _ in range(3)]  # type: ignore[operator]
    kinds = ["openai", "anthropic", "ollama"]
    fixtures = [
        "openai/openai-chat-200-json-cached-tokens.meta.json",
        "anthropic/anthropic-messages-200-json-basic.meta.json",
        "ollama/ollama-chat-200-json-basic.meta.json",
    ]
    providers = []
    for i, (kind, server, meta) in enumerate(zip(kinds, servers, fixtures, strict=True)):
        server.route(CHAT_PATH[kind], replay(meta))
        key_line = "" if kind == "ollama" else "    api_key_env: E2E_KEY\n"
        providers.append(
            f"  p{i}:\n    kind: {kind}\n    base_url: {base_url(kind, server.url)}\n"
            f"{key_line}    models:\n      m: {{price: {PRICE}}}\n"
        )
    routes = "".join(f"  r{i}: {{prompt: hi, fallback: [p{i}/m]}}\n" for i in range(3))
    body = "providers:\n" + "".join(providers) + "routes:\n" + routes
    router = Router.from_yaml(write_config(tmp_path, body))
    async with router:
        for i in range(3):
            await router.complete(f"r{i}", deadline_s=5)
        assert [s.open_connections for s in servers] == [1, 1, 1]
        assert [st.connections_open for st in router.provider_states().values()] == [1, 1, 1]
    for server in servers:
        await server.wait_until(lambda s=server: s.disconnects == 1)
        assert server.open_connections == 0
    for st in router.provider_states().values():
        assert (st.connections_open, st.connections_idle, st.connections_in_use) == (0, 0, 0)
    await router.aclose()  # idempotent


async def test_concurrent_calls_share_the_pool_without_leaking(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """20 concurrent calls open at most as many connections as calls, and all of them
    are idle (back in the pool) afterwards."""
    upstream.route(
        CHAT_PATH["openai"], replay("openai/openai-chat-200-json-cached-tokens.meta.json")
    )
    path = write_config(tmp_path, one_step_yaml("openai", upstream.url))
    async with Router.from_yaml(path) as router:
        results = await asyncio.gather(
            *(router.complete("r", {"word": "hi"}, deadline_s=5) for _ in range(20))
        )
        assert {r.text for r in results} == {"Hello!"}
        st = router.provider_states()["p"]
        assert st.connections_in_use == 0
        assert 1 <= st.connections_idle == st.connections_open <= 20
        assert st.in_flight == 0
        # and the pool is then reused, not grown
        await router.complete("r", {"word": "hi"}, deadline_s=5)
        assert upstream.connections_opened == st.connections_open


async def test_an_error_status_keeps_the_connection_for_the_next_call(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """A 503 with a body is read to the end so its connection is reused by the next call."""
    upstream.queue(
        reply(503, {"error": {"message": "busy"}}),
        replay("openai/openai-chat-200-json-cached-tokens.meta.json"),
    )
    path = write_config(tmp_path, one_step_yaml("openai", upstream.url))
    async with Router.from_yaml(path) as router:
        with pytest.raises(AllProvidersFailedError):
            await router.complete("r", {"word": "hi"}, deadline_s=5)
        assert (await router.complete("r", {"word": "hi"}, deadline_s=5)).text == "Hello!"
    assert upstream.connections_opened == 1


async def test_closing_the_router_mid_call_ends_the_call_with_a_router_error(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """A graceful shutdown while a request hangs (retries: 1, the default): the in-flight
    call ends at once with a RouterError (every error a caller sees is one), not with
    whatever its retry trips over in the closed router."""
    upstream.route(CHAT_PATH["openai"], hang_before_headers())
    body = one_step_yaml("openai", upstream.url).replace("retries: 0", "retries: 1")
    router = Router.from_yaml(write_config(tmp_path, body))
    await router.start()
    task = asyncio.create_task(router.complete("r", {"word": "hi"}, deadline_s=3))
    await upstream.wait_until(lambda: len(upstream.requests) == 1)
    await router.aclose()
    try:
        async with asyncio.timeout(1.0):
            await task
    except Exception as exc:  # the call must not succeed; what matters is the type
        outcome: BaseException = exc
    else:
        raise AssertionError("the call succeeded after close")
    assert isinstance(outcome, RouterError), repr(outcome)
    await upstream.wait_until(lambda: upstream.disconnects == 1)


# ------------------------------------------------------------------ wrong base_url, 410

OK_REPLY = "openai/openai-chat-200-json-cached-tokens.meta.json"  # text "Hello!"


def two_step_yaml(first_base: str, second_base: str, *, first_extra: str = "") -> str:
    return f"""\
providers:
  bad:
    kind: openai
    base_url: {first_base}
    api_key_env: E2E_KEY
{first_extra}    models:
      m: {{price: {PRICE}}}
  good:
    kind: openai
    base_url: {second_base}
    api_key_env: E2E_KEY
    models:
      m: {{price: {PRICE}}}
settings: {{retries: 2, cooldown: {{failures: 2, seconds: 60}}}}
routes:
  r:
    prompt: "Say {{{{ word }}}}"
    fallback: [bad/m, good/m]
"""


@pytest.mark.parametrize(
    ("suffix", "requested", "body"),
    [
        # base_url without /v1: the request goes to /chat/completions (Go-style 404 page).
        ("", "/chat/completions", b"404 page not found"),
        # base_url with the endpoint pasted in: OpenAI's own answer for such a path.
        (
            "/v1/chat/completions",
            "/v1/chat/completions/chat/completions",
            b'{"error":{"message":"Invalid URL (POST /v1/chat/completions/chat/completions)",'
            b'"type":"invalid_request_error","param":null,"code":null}}',
        ),
    ],
    ids=["missing-v1", "endpoint-pasted"],
)
async def test_a_wrong_base_url_is_named_not_retried_falls_back_and_cools_down(
    tmp_path: Path,
    upstream_factory: Callable[..., Awaitable[Upstream]],
    key: str,
    suffix: str,
    requested: str,
    body: bytes,
) -> None:
    """A 404 naming no model is EndpointNotFoundError: it names the URL requested (path,
    no query, no key) with the base_url hint, is not retried (retries: 2), falls back to
    the next step, and counts towards the provider's cooldown: after two such calls the
    third skips the provider without sending."""
    bad, good = await upstream_factory(), await upstream_factory()
    bad.handler = lambda request: reply(404, body)
    good.route(CHAT_PATH["openai"], replay(OK_REPLY))
    path = write_config(tmp_path, two_step_yaml(bad.url + suffix, good.url + "/v1"))
    async with Router.from_yaml(path) as router:
        first = await router.complete("r", {"word": "hi"}, deadline_s=5)
        await router.complete("r", {"word": "hi"}, deadline_s=5)
        third = await router.complete("r", {"word": "hi"}, deadline_s=5)
    assert first.text == "Hello!" and first.provider == "good"
    failed = first.attempts[0]
    err = failed.error
    assert isinstance(err, EndpointNotFoundError)
    assert (failed.outcome, failed.status, err.kind) == ("error", 404, "endpoint_not_found")
    assert err.url == f"POST {bad.url}{requested}"
    assert f"no such endpoint: POST {bad.url}{requested} [" in err.detail
    assert err.detail.endswith(
        "check base_url: it should end at the API root, such as https://api.openai.com/v1"
    )
    assert "model_not_found" not in str(err)
    assert key not in str(err) and key not in repr(first)
    assert [r.path for r in bad.requests] == [requested, requested]  # once per call
    assert third.attempts[0].outcome == "skipped"
    assert third.attempts[0].skip == "cooldown"


XAI_410 = (
    b'{"code":"Client specified an invalid argument","error":"Live search is deprecated.'
    b' Please switch to the Agent Tools API: https://docs.x.ai/docs/guides/tools/overview"}'
)


async def test_a_410_names_the_extra_fields_sent_and_falls_back_without_retrying(
    tmp_path: Path, upstream_factory: Callable[..., Awaitable[Upstream]], key: str
) -> None:
    """xAI answers a request carrying search_parameters with 410 Gone: GoneError with the
    provider's words and the names of the extra fields sent, not retried, no cooldown
    blame, and the next step answers."""
    xai, good = await upstream_factory(), await upstream_factory()
    xai.route(CHAT_PATH["openai"], reply(410, XAI_410))
    good.route(CHAT_PATH["openai"], replay(OK_REPLY))
    extra = "    extra: {search_parameters: {mode: 'off'}}\n"
    yaml_text = two_step_yaml(xai.url + "/v1", good.url + "/v1", first_extra=extra)
    async with Router.from_yaml(write_config(tmp_path, yaml_text)) as router:
        result = await router.complete("r", {"word": "hi"}, deadline_s=5)
        again = await router.complete("r", {"word": "hi"}, deadline_s=5)
        third = await router.complete("r", {"word": "hi"}, deadline_s=5)
    assert result.provider == "good"
    err = result.attempts[0].error
    assert isinstance(err, GoneError) and err.kind == "gone" and err.status == 410
    assert err.detail.startswith("Live search is deprecated. Please switch to the Agent Tools")
    assert "(extra body fields sent: search_parameters)" in err.detail
    assert len(xai.requests) == 3  # once per call: never retried, never cooled down
    assert xai.requests[0].json()["search_parameters"] == {"mode": "off"}
    assert [a.outcome for a in (*again.attempts, *third.attempts)] == ["error", "ok"] * 2


# ------------------------------------------------------------------ Anthropic prompt caching

# USD per million tokens: input, output, cache read, cache write (Anthropic's ratios).
CACHE_PRICE = {
    "in": Decimal(3),
    "out": Decimal(15),
    "read": Decimal("0.30"),
    "write": Decimal("3.75"),
}
# A stable system prompt long enough to be worth caching (a few thousand tokens).
LONG_SYSTEM = " ".join(f"Desk rule {i}: quote every price with its source." for i in range(600))


async def test_a_cached_system_prompt_is_marked_and_its_cache_tokens_billed_at_cache_prices(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """prompt_cache.system on an Anthropic route: the request's system is one text block
    marked cache_control ephemeral; the recorded cache-write reply is billed with its
    7351 written tokens at cache_write_per_mtok, the cache-read reply with its 7351 read
    tokens at cached_input_per_mtok, the 10 uncached at the input price."""
    upstream.queue(
        replay("anthropic/anthropic-messages-200-json-cache-write.meta.json"),
        replay("anthropic/anthropic-messages-200-json-cache-read.meta.json"),
        path=CHAT_PATH["anthropic"],
    )
    p = CACHE_PRICE
    price = (
        f"{{input_per_mtok: {p['in']}, output_per_mtok: {p['out']},"
        f" cached_input_per_mtok: {p['read']}, cache_write_per_mtok: {p['write']}}}"
    )
    body = f"""\
providers:
  an:
    kind: anthropic
    base_url: {upstream.url}
    api_key_env: E2E_KEY
    models: {{claude-haiku-4-5: {{price: {price}}}}}
routes:
  r:
    system: "{LONG_SYSTEM}"
    prompt: "Say {{{{ word }}}}"
    prompt_cache: {{system: true}}
    fallback: [an/claude-haiku-4-5]
"""
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        wrote = await router.complete("r", {"word": "OK"}, deadline_s=5)
        read = await router.complete("r", {"word": "OK"}, deadline_s=5)
    for request in upstream.requests:
        sent = request.json()
        assert sent["system"] == [
            {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}
        ]
        assert sent["messages"] == [{"role": "user", "content": "Say OK"}]
    mtok = Decimal(1_000_000)
    assert wrote.usage == Usage(input_tokens=10 + 7351, output_tokens=4, cache_write_tokens=7351)
    assert wrote.cost_usd == (10 * p["in"] + 7351 * p["write"] + 4 * p["out"]) / mtok
    assert read.usage == Usage(input_tokens=10 + 7351, output_tokens=4, cached_input_tokens=7351)
    assert read.cost_usd == (10 * p["in"] + 7351 * p["read"] + 4 * p["out"]) / mtok
    assert wrote.cost_usd == Decimal("0.02765625") and read.cost_usd == Decimal("0.0022953")
