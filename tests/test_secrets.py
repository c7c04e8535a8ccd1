"""A canary key never leaks: not in logs, exception text, reprs or CLI output, on any
error path, for an OpenAI-protocol and an Anthropic provider (Bearer and x-api-key).

Two canaries: one shaped like a real key ("sk-canary-" + 40 random chars, which the
shape rules would scrub even if unregistered) and one with no known shape (which only
the registration of loaded key values can scrub). Each error path is driven by real
local servers that echo the key back in every way a hostile or buggy upstream could.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
import traceback
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import structlog

import router.logging as router_logging
import router.router as router_module
from router import Plan, Router, RouterError
from router.cli import main
from router.errors import REQUEST_ID_LIMIT, ProviderError, StreamInterruptedError
from router.generation import build_provider
from router.plan import load_config
from router.providers.error_body import ERROR_MESSAGE_LIMIT, ERROR_TEXT_LIMIT, decode_error_body
from router.redact import REDACTED, redact
from tests.hostile import HOSTILE, PARSER_FAULTS
from tests.logs import capture_logs
from tests.routerkit import write_config
from tests.upstream import (
    Behaviour,
    Upstream,
    hang_before_headers,
    reply,
    reset,
)

ALNUM = string.ascii_letters + string.digits
CHAT = {"oa": "/v1/chat/completions", "an": "/v1/messages"}


def shaped() -> str:
    return "sk-canary-" + "".join(secrets.choice(ALNUM) for _ in range(40))


def unshaped() -> str:
    return "CANARY" + secrets.token_hex(20)


CANARIES: dict[str, Callable[[], str]] = {"shaped": shaped, "unshaped": unshaped}


@pytest.fixture(autouse=True)
def _uncached_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """router.logging.configure() caches loggers on first use (the bug proved below);
    keep every configure() in this module from leaking into other tests."""
    real = router_logging.configure

    def configure(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(router_logging, "configure", configure)
    yield
    structlog.reset_defaults()


# -------------------------------------------------------------------------- paths


def _paths(key: str, other: Upstream) -> dict[str, Behaviour]:
    """Every error path, as one upstream behaviour, each echoing ``key`` where it can."""
    k = key.encode()
    return {
        "401 body echoing the key": reply(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        ),
        "500 json echoing the key": reply(500, {"error": {"message": f"crashed on {key}"}}),
        "502 html echoing the key": reply(
            502,
            f"<html><head><title>Bad Gateway for {key}</title></head>"
            f"<body><h1>{key}</h1></body></html>",
            {"content-type": "text/html"},
        ),
        # The key sits across the cut of the first 300 characters of a text body.
        "503 text with the key at the cut": reply(
            503, "x" * 275 + " " + key, {"content-type": "text/plain"}
        ),
        "1 KB json message with the key at the cut": reply(
            400, {"error": {"message": "y" * 985 + " " + key}}
        ),
        "connection reset": reset(),
        "timeout": hang_before_headers(),
        "invalid json containing the key": reply(
            200, b'{"id": "x", "choices": [{"message": {"content": "' + k + b'"'
        ),
        "wrong shape containing the key": reply(
            200, {"choices": [{"message": {"content": [k.decode()]}}]}
        ),
        "error object inside a 200": reply(
            200, {"error": {"message": f"bad key {key}", "type": "authentication_error"}}
        ),
        "429 echoing the key": reply(429, {"error": {"message": key}}, {"retry-after": "0"}),
        "redirect to another host": reply(
            307,
            b"",
            {"location": f"http://127.0.0.2:{other.port}/v1/chat/completions?api_key={key}"},
        ),
    }


PATH_NAMES = list(_paths("k", Upstream(port=1)))


def _yaml(oa: Upstream, an: Upstream, extra_step: str = "") -> str:
    price = "{price: {input_per_mtok: 1, output_per_mtok: 1}}"
    return f"""\
