"""A caller's conversation history: checked before any traffic, then placed in a route.

``router.complete(route, vars, messages=[...])`` sends the route's ``system``
template first, then the history, then the route's ``prompt`` template as the
last user turn (a route without a ``prompt`` sends the history's last message
as the turn). :func:`check_history` refuses a history no provider would
accept, with a :class:`~router.errors.RequestError` naming the index of the
message at fault and why; :func:`compose` builds the conversation.

The rules (docs/conversations.md):

- every item is a :class:`~router.types.Message` whose role is ``user``,
  ``assistant`` or ``tool``. A ``system`` message is refused: the system text
  comes from the route's ``system`` template, and one place for it keeps every
  provider's request the same (Anthropic takes system text only at the top);
- no message is empty (an empty string or an empty list of parts);
- an image's bytes are a PNG, JPEG, GIF or WebP image (sniffed from their magic
  number; ``mime`` must name that format) of at most ``settings.max_image_bytes``;
- parts go where every provider can carry them: :class:`~router.types.Text` in
  any message, :class:`~router.types.Image` in user messages (and inside a tool
  result), :class:`~router.types.ToolCall` in assistant messages, and tool
  messages hold only :class:`~router.types.ToolResult` parts;
- a tool result answers a call made earlier in the history, once; an
  assistant turn with tool calls is followed by the results of all of them
  before the next user or assistant turn (or the route's prompt).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from router.errors import RequestError
from router.images import DEFAULT_MAX_IMAGE_BYTES, bytes_problem
from router.types import Image, Message, Text, ToolCall, ToolResult

__all__ = [
    "check_history",
    "compose",
    "decoded_call",
    "shown",
    "streamed_calls",
    "url_shown",
]

_ROLES = ("user", "assistant", "tool")


def _fail(route: str, index: int | None, why: str) -> RequestError:
    where = f"messages[{index}]: " if index is not None else ""
    return RequestError(f"route {route!r}: {where}{why}", route=route, index=index)


def _image_problem(image: Image, max_bytes: int) -> str | None:
    if (image.url is None) == (image.data is None):
        return "an Image needs exactly one of url= and data="
    if image.data is not None:
        if not isinstance(image.data, bytes | bytearray):
            return f"Image.data must be bytes, not {type(image.data).__name__}"
        if not image.mime:
            return "an Image given as data= needs mime= (e.g. 'image/png')"
        return bytes_problem(image.data, max_bytes, image.mime)
    elif not isinstance(image.url, str) or not image.url:
        return "Image.url must be a non-empty string"
    return None


def _result_problem(result: ToolResult, max_bytes: int) -> str | None:
    content = result.content
    if isinstance(content, str):
        return None if content else f"the tool result for {result.call_id!r} is empty"
    if not isinstance(content, list) or not content:
        return f"the tool result for {result.call_id!r} is empty (or not a string or list)"
    for part in content:
        if isinstance(part, Image):
            problem = _image_problem(part, max_bytes)
            if problem:
                return problem
        elif not isinstance(part, Text):
            return (
                f"the tool result for {result.call_id!r} holds a {type(part).__name__}:"
                " only Text and Image parts"
            )
    return None


def _part_problem(role: str, part: Any, max_bytes: int) -> str | None:
    """Why ``part`` cannot be in a message of ``role``; None when it can."""
    if isinstance(part, Text):
        if role == "tool":
            return "a tool message holds only ToolResult parts"
        return None if isinstance(part.text, str) else "Text.text must be a string"
    if isinstance(part, Image):
        if role != "user":
            return f"an Image goes in a user message (or a tool result), not in a {role} message"
        return _image_problem(part, max_bytes)
    if isinstance(part, ToolCall):
        if role != "assistant":
            return f"a ToolCall goes in an assistant message, not in a {role} message"
        if not isinstance(part.arguments, dict):
            return f"ToolCall {part.id!r}: arguments must be a dict"
        return None if part.id and part.name else "a ToolCall needs an id and a name"
    if isinstance(part, ToolResult):
        if role != "tool":
            return f"a ToolResult goes in a tool message, not in a {role} message"
        return _result_problem(part, max_bytes)
    return f"a part must be Text, Image, ToolCall or ToolResult, not {type(part).__name__}"


def check_history(
    route: str,
    messages: Sequence[Any],
    *,
    has_prompt: bool,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> None:
    """Raise RequestError naming the first message of ``messages`` that cannot be sent.

    ``has_prompt``: the route renders a prompt after the history (else the
    history's last message is the turn, and must be a user or tool message).
    ``max_image_bytes``: settings.max_image_bytes, the cap on an Image's data (whose
    bytes must also be a PNG, JPEG, GIF or WebP image of the type ``mime`` says).
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise _fail(
            route, None, f"messages must be a list of Message, not {type(messages).__name__}"
        )
    seen: set[str] = set()  # call ids made so far
    pending: dict[str, int] = {}  # call id -> index of its assistant turn, not yet answered
    answered: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, Message):
            raise _fail(route, i, f"not a Message but {type(m).__name__}")
        if m.role == "system":
            raise _fail(
                route,
                i,
                "a system message in the history: the route's system template is"
                " the system text (put per-call instructions in a user message)",
            )
        if m.role not in _ROLES:
            raise _fail(route, i, f"role {m.role!r} is not one of user, assistant, tool")
        content = m.content
        if isinstance(content, str):
            if not content:
                raise _fail(route, i, f"empty {m.role} message")
            if m.role == "tool":
                raise _fail(route, i, "a tool message holds ToolResult parts, not a string")
            parts: list[Any] = []
        elif isinstance(content, list):
            if not content:
                raise _fail(route, i, f"empty {m.role} message (no parts)")
            parts = content
        else:
            raise _fail(
                route, i, f"content must be a str or a list of parts, not {type(content).__name__}"
            )
        if pending and m.role != "tool":
            missing = ", ".join(repr(c) for c in pending)
            raise _fail(
                route,
                i,
                f"a {m.role} message before the results of tool call(s) {missing}"
                f" (made at messages[{next(iter(pending.values()))}]): each call needs its"
                " result first",
            )
        for part in parts:
            problem = _part_problem(m.role, part, max_image_bytes)
            if problem:
                raise _fail(route, i, problem)
            if isinstance(part, ToolCall):
                if part.id in seen:
                    raise _fail(route, i, f"tool call id {part.id!r} is used twice")
                seen.add(part.id)
                pending[part.id] = i
            elif isinstance(part, ToolResult):
                if part.call_id not in seen:
                    raise _fail(
                        route,
                        i,
                        f"tool result for call id {part.call_id!r}, which no earlier"
                        " assistant message made",
                    )
                if part.call_id in answered:
                    raise _fail(route, i, f"a second tool result for call id {part.call_id!r}")
                answered.add(part.call_id)
                pending.pop(part.call_id, None)
    if pending:
        missing = ", ".join(repr(c) for c in pending)
        at = next(iter(pending.values()))
        raise _fail(route, at, f"tool call(s) {missing} have no result in the history")
    if not has_prompt:
        if not messages:
            raise _fail(
                route,
                None,
                "the route has no prompt: pass messages= ending with a user or tool message",
            )
        last = messages[-1]
        if last.role not in ("user", "tool"):
            raise _fail(
                route,
                len(messages) - 1,
                f"the route has no prompt, so the last message is"
                f" the turn and must be a user or tool message, not {last.role}",
            )


