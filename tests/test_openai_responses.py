"""kind: openai_responses (OpenAI's and xAI's Responses API), end to end and in parts.

End to end: Router.from_yaml + complete()/stream() against a 127.0.0.1 server
replaying the recorded Responses exchanges (tests/fixtures/openai-responses and
xai-responses), with exact usage and cost; server tools (web_search, x_search)
declared in YAML, sent in the request, counted and billed per call, and reserved
in full before sending. Then the request translation (conversation items,
images, tools, structured output), the stream error paths and the load-time
checks of server tools. Expected numbers are read by hand from the bodies.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router import (
    BudgetExceededError,
    Citation,
    Image,
    Message,
    RateLimitError,
    Router,
    ServerError,
    SkipKind,
    StreamInterruptedError,
    Text,
    ToolCall,
    ToolResult,
    Usage,
)
from router.budget import cost_usd
from router.errors import ConfigError, ContextLengthError
from router.output import OutputRequest
from router.plan import load_config
from router.providers import build_adapter
from router.tools import Tool, ToolSet
from tests.routerkit import write_config
from tests.upstream import Upstream, replay, reply, stream

# USD per million tokens; per call for the server tools.
PRICE = (
    "{input_per_mtok: 2, output_per_mtok: 8, cached_input_per_mtok: 0.5,"
    ' per_call: {web_search: "0.01", x_search: "0.025"}}'
)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "xai-canary-" + secrets.token_hex(20)
    monkeypatch.setenv("RESP_KEY", value)
    return value


def yaml_for(url: str, *, route_extra: str = "", model_extra: str = "") -> str:
    return f"""\
providers:
  p:
    kind: openai_responses
    base_url: {url}/v1
    api_key_env: RESP_KEY
    models:
      m:
        price: {PRICE}
{model_extra}
settings: {{retries: 0}}
routes:
  r:
    system: "You are terse."
    prompt: "Say {{{{ word }}}}"
    max_tokens: 8192
{route_extra}
    fallback: [p/m]