providers:
  oa:
    kind: openai
    base_url: {oa.url}/v1
    api_key_env: CANARY_OA
    models: {{m: {price}}}
  an:
    kind: anthropic
    base_url: {an.url}
    api_key_env: CANARY_AN
    models: {{m: {price}}}
  fallback_mock: {{kind: mock, models: {{m: {{}}}}}}
settings: {{retries: 0, attempt_floor_s: 0.1}}
routes:
  r: {{prompt: "hello", fallback: [oa/m, an/m{extra_step}]}}
"""


# -------------------------------------------------------------------------- checks


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _texts_of_error(err: BaseException) -> list[str]:
    """Every text a caller could print of an error: str, repr, the traceback, each
    attempt (and its error's own cause chain)."""
    texts = ["".join(traceback.format_exception(err))]
    for e in _chain(err):
        texts += [str(e), repr(e)]
        if isinstance(e, RouterError):
            texts += [e.message, str(e.args)]
    for a in getattr(err, "attempts", []):
        texts += [str(a), repr(a), str(a.reason)]
        if a.error is not None:
            texts.append("".join(traceback.format_exception(a.error)))
            for e in _chain(a.error):
                texts += [str(e), repr(e), str(getattr(e, "detail", ""))]
    return texts


def _texts_of_router(router: Router, config: Plan) -> list[str]:
    texts = [repr(router), str(router), repr(config), str(config), config.config.model_dump_json()]
    texts += [repr(router.plan), repr(router.config)]
    texts += [repr(router.provider_states()), repr(router.state)]
    for plan in router.plan.providers.values():
        # The runtime the router builds from each plan (adapter, transport, gate): its
        # reprs reach tracebacks and debuggers.
        p = build_provider(plan, router.state)
        texts += [repr(p), repr(p.transport), repr(p.adapter), str(p.adapter), repr(p.gate)]
        texts += [repr(plan), str(plan)]
    texts.append(repr(router.chain("r")))
    return texts


async def _call(config: Plan, deadline: float) -> tuple[RouterError | None, Router]:
    async with Router(config) as router:
        try:
            await router.complete("r", deadline_s=deadline)
        except RouterError as exc:
            structlog.get_logger("app").exception("routed_call_failed", error=exc)
            return exc, router
    return None, router


@pytest.mark.parametrize("style", list(CANARIES))
@pytest.mark.parametrize("path", PATH_NAMES)
async def test_no_error_path_leaks_the_key(
    tmp_path: Path,
    upstream_factory: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    style: str,
) -> None:
    """For each error path (both providers failing that way): the canary is in no JSON
    log line, no captured log event, no exception str/repr/traceback (nested attempts
    and cause chains included), no repr of router/config/transport/adapter, and not in
    ``complete --json`` or ``render`` output — yet it really was sent to the upstream."""
    oa_key, an_key = CANARIES[style](), CANARIES[style]()
    keys = (oa_key, an_key)
    env = {"CANARY_OA": oa_key, "CANARY_AN": an_key}
    oa, an, elsewhere = await upstream_factory(), await upstream_factory(), None
    elsewhere = await upstream_factory(host="127.0.0.2")
    oa.route(CHAT["oa"], _paths(oa_key, elsewhere)[path])
    an.route(CHAT["an"], _paths(an_key, elsewhere)[path])
    cfg_path = write_config(tmp_path, _yaml(oa, an))
    config = load_config(cfg_path, env=env)
    deadline = 0.2 if path == "timeout" else 5.0

    # 1. JSON logs through the shipped configure() helper (level debug: everything).
    buf = StringIO()
    router_logging.configure(format="json", level="debug", stream=buf)
    err, router = await _call(config, deadline)
    assert isinstance(err, RouterError), "every step was meant to fail"
    lines = buf.getvalue().splitlines()
    assert any(json.loads(line)["event"] == "llm_attempt" for line in lines)
    assert any(json.loads(line)["event"] == "routed_call_failed" for line in lines)
    texts = [*lines, *_texts_of_error(err), *_texts_of_router(router, config)]

    # 2. Raw events as captured by structlog.testing (no redaction processor at all).
    with capture_logs() as events:
        err2, router2 = await _call(config, deadline)
    assert events and err2 is not None
    texts += [repr(events), *_texts_of_error(err2), *_texts_of_router(router2, config)]

    # 3. The CLI: complete --json (with an offline last step so it prints JSON carrying
    #    the failed attempts) and render.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cli_path = write_config(tmp_path, _yaml(oa, an, extra_step=", fallback_mock/m"))
    out = StringIO()
    code = await asyncio.to_thread(
        main,
        ["complete", "r", "--config", str(cli_path), "--json", "--deadline", str(deadline * 3)],
        out,
    )
    assert code == 0, out.getvalue()
    doc = json.loads(out.getvalue())
    assert [a["outcome"] for a in doc["attempts"]][-1] == "ok"
    assert all(a["error"] for a in doc["attempts"][:-1])
    texts.append(out.getvalue())
    render_out = StringIO()
    assert main(["render", "r", "--config", str(cli_path)], render_out) == 0
    texts.append(render_out.getvalue())

    for text in texts:
        for key in keys:
            assert key not in text, f"{path}: key leaked in {text[:300]!r}"
            # Nor a piece of it (a key cut by a length limit is still a leak).
            for piece in (key[:12], key[-12:]):
                assert piece not in text, f"{path}: part of key in {text[:300]!r}"

    # The test is meaningful: each key really went to its upstream, the right way.
    assert oa.requests and oa.requests[0].headers["authorization"] == f"Bearer {oa_key}"
    assert an.requests and an.requests[0].headers["x-api-key"] == an_key
    # ... and never to another host.
    assert elsewhere.requests == []


# -------------------------------------------------------------------------- hostile


def _hostile_yaml(url: str) -> str:
    return f"""\
providers:
  oa:
    kind: openai
    base_url: {url}/v1
    api_key_env: CANARY_OA
    models: {{m: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
settings: {{retries: 0, attempt_floor_s: 0.05, first_token_timeout_s: 0.5, idle_timeout_s: 0.2}}
routes:
  r: {{prompt: "hello", fallback: [oa/m]}}
"""


async def _routed(router: Router, mode: str, deadline_s: float) -> RouterError:
    try:
        if mode == "complete":
            await router.complete("r", deadline_s=deadline_s)
        else:
            async with router.stream("r", deadline_s=deadline_s) as stream:
                async for _ in stream:
                    pass
    except RouterError as exc:
        return exc
    raise AssertionError("the call was meant to fail")


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize("fault", list(HOSTILE))
async def test_a_hostile_upstream_leaks_no_key_into_tracebacks_or_any_log(
    tmp_path: Path,
    upstream_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    mode: str,
    fault: str,
) -> None:
    """The upstream echoes the key into a header line over 8 KB, an invalid header line,
    the status line, a chunk-size line (first, or after text was streamed), a
    redirect's Location, or the request-id header. With the root logger at DEBUG
    (httpx's and aiohttp's loggers included) and the router's JSON logs at debug:
    no piece of the key in any record, and none in the formatted traceback of the
    error (``__cause__``/``__context__`` chains, each attempt's error, a stream's
    interrupted cause). The redirect is not followed; a request id is capped."""
    key = unshaped()
    up = await upstream_factory()
    up.route(CHAT["oa"], HOSTILE[fault]())
    config = load_config(write_config(tmp_path, _hostile_yaml(up.url)), env={"CANARY_OA": key})
    caplog.set_level(logging.DEBUG)
    buf = StringIO()
    router_logging.configure(format="json", level="debug", stream=buf)
    async with Router(config) as router:
        err = await _routed(router, mode, 1.0)
        structlog.get_logger("app").exception("routed_call_failed", error=err)
        logging.getLogger("app").exception("routed call failed", exc_info=err)
    texts = [*_texts_of_error(err), buf.getvalue()]
    if isinstance(err, StreamInterruptedError) and err.cause is not None:
        texts += _texts_of_error(err.cause)
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            texts.append("".join(traceback.format_exception(record.exc_info[1])))
    assert "routed call failed" in caplog.text and "routed_call_failed" in buf.getvalue()
    for text in texts:
        for piece in (key, key[:12], key[-12:], key[10:22]):
            assert piece not in text, f"{fault}: key leaked in {text[:300]!r}"
    assert up.requests[0].headers["authorization"] == f"Bearer {key}"  # it was sent
    if fault == "redirect":
        assert len(up.requests) == 1  # not followed
        assert "redirect not followed" in str(err.attempts[0].error)
    if fault == "request_id":
        errors = [a.error for a in err.attempts if isinstance(a.error, ProviderError)]
        assert errors and all(
            e.request_id and len(e.request_id) <= REQUEST_ID_LIMIT for e in errors
        ), errors
    if fault in PARSER_FAULTS and fault != "chunk_size_mid_stream":
        errors = [a.error for a in err.attempts if isinstance(a.error, ProviderError)]
        assert errors and all(e.cause_summary for e in errors), errors


@pytest.mark.parametrize(
    "value",
    [
        "{key}",
        "req_{key}",
        "Bearer {key}",
        "req_" + "x" * 5000,
        "x" * 120 + "{key}",
    ],
    ids=["key", "prefixed", "bearer", "huge", "key-at-the-cap"],
)
def test_request_id_is_redacted_and_capped(tmp_path: Path, value: str) -> None:
    """The upstream's request-id header is upstream text like any other: redacted (a
    known key, a credential shape, a piece of a key cut by the cap) and capped."""
    key = unshaped()
    body = (
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key_env: K,"
        " models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}}}\n"
        "routes: {r: {prompt: hi, fallback: [p/m]}}"
    )
    load_config(write_config(tmp_path, body), env={"K": key})  # registers the key
    rid = value.format(key=key)
    err = ProviderError("failed", provider="p", model="m", status=500, request_id=rid)
    assert err.request_id is not None
    assert len(err.request_id) <= REQUEST_ID_LIMIT
    for piece in (key, key[:12], key[-12:], key[:8]):
        assert piece not in err.request_id
    assert ProviderError("x", provider="p", model="m", request_id="req_01ABC").request_id == (
        "req_01ABC"
    )


# -------------------------------------------------------------------------- redact()


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("sk-abcdefghij1234567890", "abcdefghij1234567890"),
        ("key sk-proj-abcDEF123456789_xyz-00 used", "abcDEF123456789"),
        ("sk-ant-api03-abcdefghijklmnop", "abcdefghijklmnop"),
        ("xai-abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("x-api-key: abcdef1234567890", "abcdef1234567890"),
        ('{"x-api-key": "abcdef1234567890"}', "abcdef1234567890"),
        ("X-Api-Key=abcdef1234567890", "abcdef1234567890"),
        ("api_key=abcdef1234567890&x=1", "abcdef1234567890"),
        ("Authorization: Bearer abcdef1234567890", "abcdef1234567890"),
    ],
)
def test_redact_scrubs_credential_shapes(text: str, gone: str) -> None:
    """Credential-shaped strings are scrubbed even when no key was registered."""
    out = redact(text)
    assert gone not in out
    assert REDACTED in out


