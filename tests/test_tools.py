"""Tools: definitions (YAML and per call), each adapter's wire form of them and of
tool_choice, the check of an answer's tool calls (invalid_output, retried then the
next step, billed), the tools_unsupported skip, and a tool conversation that falls
back from an OpenAI-shaped server to an Anthropic-shaped one.

The expected bodies are written from the providers' documented formats: OpenAI
``tools: [{type: function, function: {name, description, parameters}}]`` and
``tool_choice`` auto/none/required/{type: function, function: {name}}; Anthropic
``tools: [{name, description, input_schema}]`` and ``tool_choice: {type:
auto|any|none|tool}``; Ollama ``tools`` in OpenAI's function form, no tool_choice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from router import (
    ConfigError,
    InvalidOutputError,
    Message,
    RequestError,
    Router,
    SkipKind,
    Text,
    Tool,
    ToolCall,
    ToolResult,
    ToolSet,
)
from router.providers.anthropic import AnthropicAdapter
from router.providers.ollama import OllamaAdapter
from router.providers.openai import OpenAIAdapter
from tests.routerkit import make_config, write_config
from tests.upstream import Upstream, replay, reply

Factory = Callable[..., Awaitable[Upstream]]
PRICE = "{input_per_mtok: 1, output_per_mtok: 2}"

QUOTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ticker": {"type": "string", "pattern": "^[A-Z]{1,5}$"}},
    "required": ["ticker"],
    "additionalProperties": False,
}
QUOTE = Tool("quote", "Last trade price of a ticker.", QUOTE_SCHEMA)
NEWS = Tool("news", "Headlines for a ticker.", {"type": "object"})


# -- definitions ------------------------------------------------------------------


class Quote(BaseModel):
    """Last trade price of a ticker."""

    ticker: str = Field(description="Exchange symbol")
    venue: str | None = None


def test_tool_from_a_pydantic_model_takes_its_schema_name_and_docstring() -> None:
    tool = Tool.from_model(Quote)
    assert tool == Tool("Quote", "Last trade price of a ticker.", Quote.model_json_schema())
    named = Tool.from_model(Quote, name="quote", description="Price.")
    assert (named.name, named.description) == ("quote", "Price.")


def test_tools_and_tool_sets_compare_and_hash_by_value() -> None:
    same = Tool("quote", "Last trade price of a ticker.", json.loads(json.dumps(QUOTE_SCHEMA)))
    assert same == QUOTE and hash(same) == hash(QUOTE)
    assert {QUOTE, same, NEWS} == {QUOTE, NEWS}
    assert hash(ToolSet((QUOTE, NEWS))) == hash(ToolSet((same, NEWS)))


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("has space", {"type": "object"}, "must be 1-64 letters"),
        ("quote", {"type": "array"}, "must describe an object"),
        ("quote", {"type": "object", "properties": {"x": {"type": 5}}}, "not a valid JSON Schema"),
        ("quote", ["not", "a", "schema"], "must be a JSON Schema object"),
    ],
)
def test_a_bad_tool_is_refused_when_built(name: str, parameters: Any, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        Tool(name, "", parameters)


def test_a_tool_set_refuses_duplicates_and_an_unknown_choice() -> None:
    with pytest.raises(RequestError, match="'quote' declared more than once"):
        ToolSet((QUOTE, QUOTE))
    with pytest.raises(RequestError, match="tool_choice 'qoute' is not auto, none, required"):
        ToolSet((QUOTE,), "qoute")


def test_tool_call_problems_name_the_call_and_the_schema_violation() -> None:
    tools = ToolSet((QUOTE, NEWS))
    good = ToolCall("c1", "quote", {"ticker": "AAPL"})
    assert tools.problems([good, ToolCall("c2", "news", {})]) == []
    assert tools.problems(
        [
            good,
            ToolCall("c2", "quote", {"ticker": "aapl"}),
            ToolCall("c3", "trade", {}),
            ToolCall("c4", "quote", {}, arguments_raw='{"ticker": "AA'),
        ]
    ) == [
        "tool call 1 ('quote', id 'c2'): ticker: 'aapl' does not match '^[A-Z]{1,5}$'",
        "tool call 2 ('trade', id 'c3'): no such tool was offered",
        "tool call 3 ('quote', id 'c4'): arguments are not a JSON object",
    ]


# -- wire forms -------------------------------------------------------------------

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "quote",
            "description": "Last trade price of a ticker.",
            "parameters": QUOTE_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "news",
            "description": "Headlines for a ticker.",
            "parameters": {"type": "object"},
        },
    },
]
ANTHROPIC_TOOLS = [
    {"name": "quote", "description": "Last trade price of a ticker.", "input_schema": QUOTE_SCHEMA},
    {"name": "news", "description": "Headlines for a ticker.", "input_schema": {"type": "object"}},
]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("quote", {"type": "function", "function": {"name": "quote"}}),
    ],
)
def test_openai_body_with_tools_and_each_choice(choice: str, wire: Any) -> None:
    adapter = OpenAIAdapter("oa", "k")
    fields = adapter.tool_fields(ToolSet((QUOTE, NEWS), choice))
    assert isinstance(fields, dict)
    body = adapter.chat_request(
        "gpt-4o", [Message("user", "AAPL?")], {**fields, "max_tokens": 9}
    ).json
    assert body == {
        "model": "gpt-4o",
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "AAPL?"}],
        "tools": OPENAI_TOOLS,
        "tool_choice": wire,
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ("quote", {"type": "tool", "name": "quote"}),
    ],
)
def test_anthropic_body_with_tools_and_each_choice(choice: str, wire: Any) -> None:
    adapter = AnthropicAdapter("an", "k")
    fields = adapter.tool_fields(ToolSet((QUOTE, NEWS), choice))
    assert isinstance(fields, dict)
    body = adapter.chat_request(
        "claude-haiku-4-5", [Message("user", "AAPL?")], {**fields, "max_tokens": 9}
    ).json
    assert body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "AAPL?"}],
        "tools": ANTHROPIC_TOOLS,
        "tool_choice": wire,
    }


def test_ollama_body_with_tools_and_the_choices_it_cannot_honour() -> None:
    adapter = OllamaAdapter("ol", None)
    auto = adapter.tool_fields(ToolSet((QUOTE, NEWS), "auto"))
    assert isinstance(auto, dict)
    body = adapter.chat_request("qwen3", [Message("user", "AAPL?")], {**auto, "max_tokens": 9}).json
    assert body is not None
    assert body["tools"] == OPENAI_TOOLS
    assert "tool_choice" not in body
    assert adapter.tool_fields(ToolSet((QUOTE,), "none")) == {}
    for choice in ("required", "quote"):
        why = adapter.tool_fields(ToolSet((QUOTE,), choice))
        assert why == (
            f"Ollama has no tool_choice: {choice!r} cannot be enforced (only auto and none)"
        )


# -- the YAML ---------------------------------------------------------------------

MOCK_PROVIDER = """
providers:
  m:
    kind: mock
    models: {echo: {}, plain: {tools: false}}
    mock:
      reply: "done: {prompt}"
      tool_calls: [{name: quote, arguments: {ticker: AAPL}}]