"""


def usd(tokens: int, per_mtok: str) -> Decimal:
    return tokens * Decimal(per_mtok) / 1_000_000


# (fixture, text, usage, cost): cost = uncached*2 + cached*0.5 + output*8 per M,
# plus each server-tool call at its per_call price.
CASES = [
    (
        "openai-responses/openai-responses-200-json-basic",
        "4",
        Usage(13, 157, reasoning_tokens=128),
        usd(13, "2") + usd(157, "8"),
    ),
    (
        "openai-responses/openai-responses-200-json-cached-tokens",
        "OK",
        Usage(4565, 5, cached_input_tokens=4352),
        usd(4565 - 4352, "2") + usd(4352, "0.5") + usd(5, "8"),
    ),
    (
        "openai-responses/openai-responses-200-json-web-search-url-citation",
        "The latest stable Ruby (MRI/CRuby) version is **Ruby 4.0.6**. ([ruby-lang.org]"
        "(https://www.ruby-lang.org/en/downloads/?utm_source=openai))",
        Usage(8614, 95, reasoning_tokens=48, server_tool_calls={"web_search": 1}),
        usd(8614, "2") + usd(95, "8") + Decimal("0.01"),
    ),
    (
        "xai-responses/xai-responses-200-json-basic",
        "4",
        Usage(204, 80, cached_input_tokens=128, reasoning_tokens=79),
        usd(204 - 128, "2") + usd(128, "0.5") + usd(80, "8"),
    ),
    (
        "xai-responses/xai-responses-200-json-web-search-citations",
        None,
        Usage(
            5913,
            364,
            cached_input_tokens=2048,
            reasoning_tokens=263,
            server_tool_calls={"web_search": 2},
        ),
        usd(5913 - 2048, "2") + usd(2048, "0.5") + usd(364, "8") + 2 * Decimal("0.01"),
    ),
]


@pytest.mark.parametrize(("fixture", "text", "usage", "cost"), CASES)
async def test_complete_replays_exact_text_usage_and_cost(
    tmp_path: Path, key: str, fixture: str, text: str | None, usage: Usage, cost: Decimal
) -> None:
    async with Upstream() as up:
        up.route("/v1/responses", replay(fixture + ".meta.json"))
        path = write_config(
            tmp_path, yaml_for(up.url, model_extra="        server_tools: [{type: web_search}]")
        )
        async with Router.from_yaml(path) as router:
            done = await router.complete("r", {"word": "hi"}, deadline_s=5)
        sent = up.requests[0]
    if text is not None:
        assert done.text == text
    assert done.usage == usage
    assert done.cost_usd == cost
    assert done.finish_reason == "stop"
    assert sent.headers["authorization"] == f"Bearer {key}"
    body = sent.json()
    assert body["instructions"] == "You are terse."
    assert body["input"] == [{"role": "user", "content": "Say hi"}]
    assert body["store"] is False
    assert body["max_output_tokens"] == 8192
    assert body["tools"] == [{"type": "web_search"}]
    assert body["max_tool_calls"] == 5  # the documented default
    assert "stream" not in body


async def test_citations_reach_the_completion(tmp_path: Path, key: str) -> None:
    fixture = "xai-responses/xai-responses-200-json-web-search-citations.meta.json"
    async with Upstream() as up:
        up.route("/v1/responses", replay(fixture))
        path = write_config(
            tmp_path, yaml_for(up.url, model_extra="        server_tools: [{type: web_search}]")
        )
        async with Router.from_yaml(path) as router:
            done = await router.complete("r", {"word": "hi"}, deadline_s=5)
    assert done.citations == [Citation("https://www.ruby-lang.org/en/downloads/", "1", 69, 115)]
    cited = done.citations[0]
    assert done.text[cited.start : cited.end] == "[[1]](https://www.ruby-lang.org/en/downloads/)"
    assert [c["type"] for c in done.details["server_tool_calls"]] == ["web_search", "web_search"]


STREAMS = [
    (
        "openai-responses/openai-responses-200-sse-basic",
        "1, 2, 3",
        Usage(13, 284, reasoning_tokens=256),
        usd(13, "2") + usd(284, "8"),
    ),
    (
        "xai-responses/xai-responses-200-sse-reasoning-summary",
        "1, 2, 3.",
        Usage(199, 160, cached_input_tokens=128, reasoning_tokens=152),
        usd(199 - 128, "2") + usd(128, "0.5") + usd(160, "8"),
    ),
]


@pytest.mark.parametrize(("fixture", "text", "usage", "cost"), STREAMS)
async def test_stream_replays_exact_text_usage_and_cost(
    tmp_path: Path, key: str, fixture: str, text: str, usage: Usage, cost: Decimal
) -> None:
    async with Upstream() as up:
        up.route("/v1/responses", replay(fixture + ".meta.json", chunk_size=97))
        path = write_config(tmp_path, yaml_for(up.url))
        async with Router.from_yaml(path) as router:
            async with router.stream("r", {"word": "hi"}, deadline_s=5) as s:
                got = "".join([d async for d in s])
            done = s.completion
        body = up.requests[0].json()
    assert got == text
    assert done is not None
    assert done.text == text
    assert done.usage == usage
    assert done.cost_usd == cost
    assert done.finish_reason == "stop"
    assert body["stream"] is True
    assert "tools" not in body


async def test_stream_of_a_tool_call_gives_the_call(tmp_path: Path, key: str) -> None:
    fixture = "openai-responses/openai-responses-200-sse-function-call.meta.json"
    async with Upstream() as up:
        up.route("/v1/responses", replay(fixture))
        path = write_config(
            tmp_path,
            yaml_for(up.url, route_extra="    tools: [{name: weather}]"),
        )
        async with Router.from_yaml(path) as router:
            async with router.stream("r", {"word": "hi"}, deadline_s=5) as s:
                assert [d async for d in s] == []
            done = s.completion
        body = up.requests[0].json()
    assert done is not None
    assert done.tool_calls == [
        ToolCall(
            "call_E9m0fralKLjUmND1MuTXjnqm",
            "weather",
            {"latitude": "52.5200", "longitude": "13.4050"},
        )
    ]
    assert done.usage == Usage(87, 339, reasoning_tokens=256)
    assert body["tools"] == [
        {"type": "function", "name": "weather", "description": "", "parameters": {"type": "object"}}
    ]
    assert body["tool_choice"] == "auto"


# -------------------------------------------------------------- server tools and money


XAI_NEWS = textwrap.indent(
    """\
