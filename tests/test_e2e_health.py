"""router.health() and ``router health`` end to end against local listing endpoints.

Each provider kind gets its own Upstream serving its free model listing (OpenAI
``GET /v1/models``, Anthropic ``GET /v1/models``, Ollama ``GET /api/tags`` replaying a
recorded listing). Health must never send a completion (every request is a GET),
must confirm each configured model exists, and is cached for settings.health_ttl_s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
import structlog

import router.logging as router_logging
from router import HealthReport, Router
from router.cli import main
from tests.fakeclock import FakeClock
from tests.routerkit import write_config
from tests.upstream import Upstream, hang_before_headers, replay, reply

Factory = Callable[..., Awaitable[Upstream]]
TAGS = "ollama/ollama-tags-200-json.meta.json"
KEY = "sk-canary-health-0123456789abcdef0123456789"


def openai_listing(*ids: str) -> dict[str, object]:
    return {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}


def anthropic_listing(*ids: str) -> dict[str, object]:
    return {"data": [{"id": i, "type": "model"} for i in ids], "has_more": False}


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HEALTH_KEY", KEY)
    return KEY


@pytest.fixture(autouse=True)
def _uncached_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI calls router.logging.configure(), which caches loggers on first use (see
    tests/test_secrets.py for that bug); keep it from leaking into other tests."""
    real = router_logging.configure

    def configure(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(router_logging, "configure", configure)
    yield
    structlog.reset_defaults()


async def three_providers(
    make: Factory,
    *,
    openai_models: tuple[str, ...] = ("gpt-a", "gpt-b"),
    ollama_models: tuple[str, ...] = ("llama3.2:latest", "llama3.2"),
    settings: str = "",
) -> tuple[str, Upstream, Upstream, Upstream]:
    """YAML for openai + anthropic + ollama providers, each on its own upstream."""
    oa, an, ol = await make(), await make(), await make()
    oa.route("/v1/models", reply(200, openai_listing("gpt-a", "gpt-b", "other")))
    an.route("/v1/models", reply(200, anthropic_listing("claude-x")))
    ol.route("/api/tags", replay(TAGS))
    price = "{price: {input_per_mtok: 1, output_per_mtok: 1}}"
    oa_models = "".join(f"      {m}: {price}\n" for m in openai_models)
    ol_models = "".join(f'      "{m}": {{}}\n' for m in ollama_models)
    body = f"""\
settings: {{{settings}}}
providers:
  oa:
    kind: openai
    base_url: {oa.url}/v1
    api_key_env: HEALTH_KEY
    models:
{oa_models}  an:
    kind: anthropic
    base_url: {an.url}
    api_key_env: HEALTH_KEY
    models:
      claude-x: {price}
  ol:
    kind: ollama
    base_url: {ol.url}
    models:
{ol_models}routes:
  r: {{prompt: hi, fallback: [oa/{openai_models[0]}, an/claude-x, ol/{ollama_models[0]}]}}
"""
    return body, oa, an, ol


def by_name(reports: list[HealthReport]) -> dict[str, HealthReport]:
    return {r.provider: r for r in reports}


def all_requests(*ups: Upstream) -> list[tuple[str, str]]:
    return [(r.method, r.target) for up in ups for r in up.requests]


async def test_every_kind_is_checked_with_its_free_listing_only(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """Each provider is reachable and ok through its own listing endpoint, with its key;
    only GETs are sent (never a completion), and the Ollama ``x`` alias of ``x:latest``
    counts as pulled."""
    body, oa, an, ol = await three_providers(upstream_factory)
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        reports = by_name(await router.health())
    assert set(reports) == {"oa", "an", "ol"}
    for r in reports.values():
        assert (r.ok, r.reachable, r.status, r.missing_models, r.error) == (
            True,
            True,
            200,
            [],
            None,
        ), r
        assert r.latency_s > 0
    assert all_requests(oa, an, ol) == [
        ("GET", "/v1/models"),
        ("GET", "/v1/models?limit=1000"),
        ("GET", "/api/tags"),
    ]
    assert oa.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert an.requests[0].headers["x-api-key"] == KEY
    assert "authorization" not in ol.requests[0].headers
    assert all(r.body == b"" for up in (oa, an, ol) for r in up.requests)


async def test_a_model_that_is_not_pulled_is_named_with_the_pull_hint(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """A configured Ollama model missing from /api/tags makes the provider not ok and is
    reported by name with the ``ollama pull`` hint; an OpenAI model missing from /models
    is reported too."""
    body, *ups = await three_providers(
        upstream_factory,
        openai_models=("gpt-a", "gpt-gone"),
        ollama_models=("llama3.2:latest", "qwen2.5:7b"),
    )
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        reports = by_name(await router.health())
    ol = reports["ol"]
    assert (ol.ok, ol.reachable, ol.status) == (False, True, 200)
    assert ol.missing_models == ["qwen2.5:7b (not pulled; run `ollama pull qwen2.5:7b`)"]
    oa = reports["oa"]
    assert not oa.ok and len(oa.missing_models) == 1
    assert oa.missing_models[0].startswith("gpt-gone")
    assert reports["an"].ok
    assert {m for m, _ in all_requests(*ups)} == {"GET"}


async def test_a_rejected_key_is_reported_with_the_reason(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """A 401 on the listing: not ok, reachable, status 401, the provider's reason; the key
    value appears nowhere in the report."""
    body, oa, an, ol = await three_providers(upstream_factory)
    oa.route(
        "/v1/models",
        replay("openai/openai-chat-401-invalid-api-key.meta.json"),
    )
    an.route("/v1/models", replay("anthropic/anthropic-messages-401-invalid-x-api-key.meta.json"))
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        reports = by_name(await router.health())
    for name, reason in (
        ("oa", "Incorrect API key provided"),
        ("an", "invalid x-api-key"),
    ):
        r = reports[name]
        assert (r.ok, r.reachable, r.status) == (False, True, 401)
        assert r.error is not None and r.error.startswith(reason)
        assert KEY not in repr(r)
    assert reports["ol"].ok
    assert {m for m, _ in all_requests(oa, an, ol)} == {"GET"}


async def test_unreachable_and_hanging_providers_are_reported_within_the_timeout(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """A refused connection is not reachable (no status); a listing that hangs is cut at
    health(timeout_s=...) — checks run concurrently, so the whole health call takes about
    one timeout."""
    body, oa, an, ol = await three_providers(upstream_factory)
    await oa.aclose()  # connection refused
    an.route("/v1/models", hang_before_headers())
    ol.route("/api/tags", hang_before_headers())
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        t0 = time.monotonic()
        reports = by_name(await router.health(timeout_s=0.3))
        elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 0.3 + 0.1
    assert (reports["oa"].ok, reports["oa"].reachable, reports["oa"].status) == (
        False,
        False,
        None,
    )
    for name in ("an", "ol"):
        r = reports[name]
        assert not r.ok and r.status is None
        assert r.error and "0.3" in r.error
    await an.wait_until(lambda: an.disconnects == 1)


async def test_results_are_cached_for_the_ttl_and_force_rechecks(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """A second health() within settings.health_ttl_s sends nothing and returns the same
    reports; force=True checks again; after the TTL (clock advanced) it checks again."""
    body, *ups = await three_providers(upstream_factory, settings="health_ttl_s: 30")
    clock = FakeClock()
    async with Router.from_yaml(write_config(tmp_path, body), clock=clock) as router:
        first = await router.health()
        assert len(all_requests(*ups)) == 3
        clock.advance(29)
        assert await router.health() == first
        assert len(all_requests(*ups)) == 3  # cached: no request
        await router.health(force=True)
        assert len(all_requests(*ups)) == 6
        clock.advance(29)
        await router.health()
        assert len(all_requests(*ups)) == 6  # force refreshed the cache time
        clock.advance(2)
        await router.health()
        assert len(all_requests(*ups)) == 9  # TTL passed
    assert {m for m, _ in all_requests(*ups)} == {"GET"}


async def test_a_zero_ttl_always_checks(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """health_ttl_s: 0 disables the cache: every call checks every provider."""
    body, *ups = await three_providers(upstream_factory, settings="health_ttl_s: 0")
    clock = FakeClock()
    async with Router.from_yaml(write_config(tmp_path, body), clock=clock) as router:
        await router.health()
        clock.advance(0.001)
        await router.health()
    assert len(all_requests(*ups)) == 6


async def test_health_reuses_the_call_connection_pool(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """Health checks go through the providers' pooled clients: checking twice (forced)
    opens one connection per provider."""
    body, *ups = await three_providers(upstream_factory)
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        await router.health()
        await router.health(force=True)
    assert [u.connections_opened for u in ups] == [1, 1, 1]


async def test_cli_health_prints_a_table_and_exits_by_the_verdict(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """``router health`` prints one line per provider (ok / FAIL with the missing model and
    its pull hint) and exits 1 when any provider is not ok, 0 when all are."""
    body, *ups = await three_providers(
        upstream_factory, ollama_models=("llama3.2:latest", "qwen2.5:7b")
    )
    path = write_config(tmp_path, body)
    out = StringIO()
    # The CLI runs its own event loop; the upstreams keep serving in this one.
    code = await asyncio.to_thread(main, ["health", "--config", str(path)], out)
    text = out.getvalue()
    assert code == 1, text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert " ok " in lines["oa"] and " ok " in lines["an"]
    assert "FAIL" in lines["ol"]
    assert "qwen2.5:7b (not pulled; run `ollama pull qwen2.5:7b`)" in lines["ol"]
    assert KEY not in text
    assert {m for m, _ in all_requests(*ups)} == {"GET"}

    ok_body, *_ = await three_providers(upstream_factory)
    ok_out = StringIO()
    ok_path = write_config(tmp_path, ok_body)
    assert await asyncio.to_thread(main, ["health", "--config", str(ok_path)], ok_out) == 0
    assert "FAIL" not in ok_out.getvalue()


async def test_a_wrong_base_url_is_reported_with_the_url_tried(
    tmp_path: Path, upstream_factory: Factory, key: str
) -> None:
    """An openai-kind base_url without /v1 lists at /models, which the server does not
    serve (a bare 404): the report is not ok, names the URL it tried (no query string),
    says the endpoint does not exist and points at base_url; `router health` prints the
    URL. A healthy report carries its URL too (the Anthropic listing's query is left out)."""
    body, oa, an, ol = await three_providers(upstream_factory)
    oa.route("/models", reply(404, b"404 page not found", {"content-type": "text/plain"}))
    body = body.replace(f"base_url: {oa.url}/v1", f"base_url: {oa.url}")
    path = write_config(tmp_path, body)
    async with Router.from_yaml(path) as router:
        reports = by_name(await router.health())
    r = reports["oa"]
    assert (r.ok, r.reachable, r.status) == (False, True, 404)
    assert r.url == f"GET {oa.url}/models"
    assert r.error == (
        f"no such endpoint: GET {oa.url}/models [404 page not found]; check base_url: it should"
        " end at the API root, such as https://api.openai.com/v1"
    )
    assert reports["an"].url == f"GET {an.url}/v1/models"
    assert reports["ol"].url == f"GET {ol.url}/api/tags"
    out = StringIO()
    code = await asyncio.to_thread(main, ["health", "--config", str(path)], out)
    lines = {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}
    assert code == 1
    assert f"GET {oa.url}/models" in lines["oa"] and "check base_url" in lines["oa"]
    assert f"GET {an.url}/v1/models" in lines["an"]
    assert KEY not in out.getvalue()
