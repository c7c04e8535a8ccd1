"""A conversation history on a route, through the router to real local servers:
what each server's body holds, a fallback that carries the tool turns over to
another wire format, the checks that refuse a bad history before any traffic, and
the token estimate that counts it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from router import (
    Image,
    Message,
    RequestError,
    Router,
    ServerError,
    Text,
    ToolCall,
    ToolResult,
)
from router.estimate import IMAGE_TOKENS, estimate_tokens
from tests.imagekit import png, png_header
from tests.routerkit import make_config, write_config
from tests.upstream import Upstream, replay, reply

Factory = Callable[..., Awaitable[Upstream]]
PRICE = "{input_per_mtok: 1, output_per_mtok: 2}"

HISTORY = [
    Message("user", "What does AAPL trade at?"),
    Message(
        "assistant",
        [Text("Checking."), ToolCall("toolu_01A", "quote", {"ticker": "AAPL"})],
    ),
    Message("tool", [ToolResult("toolu_01A", "189.50")]),
]


def chain_yaml(openai_url: str, anthropic_url: str, *, prompt: str | None) -> str:
    prompt_line = f"    prompt: '{prompt}'\n" if prompt is not None else ""
    return (
        "providers:\n"
        f"  oa:\n    kind: openai\n    base_url: {openai_url}/v1\n    api_key_env: E2E_KEY\n"
        f"    models: {{gpt-4o: {{price: {PRICE}}}}}\n"
        f"  an:\n    kind: anthropic\n    base_url: {anthropic_url}\n    api_key_env: E2E_KEY\n"
        f"    models: {{claude-haiku-4-5: {{price: {PRICE}}}}}\n"
        "routes:\n"
        "  r:\n    system: 'You are a trading assistant.'\n"
        f"{prompt_line}"
        "    fallback: [oa/gpt-4o, an/claude-haiku-4-5]\n"
    )


async def test_fallback_carries_the_tool_turns_with_their_ids(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI-shaped server fails with 500; the Anthropic-shaped fallback gets the same
    conversation as tool_use/tool_result blocks with the original ids."""
    monkeypatch.setenv("E2E_KEY", "test-key")
    oa, an = await upstream_factory(), await upstream_factory()
    oa.route(
        "/v1/chat/completions", reply(500, {"error": {"message": "boom", "type": "server_error"}})
    )
    an.route("/v1/messages", replay("anthropic/anthropic-messages-200-json-basic.meta.json"))
    path = write_config(tmp_path, chain_yaml(oa.url, an.url, prompt="Buy or sell?"))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", {}, messages=HISTORY, deadline_s=5)
    assert done.provider == "an"
    assert isinstance(done.attempts[0].error, ServerError)
    assert [r.json() for r in oa.requests] == [
        {
            "model": "gpt-4o",
            "max_tokens": 1024,
            "messages": [
                {"role": "system", "content": "You are a trading assistant."},
                {"role": "user", "content": "What does AAPL trade at?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "toolu_01A",
                            "type": "function",
                            "function": {"name": "quote", "arguments": '{"ticker":"AAPL"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_01A", "content": "189.50"},
                {"role": "user", "content": "Buy or sell?"},
            ],
        }
    ] * len(oa.requests)
    assert [r.json() for r in an.requests] == [
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 1024,
            "system": "You are a trading assistant.",
            "messages": [
                {"role": "user", "content": "What does AAPL trade at?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01A",
                            "name": "quote",
                            "input": {"ticker": "AAPL"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "189.50"},
                        {"type": "text", "text": "Buy or sell?"},
                    ],
                },
            ],
        }
    ]