server_tools:
  - type: x_search
    allowed_x_handles: ["@Reuters", "business"]
    from_date: 2026-11-01
    to_date: "2026-11-30"
    enable_image_understanding: false
  - type: web_search
    excluded_domains: [example.com]
max_tool_calls: 3
""",
    "    ",
)


async def test_route_server_tools_are_sent_counted_and_billed(tmp_path: Path, key: str) -> None:
    body = json.loads(
        (
            Path(__file__).parent
            / "fixtures/xai-responses/xai-responses-200-json-web-search-citations.body.json"
        ).read_bytes()
    )
    # The recorded answer, as if its usage had also counted one X search.
    body["usage"]["server_side_tool_usage_details"]["x_search_calls"] = 1
    async with Upstream() as up:
        up.route("/v1/responses", reply(200, json.dumps(body).encode()))
        path = write_config(tmp_path, yaml_for(up.url, route_extra=XAI_NEWS))
        async with Router.from_yaml(path) as router:
            done = await router.complete("r", {"word": "hi"}, deadline_s=5)
        sent = up.requests[0].json()
    assert sent["tools"] == [
        {
            "type": "x_search",
            "allowed_x_handles": ["Reuters", "business"],
            "enable_image_understanding": False,
            "from_date": "2026-11-01",
            "to_date": "2026-11-30",
        },
        {"type": "web_search", "filters": {"excluded_domains": ["example.com"]}},
    ]
    assert sent["max_tool_calls"] == 3
    assert done.usage.server_tool_calls == {"web_search": 2, "x_search": 1}
    tokens = usd(5913 - 2048, "2") + usd(2048, "0.5") + usd(364, "8")
    assert done.cost_usd == tokens + 2 * Decimal("0.01") + Decimal("0.025")


@pytest.mark.parametrize(("cap", "sent"), [("0.074", False), ("0.076", True)])
async def test_reservation_holds_every_allowed_server_tool_call(
    tmp_path: Path, key: str, cap: str, sent: bool
) -> None:
    """Free tokens, x_search at $0.025 a call, max_tool_calls 3: the worst case is
    $0.075, so a route capped below it never sends and one above it does."""
    doc = f"""\
providers:
  p:
    kind: openai_responses
    base_url: {{url}}/v1
    api_key_env: RESP_KEY
    models:
      m:
        price: {{input_per_mtok: 0, output_per_mtok: 0, per_call: {{x_search: "0.025"}}}}
        server_tools: [{{type: x_search}}]
        max_tool_calls: 3
settings: {{retries: 0}}
routes:
  r:
    prompt: "hi"
    max_cost_usd: {cap}
    fallback: [p/m]
"""
    fixture = "xai-responses/xai-responses-200-json-basic.meta.json"
    async with Upstream() as up:
        up.route("/v1/responses", replay(fixture))
        path = write_config(tmp_path, doc.replace("{url}", up.url))
        async with Router.from_yaml(path) as router:
            if sent:
                done = await router.complete("r", deadline_s=5)
                assert done.text == "4"
            else:
                with pytest.raises(BudgetExceededError, match=r"needs \$0\.075000") as info:
                    await router.complete("r", deadline_s=5)
                assert info.value.attempts[0].skip is SkipKind.MAX_COST
        assert len(up.requests) == (1 if sent else 0)


async def test_health_lists_models(tmp_path: Path, key: str) -> None:
    async with Upstream() as up:
        up.route("/v1/models", reply(200, b'{"object":"list","data":[{"id":"m"}]}'))
        path = write_config(tmp_path, yaml_for(up.url))
        async with Router.from_yaml(path) as router:
            [report] = await router.health()
        assert up.requests[0].method == "GET"
        assert up.requests[0].path == "/v1/models"
    assert report.ok
    assert report.missing_models == []


def test_plan_shows_the_step_server_tools(tmp_path: Path) -> None:
    plan = load_config(
        write_config(tmp_path, yaml_for("https://api.x.ai", route_extra=XAI_NEWS)),
        env={"RESP_KEY": "k"},
    )
    [step] = plan.route("r").steps
    assert step.server_tools == ("x_search", "web_search")
    assert step.max_tool_calls == 3
    assert step.tool_calls_reserve_usd == 3 * Decimal("0.025")


# ------------------------------------------------------------- load-time checks


def problems(tmp_path: Path, doc: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, doc), env={"RESP_KEY": "k", "K": "k"})
    return [str(p) for p in info.value.problems]


def test_server_tools_on_another_kind_are_refused_with_their_place(tmp_path: Path) -> None:
    doc = """\
