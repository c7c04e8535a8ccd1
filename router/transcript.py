"""Messages as JSON data: to keep a conversation (a database row, a file) and load it
back, and for the command line's ``--messages FILE``.

The form follows :mod:`router.types` field for field. A message is ``{"role",
"content"}`` (plus ``"cache": true`` on a prompt-cache breakpoint), where
``content`` is a string or a list of parts, each with its ``type``:

- ``{"type": "text", "text": ...}``
- ``{"type": "image", "url": ...}`` or ``{"type": "image", "data": <base64>, "mime": ...}``
- ``{"type": "tool_call", "id", "name", "arguments": {...}}``, plus ``arguments_raw``
  (arguments that were not a JSON object, as received) and ``signature`` (Gemini's
  thought signature, which Gemini 3 requires back) when they are set
- ``{"type": "tool_result", "id", "content": <text or text/image parts>, "is_error"}``

Loading checks the shapes and raises :class:`~router.errors.RequestError` naming the
message index and the field; the conversation's own rules (a result for a call that
never appeared, ...) are checked when the history is used (router.conversation).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, cast, get_args

from router.errors import RequestError
from router.types import Image, Message, Part, Role, Text, ToolCall, ToolResult

__all__ = ["dump_messages", "load_messages"]

_ROLES = frozenset(get_args(Role))


def dump_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """``messages`` as JSON-ready data (``json.dumps`` takes it as it is)."""
    out = []
    for m in messages:
        doc: dict[str, Any] = {"role": m.role, "content": _dump_content(m.content)}
        if m.cache:
            doc["cache"] = True
        out.append(doc)
    return out


def _dump_content(content: str | Sequence[Part]) -> str | list[dict[str, Any]]:
    return content if isinstance(content, str) else [_dump_part(p) for p in content]


def _dump_part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        if part.data is None:
            return {"type": "image", "url": part.url}
        data = base64.b64encode(part.data).decode("ascii")
        return {"type": "image", "data": data, "mime": part.mime}
    if isinstance(part, ToolCall):
        doc: dict[str, Any] = {
            "type": "tool_call",
            "id": part.id,
            "name": part.name,
            "arguments": part.arguments,
        }
        if part.arguments_raw is not None:
            doc["arguments_raw"] = part.arguments_raw
        if part.signature is not None:
            doc["signature"] = part.signature
        return doc
    return {
        "type": "tool_result",
        "id": part.call_id,
        "content": _dump_content(part.content),
        "is_error": part.is_error,
    }


def load_messages(data: Any) -> list[Message]:
    """The messages ``data`` (a list, as :func:`dump_messages` makes) describes."""
    if not isinstance(data, list):
        raise RequestError(f"messages: expected a list of messages, got {_kind(data)}")
    return [_load_message(i, m) for i, m in enumerate(data)]


def _load_message(i: int, doc: Any) -> Message:
    where = f"messages[{i}]"
    if not isinstance(doc, Mapping):
        raise RequestError(f"{where}: expected an object with role and content, got {_kind(doc)}")
    _no_other_keys(where, doc, {"role", "content", "cache"})
    role = doc.get("role")
    if role not in _ROLES:
        raise RequestError(f"{where}.role: {role!r} is not one of {', '.join(sorted(_ROLES))}")
    cache = doc.get("cache", False)
    if not isinstance(cache, bool):
        raise RequestError(f"{where}.cache: expected true or false, got {_kind(cache)}")
    content = _load_content(f"{where}.content", doc.get("content"), _PARTS)
    return Message(cast(Role, role), content, cache)


def _load_content(where: str, content: Any, allowed: frozenset[str]) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where}: expected text or a list of parts, got {_kind(content)}")
    return [_load_part(f"{where}[{j}]", p, allowed) for j, p in enumerate(content)]


_PARTS = frozenset({"text", "image", "tool_call", "tool_result"})
_CALL_KEYS = {"type", "id", "name", "arguments", "arguments_raw", "signature"}
_RESULT_PARTS = frozenset({"text", "image"})


def _load_part(where: str, doc: Any, allowed: frozenset[str]) -> Part:
    if not isinstance(doc, Mapping):
        raise RequestError(f"{where}: expected a part object, got {_kind(doc)}")
    kind = doc.get("type")
    if kind not in allowed:
        raise RequestError(f"{where}.type: {kind!r} is not one of {', '.join(sorted(allowed))}")
    if kind == "text":
        _no_other_keys(where, doc, {"type", "text"})
        return Text(_text(where, doc, "text"))
    if kind == "image":
        return _load_image(where, doc)
    if kind == "tool_call":
        _no_other_keys(where, doc, _CALL_KEYS)
        arguments = doc.get("arguments", {})
        if not isinstance(arguments, dict):
            raise RequestError(f"{where}.arguments: expected an object, got {_kind(arguments)}")
        return ToolCall(
            _text(where, doc, "id"),
            _text(where, doc, "name"),
            arguments,
            _optional_text(where, doc, "arguments_raw"),
            _optional_text(where, doc, "signature"),
        )
    _no_other_keys(where, doc, {"type", "id", "content", "is_error"})
    is_error = doc.get("is_error", False)
    if not isinstance(is_error, bool):
        raise RequestError(f"{where}.is_error: expected true or false, got {_kind(is_error)}")
    content = _load_content(f"{where}.content", doc.get("content"), _RESULT_PARTS)
    return ToolResult(_text(where, doc, "id"), content, is_error)


def _load_image(where: str, doc: Mapping[str, Any]) -> Image:
    _no_other_keys(where, doc, {"type", "url", "data", "mime"})
    if ("url" in doc) == ("data" in doc):
        raise RequestError(f"{where}: an image has a url or base64 data (with its mime), not both")
    if "url" in doc:
        return Image(url=_text(where, doc, "url"))
    try:
        data = base64.b64decode(_text(where, doc, "data"), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}.data: not base64") from None
    return Image(data=data, mime=_optional_text(where, doc, "mime"))


def _text(where: str, doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise RequestError(f"{where}.{key}: expected text, got {_kind(value)}")
    return value


def _optional_text(where: str, doc: Mapping[str, Any], key: str) -> str | None:
    return None if doc.get(key) is None else _text(where, doc, key)


def _no_other_keys(where: str, doc: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(str(k) for k in doc if k not in known)
    if extra:
        raise RequestError(f"{where}: unknown field {', '.join(map(repr, extra))}")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