"""


def test_route_tools_inline_and_from_a_file_next_to_the_templates(tmp_path: Path) -> None:
    plan = make_config(
        tmp_path,
        MOCK_PROVIDER
        + """
routes:
  r:
    prompt: "hi"
    tools:
      - {name: quote, description: "Last trade price of a ticker.", parameters: {file: quote.json}}
      - name: news
        description: "Headlines for a ticker."
    tool_choice: required
    fallback: [m/echo]
""",
        templates={"quote.json": json.dumps(QUOTE_SCHEMA)},
    )
    route = plan.route("r")
    assert route.tools == ToolSet((QUOTE, NEWS), "required")
    assert [s.tools for s in route.steps] == [True]
    assert plan.route("r").tools is not None


def test_bad_tools_in_yaml_are_reported_at_their_line(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "broken.json").write_text("{not json")
    path = tmp_path / "providers.yaml"
    path.write_text(
        "version: 1\n"  # 1
        "providers:\n"
        "  m:\n"
        "    kind: mock\n"
        "    models: {echo: {}}\n"  # 5
        "routes:\n"
        "  r:\n"
        "    prompt: hi\n"
        "    tools:\n"
        "      - name: quote\n"  # 10
        "        parameters: {type: object, properties: {x: {type: 5}}}\n"
        "      - name: quote\n"
        "        parameters: {file: broken.json}\n"
        "      - name: news\n"
        "        parameters: {file: ../../etc/passwd}\n"  # 15
        "    tool_choice: qoute\n"
        "    fallback: [m/echo]\n"
    )
    from router import load_config

    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = [(p.line, p.path, p.message) for p in info.value.problems]
    assert found[0][:2] == (11, "routes.r.tools[0].parameters")
    assert "tool 'quote': parameters is not a valid JSON Schema" in found[0][2]
    assert found[1] == (12, "routes.r.tools[1].name", "tool 'quote' is declared more than once")
    assert found[2][:2] == (13, "routes.r.tools[1].parameters.file")
    assert "cannot read the tool's schema" in found[2][2] and "JSONDecodeError" in found[2][2]
    assert found[3][:2] == (15, "routes.r.tools[2].parameters.file")
    assert "is outside templates_dir" in found[3][2]
    assert found[4][:2] == (16, "routes.r.tool_choice")
    assert "tool_choice 'qoute' is not auto, none, required" in found[4][2]
    assert "did you mean 'quote'" in found[4][2]
    assert len(found) == 5


# -- through the router ---------------------------------------------------------------


async def test_mock_answers_with_its_tool_calls_then_with_text(tmp_path: Path) -> None:
    """A complete tool loop on the mock: per-call tools, the calls, the results, the answer;
    the same through a stream."""
    path = write_config(tmp_path, MOCK_PROVIDER + "routes:\n  chat:\n    fallback: [m/echo]\n")
    history = [Message("user", "What does AAPL trade at?")]
    async with Router.from_yaml(path) as router:
        first = await router.complete("chat", messages=history, tools=[QUOTE])
        assert first.tool_calls == [ToolCall("call_1_0", "quote", {"ticker": "AAPL"})]
        assert first.finish_reason == "tool_calls"
        history += [
            Message("assistant", list(first.tool_calls)),
            Message("tool", [ToolResult("call_1_0", "189.50")]),
            Message("user", "Buy?"),
        ]
        second = await router.complete("chat", messages=history[:-1], tools=[QUOTE])
        assert (second.text, second.tool_calls) == ("done: What does AAPL trade at?", [])
        # Without tools the mock answers with text, whatever its tool_calls.
        plain = await router.complete("chat", messages=history)
        assert (plain.text, plain.tool_calls) == ("done: Buy?", [])
        async with router.stream("chat", messages=history[:1], tools=[QUOTE]) as stream:
            assert [d async for d in stream] == []
        assert stream.completion.tool_calls == [ToolCall("call_4_0", "quote", {"ticker": "AAPL"})]


async def test_a_model_without_tools_is_skipped_with_a_typed_reason(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, MOCK_PROVIDER + "routes:\n  chat:\n    fallback: [m/plain, m/echo]\n"
    )
    async with Router.from_yaml(path) as router:
        done = await router.complete("chat", messages=[Message("user", "AAPL?")], tools=[QUOTE])
        plain = await router.complete("chat", messages=[Message("user", "AAPL?")])
    assert [(a.model, a.outcome, a.skip) for a in done.attempts] == [
        ("plain", "skipped", SkipKind.TOOLS_UNSUPPORTED),
        ("echo", "ok", None),
    ]
    assert (
        done.attempts[0].reason == "the call has tools and model 'plain' is declared tools: false"
    )
    assert [(a.model, a.outcome) for a in plain.attempts] == [("plain", "ok")]


async def test_route_tools_offered_on_every_call_and_overridden_per_call(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        MOCK_PROVIDER + "routes:\n  r:\n    prompt: 'AAPL?'\n    tools: [{name: quote}]\n"
        "    fallback: [m/plain, m/echo]\n",
    )
    async with Router.from_yaml(path) as router:
        offered = await router.complete("r")
        none = await router.complete("r", tools=[])
        no_choice = await router.complete("r", tool_choice="none")
    assert [a.skip for a in offered.attempts] == [SkipKind.TOOLS_UNSUPPORTED, None]
    assert offered.tool_calls == [ToolCall("call_1_0", "quote", {"ticker": "AAPL"})]
    assert [(a.model, a.outcome) for a in none.attempts] == [("plain", "ok")]
    assert none.text == "done: AAPL?"
    assert no_choice.text == "done: AAPL?" and no_choice.provider == "m"


async def test_ollama_skips_a_required_choice(tmp_path: Path) -> None:
    plan_yaml = (
        "providers:\n"
        "  ol: {kind: ollama, base_url: 'http://127.0.0.1:9', models: {qwen3: {}}}\n"
        + MOCK_PROVIDER.split("providers:\n", 1)[1]
        + "routes:\n  r:\n    prompt: hi\n    tools: [{name: quote}]\n    tool_choice: required\n"
        "    fallback: [ol/qwen3, m/echo]\n"
    )
    async with Router.from_yaml(write_config(tmp_path, plan_yaml)) as router:
        done = await router.complete("r")
    assert done.attempts[0].skip is SkipKind.TOOLS_UNSUPPORTED
    assert done.attempts[0].reason == (
        "Ollama has no tool_choice: 'required' cannot be enforced (only auto and none)"
    )
    assert done.provider == "m"


def chain_yaml(openai_url: str, anthropic_url: str) -> str:
    return (
        "providers:\n"
        f"  oa:\n    kind: openai\n    base_url: {openai_url}/v1\n    api_key_env: E2E_KEY\n"
        f"    models: {{gpt-4o: {{price: {PRICE}}}}}\n"
        f"  an:\n    kind: anthropic\n    base_url: {anthropic_url}\n    api_key_env: E2E_KEY\n"
        f"    models: {{claude-haiku-4-5: {{price: {PRICE}}}}}\n"
        "settings: {retries: 0}\n"
        "routes:\n"
        "  desk:\n    system: 'You are a trading assistant.'\n"
        "    tools:\n"
        "      - name: quote\n"
        "        description: Last trade price of a ticker.\n"
        f"        parameters: {json.dumps(QUOTE_SCHEMA)}\n"
        "    fallback: [oa/gpt-4o, an/claude-haiku-4-5]\n"
    )


def openai_tool_reply(arguments: str, call_id: str = "call_q1") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "quote", "arguments": arguments},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


ANTHROPIC_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "AAPL is at 189.50: hold."}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 300, "output_tokens": 12},
}


async def test_a_tool_conversation_falls_back_with_its_tools_and_ids(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turn 1: the OpenAI-shaped server asks for a tool. Turn 2 (the result): it fails
    with 500 and the Anthropic-shaped fallback continues the conversation, the tool
    definitions translated and the call id kept."""
    monkeypatch.setenv("E2E_KEY", "test-key")
    oa, an = await upstream_factory(), await upstream_factory()
    oa.queue(reply(200, openai_tool_reply('{"ticker":"AAPL"}')), path="/v1/chat/completions")
    oa.queue(
        reply(500, {"error": {"message": "boom", "type": "server_error"}}),
        path="/v1/chat/completions",
    )
    an.route("/v1/messages", reply(200, ANTHROPIC_ANSWER))
    history = [Message("user", "What does AAPL trade at?")]
    async with Router.from_yaml(write_config(tmp_path, chain_yaml(oa.url, an.url))) as router:
        first = await router.complete("desk", messages=history, deadline_s=5)
        assert first.provider == "oa"
        assert first.tool_calls == [ToolCall("call_q1", "quote", {"ticker": "AAPL"})]
        history += [
            Message("assistant", list(first.tool_calls)),
            Message("tool", [ToolResult("call_q1", "189.50")]),
        ]
        second = await router.complete("desk", messages=history, deadline_s=5)
    assert (second.provider, second.text) == ("an", "AAPL is at 189.50: hold.")
    assert [a.outcome for a in second.attempts] == ["error", "ok"]
    system = {"role": "system", "content": "You are a trading assistant."}
    question = {"role": "user", "content": "What does AAPL trade at?"}
    assert [r.json() for r in oa.requests] == [
        {
            "model": "gpt-4o",
            "max_tokens": 1024,
            "messages": [system, question],
            "tools": [OPENAI_TOOLS[0]],
            "tool_choice": "auto",
        },
        {
            "model": "gpt-4o",
            "max_tokens": 1024,
            "messages": [
                system,
                question,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_q1",
                            "type": "function",
                            "function": {"name": "quote", "arguments": '{"ticker":"AAPL"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_q1", "content": "189.50"},
            ],
            "tools": [OPENAI_TOOLS[0]],
            "tool_choice": "auto",
        },
    ]
    assert [r.json() for r in an.requests] == [
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 1024,
            "system": "You are a trading assistant.",
            "messages": [
                question,
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_q1",
                            "name": "quote",
                            "input": {"ticker": "AAPL"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_q1", "content": "189.50"}
                    ],
                },
            ],
            "tools": [ANTHROPIC_TOOLS[0]],
            "tool_choice": {"type": "auto"},
        }
    ]