providers:
  chat:
    kind: openai
    api_key_env: K
    models:
      m:
        price: {input_per_mtok: 1, output_per_mtok: 1}
        server_tools: [{type: web_search}]
routes:
  r: {prompt: hi, fallback: [chat/m]}
"""
    [line] = problems(tmp_path, doc)
    assert ":9:" in line
    assert "providers.chat.models.m.server_tools" in line
    assert "only for kind openai_responses" in line


def test_a_server_tool_without_a_per_call_price_is_refused(tmp_path: Path) -> None:
    doc = """\
providers:
  grok:
    kind: openai_responses
    base_url: https://api.x.ai/v1
    api_key_env: K
    models:
      m: {price: {input_per_mtok: 1, output_per_mtok: 1}}
routes:
  r:
    prompt: hi
    server_tools: [{type: x_search}]
    fallback: [grok/m]
"""
    [line] = problems(tmp_path, doc)
    assert "providers.grok.models.m.price" in line
    assert "price.per_call.x_search is required" in line
    assert "by route 'r'" in line


def test_route_server_tools_with_a_chat_step_are_refused(tmp_path: Path) -> None:
    doc = """\
providers:
  grok:
    kind: openai_responses
    api_key_env: K
    models:
      m: {price: {input_per_mtok: 1, output_per_mtok: 1, per_call: {web_search: "0.01"}}}
  chat:
    kind: openai
    api_key_env: K
    models:
      m: {price: {input_per_mtok: 1, output_per_mtok: 1}}
routes:
  r:
    prompt: hi
    server_tools: [{type: web_search}]
    fallback: [grok/m, chat/m]
"""
    [line] = problems(tmp_path, doc)
    assert "routes.r.fallback[1]" in line
    assert "step 'chat/m' is kind openai, which has no server tools" in line


@pytest.mark.parametrize(
    ("tool", "says"),
    [
        (
            "{type: x_search, allowed_x_handles: [a], excluded_x_handles: [b]}",
            "set allowed_x_handles or excluded_x_handles, not both",
        ),
        (
            "{type: x_search, from_date: 2026-12-02, to_date: 2026-12-01}",
            "from_date 2026-12-02 is after to_date 2026-12-01",
        ),
        ("{type: x_search, allowed_x_handles: ['not a handle']}", "is not an X handle"),
        ("{type: web_search, allowed_domains: ['https://x.com/a']}", "is not a domain name"),
        ("{type: web_search, search_context_size: huge}", "search_context_size"),
        ("{type: code_interpreter}", "server_tools[0]: Input tag 'code_interpreter'"),
    ],
)
def test_bad_server_tool_options_are_refused(tmp_path: Path, tool: str, says: str) -> None:
    doc = f"""\
providers:
  grok:
    kind: openai_responses
    api_key_env: K
    models:
      m:
        price: {{input_per_mtok: 1, output_per_mtok: 1, per_call: {{x_search: "0.01"}}}}
        server_tools: [{tool}]
routes:
  r: {{prompt: hi, fallback: [grok/m]}}
