"""Structured output: the schema a call asks for, how it is asked, and checking the answer.

A route declares ``output:`` (a JSON Schema, inline or in a file beside the
templates), or a call passes ``output=`` (a pydantic model class or a JSON Schema
dict). Either becomes an :class:`OutputSpec`, made once (a route's at load). Each
step asks its provider in its model's ``structured_output`` mode
(:data:`MODES`; :data:`DEFAULT_MODES` by provider kind): the adapters build the
request from an :class:`OutputRequest`. The answer is checked by
:meth:`OutputSpec.decode`: a pydantic model's ``model_validate_json``, or
``jsonschema`` for a schema dict. What does not parse or match is an
:class:`~router.errors.InvalidOutputError` naming the problems.

Pure: no I/O. Adapters import it (the request side); the router the rest.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from router.errors import EmptyResponseError, InvalidOutputError
from router.types import Message, Reply, Text, ToolCall

__all__ = [
    "DEFAULT_MODES",
    "INSTRUCTION",
    "MODES",
    "TOOL_NAME",
    "Mode",
    "OutputRequest",
    "OutputSpec",
    "call_output",
    "checked_answer",
    "example_instance",
    "output_spec",
    "schema_problems",
    "strict_compatible",
    "with_instruction",
]

Mode = Literal["json_schema", "json_object", "tool", "none"]
MODES: tuple[Mode, ...] = ("json_schema", "json_object", "tool", "none")
# The strongest form each provider kind's API takes, when a model declares none.
DEFAULT_MODES: Mapping[str, Mode] = {
    "openai": "json_schema",
    "openai_responses": "json_schema",
    "anthropic": "tool",
    "gemini": "json_schema",
    "ollama": "json_schema",
    "mock": "json_schema",
    "azure_openai": "json_schema",
}
# The forced tool whose input is the answer (mode ``tool``).
TOOL_NAME = "respond"
TOOL_DESCRIPTION = "Give the answer. Its input is the whole answer."
# The fixed instruction added to the system message in modes json_object and none.
INSTRUCTION = (
    "Answer with a single JSON value and nothing else (no prose, no code fence)."
    " It must match this JSON Schema:\n"
)
# Longest problem list an InvalidOutputError names.
_MAX_PROBLEMS = 5
# A name OpenAI accepts for a schema (json_schema.name).
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _jsonschema() -> Any:
    """The ``jsonschema`` module (imported on first use: plain calls never load it)."""
    return importlib.import_module("jsonschema")


def schema_problems(schema: Any) -> list[str]:
    """What is wrong with ``schema`` as a JSON Schema (empty: nothing)."""
    if not isinstance(schema, Mapping):
        return [f"must be a JSON Schema object (a mapping), not {type(schema).__name__}"]
    js = _jsonschema()
    cls = js.validators.validator_for(schema, default=js.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except js.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "<schema>"
        return [f"not a valid JSON Schema: at {where}: {exc.message}"]
    return []


def strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict mode takes ``schema``: every object lists all its
    properties as required and sets ``additionalProperties: false`` (checked in
    nested schemas too)."""
    if isinstance(schema, list):
        return all(strict_compatible(s) for s in schema)
    if not isinstance(schema, Mapping):
        return True
    props = schema.get("properties")
    is_object = schema.get("type") == "object" or props is not None
    if is_object:
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or ()) != set(props or {}):
            return False
    return all(
        strict_compatible(v)
        for k, v in schema.items()
        if k not in ("required", "enum", "const", "default", "examples")
    )


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """A requested answer shape: the JSON Schema sent, and how the answer is checked."""

    schema: Mapping[str, Any]
    name: str  # sent as the schema's name (OpenAI json_schema.name)
    strict: bool  # OpenAI strict mode can take it (strict_compatible)
    model: type[BaseModel] | None = None  # decode to an instance of it
    validator: Any = field(default=None, compare=False)  # jsonschema, for a schema dict

    def decode(self, text: str, *, provider: str, model: str) -> Any:
        """The answer ``text`` checked: the model instance, or the parsed JSON.

        Raises InvalidOutputError (with the problems and the raw text) when the text
        is not JSON or does not match the schema."""
        body = _unfenced(text)
        if self.model is not None:
            try:
                return self.model.model_validate_json(body)
            except ValidationError as exc:
                problems = [
                    f"{'.'.join(str(p) for p in e['loc']) or '<answer>'}: {e['msg']}"
                    for e in exc.errors(include_url=False, include_input=False)
                ]
            raise _invalid(problems, text, provider, model)
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            problem = f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            raise _invalid([problem], text, provider, model) from None
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            raise _invalid(
                [f"{_where(e.absolute_path)}: {e.message}" for e in errors], text, provider, model
            )
        return value