async def test_a_route_without_prompt_sends_the_history_turn_and_streams(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prompt omitted: the history's last message (here a tool result) is the turn;
    stream() takes the same history."""
    monkeypatch.setenv("E2E_KEY", "test-key")
    oa, an = await upstream_factory(), await upstream_factory()
    oa.route("/v1/chat/completions", replay("openai/openai-chat-200-sse-basic.meta.json"))
    path = write_config(tmp_path, chain_yaml(oa.url, an.url, prompt=None))
    async with (
        Router.from_yaml(path) as router,
        router.stream("r", messages=HISTORY, deadline_s=5) as stream,
    ):
        text = "".join([delta async for delta in stream])
    assert text == stream.completion.text and text
    (sent,) = [r.json() for r in oa.requests]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool"]
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "toolu_01A",
        "content": "189.50",
    }
    assert an.requests == []


async def test_completion_carries_the_answer_tool_calls(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_KEY", "test-key")
    oa, an = await upstream_factory(), await upstream_factory()
    oa.route(
        "/v1/chat/completions",
        replay("openai/openai-chat-200-json-parallel-tool-calls.meta.json"),
    )
    path = write_config(tmp_path, chain_yaml(oa.url, an.url, prompt="Weather?"))
    async with Router.from_yaml(path) as router:
        done = await router.complete("r", deadline_s=5)
    assert [(c.id, c.name, c.arguments) for c in done.tool_calls] == [
        (
            "call_5Brxo90SHuOxfJol2Pubf4BX",
            "weather",
            {"latitude": "52.5200", "longitude": "13.4050"},
        ),
        ("call_SRydeRpiPuKkNTBwOHKgFDLX", "best_language_to_learn", {}),
    ]


# -- refused before any traffic ----------------------------------------------------------

CALL = ToolCall("c1", "quote", {"t": "X"})
BAD_HISTORIES: list[tuple[list[Any], int | None, str]] = [
    ([Message("user", "hi"), Message("tool", [ToolResult("nope", "1")])], 1, "'nope'.*no earlier"),
    (
        [Message("assistant", [CALL]), Message("user", "and?")],
        1,
        "before the results of tool call.*'c1'",
    ),
    ([Message("assistant", [CALL])], 0, "'c1' have no result"),
    ([Message("user", "")], 0, "empty user message"),
    ([Message("user", "a"), Message("assistant", [])], 1, "empty assistant message"),
    ([Message("system", "be nice")], 0, "system message in the history"),
    ([Message("user", "a"), Message("robot", "b")], 1, "role 'robot' is not one of"),  # type: ignore[arg-type]
    (["hello"], 0, "not a Message but str"),
    ([Message("assistant", [Image(url="https://x/y.png")])], 0, "Image goes in a user message"),
    ([Message("user", [Image(data=b"x")])], 0, "needs mime="),
    ([Message("user", [CALL])], 0, "ToolCall goes in an assistant message"),
    (
        [
            Message("assistant", [CALL]),
            Message("tool", [ToolResult("c1", "1")]),
            Message("tool", [ToolResult("c1", "2")]),
        ],
        2,
        "second tool result",
    ),
    ([Message("tool", "42")], 0, "ToolResult parts, not a string"),
]


@pytest.mark.parametrize(("history", "index", "why"), BAD_HISTORIES)
async def test_a_bad_history_raises_request_error_naming_the_index(
    tmp_path: Path,
    upstream_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    history: list[Any],
    index: int | None,
    why: str,
) -> None:
    monkeypatch.setenv("E2E_KEY", "test-key")
    oa, an = await upstream_factory(), await upstream_factory()
    path = write_config(tmp_path, chain_yaml(oa.url, an.url, prompt="Go."))
    async with Router.from_yaml(path) as router:
        with pytest.raises(RequestError, match=why) as info:
            await router.complete("r", messages=history, deadline_s=5)
        with pytest.raises(RequestError, match=why):
            router.render("r", messages=history)
    assert info.value.index == index
    assert f"messages[{index}]" in str(info.value)
    assert info.value.route == "r"
    assert oa.requests == [] and an.requests == []


def test_a_route_without_prompt_needs_a_history_ending_with_the_turn(tmp_path: Path) -> None:
    plan = make_config(
        tmp_path,
        """
        providers:
          m: {kind: mock, models: {x: {}}}
        routes:
          chat: {system: "Be brief.", fallback: [m/x]}
        """,
    )
    with pytest.raises(RequestError, match="no prompt: pass messages=") as info:
        plan.render("chat")
    assert info.value.index is None
    with pytest.raises(RequestError, match=r"messages\[1\].*must be a user or tool message"):
        plan.render("chat", messages=[Message("user", "a"), Message("assistant", "b")])
    shown = plan.render("chat", messages=[Message("user", "Hi")])
    assert shown == [Message("system", "Be brief."), Message("user", "Hi")]


def test_render_shows_the_whole_conversation(tmp_path: Path) -> None:
    plan = make_config(
        tmp_path,
        """
        providers:
          m: {kind: mock, models: {x: {}}}
        routes:
          r: {system: "Sys {{ a }}", prompt: "Now {{ a }}", fallback: [m/x]}
        """,
    )
    out = plan.render("r", {"a": "1"}, messages=HISTORY)
    assert out == [Message("system", "Sys 1"), *HISTORY, Message("user", "Now 1")]
    assert plan.render("r", {"a": "1"}) == [Message("system", "Sys 1"), Message("user", "Now 1")]


async def test_the_mock_provider_answers_a_conversation(tmp_path: Path) -> None:
    """The offline mock reads the text of content parts ({prompt} is the last user text)."""
    path = write_config(
        tmp_path,
        """
        providers:
          m: {kind: mock, models: {x: {}}, mock: {reply: "echo {prompt}", latency_s: 0}}
        routes:
          chat: {fallback: [m/x]}
        """,
    )
    async with Router.from_yaml(path) as router:
        done = await router.complete(
            "chat",
            messages=[Message("user", [Text("look"), Image(data=png(), mime="image/png")])],
        )
    assert done.text == "echo look"


# -- the estimate counts the history ----------------------------------------------------


def test_estimate_counts_history_text_tool_calls_and_images() -> None:
    base = [Message("user", "hi")]
    plain = estimate_tokens(base)
    with_image = estimate_tokens([Message("user", [Text("hi"), Image(url="https://x/y.png")])])
    assert with_image == plain + IMAGE_TOKENS
    with_history = estimate_tokens([*HISTORY, *base])
    # the history's text, the call's name and arguments and the result, and overhead
    assert with_history > plain + 3 * 4 + 5
    long_args = ToolCall("c", "f", {"text": "word " * 200})
    assert estimate_tokens([Message("assistant", [long_args])]) > 200


async def test_budget_reservation_counts_the_history(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget that fits the bare prompt refuses once the history's image is counted."""
    from router import BudgetExceededError

    monkeypatch.setenv("E2E_KEY", "test-key")
    oa = await upstream_factory()
    oa.route("/v1/chat/completions", replay("openai/openai-chat-200-json-wire.meta.json"))
    body = (
        "providers:\n"
        f"  oa:\n    kind: openai\n    base_url: {oa.url}/v1\n    api_key_env: E2E_KEY\n"
        "    models: {gpt-4o: {price: {input_per_mtok: 1000, output_per_mtok: 0}}}\n"
        # 1,000 tokens of input at $1000/M: $1 budget fits a short prompt, not an image
        "budgets:\n  all: {limit_usd: 1}\n"
        "routes:\n  r:\n    prompt: 'Hi'\n    max_tokens: 10\n    fallback: [oa/gpt-4o]\n"
    )
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        await router.complete("r", deadline_s=5)
        # 768 x 2048: OpenAI's largest high-detail count, 8 tiles (1,445 tokens)
        image = [Message("user", [Image(data=png_header(2048, 768), mime="image/png")])]
        with pytest.raises(BudgetExceededError):
            await router.complete("r", messages=image, deadline_s=5)
    assert len(oa.requests) == 1


def test_cli_render_of_a_route_without_prompt_is_a_request_error(tmp_path: Path) -> None:
    """The CLI passes no history: a route without prompt cannot be rendered (exit 4,
    the error's route and index in the JSON)."""
    import json
    import os
    import subprocess
    import sys

    path = write_config(
        tmp_path,
        """
        providers:
          m: {kind: mock, models: {x: {}}}
        routes:
          chat: {system: "Be brief.", fallback: [m/x]}
        """,
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "router", "render", "chat", "--config", str(path), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 4, proc.stderr
    err = json.loads(proc.stdout or proc.stderr)["error"]
    assert err["type"] == "RequestError"
    assert (err["route"], err["index"], err["provider"]) == ("chat", None, None)


async def test_an_image_url_to_ollama_is_a_request_error_naming_the_provider(
    tmp_path: Path, upstream_factory: Factory
) -> None:
    ol = await upstream_factory()
    body = (
        "providers:\n"
        f"  ol:\n    kind: ollama\n    base_url: {ol.url}\n    models: {{llama3.2: {{}}}}\n"
        "routes:\n  r:\n    fallback: [ol/llama3.2]\n"
    )
    image = [Message("user", [Text("what is this?"), Image(url="https://x/y.png")])]
    async with Router.from_yaml(write_config(tmp_path, body)) as router:
        with pytest.raises(RequestError, match="Ollama takes images only as bytes") as info:
            await router.complete("r", messages=image, deadline_s=5)
        assert router.calls_in_flight == 0
    assert info.value.provider == "ol"
    assert ol.requests == []


async def test_a_streamed_answer_carries_its_tool_calls(
    tmp_path: Path, upstream_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_KEY", "test-key")
    oa, an = await upstream_factory(), await upstream_factory()
    oa.route("/v1/chat/completions", replay("openai/openai-chat-200-sse-tool-calls.meta.json"))
    path = write_config(tmp_path, chain_yaml(oa.url, an.url, prompt="Multiply."))
    async with (
        Router.from_yaml(path) as router,
        router.stream("r", deadline_s=5) as stream,
    ):
        [delta async for delta in stream]
    assert stream.completion.tool_calls == [
        ToolCall("call_1EYWDzueHEp8OsB8jJSEp7WB", "multiply", {"a": 1231, "b": 2331})
    ]


def test_fit_counts_the_history(tmp_path: Path) -> None:
    """A window that holds the bare prompt cannot hold a history with an image."""
    plan = make_config(
        tmp_path,
        """
        providers:
          m: {kind: mock, models: {x: {context_window: 1200}}}
        routes:
          r: {prompt: "Go.", max_tokens: 100, fallback: [m/x]}
        """,
    )
    (bare,) = plan.fit("r", {})
    assert bare.fits is True
    image = [Message("user", [Image(data=png(), mime="image/png")])]
    (with_image,) = plan.fit("r", {}, messages=image)
    assert with_image.fits is False
    assert with_image.input_tokens is not None and with_image.input_tokens > IMAGE_TOKENS
