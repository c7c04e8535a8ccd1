"""Messages as JSON (router.transcript): a conversation dumped, stored as JSON text and
loaded back is the same conversation; a bad document is a RequestError naming the
message and the field; ``router complete --messages FILE`` sends the history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from router import (
    Image,
    Message,
    RequestError,
    Text,
    ToolCall,
    ToolResult,
    dump_messages,
    load_messages,
)
from tests.test_cli import cli
from tests.test_conversations import conversations

PNG = b"\x89PNG\r\n\x1a\n\x00\x00"


def round_trip(messages: list[Message]) -> list[Message]:
    return load_messages(json.loads(json.dumps(dump_messages(messages))))


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_any_conversation_survives_json(messages: list[Message]) -> None:
    assert round_trip(messages) == messages


def test_every_field_survives_json() -> None:
    messages = [
        Message("system", "Be terse.", cache=True),
        Message(
            "user",
            [Text("Chart?"), Image(data=PNG, mime="image/png"), Image(url="https://x/y.png")],
        ),
        Message(
            "assistant",
            [
                Text("Looking."),
                ToolCall("c1", "quote", {"ticker": "AAPL"}, signature="sig=="),
                ToolCall("c2", "quote", {}, arguments_raw="{not json"),
            ],
        ),
        Message(
            "tool",
            [
                ToolResult("c1", "189.5"),
                ToolResult("c2", [Text("bad arguments")], is_error=True),
            ],
        ),
    ]
    doc = dump_messages(messages)
    assert doc[0] == {"role": "system", "content": "Be terse.", "cache": True}
    assert doc[1]["content"][1] == {
        "type": "image",
        "data": "iVBORw0KGgoAAA==",
        "mime": "image/png",
    }
    assert doc[2]["content"][1] == {
        "type": "tool_call",
        "id": "c1",
        "name": "quote",
        "arguments": {"ticker": "AAPL"},
        "signature": "sig==",
    }
    assert doc[3]["content"][1] == {
        "type": "tool_result",
        "id": "c2",
        "content": [{"type": "text", "text": "bad arguments"}],
        "is_error": True,
    }
    assert round_trip(messages) == messages


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"role": "user"}, "messages: expected a list of messages, got dict"),
        (["hi"], "messages[0]: expected an object with role and content, got str"),
        ([{"role": "bot", "content": "x"}], "messages[0].role: 'bot' is not one of"),
        ([{"role": "user", "content": 3}], "messages[0].content: expected text or a list"),
        ([{"role": "user", "content": "x", "name": "a"}], "messages[0]: unknown field 'name'"),
        (
            [{"role": "user", "content": "x"}, {"role": "user", "content": [{"type": "audio"}]}],
            "messages[1].content[0].type: 'audio' is not one of",
        ),
        (
            [{"role": "assistant", "content": [{"type": "tool_call", "id": "c", "name": 5}]}],
            "messages[0].content[0].name: expected text, got int",
        ),
        (
            [{"role": "user", "content": [{"type": "image", "data": "%%%"}]}],
            "messages[0].content[0].data: not base64",
        ),
        (
            [{"role": "user", "content": [{"type": "image", "url": "u", "data": "AA=="}]}],
            "messages[0].content[0]: an image has a url or base64 data",
        ),
        (
            [{"role": "tool", "content": [{"type": "tool_result", "id": "c", "content": [
                {"type": "tool_call", "id": "d", "name": "n"}]}]}],
            "messages[0].content[0].content[0].type: 'tool_call' is not one of image, text",
        ),
    ],
)  # fmt: skip
def test_a_bad_document_names_the_message_and_field(doc: Any, message: str) -> None:
    with pytest.raises(RequestError) as info:
        load_messages(doc)
    assert str(info.value).startswith(message), str(info.value)


CONFIG = """\
version: 1
providers:
  m: {kind: mock, models: {m1: {}}, mock: {reply: "You said: {prompt}"}}
routes:
  chat:
    system: You are terse.
    fallback: [m/m1]
"""


def test_the_cli_sends_a_history_file(tmp_path: Path) -> None:
    (tmp_path / "providers.yaml").write_text(CONFIG)
    history = [
        Message("user", "What is AAPL at?"),
        Message("assistant", "189.5"),
        Message("user", "And MSFT?"),
    ]
    (tmp_path / "chat.json").write_text(json.dumps(dump_messages(history)))
    r = cli("complete", "chat", "--messages", "chat.json", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["text"] == "You said: And MSFT?"
    (tmp_path / "bad.json").write_text('[{"role": "user", "content": [{"type": "video"}]}]')
    bad = cli("complete", "chat", "--messages", "bad.json", cwd=tmp_path)
    assert bad.code == 4 and "messages[0].content[0].type: 'video'" in bad.err
    missing = cli("complete", "chat", "--messages", "nope.json", cwd=tmp_path)
    assert missing.code == 2 and "--messages nope.json: file not found" in missing.err