def test_redact_leaves_ordinary_text_alone() -> None:
    for text in ("risk-free rate 4.5%", "ask-price 101.25", "Bearer of bad news", "sk-short"):
        assert redact(text) == text


def test_loaded_keys_are_registered_and_scrubbed_anywhere(tmp_path: Path) -> None:
    """Loading a config registers each key value: it is scrubbed from any text, even
    with no credential shape around it."""
    key = unshaped()
    body = """\
providers:
  oa:
    kind: openai
    base_url: "http://127.0.0.1:9/v1"
    api_key_env: K1
    models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}
routes:
  r: {prompt: hi, fallback: [oa/m]}
"""
    assert key in redact(f"before {key}")  # not known yet
    load_config(write_config(tmp_path, body), env={"K1": f"  {key}\n"})  # stripped
    assert redact(f"x{key}y") == f"x{REDACTED}y"


@pytest.mark.parametrize("offset", [1, 5, 12, 20, 39])
@pytest.mark.parametrize(
    ("as_json", "limit"),
    [(False, ERROR_TEXT_LIMIT), (True, ERROR_MESSAGE_LIMIT)],
    ids=["text", "json"],
)
def test_a_key_cut_by_the_message_limit_leaves_no_piece(
    tmp_path: Path, as_json: bool, limit: int, offset: int
) -> None:
    """An error body whose key straddles the message length limit (300 chars of text,
    1000 of a JSON message): no piece of the key survives the cut (fixed in
    router/providers/error_body.py: redact before truncating)."""
    key = unshaped()
    body = """\
providers:
  p:
    kind: openai
    base_url: "http://127.0.0.1:9/v1"
    api_key_env: K
    models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}
routes:
  r: {prompt: hi, fallback: [p/m]}
"""
    load_config(write_config(tmp_path, body), env={"K": key})  # registers the key
    filler = "z" * (limit - offset)
    raw = json.dumps({"error": {"message": filler + key}}) if as_json else filler + key
    message = decode_error_body(raw.encode()).message
    for size in (6, 8, 12):
        assert key[:size] not in message and key[offset - 1 : offset - 1 + size] not in message