def compose(
    route: str,
    rendered: list[Message],
    history: Sequence[Any],
    *,
    has_prompt: bool,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> list[Message]:
    """The conversation to send: the route's system message(s), the checked
    ``history``, then the route's prompt (when it has one)."""
    check_history(route, history, has_prompt=has_prompt, max_image_bytes=max_image_bytes)
    system = [m for m in rendered if m.role == "system"]
    rest = [m for m in rendered if m.role != "system"]
    return [*system, *history, *rest]


def decoded_call(call_id: str, name: str, arguments: Any, signature: str | None = None) -> ToolCall:
    """A ToolCall from a reply: ``arguments`` is a JSON object (Anthropic, Ollama,
    Gemini) or JSON text (OpenAI). Anything that is not an object is kept as text in
    ``arguments_raw`` with ``arguments`` empty; an empty or missing text is ``{}``.
    ``signature`` is the provider's token to send back with the call (Gemini)."""
    if isinstance(arguments, dict):
        return ToolCall(call_id, name, arguments, None, signature)
    if arguments is None or arguments == "":
        return ToolCall(call_id, name, {}, None, signature)
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return ToolCall(call_id, name, value, None, signature)
        return ToolCall(call_id, name, {}, arguments, signature)
    return ToolCall(call_id, name, {}, json.dumps(arguments, ensure_ascii=False), signature)


class WireFunction(Protocol):
    """A function-call object as OpenAI-style wire formats decode it."""

    @property
    def name(self) -> str | None: ...
    @property
    def arguments(self) -> Any: ...


class WireToolCall(Protocol):
    """A tool-call object as OpenAI-style wire formats (OpenAI, Ollama) decode it."""

    @property
    def id(self) -> str | None: ...
    @property
    def function(self) -> WireFunction | None: ...


def reply_calls(calls: Sequence[WireToolCall]) -> list[ToolCall]:
    """The ToolCalls of an OpenAI-style reply, in order; a call without an id (Ollama
    gives none) gets ``call_<index>``."""
    return [
        decoded_call(
            tc.id or f"call_{i}",
            (tc.function.name if tc.function else None) or "",
            tc.function.arguments if tc.function else None,
        )
        for i, tc in enumerate(calls)
    ]


def streamed_calls(fragments: Sequence[Mapping[str, Any]] | None) -> list[ToolCall]:
    """The tool calls of a stream, from its ``details["tool_calls"]`` fragments
    (``{"index", "id", "name", "arguments"}``: id and name come once per index, the
    ``arguments`` texts concatenate; router.providers.base)."""
    if not fragments:
        return []
    calls: dict[Any, dict[str, Any]] = {}
    for position, f in enumerate(fragments):
        key = f.get("index")
        call = calls.setdefault(position if key is None else key, {"args": []})
        for field in ("id", "name", "signature"):
            if f.get(field) and not call.get(field):
                call[field] = f[field]
        call["args"].append(f.get("arguments") or "")
    return [
        decoded_call(
            c.get("id") or f"call_{i}",
            c.get("name") or "",
            "".join(c["args"]),
            c.get("signature"),
        )
        for i, c in enumerate(calls.values())
    ]


def shown(content: str | Sequence[Any]) -> str:
    """A message's content as text for people (dry runs, the CLI): parts other than
    text as one bracketed line each; image bytes are not shown, only their size."""
    if isinstance(content, str):
        return content
    lines = []
    for p in content:
        if isinstance(p, Text):
            lines.append(p.text)
        elif isinstance(p, Image):
            what = (
                url_shown(p.url) if p.url is not None else f"{p.mime}, {len(p.data or b'')} bytes"
            )
            lines.append(f"[image: {what}]")
        elif isinstance(p, ToolCall):
            args = p.arguments_raw if p.arguments_raw is not None else json.dumps(p.arguments)
            lines.append(f"[tool call {p.id}: {p.name} {args}]")
        elif isinstance(p, ToolResult):
            flag = " (error)" if p.is_error else ""
            lines.append(f"[tool result {p.call_id}{flag}: {shown(p.content)}]")
    return "\n".join(lines)


def url_shown(url: str) -> str:
    """An image URL as errors, dry runs and traces show it: without its query string
    and fragment (a pre-signed URL carries its credential there)."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
    return url if cut < 0 else url[:cut] + "?..."