def _where(path: Sequence[Any]) -> str:
    return "/".join(str(p) for p in path) or "<answer>"


def _unfenced(text: str) -> str:
    """The text without one surrounding Markdown code fence (json_object and none modes)."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


def _invalid(problems: list[str], raw: str, provider: str, model: str) -> InvalidOutputError:
    shown = problems[:_MAX_PROBLEMS]
    more = len(problems) - len(shown)
    summary = "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")
    if not raw.strip():
        summary = "the answer is empty"
        problems = [summary]
    return InvalidOutputError(
        f"the answer does not match the requested output: {summary}",
        raw=raw,
        problems=problems,
        provider=provider,
        model=model,
        status=200,
    )


def output_spec(value: Any, name: str = "output") -> OutputSpec:
    """An OutputSpec from a pydantic model class or a JSON Schema mapping.

    Raises ValueError naming what is wrong (the caller adds where)."""
    if isinstance(value, type) and issubclass(value, BaseModel):
        schema = value.model_json_schema()
        return OutputSpec(schema, _name(value.__name__), strict_compatible(schema), model=value)
    problems = schema_problems(value)
    if problems:
        raise ValueError(problems[0])
    schema = json.loads(json.dumps(value))  # a plain, JSON-safe copy
    title = schema.get("title")
    js = _jsonschema()
    validator = js.validators.validator_for(schema, default=js.Draft202012Validator)(schema)
    return OutputSpec(
        schema,
        _name(title if isinstance(title, str) else name),
        strict_compatible(schema),
        validator=validator,
    )


# OutputSpecs made for calls' output= arguments, by model class or schema text.
_CALL_SPECS: dict[Any, OutputSpec] = {}
_CALL_SPECS_MAX = 256


def call_output(value: Any) -> OutputSpec:
    """The OutputSpec of a call's ``output=`` (a pydantic model class or a JSON Schema
    mapping), made once per class or schema and kept (at most 256).

    Raises ValueError naming what is wrong."""
    if isinstance(value, OutputSpec):
        return value
    if isinstance(value, type):
        if not issubclass(value, BaseModel):
            raise ValueError(
                f"output must be a pydantic model class or a JSON Schema mapping, not {value!r}"
            )
        key: Any = value
    elif isinstance(value, Mapping):
        try:
            key = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"output: the schema is not JSON: {exc}") from None
    else:
        raise ValueError(
            "output must be a pydantic model class or a JSON Schema mapping,"
            f" not {type(value).__name__}"
        )
    spec = _CALL_SPECS.get(key)
    if spec is None:
        spec = output_spec(value)
        if len(_CALL_SPECS) >= _CALL_SPECS_MAX:
            _CALL_SPECS.pop(next(iter(_CALL_SPECS)))
        _CALL_SPECS[key] = spec
    return spec


def _name(text: str) -> str:
    return _NAME_CHARS.sub("_", text)[:64] or "output"


@dataclass(frozen=True, slots=True)
class OutputRequest:
    """What an adapter needs to ask for structured output: the spec, the mode, and
    the call's own ``tool_choice`` (None: the call offers no tools of its own)."""

    spec: OutputSpec
    mode: Mode
    tool_choice: str | None = None

    @property
    def answer_choice(self) -> Literal["answer", "any", "keep"]:
        """How mode ``tool`` sets the request's tool choice: ``answer`` forces the
        answer tool (no tools of the call's own, or tool_choice none); ``any`` asks
        for some tool call, the call's own or the answer (auto, required); ``keep``
        leaves the call's own named tool forced (that turn is a tool turn)."""
        choice = self.tool_choice
        if choice is None or choice == "none":
            return "answer"
        return "any" if choice in ("auto", "required") else "keep"

    def answer(self, reply: Reply) -> str:
        """The answer's JSON text: in mode ``tool`` the forced tool call's arguments
        (the call is taken out of ``reply.tool_calls``), else the reply's text."""
        if self.mode != "tool":
            return reply.text
        for call in reply.tool_calls:
            if call.name == TOOL_NAME:
                reply.tool_calls = [c for c in reply.tool_calls if c is not call]
                return _arguments_text(call)
        return reply.text

    def instruction(self) -> str:
        """The system-prompt instruction of modes ``json_object`` and ``none``."""
        return INSTRUCTION + json.dumps(self.spec.schema, separators=(",", ":"))


