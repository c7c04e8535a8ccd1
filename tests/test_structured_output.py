"""Structured output (a route's ``output:``, a call's ``output=``), empty and cut-off answers.

Recorded answers decode to their recorded JSON; each adapter asks in each mode;
a loopback chain retries and falls back on invalid output within the deadline,
billing every refused answer; an empty reasoning answer falls back and is billed;
``accept_truncated``; a stream whose whole text fails the schema.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from router import (
    AllProvidersFailedError,
    ConfigError,
    EmptyResponseError,
    InvalidOutputError,
    Message,
    RequestError,
    Router,
    StreamInterruptedError,
    ToolResult,
)
from router.output import OutputRequest, example_instance, output_spec, strict_compatible
from router.policy import rule_for
from router.providers.anthropic import AnthropicAdapter
from router.providers.ollama import OllamaAdapter
from router.providers.openai import OpenAIAdapter
from router.types import Reply, ToolCall, Usage
from tests.routerkit import make_config, write_config
from tests.upstream import Upstream, replay, reply

Factory = Callable[..., Awaitable[Upstream]]
CHAT = "/v1/chat/completions"
PRICE = "{input_per_mtok: 1, output_per_mtok: 2}"

SIGNAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "signal": {"type": "string", "enum": ["BUY", "SELL", "HOLD"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["signal", "confidence", "reasons"],
    "additionalProperties": False,
}


class Person(BaseModel):
    name: str
    age: int


class Signal(BaseModel):
    signal: Literal["BUY", "SELL", "HOLD"]
    confidence: int


def chat_body(content: str | None, finish: str = "stop", *, reasoning: int = 0) -> dict[str, Any]:
    """An OpenAI chat.completion body with this content and usage 20 in / 40 out."""
    usage: dict[str, Any] = {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }


def chain_yaml(urls: list[str], route_extra: str = "", settings: str = "") -> str:
    providers = "".join(
        f"  s{i}:\n    kind: openai\n    base_url: {url}/v1\n"
        f"    models:\n      m: {{price: {PRICE}}}\n"
        for i, url in enumerate(urls, 1)
    )
    steps = ", ".join(f"s{i}/m" for i in range(1, len(urls) + 1))
    return (
        f"providers:\n{providers}"
        f"settings: {{backoff: {{initial_s: 0.01, max_s: 0.02}}{settings}}}\n"
        "budgets:\n  all: {limit_usd: 100}\n"
        "routes:\n"
        f"  r:\n    prompt: 'Rate {{{{ ticker }}}}'\n    deadline_s: 5\n{route_extra}"
        f"    fallback: [{steps}]\n"
    )


def signal_route() -> str:
    return f"    output: {json.dumps(SIGNAL_SCHEMA)}\n"


# ---------------------------------------------------------------- recorded answers


async def test_recorded_openai_json_schema_answer_decodes_to_the_recorded_output(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.route(CHAT, replay("openai/openai-chat-200-json-json-schema.meta.json"))
    path = write_config(tmp_path, chain_yaml([upstream.url]))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"ticker": "X"}, output=Person)
        as_dict = await router.complete("r", {"ticker": "X"}, output=Person.model_json_schema())
    assert done.output == Person(name="John", age=30)
    assert as_dict.output == {"name": "John", "age": 30}
    sent = json.loads(upstream.requests[0].body)
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == Person.model_json_schema()


async def test_recorded_anthropic_structured_output_decodes_to_the_recorded_output(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.route(
        "/v1/messages", replay("anthropic/anthropic-messages-200-json-structured-output.meta.json")
    )
    body = (
        "providers:\n  a:\n    kind: anthropic\n    api_key_env: ANTHROPIC_API_KEY\n"
        f"    base_url: {upstream.url}\n"
        f"    models:\n      claude: {{price: {PRICE}, structured_output: json_schema}}\n"
        "routes:\n  r:\n    prompt: 'Who?'\n    fallback: [a/claude]\n"
    )
    plan = make_config(tmp_path, body, env={"ANTHROPIC_API_KEY": "sk-ant-test-0000000000"})
    async with Router(plan) as router:
        done = await router.complete("r", output=Person)
    assert done.output == Person(name="John", age=30)
    sent = json.loads(upstream.requests[0].body)
    assert sent["output_config"] == {
        "format": {"type": "json_schema", "schema": Person.model_json_schema()}
    }


# ---------------------------------------------------------------- request bodies per mode


def _request(mode: str, schema: Any = SIGNAL_SCHEMA) -> OutputRequest:
    return OutputRequest(output_spec(schema, "signal"), mode)  # type: ignore[arg-type]


MESSAGES = [Message("system", "Be brief."), Message("user", "Rate ACME")]


def test_openai_json_schema_request_is_strict_when_the_schema_allows_it() -> None:
    body = OpenAIAdapter("o", "k").chat_request("gpt", MESSAGES, {}, output=_request("json_schema"))
    assert body.json is not None
    assert body.json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "signal", "schema": SIGNAL_SCHEMA, "strict": True},
    }
    assert body.json["messages"][0] == {"role": "system", "content": "Be brief."}


def test_openai_json_schema_request_is_not_strict_for_a_schema_strict_mode_refuses() -> None:
    loose = {**SIGNAL_SCHEMA, "required": ["signal"]}  # not every property required
    body = OpenAIAdapter("o", "k").chat_request(
        "gpt", MESSAGES, {}, output=_request("json_schema", loose)
    )
    assert body.json is not None
    assert body.json["response_format"]["json_schema"]["strict"] is False
    assert not strict_compatible({"type": "object", "properties": {"a": {}}, "required": ["a"]})


def test_openai_json_object_request_puts_the_schema_in_the_system_message() -> None:
    body = OpenAIAdapter("o", "k").chat_request("gpt", MESSAGES, {}, output=_request("json_object"))
    assert body.json is not None
    assert body.json["response_format"] == {"type": "json_object"}
    system = body.json["messages"][0]["content"]
    assert system.startswith("Be brief.\n\nAnswer with a single JSON value")
    assert json.dumps(SIGNAL_SCHEMA, separators=(",", ":")) in system
    # A conversation without a system message gets one.
    body = OpenAIAdapter("o", "k").chat_request(
        "gpt", MESSAGES[1:], {}, output=_request("json_object")
    )
    assert body.json is not None
    assert [m["role"] for m in body.json["messages"]] == ["system", "user"]


def test_openai_tool_and_none_requests() -> None:
    tool = OpenAIAdapter("o", "k").chat_request("gpt", MESSAGES, {}, output=_request("tool"))
    assert tool.json is not None
    assert tool.json["tools"][0]["function"]["name"] == "respond"
    assert tool.json["tools"][0]["function"]["parameters"] == SIGNAL_SCHEMA
    assert tool.json["tool_choice"] == {"type": "function", "function": {"name": "respond"}}
    none = OpenAIAdapter("o", "k").chat_request("gpt", MESSAGES, {}, output=_request("none"))
    assert none.json is not None
    assert "response_format" not in none.json and "tools" not in none.json
    assert "JSON Schema" in none.json["messages"][0]["content"]


def test_anthropic_requests_per_mode() -> None:
    adapter = AnthropicAdapter("a", "k")
    tool = adapter.chat_request("c", MESSAGES, {}, output=_request("tool"))
    assert tool.json is not None
    assert tool.json["tools"] == [
        {
            "name": "respond",
            "description": "Give the answer. Its input is the whole answer.",
            "input_schema": SIGNAL_SCHEMA,
        }
    ]
    assert tool.json["tool_choice"] == {"type": "tool", "name": "respond"}
    assert tool.json["system"] == "Be brief."
    schema = adapter.chat_request("c", MESSAGES, {}, output=_request("json_schema"))
    assert schema.json is not None
    assert schema.json["output_config"] == {
        "format": {"type": "json_schema", "schema": SIGNAL_SCHEMA}
    }
    obj = adapter.chat_request("c", MESSAGES, {}, output=_request("json_object"))
    assert obj.json is not None
    assert "tools" not in obj.json and "output_config" not in obj.json
    assert "JSON Schema" in obj.json["system"]


def test_ollama_requests_per_mode() -> None:
    adapter = OllamaAdapter("l", None)
    schema = adapter.chat_request("q", MESSAGES, {}, output=_request("json_schema"))
    assert schema.json is not None
    assert schema.json["format"] == SIGNAL_SCHEMA
    assert schema.json["messages"][0]["content"] == "Be brief."
    for mode in ("json_object", "tool"):
        obj = adapter.chat_request("q", MESSAGES, {}, output=_request(mode))
        assert obj.json is not None
        assert obj.json["format"] == "json"
        assert "JSON Schema" in obj.json["messages"][0]["content"]


def test_an_anthropic_tool_answer_is_the_forced_call_arguments() -> None:
    from router.output import checked_answer

    answer = Reply(
        "",
        "tool_calls",
        Usage(1, 1),
        tool_calls=[ToolCall("t1", "respond", {"signal": "BUY", "confidence": 7})],
    )
    out = checked_answer(
        answer,
        output_spec(Signal.model_json_schema()),
        "tool",
        accept_truncated=False,
        provider="a",
        model="c",
    )
    assert out == {"signal": "BUY", "confidence": 7}
    assert answer.tool_calls == []  # the forced call is the answer, not a tool request
    assert json.loads(answer.text) == out


# ---------------------------------------------------------------- the chain


async def test_invalid_json_then_schema_break_then_fallback_to_a_valid_answer(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    s1, s2 = await upstream_factory(), await upstream_factory()
    s1.queue(
        reply(200, chat_body('{"signal": "BUY", "confid')),  # not JSON
        reply(200, chat_body('{"signal": "MAYBE", "confidence": 50, "reasons": []}')),
        path=CHAT,
    )
    valid = {"signal": "SELL", "confidence": 80, "reasons": ["falling volume"]}
    s2.route(CHAT, reply(200, chat_body(json.dumps(valid))))
    path = write_config(tmp_path, chain_yaml([s1.url, s2.url], signal_route()))
    async with Router.from_yaml(path) as router:
        t0 = time.monotonic()
        done = await router.complete("r", {"ticker": "ACME"})
        elapsed = time.monotonic() - t0
        (budget,) = router.spend()
        stats = router.stats()
    assert done.output == valid
    assert [a.outcome for a in done.attempts] == ["error", "error", "ok"]
    kinds = [a.error.kind for a in done.attempts[:2] if isinstance(a.error, InvalidOutputError)]
    assert kinds == ["invalid_output", "invalid_output"]
    first, second = (a.error for a in done.attempts[:2])
    assert isinstance(first, InvalidOutputError) and isinstance(second, InvalidOutputError)
    assert first.problems[0].startswith("not JSON")
    assert first.raw == '{"signal": "BUY", "confid'
    assert any("MAYBE" in p for p in second.problems)
    assert elapsed < 5.0 and done.latency_s < 5.0
    # Every refused answer was billed: 20 in x $1 + 40 out x $2 per million.
    each = Decimal("0.0001")
    assert [a.cost_usd for a in done.attempts] == [each, each, each]
    assert budget.spent_usd == 3 * each and budget.reserved_usd == 0
    assert stats["routes"]["r"]["errors"] == {}  # the call itself succeeded
    assert stats["providers"]["s1"]["errors"] == {"invalid_output": 2}


async def test_invalid_output_is_not_retried_past_its_policy_and_stops_without_fallback(
    tmp_path: Path, upstream: Upstream
) -> None:
    """fallback_on without invalid_output: the step gives up and the call fails."""
    upstream.route(CHAT, reply(200, chat_body("not json")))
    extra = signal_route() + "    retries: 3\n    fallback_on: [server]\n"
    path = write_config(tmp_path, chain_yaml([upstream.url], extra))
    async with Router.from_yaml(path) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"ticker": "ACME"})
    assert rule_for("invalid_output").max_retries == 1
    assert len(upstream.requests) == 2  # once more on the same step, whatever retries says
    assert all(isinstance(a.error, InvalidOutputError) for a in info.value.attempts)


async def test_an_empty_reasoning_answer_falls_back_and_is_billed(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    s1, s2 = await upstream_factory(), await upstream_factory()
    s1.route(CHAT, reply(200, chat_body("", "length", reasoning=40)))
    s2.route(CHAT, reply(200, chat_body("HOLD")))
    path = write_config(tmp_path, chain_yaml([s1.url, s2.url]))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"ticker": "ACME"})
        (budget,) = router.spend()
    assert done.text == "HOLD"
    empty = done.attempts[0]
    assert isinstance(empty.error, EmptyResponseError)
    assert "max_tokens was reached" in empty.error.detail
    assert len(s1.requests) == 1  # not retried
    assert empty.usage is not None and empty.usage.reasoning_tokens == 40
    assert empty.cost_usd == Decimal("0.0001")
    assert budget.spent_usd == Decimal("0.0002")  # settled, not released


async def test_a_cut_off_structured_answer_is_invalid_output(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    s1, s2 = await upstream_factory(), await upstream_factory()
    # Parses and matches, but was cut off at max_tokens: not trusted.
    whole = '{"signal": "BUY", "confidence": 5, "reasons": []}'
    s1.route(CHAT, reply(200, chat_body(whole, "length")))
    s2.route(CHAT, reply(200, chat_body(whole)))
    extra = signal_route() + "    retries: 0\n"
    path = write_config(tmp_path, chain_yaml([s1.url, s2.url], extra))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {"ticker": "ACME"})
    err = done.attempts[0].error
    assert isinstance(err, InvalidOutputError) and "cut off" in err.detail
    assert done.provider == "s2" and done.output["signal"] == "BUY"


async def test_accept_truncated_returns_empty_and_cut_off_answers(
    tmp_path: Path, upstream: Upstream
) -> None:
    upstream.queue(
        reply(200, chat_body("", "length")),
        reply(200, chat_body('{"signal": "BUY", "confidence": 5, "reasons": []}', "length")),
        reply(200, chat_body('{"signal": "BUY", "conf', "length")),
        path=CHAT,
    )
    extra = "    accept_truncated: true\n"
    path = write_config(tmp_path, chain_yaml([upstream.url], extra))
    async with Router.from_yaml(path) as router:
        empty = await router.complete("r", {"ticker": "ACME"})
        whole = await router.complete("r", {"ticker": "ACME"}, output=SIGNAL_SCHEMA)
        cut = await router.complete("r", {"ticker": "ACME"}, output=SIGNAL_SCHEMA)
    assert empty.text == "" and empty.finish_reason == "length" and empty.output is None
    assert whole.output == {"signal": "BUY", "confidence": 5, "reasons": []}
    assert cut.text == '{"signal": "BUY", "conf' and cut.output is None
    assert [len(c.attempts) for c in (empty, whole, cut)] == [1, 1, 1]


# ---------------------------------------------------------------- mock and streams


def mock_yaml(output: Any = None, mode: str | None = None) -> str:
    mock = f"    mock: {{output: {json.dumps(output)}}}\n" if output is not None else ""
    model = f"{{structured_output: {mode}}}" if mode else "{}"
    return (
        "providers:\n  m:\n    kind: mock\n"
        f"{mock}    models:\n      mock-1: {model}\n"
        "routes:\n  r:\n    prompt: 'Rate {{ ticker }}'\n"
        f"    output: {json.dumps(SIGNAL_SCHEMA)}\n    fallback: [m/mock-1]\n"
    )


@pytest.mark.parametrize("mode", [None, "tool", "json_object"])
async def test_the_mock_answers_a_minimal_valid_instance(tmp_path: Path, mode: str | None) -> None:
    async with Router(make_config(tmp_path, mock_yaml(mode=mode))) as router:
        done = await router.complete("r", {"ticker": "ACME"})
    assert done.output == {"signal": "BUY", "confidence": 0, "reasons": []}
    assert done.tool_calls == []


async def test_a_stream_whose_text_breaks_the_schema_is_interrupted(tmp_path: Path) -> None:
    bad = {"signal": "MAYBE", "confidence": 1, "reasons": []}
    got: list[str] = []

    async def read_all(router: Router) -> None:
        async with router.stream("r", {"ticker": "ACME"}) as stream:
            async for delta in stream:
                got.append(delta)

    async with Router(make_config(tmp_path, mock_yaml(output=bad))) as router:
        with pytest.raises(StreamInterruptedError) as info:
            await read_all(router)
        (attempt,) = router.stats()["providers"]["m"]["models"]["mock-1"]["errors"].items()
    err = info.value
    assert err.partial_text == "".join(got) == json.dumps(bad, separators=(",", ":"))
    assert isinstance(err.cause, InvalidOutputError)
    assert "MAYBE" in err.detail
    assert attempt == ("stream_interrupted", 1)
    assert err.usage is not None and err.usage.output_tokens > 0


async def test_a_tool_mode_stream_carries_the_forced_call_as_its_output(tmp_path: Path) -> None:
    async with (
        Router(make_config(tmp_path, mock_yaml(mode="tool"))) as router,
        router.stream("r", {"ticker": "ACME"}) as stream,
    ):
        deltas = [d async for d in stream]
    done = stream.completion
    assert done is not None and "".join(deltas) == ""
    assert done.output == {"signal": "BUY", "confidence": 0, "reasons": []}
    assert json.loads(done.text) == done.output and done.tool_calls == []


async def test_a_stream_with_valid_output_carries_it(tmp_path: Path) -> None:
    async with (
        Router(make_config(tmp_path, mock_yaml())) as router,
        router.stream("r", {"ticker": "ACME"}, output=Signal) as stream,
    ):
        text = "".join([d async for d in stream])
    assert stream.completion is not None
    assert stream.completion.output == Signal(signal="BUY", confidence=0)
    assert json.loads(text) == {"signal": "BUY", "confidence": 0}


# ---------------------------------------------------------------- schemas


def test_example_instance_follows_the_schema() -> None:
    schema = Person.model_json_schema()
    assert example_instance(schema) == {"name": "", "age": 0}
    nested = {
        "$defs": {"P": {"type": "object", "properties": {"x": {"type": "number", "minimum": 2}}}},
        "type": "array",
        "items": {"$ref": "#/$defs/P"},
        "minItems": 2,
    }
    assert example_instance(nested) == [{"x": 2}, {"x": 2}]
    assert example_instance({"type": "integer", "exclusiveMinimum": 3}) == 4
    assert example_instance({"anyOf": [{"type": "null"}, {"type": "string"}]}) is None


def test_a_bad_route_schema_is_a_config_error_naming_the_route(tmp_path: Path) -> None:
    body = mock_yaml().replace(json.dumps(SIGNAL_SCHEMA), '{"type": "objekt"}')
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, body)
    (problem,) = info.value.problems
    assert problem.path == "routes.r.output" and problem.line is not None
    assert "not a valid JSON Schema" in problem.message


def test_a_route_schema_file_is_read_beside_the_templates(tmp_path: Path) -> None:
    body = mock_yaml().replace(json.dumps(SIGNAL_SCHEMA), "{file: signal.yaml}")
    plan = make_config(tmp_path, body, templates={"signal.yaml": json.dumps(SIGNAL_SCHEMA)})
    spec = plan.routes["r"].output
    assert spec is not None and spec.schema == SIGNAL_SCHEMA and spec.strict
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, body.replace("signal.yaml", "missing.json"))
    (problem,) = info.value.problems
    assert problem.path == "routes.r.output.file" and "missing.json" in problem.message
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, body.replace("signal.yaml", "../providers.yaml"))
    assert "inside settings.templates_dir" in info.value.problems[0].message


async def test_a_bad_call_schema_is_a_request_error_before_any_traffic(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, mock_yaml())) as router:
        with pytest.raises(RequestError, match="not a valid JSON Schema"):
            await router.complete("r", {"ticker": "A"}, output={"type": 5})
        with pytest.raises(RequestError, match="pydantic model class"):
            await router.complete("r", {"ticker": "A"}, output=int)  # type: ignore[arg-type]
        assert "r" not in router.stats()["routes"]  # nothing ran


def test_invalid_output_raw_text_is_redacted_and_capped() -> None:
    from router.redact import register_secret

    key = "sk-proj-" + "Q" * 40
    register_secret(key)
    err = InvalidOutputError("bad", raw=key + "x" * 5000, provider="p", model="m")
    assert key not in err.raw and len(err.raw) <= 2000
    assert err.kind == "invalid_output" and err.retryable
    assert EmptyResponseError("e", provider="p", model="m").retryable is False


def test_the_new_kinds_are_policy_config_and_metric_labels() -> None:
    from router.config import ErrorKind
    from router.metrics.stats import ERROR_TYPES, error_type

    for cls, kind in (
        (InvalidOutputError, "invalid_output"),
        (EmptyResponseError, "empty_response"),
    ):
        assert error_type(cls("x", provider="p", model="m")) == kind
        assert kind in ERROR_TYPES and kind in ErrorKind.__args__
        assert rule_for(kind).counts_failure is False  # a model's lapse: no cooldown
    assert rule_for("empty_response").retry is False


# ---------------------------------------------------------------- tools and output on one call

QUOTE_TOOL = {
    "name": "quote",
    "description": "Last trade price.",
    "parameters": {
        "type": "object",
        "properties": {"ticker": {"type": "string"}},
        "required": ["ticker"],
    },
}


def _tool_call_body(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    body = chat_body(None, "tool_calls")
    body["choices"][0]["message"]["tool_calls"] = [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
    ]
    return body


def _with_tools(adapter: Any, choice: str) -> dict[str, Any]:
    from router.tools import Tool, ToolSet

    tools = ToolSet((Tool(**QUOTE_TOOL),), choice)
    params = adapter.tool_fields(tools)
    ask = OutputRequest(output_spec(SIGNAL_SCHEMA, "signal"), "tool", tools.choice)
    body = adapter.chat_request("m", MESSAGES, params, output=ask).json
    assert body is not None
    return body


def test_openai_tool_mode_with_the_calls_own_tools_requires_a_tool_call() -> None:
    adapter = OpenAIAdapter("o", "k")
    body = _with_tools(adapter, "auto")
    assert [t["function"]["name"] for t in body["tools"]] == ["quote", "respond"]
    assert body["tool_choice"] == "required"  # its own tools or the answer: a call either way
    assert _with_tools(adapter, "required")["tool_choice"] == "required"
    forced = {"type": "function", "function": {"name": "quote"}}
    assert _with_tools(adapter, "quote")["tool_choice"] == forced  # a tool turn
    answer = {"type": "function", "function": {"name": "respond"}}
    assert _with_tools(adapter, "none")["tool_choice"] == answer


def test_anthropic_tool_mode_with_the_calls_own_tools_asks_for_any_tool() -> None:
    adapter = AnthropicAdapter("a", "k")
    body = _with_tools(adapter, "auto")
    assert [t["name"] for t in body["tools"]] == ["quote", "respond"]
    assert body["tool_choice"] == {"type": "any"}
    assert _with_tools(adapter, "required")["tool_choice"] == {"type": "any"}
    assert _with_tools(adapter, "quote")["tool_choice"] == {"type": "tool", "name": "quote"}
    assert _with_tools(adapter, "none")["tool_choice"] == {"type": "tool", "name": "respond"}


def test_responses_and_gemini_tool_mode_with_the_calls_own_tools() -> None:
    """The same rule in the Responses API's and Gemini's own forms."""
    from router.providers.gemini import GeminiAdapter
    from router.providers.openai_responses import OpenAIResponsesAdapter

    responses = OpenAIResponsesAdapter("r", "k")
    body = _with_tools(responses, "auto")
    assert [t["name"] for t in body["tools"]] == ["quote", "respond"]
    assert body["tool_choice"] == "required"
    assert _with_tools(responses, "none")["tool_choice"] == {"type": "function", "name": "respond"}
    gemini = GeminiAdapter("g", "k")
    body = _with_tools(gemini, "auto")
    declared = [f["name"] for t in body["tools"] for f in t["functionDeclarations"]]
    assert declared == ["quote", "respond"]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    answer = {"mode": "ANY", "allowedFunctionNames": ["respond"]}
    assert _with_tools(gemini, "none")["toolConfig"] == {"functionCallingConfig": answer}
    named = _with_tools(gemini, "quote")["toolConfig"]["functionCallingConfig"]
    assert named["allowedFunctionNames"] == ["quote"]  # the call's own forced tool stays


def test_a_tool_turn_has_no_output_and_is_not_checked() -> None:
    from router.output import checked_answer

    call = ToolCall("c1", "quote", {"ticker": "ACME"})
    for mode in ("tool", "json_schema"):
        answer = Reply("", "tool_calls", Usage(1, 1), tool_calls=[call])
        out = checked_answer(
            answer,
            output_spec(SIGNAL_SCHEMA),
            mode,  # type: ignore[arg-type]
            accept_truncated=False,
            provider="p",
            model="m",
        )
        assert out is None and answer.tool_calls == [call]


def tools_and_output_yaml(url: str, tool: dict[str, Any], mode: str = "tool") -> str:
    return (
        "providers:\n"
        f"  s1:\n    kind: openai\n    base_url: {url}/v1\n"
        f"    models:\n      m: {{price: {PRICE}, structured_output: {mode}}}\n"
        "settings: {backoff: {initial_s: 0.01, max_s: 0.02}}\n"
        "routes:\n"
        "  r:\n    prompt: 'Rate {{ ticker }}'\n    deadline_s: 5\n"
        f"    tools: [{json.dumps(tool)}]\n"
        f"    output: {json.dumps(SIGNAL_SCHEMA)}\n"
        "    fallback: [s1/m]\n"
    )


def _tool_call_sse(name: str, arguments: dict[str, Any], call_id: str) -> bytes:
    """The same answer as :func:`_tool_call_body`, streamed: id and name first, the
    arguments in two fragments, then the usage chunk."""
    text = json.dumps(arguments)

    def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        chunk = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "choices": choices}
        return b"data: " + json.dumps({**chunk, **extra}).encode() + b"\n\n"

    head = {"index": 0, "id": call_id, "type": "function"}
    head["function"] = {"name": name, "arguments": text[:5]}
    tail = {"index": 0, "function": {"arguments": text[5:]}}
    usage = {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60}
    return b"".join(
        [
            event({"role": "assistant", "content": None, "tool_calls": [head]}),
            event({"tool_calls": [tail]}),
            event({}, "tool_calls"),
            event(None, usage=usage),
            b"data: [DONE]\n\n",
        ]
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_loop_with_output_ends_in_the_checked_answer(
    tmp_path: Path, upstream: Upstream, stream: bool
) -> None:
    """Turn 1 calls the route's own tool (a tool turn: no output, not invalid); turn 2,
    after the result, is the forced answer call: checked, and not a tool call."""
    valid = {"signal": "BUY", "confidence": 70, "reasons": ["cheap"]}
    turns = [("quote", {"ticker": "ACME"}, "call_q"), ("respond", valid, "call_r")]
    if stream:
        sse = {"content-type": "text/event-stream"}
        upstream.queue(*(reply(200, _tool_call_sse(*t), sse) for t in turns), path=CHAT)
    else:
        upstream.queue(*(reply(200, _tool_call_body(*t)) for t in turns), path=CHAT)
    path = write_config(tmp_path, tools_and_output_yaml(upstream.url, QUOTE_TOOL))

    async def ask(router: Router, history: list[Message] | None = None) -> Any:
        if not stream:
            return await router.complete("r", {"ticker": "ACME"}, messages=history)
        async with router.stream("r", {"ticker": "ACME"}, messages=history) as s:
            assert [d async for d in s] == []  # an answer of tool calls has no text deltas
        return s.completion

    async with Router.from_yaml(path) as router:
        first = await ask(router)
        assert first.output is None
        assert [(c.name, c.arguments) for c in first.tool_calls] == [("quote", {"ticker": "ACME"})]
        history = [
            Message("user", "Rate ACME"),
            Message("assistant", list(first.tool_calls)),
            Message("tool", [ToolResult("call_q", "12.5")]),
        ]
        second = await ask(router, history)
    assert second.output == valid and second.tool_calls == []
    assert [(a.outcome, a.cost_usd) for a in first.attempts + second.attempts] == [
        ("ok", Decimal("0.0001"))
    ] * 2
    sent = [r.json() for r in upstream.requests]
    assert [[t["function"]["name"] for t in s["tools"]] for s in sent] == [["quote", "respond"]] * 2
    assert [s["tool_choice"] for s in sent] == ["required", "required"]


async def test_a_tool_named_like_the_answer_tool_skips_a_tool_mode_step(
    tmp_path: Path, upstream: Upstream
) -> None:
    """A call's own tool named ``respond`` would be taken for the answer: a step whose
    model answers through that tool is skipped (nothing sent), with the reason."""
    clash = {**QUOTE_TOOL, "name": "respond"}
    path = write_config(tmp_path, tools_and_output_yaml(upstream.url, clash))
    async with Router.from_yaml(path) as router:
        with pytest.raises(AllProvidersFailedError) as caught:
            await router.complete("r", {"ticker": "ACME"})
    (attempt,) = caught.value.attempts
    assert attempt.outcome == "skipped" and attempt.skip == "tools_unsupported"
    assert "'respond' is taken by structured output" in (attempt.reason or "")
    assert upstream.requests == []


async def test_invalid_output_is_retried_at_once_without_backoff(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's lapse says nothing about the provider's load: the retry is not
    delayed by the backoff (here made a certain 3 s), so it costs no deadline."""
    monkeypatch.setattr("router.call.random.uniform", lambda lo, hi: hi)
    valid = {"signal": "HOLD", "confidence": 50, "reasons": []}
    upstream.queue(
        reply(200, chat_body("not JSON")), reply(200, chat_body(json.dumps(valid))), path=CHAT
    )
    yaml = chain_yaml([upstream.url], signal_route()).replace(
        "initial_s: 0.01, max_s: 0.02", "initial_s: 3, max_s: 3"
    )
    async with Router.from_yaml(write_config(tmp_path, yaml)) as router:
        t0 = time.monotonic()
        done = await router.complete("r", {"ticker": "ACME"})
        elapsed = time.monotonic() - t0
    assert done.output == valid
    assert [a.outcome for a in done.attempts] == ["error", "ok"]
    assert elapsed < 1.0
    assert rule_for("invalid_output").backoff is False and rule_for("server").backoff is True