"""
    text = "\n".join(problems(tmp_path, doc))
    assert says in text
    assert "providers.grok.models.m.server_tools" in text


# ----------------------------------------------------------- request translation

ADAPTER = build_adapter("openai_responses", "p", "k")


def test_a_conversation_becomes_input_items_with_ids_round_tripping() -> None:
    png = b"\x89PNG\r\n\x1a\n"
    messages = [
        Message("system", "Be brief."),
        Message("user", [Text("What is in it?"), Image(data=png, mime="image/png")]),
        Message(
            "assistant",
            [Text("Let me check."), ToolCall("call_1", "weather", {"city": "Berlin"})],
        ),
        Message("tool", [ToolResult("call_1", "15C"), ToolResult("call_2", [Text("ok")])]),
        Message("user", "Thanks"),
    ]
    req = ADAPTER.chat_request("gpt-5-nano", messages, {"max_tokens": 50, "temperature": 0.2})
    assert req.path == "/responses"
    body = req.json
    assert body is not None
    assert body["instructions"] == "Be brief."
    assert body["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in it?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            ],
        },
        {"role": "assistant", "content": "Let me check."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "weather",
            "arguments": '{"city":"Berlin"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "15C"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "ok"}],
        },
        {"role": "user", "content": "Thanks"},
    ]
    assert body["max_output_tokens"] == 50
    assert "temperature" not in body  # gpt-5 refuses one
    assert body["store"] is False
    grok = ADAPTER.chat_request("grok-4.3", messages, {"temperature": 0.2, "store": True})
    assert grok.json is not None
    assert grok.json["temperature"] == 0.2
    assert grok.json["store"] is True  # a param may turn storing on


def test_reasoning_params_pass_through_and_structured_output_is_text_format() -> None:
    from router.output import output_spec

    spec = output_spec({"type": "object", "properties": {"a": {"type": "integer"}}})
    req = ADAPTER.chat_request(
        "o4-mini",
        [Message("user", "hi")],
        {"reasoning": {"effort": "low", "summary": "auto"}, "text": {"verbosity": "low"}},
        output=OutputRequest(spec, "json_schema"),
    )
    body = req.json
    assert body is not None
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert body["text"] == {
        "verbosity": "low",
        "format": {
            "type": "json_schema",
            "name": spec.name,
            "schema": dict(spec.schema),
            "strict": spec.strict,
        },
    }


def test_tool_choice_of_one_tool_is_the_flat_form() -> None:
    tools = ToolSet((Tool("lookup", "find it", {"type": "object"}),), "lookup")
    assert ADAPTER.tool_fields(tools) == {
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "description": "find it",
                "parameters": {"type": "object"},
            }
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
    }


# --------------------------------------------------------------- replies and streams


def _response(**fields: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "content": [{"type": "output_text", "text": "cut", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
    body.update(fields)
    return json.dumps(body).encode()


def test_incomplete_at_max_output_tokens_is_finish_length() -> None:
    reply_ = ADAPTER.parse_reply(
        "m",
        _response(status="incomplete", incomplete_details={"reason": "max_output_tokens"}),
    )
    assert reply_.text == "cut"
    assert reply_.finish_reason == "length"
    assert reply_.details["finish_reason"] == "incomplete: max_output_tokens"


def test_a_failed_response_raises_its_error_type() -> None:
    body = _response(
        status="failed",
        error={"code": "rate_limit_exceeded", "message": "slow down"},
    )
    with pytest.raises(RateLimitError, match="slow down"):
        ADAPTER.parse_reply("m", body)


def test_stream_error_events_raise_typed_errors() -> None:
    failed = {
        "type": "response.failed",
        "response": json.loads(
            _response(status="failed", error={"code": "server_error", "message": "boom"})
        ),
    }
    with pytest.raises(ServerError, match="boom"):
        ADAPTER.parse_stream_event("m", "response.failed", json.dumps(failed))
    error = {
        "type": "error",
        "code": "context_length_exceeded",
        "message": "Your input exceeds the context window of this model.",
        "param": "input",
    }
    with pytest.raises(ContextLengthError, match="context window"):
        ADAPTER.parse_stream_event("m", "error", json.dumps(error))
    nested = {"type": "error", "error": {"type": "rate_limit_exceeded", "message": "later"}}
    with pytest.raises(RateLimitError, match="later"):
        ADAPTER.parse_stream_event("m", "error", json.dumps(nested))


def test_stream_incomplete_ends_the_stream_with_length() -> None:
    event = {
        "type": "response.incomplete",
        "response": json.loads(
            _response(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
        ),
    }
    ev = ADAPTER.parse_stream_event("m", "response.incomplete", json.dumps(event))
    assert ev is not None
    assert ev.done
    assert ev.finish_reason == "length"
    assert ev.usage == Usage(10, 20)
    assert ev.text == ""  # the text came as deltas already


def test_no_key_in_the_adapter_repr() -> None:
    adapter = build_adapter("openai_responses", "grok", "xai-secret-0123456789")
    assert "xai-secret" not in repr(adapter)
    assert adapter.auth_headers()["Authorization"] == "Bearer xai-secret-0123456789"


def test_dry_run_shows_server_tools_and_their_reservation(tmp_path: Path) -> None:
    from tests.test_cli import cli

    path = write_config(tmp_path, yaml_for("https://api.x.ai", route_extra=XAI_NEWS))
    env = {"RESP_KEY": "k", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = cli("render", "r", "--var", "word=hi", "--config", str(path), cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    assert "server tools: x_search, web_search (max_tool_calls 3, reserved $0.075)" in r.out, r.out
    j = cli(
        "render", "r", "--json", "--var", "word=hi", "--config", str(path), cwd=tmp_path, env=env
    )
    (step,) = j.json()["chain"]
    assert step["server_tools"] == ["x_search", "web_search"]
    assert step["max_tool_calls"] == 3
    assert step["tool_calls_reserve_usd"] == "0.075"


def test_a_call_may_lower_max_tool_calls_but_never_raise_it() -> None:
    server = {"server_tools": {"tools": [{"type": "x_search"}], "max_tool_calls": 3}}
    for asked, sent in ((None, 3), (2, 2), (50, 3), (0, 3)):
        params = {**server, **({} if asked is None else {"max_tool_calls": asked})}
        body = ADAPTER.chat_request("grok-4.3", [Message("user", "hi")], params).json
        assert body is not None
        assert body["tools"] == [{"type": "x_search"}]
        assert body["max_tool_calls"] == sent, asked
        assert "server_tools" not in body


# A stream built from the recorded xAI web-search reply (no streamed recording of a
# search exists): the answer as text deltas, each search as a finished item, then
# the recorded response as response.completed.
_SEARCH = json.loads(
    (
        Path(__file__).parent
        / "fixtures/xai-responses/xai-responses-200-json-web-search-citations.body.json"
    ).read_bytes()
)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def _search_stream(*, complete: bool) -> list[bytes]:
    text = _SEARCH["output"][-1]["content"][0]["text"]
    chunks = [_sse("response.created", {"response": {**_SEARCH, "output": [], "usage": None}})]
    chunks += [
        _sse("response.output_item.done", {"output_index": i, "item": item})
        for i, item in enumerate(_SEARCH["output"])
        if item["type"] == "web_search_call"
    ]
    chunks += [
        _sse("response.output_text.delta", {"output_index": 6, "delta": text[i : i + 40]})
        for i in range(0, len(text), 40)
    ]
    if complete:
        chunks.append(_sse("response.completed", {"response": _SEARCH}))
    return chunks


def _search_yaml(url: str) -> str:
    return yaml_for(url, model_extra="        server_tools: [{type: web_search}]") + (
        "budgets: {everything: {limit_usd: 10}}\n"
    )


async def test_stream_gives_citations_and_bills_the_searches(tmp_path: Path, key: str) -> None:
    async with Upstream() as up:
        up.route("/v1/responses", stream(_search_stream(complete=True)))
        path = write_config(tmp_path, _search_yaml(up.url))
        async with Router.from_yaml(path) as router:
            async with router.stream("r", {"word": "hi"}, deadline_s=5) as s:
                got = "".join([d async for d in s])
            done = s.completion
            [everything] = router.spend()
    assert done is not None
    assert got == done.text == _SEARCH["output"][-1]["content"][0]["text"]
    assert done.citations == [Citation("https://www.ruby-lang.org/en/downloads/", "1", 69, 115)]
    assert done.usage.server_tool_calls == {"web_search": 2}
    assert [c["type"] for c in done.details["server_tool_calls"]] == ["web_search"] * 2
    tokens = usd(5913 - 2048, "2") + usd(2048, "0.5") + usd(364, "8")
    assert done.cost_usd == tokens + 2 * Decimal("0.01") == everything.spent_usd


async def _read_all(router: Router) -> str:
    async with router.stream("r", {"word": "hi"}, deadline_s=5) as s:
        return "".join([d async for d in s])


async def test_a_stream_cut_after_searches_still_bills_them(tmp_path: Path, key: str) -> None:
    """The connection drops before response.completed: the usage is the router's
    estimate, and the two searches the provider finished are billed on top."""
    async with Upstream() as up:
        up.route("/v1/responses", stream(_search_stream(complete=False), end="close"))
        path = write_config(tmp_path, _search_yaml(up.url))
        async with Router.from_yaml(path) as router:
            with pytest.raises(StreamInterruptedError) as info:
                await _read_all(router)
            [everything] = router.spend()
    usage = info.value.usage
    assert usage is not None
    assert usage.estimated
    assert usage.server_tool_calls == {"web_search": 2}
    price = load_config(path, env={"RESP_KEY": "k"}).route("r").steps[0].price
    assert everything.spent_usd == cost_usd(usage, price) > 2 * Decimal("0.01")


async def test_a_failed_stream_before_any_text_falls_back(tmp_path: Path, key: str) -> None:
    """response.failed (a server error) before the first text delta: the next step
    answers, and the failed attempt costs nothing."""
    failed = json.loads(_response(status="failed", error={"code": "server_error", "message": "x"}))
    doc = f"""\