def _arguments_text(call: ToolCall) -> str:
    if call.arguments_raw is not None:
        return call.arguments_raw
    return json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"))


def with_instruction(messages: Sequence[Message], output: OutputRequest) -> list[Message]:
    """``messages`` with the output instruction at the end of the system message (one
    is added first when there is none): modes ``json_object`` and ``none``."""
    text = output.instruction()
    out = list(messages)
    if out and out[0].role == "system":
        first = out[0]
        content = first.content
        joined = (
            content
            if isinstance(content, str)
            else "".join(p.text for p in content if isinstance(p, Text))
        )
        out[0] = Message("system", f"{joined}\n\n{text}" if joined else text, first.cache)
    else:
        out.insert(0, Message("system", text))
    return out


# -- checking an answer -------------------------------------------------------------


def checked_answer(
    reply: Reply,
    spec: OutputSpec | None,
    mode: Mode,
    *,
    accept_truncated: bool,
    provider: str,
    model: str,
) -> Any:
    """The checked output of ``reply`` (None when no output was asked), or the error.

    - no text, no tool call (and so no output): EmptyResponseError;
    - output asked and the answer cut off (``finish_reason`` length):
      InvalidOutputError, even when what arrived parses;
    - output asked and the answer not JSON, or not matching: InvalidOutputError.

    With ``accept_truncated`` the first two are a success: the output is what
    the cut-off answer decodes to when it still matches, else None.

    In mode ``tool`` the forced call becomes the answer: its arguments are the
    reply's text (when the reply has none) and it leaves ``reply.tool_calls``.

    An answer that calls the call's own tools is a tool turn, not the final answer:
    its output is None and nothing is checked (the app runs the tools and sends the
    results; the answer after them carries the output).
    """
    text = reply.text
    if spec is not None and mode == "tool":
        calls = len(reply.tool_calls)
        text = OutputRequest(spec, mode).answer(reply)
        if len(reply.tool_calls) < calls:  # the forced call was there: it is the answer
            if not reply.text:
                reply.text = text
        elif reply.tool_calls:
            return None
    elif spec is not None and reply.tool_calls:
        return None
    if not text and not reply.tool_calls:
        if accept_truncated:
            return None
        why = "no text, no tool call and no output"
        if reply.finish_reason == "length":
            why += " (max_tokens was reached: spent on reasoning?)"
        raise EmptyResponseError(f"empty answer: {why}", provider=provider, model=model, status=200)
    if spec is None:
        return None
    if reply.finish_reason == "length":
        if accept_truncated:
            try:
                return spec.decode(text, provider=provider, model=model)
            except InvalidOutputError:
                return None
        raise InvalidOutputError(
            "the answer was cut off at max_tokens (finish_reason length)",
            raw=text,
            problems=("cut off at max_tokens",),
            provider=provider,
            model=model,
            status=200,
        )
    return spec.decode(text, provider=provider, model=model)


# -- the mock's answer: a minimal valid instance of a schema -------------------------


def example_instance(schema: Any, root: Any = None) -> Any:
    """A deterministic, minimal value valid against ``schema`` (the mock provider's
    answer): ``const``, else the first ``enum`` value, else the first of
    ``anyOf``/``oneOf``, else by ``type``: an object with every required property
    (all properties when none are listed), a list of ``minItems`` items, the least
    number within ``minimum``/``exclusiveMinimum``, a string of ``minLength``
    ``x`` characters, false, null. Local ``$ref`` (``#/$defs/...``) is followed."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping):
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return example_instance(target, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_instance(schema[key][0], root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            if isinstance(sub, Mapping):
                merged.update(sub)
        return example_instance(merged, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        names = schema.get("required") or list(props)
        return {n: example_instance(props.get(n, {}), root) for n in names}
    if kind == "array":
        return [example_instance(schema.get("items", {}), root)] * int(schema.get("minItems", 0))
    if kind in ("integer", "number"):
        return _least_number(schema, kind)
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind == "boolean":
        return False
    return None


def _least_number(schema: Mapping[str, Any], kind: str) -> int | float:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
        value: int | float = exclusive + 1 if kind == "integer" else exclusive + 0.5
        low = value if low is None or value > low else low
    if low is None:
        high = schema.get("maximum")
        low = 0 if high is None or high >= 0 else high
    return int(low) if kind == "integer" and low == int(low) else low
