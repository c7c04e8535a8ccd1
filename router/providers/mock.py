"""The mock provider: a deterministic offline upstream that speaks OpenAI's wire format.

:class:`MockAdapter` is the OpenAI adapter without a key. :class:`MockUpstream`
plays the server: pure and deterministic (no I/O, no clock, no randomness), it
turns a request into a :class:`MockResponse`; the router serves it through the
transport as an in-process handler, so mock calls take the same path as real
ones (admission, retries, parsing, costs).

Behaviour, from the provider's ``mock:`` settings:

- the first ``len(failures)`` chat requests answer with those statuses in
  order, each with an OpenAI-shaped error body (429 carries ``retry-after: 1``);
- then every chat request succeeds with ``reply`` (``{model}`` and ``{prompt}``,
  the last user message, substituted literally) and a deterministic usage:
  prompt tokens = ceil(characters of all messages' text / 4), completion tokens =
  ceil(characters of the reply / 4);
- with ``tool_calls`` set, a request that offers ``tools`` (and whose
  ``tool_choice`` is not ``"none"``) and does not end with a tool result is
  answered with those calls instead (ids ``call_<request>_<index>``, no text,
  finish reason ``tool_calls``); a request ending with tool results gets ``reply``,
  so a tool loop ends after one round;
- ``stream: true`` gets an SSE body of word chunks, a finish chunk, a usage
  chunk when ``stream_options.include_usage`` asks for it (as OpenAI does), and
  ``[DONE]``;
- a request for structured output (``response_format`` of type ``json_schema``
  or ``json_object``, or a forced ``tool_choice``) is answered with JSON: the
  ``output`` setting when it is given (any JSON value, sent as it is, so that a
  test can make the router see an answer that breaks the schema), else a
  deterministic minimal instance of the schema (:func:`router.output.example_instance`;
  for ``json_object``, the schema the system message carries, else ``{}``); a
  forced tool gets it as the tool call's arguments;
- ``GET .../models`` lists the model names given to the constructor (the
  provider's configured models; the mock serves any name it is asked for);
- every response is delayed by ``latency_s`` (the handler sleeps, not this class).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import ValidationError

from router.output import INSTRUCTION, example_instance
from router.providers.base import Wire
from router.providers.openai import OpenAIAdapter

_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"
# Word-sized stream chunks: each run of non-space characters with the spaces after it.
_WORDS = re.compile(r"\S+\s*|\s+")

# status -> (OpenAI error type, code) for the failure bodies.
_FAILURE_SHAPES = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class MockBehaviour(Protocol):
    """What the mock upstream reads of a provider's ``mock:`` settings.

    The config's ``MockSettings`` is one; adapters know no config, so the
    upstream takes anything with these three fields.
    """

    @property
    def reply(self) -> str: ...

    @property
    def latency_s(self) -> float: ...

    @property
    def failures(self) -> Sequence[int]: ...

    @property
    def tool_calls(self) -> Sequence[MockCall]: ...


class MockCall(Protocol):
    """A tool call the mock answers with: a name and its arguments."""

    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> dict[str, Any]: ...


class MockAdapter(OpenAIAdapter):
    """The OpenAI wire format with no key."""

    __slots__ = ()
    api_root: ClassVar[str] = "mock://local"

    def _auth(self, api_key: str | None) -> dict[str, str]:
        return {}


@dataclass(slots=True)
class MockResponse:
    """What the mock upstream answers: wait this long, then send this."""

    delay_s: float
    status: int
    headers: dict[str, str]
    body: bytes


class _Msg(Wire):
    role: str
    # A string, a list of content parts (text, image_url), or null (an assistant turn
    # of tool calls only); the mock reads the text of it.
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class _StreamOptions(Wire):
    include_usage: bool = False


class _ChatRequest(Wire):
    model: str
    messages: list[_Msg]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None


def _instructed_schema(messages: list[_Msg]) -> Any:
    """The schema a json_object request carries in its system message (None: none)."""
    for m in messages:
        at = m.text.find(INSTRUCTION) if m.role == "system" else -1
        if at >= 0:
            try:
                return json.loads(m.text[at + len(INSTRUCTION) :])
            except ValueError:
                return None
    return None


def _structured(request: _ChatRequest, settings: MockBehaviour) -> tuple[str, str | None] | None:
    """The JSON answer of a structured-output request, and the forced tool's name when
    it asked for one (None: a plain request)."""
    configured = getattr(settings, "output", None)
    fmt = request.response_format or {}
    choice = request.tool_choice
    forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if forced is not None:
        tool = next(
            (t for t in request.tools or () if t.get("function", {}).get("name") == forced), {}
        )
        schema: Any = tool.get("function", {}).get("parameters", {})
    elif fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema", {}).get("schema", {})
    elif fmt.get("type") == "json_object":
        schema = _instructed_schema(request.messages)
    else:
        return None
    if configured is not None:
        value = configured
    else:
        value = {} if schema is None else example_instance(schema)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")), forced


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _error_body(status: int, message: str) -> bytes:
    err_type, code = _FAILURE_SHAPES.get(
        status,
        ("server_error", "server_error") if status >= 500 else ("invalid_request_error", None),
    )
    return _dumps({"error": {"message": message, "type": err_type, "param": None, "code": code}})


class MockUpstream:
    """A deterministic OpenAI-compatible server, as a pure function with a counter."""

    __slots__ = ("_chats", "_models", "_settings")

    def __init__(self, settings: MockBehaviour, models: Iterable[str] = ()) -> None:
        self._settings = settings
        # Names GET /models lists (the mock answers any model; health checks ask for these).
        self._models = list(models)
        # Chat requests answered so far; the first len(failures) of them fail.
        self._chats = 0

    def __repr__(self) -> str:
        return f"<MockUpstream chats={self._chats} failures={list(self._settings.failures)}>"

    def respond(self, method: str, path: str, body: bytes) -> MockResponse:
        """Answer one request (``path`` may carry the base URL's path and a query)."""
        route = path.split("?", 1)[0].rstrip("/")
        if method == "POST" and route.endswith("/chat/completions"):
            return self._chat(body)
        if method == "GET" and route.endswith("/models"):
            data = [{"id": m, "object": "model", "owned_by": "mock"} for m in self._models]
            return self._send(200, _JSON, _dumps({"object": "list", "data": data}))
        return self._send(404, _JSON, _error_body(404, f"mock: no route for {method} {path}"))

    def _send(self, status: int, content_type: str, body: bytes) -> MockResponse:
        head = {"content-type": content_type, "x-request-id": f"mock-req-{self._chats}"}
        return MockResponse(self._settings.latency_s, status, head, body)

    def _chat(self, body: bytes) -> MockResponse:
        self._chats += 1
        n = self._chats
        failures = self._settings.failures
        if n <= len(failures):
            status = failures[n - 1]
            message = f"mock failure {n} of {len(failures)}: HTTP {status}"
            response = self._send(status, _JSON, _error_body(status, message))
            if status == 429:
                response.headers["retry-after"] = "1"
            return response
        try:
            request = _ChatRequest.model_validate_json(body)
        except ValidationError as exc:
            message = f"mock: invalid chat request ({exc.error_count()} problem(s))"
            return self._send(400, _JSON, _error_body(400, message))
        prompt = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        reply = self._settings.reply.replace("{model}", request.model).replace("{prompt}", prompt)
        structured = (
            None
            if request.response_format is None and request.tool_choice is None
            else _structured(request, self._settings)
        )
        calls: list[dict[str, Any]] = []
        if structured is not None:
            reply, forced = structured
            if forced is not None:  # the answer is the forced tool's input
                call = {"name": forced, "arguments": reply}
                calls = [{"id": f"call_mock_{n}", "type": "function", "function": call}]
                reply = ""
        else:
            calls = self._calls(request, n)
            if calls:
                reply = ""
        prompt_tokens = math.ceil(sum(len(m.text) for m in request.messages) / 4)
        completion_tokens = math.ceil((len(reply) + (len(_dumps(calls)) if calls else 0)) / 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {"id": f"mock-{n}", "created": 0, "model": request.model}
        if not request.stream:
            answer: dict[str, Any] = {"role": "assistant", "content": reply}
            if calls:
                answer = {"role": "assistant", "content": None, "tool_calls": calls}
            choice = {
                "index": 0,
                "message": answer,
                "finish_reason": "tool_calls" if calls else "stop",
            }
            doc = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            return self._send(200, _JSON, _dumps(doc))
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        return self._send(200, _SSE, _sse(head, reply, usage if include_usage else None, calls))

    def _calls(self, request: _ChatRequest, n: int) -> list[dict[str, Any]]:
        """The tool calls to answer ``request`` with (OpenAI's form), or none."""
        configured = self._settings.tool_calls
        if not configured or not request.tools or request.tool_choice == "none":
            return []
        if request.messages and request.messages[-1].role == "tool":
            return []  # the results are in: answer with text
        return [
            {
                "id": f"call_{n}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(configured)
        ]


def _sse(
    head: dict[str, Any],
    reply: str,
    usage: dict[str, int] | None,
    calls: list[dict[str, Any]] | None = None,
) -> bytes:
    chunk = {**head, "object": "chat.completion.chunk"}

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + _dumps({**chunk, "choices": choices, **extra}) + b"\n\n"

    def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": d, "finish_reason": finish}

    parts = [event([delta({"role": "assistant", "content": ""})])]
    parts += [event([delta({"content": word})]) for word in _WORDS.findall(reply)]
    for i, call in enumerate(calls or ()):
        parts.append(event([delta({"tool_calls": [{"index": i, **call}]})]))
    parts.append(event([delta({}, "tool_calls" if calls else "stop")]))
    if usage is not None:
        parts.append(event([], usage=usage))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)