providers:
  a:
    kind: openai_responses
    base_url: {{url}}/v1
    api_key_env: RESP_KEY
    models: {{m: {{price: {PRICE}}}}}
  b:
    kind: openai_responses
    base_url: {{url}}/v1
    api_key_env: RESP_KEY
    models: {{m: {{price: {PRICE}}}}}
settings: {{retries: 0}}
routes:
  r: {{prompt: hi, fallback: [a/m, b/m]}}
"""
    async with Upstream() as up:
        up.queue(stream([_sse("response.failed", {"response": failed})]))
        up.queue(replay("openai-responses/openai-responses-200-sse-basic.meta.json"))
        path = write_config(tmp_path, doc.replace("{url}", up.url))
        async with Router.from_yaml(path) as router:
            async with router.stream("r", deadline_s=5) as s:
                got = "".join([d async for d in s])
            done = s.completion
    assert got == "1, 2, 3"
    assert done is not None
    assert done.provider == "b"
    first = done.attempts[0]
    assert (first.provider, first.outcome, first.cost_usd) == ("a", "error", 0)
    assert isinstance(first.error, ServerError)


async def test_structured_output_end_to_end(tmp_path: Path, key: str) -> None:
    schema = (
        "    output:\n"
        "      type: object\n"
        "      properties: {name: {type: string}, age: {type: integer}}\n"
        "      required: [name, age]\n"
        "      additionalProperties: false\n"
    )
    fixture = "openai-responses/openai-responses-200-json-json-schema.meta.json"
    async with Upstream() as up:
        up.route("/v1/responses", replay(fixture))
        path = write_config(tmp_path, yaml_for(up.url, route_extra=schema))
        async with Router.from_yaml(path) as router:
            done = await router.complete("r", {"word": "hi"}, deadline_s=5)
        body = up.requests[0].json()
    assert done.output == {"name": "John", "age": 30}
    fmt = body["text"]["format"]
    assert (fmt["type"], fmt["strict"]) == ("json_schema", True)
    assert fmt["schema"]["required"] == ["name", "age"]
    assert done.usage == Usage(45, 752, reasoning_tokens=704)


def test_structured_output_as_json_object_or_a_forced_tool() -> None:
    from router.output import TOOL_NAME, output_spec

    spec = output_spec({"type": "object"})
    as_object = ADAPTER.chat_request(
        "m", [Message("user", "hi")], {}, output=OutputRequest(spec, "json_object")
    ).json
    assert as_object is not None
    assert as_object["text"] == {"format": {"type": "json_object"}}
    assert "JSON" in as_object["instructions"]  # the schema instruction, as system text
    as_tool = ADAPTER.chat_request(
        "m", [Message("user", "hi")], {}, output=OutputRequest(spec, "tool")
    ).json
    assert as_tool is not None
    assert as_tool["tool_choice"] == {"type": "function", "name": TOOL_NAME}
    assert as_tool["tools"][-1]["name"] == TOOL_NAME
    assert "text" not in as_tool


def test_unknown_shapes_in_the_tool_counts_cost_no_usage() -> None:
    """A count field of a new shape is skipped; the tokens are still the provider's."""
    usage = {
        "input_tokens": 10,
        "output_tokens": 20,
        "server_side_tool_usage_details": {
            "x_search_calls": 3,
            "web_search_calls": "2",  # not a count: not read
            "future_calls": {"n": 1},
        },
    }
    reply_ = ADAPTER.parse_reply("m", _response(usage=usage, tool_usage={"web_search": None}))
    assert reply_.usage == Usage(10, 20, server_tool_calls={"x_search": 3})