@pytest.mark.parametrize(
    "text",
    [
        "gsk_abcdefghijklmnopqrstuvwx0123456789",  # Groq
        "hf_abcdefghijklmnopqrstuvwxyz012345",  # Hugging Face
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",  # GitHub
        "AIzaSyA1234567890abcdefghijklmnopqrstu",  # Google
        "Authorization: Basic dXNlcjpwYXNzd29yZA==",  # basic auth (proxies, Azure)
        "'authorization': 'Token abcdef1234567890'",  # a non-Bearer scheme
    ],
)
def test_redact_scrubs_every_key_shape_config_recognises(text: str) -> None:
    secret = text.rsplit(" ", 1)[-1].strip("'")
    assert secret not in redact(f"key {text} rejected")


# -------------------------------------------------------------------------- logging


async def test_a_later_configure_and_capture_logs_still_see_router_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app calls router.logging.configure() at startup, then reconfigures (or its
    tests use capture_logs()): the router's llm_call events must follow."""
    monkeypatch.setattr(router_logging, "configure", _REAL_CONFIGURE)  # caching as shipped
    # A fresh lazy proxy in place of router.router's, so the caching cannot outlive this test.
    monkeypatch.setattr(router_module, "_log", router_logging.get_logger())
    body = (
        "providers: {p: {kind: mock, models: {m: {}}}}\nroutes: {r: {prompt: hi, fallback: [p/m]}}"
    )
    first, second = StringIO(), StringIO()
    async with Router(load_config(write_config(tmp_path, body), env={})) as router:
        router_logging.configure(format="json", stream=first)
        await router.complete("r")
        router_logging.configure(format="json", stream=second)
        await router.complete("r")
        with capture_logs() as events:
            await router.complete("r")
    assert "llm_call" in first.getvalue()
    assert "llm_call" in second.getvalue()
    assert [e["event"] for e in events].count("llm_call") == 1


_REAL_CONFIGURE = router_logging.configure


def test_the_redaction_processor_scrubs_every_field() -> None:
    """RedactSecrets (for apps with their own structlog chain) scrubs strings, nested
    containers and exceptions, and leaves numbers alone."""
    key = shaped()
    event = {
        "event": f"call {key}",
        "nested": {"headers": {"authorization": f"Bearer {key}"}},
        "items": [key, 3],
        "exc": ValueError(f"bad {key}"),
        "latency_ms": 12.5,
    }
    out = router_logging.RedactSecrets()(None, "info", dict(event))
    assert key not in repr(out)
    assert out["latency_ms"] == 12.5