async def test_invalid_arguments_are_retried_once_then_fall_back_and_are_billed(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_KEY", "test-key")
    oa, an = await upstream_factory(), await upstream_factory()
    oa.route("/v1/chat/completions", reply(200, openai_tool_reply('{"ticker":"apple"}')))
    an.route("/v1/messages", reply(200, ANTHROPIC_ANSWER))
    yaml_text = chain_yaml(oa.url, an.url).replace(
        "settings: {retries: 0}", "settings: {retries: 3}"
    )
    async with Router.from_yaml(write_config(tmp_path, yaml_text)) as router:
        done = await router.complete("desk", messages=[Message("user", "AAPL?")], deadline_s=5)
        states = router.provider_states()
    assert done.provider == "an"
    assert len(oa.requests) == 2  # retried once, whatever the step's retries
    errors = [a.error for a in done.attempts[:2]]
    assert all(isinstance(e, InvalidOutputError) for e in errors)
    assert [a.error.kind if a.error else None for a in done.attempts] == [
        "invalid_output",
        "invalid_output",
        None,
    ]
    err = errors[0]
    assert isinstance(err, InvalidOutputError)
    assert err.problems == (
        "tool call 0 ('quote', id 'call_q1'): ticker: 'apple' does not match '^[A-Z]{1,5}$'",
    )
    assert json.loads(err.raw) == [{"name": "quote", "arguments": {"ticker": "apple"}}]
    # Billed: 100 input and 20 output tokens at $1/$2 per million, each time.
    for a in done.attempts[:2]:
        assert a.usage is not None and (a.usage.input_tokens, a.usage.output_tokens) == (100, 20)
        assert a.cost_usd == Decimal("0.00014")
    assert states["oa"].failures == 0  # the model's answer, not the provider's health


# -- recorded answers ---------------------------------------------------------------

WEATHER = Tool(
    "weather",
    "Weather at a place.",
    {
        "type": "object",
        "properties": {"latitude": {"type": "string"}, "longitude": {"type": "string"}},
        "required": ["latitude", "longitude"],
    },
)
LANGUAGE = Tool("best_language_to_learn", "The best language.", {"type": "object"})
CITY = Tool(
    "get_current_weather",
    "Weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)

RECORDED = {
    "openai/openai-chat-200-json-parallel-tool-calls": ("openai", "/v1/chat/completions"),
    "xai/xai-chat-200-json-parallel-tool-calls": ("openai", "/v1/chat/completions"),
    "anthropic/anthropic-messages-200-json-parallel-tool-use": ("anthropic", "/v1/messages"),
    "ollama/ollama-chat-200-json-tool-calls-thinking": ("ollama", "/api/chat"),
}


def recorded_usage(kind: str, body: dict[str, Any]) -> tuple[int, int]:
    if kind == "openai":
        return body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]
    if kind == "anthropic":
        return body["usage"]["input_tokens"], body["usage"]["output_tokens"]
    return body["prompt_eval_count"], body["eval_count"]


@pytest.mark.parametrize("fixture_id", sorted(RECORDED))
async def test_recorded_tool_answers_pass_their_schemas_with_exact_calls_and_usage(
    fixture_id: str, tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorded tool-use answer through a route offering matching tools: the calls in
    order with their ids and arguments, and the usage, exactly as recorded."""
    from tests.test_conversations import RECORDED_CALLS

    monkeypatch.setenv("E2E_KEY", "test-key")
    kind, path = RECORDED[fixture_id]
    upstream.route(path, replay(f"{fixture_id}.meta.json"))
    base = f"{upstream.url}/v1" if kind == "openai" else upstream.url
    key = "" if kind == "ollama" else "    api_key_env: E2E_KEY\n"
    config = (
        f"providers:\n  p:\n    kind: {kind}\n    base_url: {base}\n{key}"
        f"    models: {{m: {{price: {PRICE}}}}}\n"
        "routes:\n  r:\n    prompt: go\n    fallback: [p/m]\n"
    )
    body = json.loads((Path(__file__).parent / "fixtures" / f"{fixture_id}.body.json").read_text())
    async with Router.from_yaml(write_config(tmp_path, config)) as router:
        done = await router.complete("r", tools=[WEATHER, LANGUAGE, CITY], deadline_s=5)
    assert done.tool_calls == RECORDED_CALLS[fixture_id]
    assert [a.outcome for a in done.attempts] == ["ok"]
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == recorded_usage(kind, body)
    sent = upstream.requests[0].json()
    assert [t.get("name") or t["function"]["name"] for t in sent["tools"]] == [
        "weather",
        "best_language_to_learn",
        "get_current_weather",
    ]


def test_text_part_in_history_with_tools_is_kept() -> None:
    """A history that mixes text and calls keeps both next to the tool definitions."""
    adapter = AnthropicAdapter("an", "k")
    fields = adapter.tool_fields(ToolSet((QUOTE,)))
    assert isinstance(fields, dict)
    body = adapter.chat_request(
        "c",
        [
            Message("user", "AAPL?"),
            Message("assistant", [Text("Checking."), ToolCall("t1", "quote", {"ticker": "AAPL"})]),
            Message("tool", [ToolResult("t1", "189.50")]),
        ],
        fields,
    ).json
    assert body is not None
    assert body["tools"] == [ANTHROPIC_TOOLS[0]]
    assert body["messages"][1]["content"][0] == {"type": "text", "text": "Checking."}


STREAMED = {
    "deepseek/deepseek-chat-200-sse-tool-calls-cache-hit": ("openai", "/v1/chat/completions"),
    "openai/openai-chat-200-sse-tool-calls": ("openai", "/v1/chat/completions"),
    "anthropic/anthropic-messages-200-sse-tool-use": ("anthropic", "/v1/messages"),
}


@pytest.mark.parametrize("fixture_id", sorted(STREAMED))
async def test_recorded_streamed_tool_answers_through_a_route_with_tools(
    fixture_id: str, tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_conversations import STREAMED_CALLS

    monkeypatch.setenv("E2E_KEY", "test-key")
    kind, path = STREAMED[fixture_id]
    upstream.route(path, replay(f"{fixture_id}.meta.json"))
    base = f"{upstream.url}/v1" if kind == "openai" else upstream.url
    config = (
        f"providers:\n  p:\n    kind: {kind}\n    base_url: {base}\n    api_key_env: E2E_KEY\n"
        f"    models: {{m: {{price: {PRICE}}}}}\n"
        "routes:\n  r:\n    prompt: go\n    fallback: [p/m]\n"
    )
    expected = STREAMED_CALLS[fixture_id.split("/", 1)[1]]
    tools = [Tool(c.name, "", {"type": "object"}) for c in expected]
    router = Router.from_yaml(write_config(tmp_path, config))
    async with router, router.stream("r", tools=tools, deadline_s=5) as stream:
        text = "".join([d async for d in stream])
    assert stream.completion.tool_calls == expected
    assert stream.completion.text == text
    sent = upstream.requests[0].json()
    assert [t.get("name") or t["function"]["name"] for t in sent["tools"]] == [
        c.name for c in expected
    ]


def test_tool_definitions_count_towards_the_input_estimate(tmp_path: Path) -> None:
    """The definitions are billed as prompt: they are in the estimate that budgets
    reserve and that a context window is checked against."""
    body = MOCK_PROVIDER + (
        "routes:\n"
        "  bare:\n    prompt: 'AAPL?'\n    fallback: [m/echo]\n"
        "  tooled:\n    prompt: 'AAPL?'\n"
        "    tools: [{name: quote, description: 'Last trade price.',"
        f" parameters: {json.dumps(QUOTE_SCHEMA)}}}]\n"
        "    fallback: [m/echo]\n"
    )
    plan = make_config(tmp_path, body)
    tools = plan.route("tooled").tools
    assert tools is not None and tools.tokens > 20
    bare = plan.fit("bare", {})[0].input_tokens
    tooled = plan.fit("tooled", {})[0].input_tokens
    assert bare is not None and tooled == bare + tools.tokens


async def test_a_window_too_small_for_the_definitions_skips_the_step(tmp_path: Path) -> None:
    tools = ToolSet((QUOTE,))
    path = write_config(
        tmp_path,
        MOCK_PROVIDER.replace("echo: {}", "echo: {}, small: {context_window: 40}")
        + "routes:\n  r:\n    prompt: 'AAPL?'\n    max_tokens: 10\n"
        "    fallback: [m/small, m/echo]\n",
    )
    async with Router.from_yaml(path) as router:
        bare = await router.complete("r")
        tooled = await router.complete("r", tools=list(tools.tools))
    assert [a.outcome for a in bare.attempts] == ["ok"]
    assert [(a.model, a.skip) for a in tooled.attempts] == [
        ("small", SkipKind.CONTEXT_WINDOW),
        ("echo", None),
    ]


def openai_tool_stream(arguments: str) -> bytes:
    """An OpenAI-shaped SSE answer that is one tool call, its arguments in two fragments."""
    head = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o"}

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + json.dumps({**head, "choices": choices, **extra}).encode() + b"\n\n"

    first = {"index": 0, "id": "call_s1", "type": "function"}
    first["function"] = {"name": "quote", "arguments": arguments[:5]}
    rest = {"index": 0, "function": {"arguments": arguments[5:]}}
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    return b"".join(
        [
            event({"role": "assistant", "content": None, "tool_calls": [first]}),
            event({"tool_calls": [rest]}),
            event({}, "tool_calls"),
            b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode() + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )


async def test_a_streamed_answer_of_invalid_tool_calls_falls_back_billed(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream whose answer is only tool calls is read whole before it is handed over:
    invalid arguments are retried once, billed, then the next step streams."""
    monkeypatch.setenv("E2E_KEY", "test-key")
    bad, good = await upstream_factory(), await upstream_factory()
    sse = {"content-type": "text/event-stream"}
    bad.route("/v1/chat/completions", reply(200, openai_tool_stream('{"ticker":"apple"}'), sse))
    good.route("/v1/chat/completions", reply(200, openai_tool_stream('{"ticker":"AAPL"}'), sse))
    config = (
        "providers:\n"
        + "".join(
            f"  {name}:\n    kind: openai\n    base_url: {up.url}/v1\n    api_key_env: E2E_KEY\n"
            f"    models: {{gpt-4o: {{price: {PRICE}}}}}\n"
            for name, up in (("bad", bad), ("good", good))
        )
        + "routes:\n  r:\n    prompt: 'AAPL?'\n    fallback: [bad/gpt-4o, good/gpt-4o]\n"
    )
    router = Router.from_yaml(write_config(tmp_path, config))
    async with router, router.stream("r", tools=[QUOTE], deadline_s=5) as stream:
        assert [d async for d in stream] == []
    done = stream.completion
    assert done.provider == "good"
    assert done.tool_calls == [ToolCall("call_s1", "quote", {"ticker": "AAPL"})]
    assert [a.error.kind if a.error else None for a in done.attempts] == [
        "invalid_output",
        "invalid_output",
        None,
    ]
    assert all(a.cost_usd == Decimal("0.00014") for a in done.attempts)
    assert len(bad.requests) == 2
