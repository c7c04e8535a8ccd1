"""Tools a model may call: their definitions, the choice, and the check of their calls.

A :class:`Tool` is a name, a description and a JSON Schema (Draft 2020-12) for its
arguments. Tools come from a route's ``tools:`` list in providers.yaml (checked at
load) or from a call (``router.complete(..., tools=[...])``). Each adapter turns a
:class:`ToolSet` into its wire fields (``Adapter.tool_fields``); the router checks
every tool call of an answer against its tool's schema (:meth:`ToolSet.problems`):
arguments that are not a JSON object, a tool that was not offered or arguments the
schema rejects are an :class:`~router.errors.InvalidOutputError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.errors import RequestError
from router.estimate import estimate_text_tokens
from router.types import ToolCall

__all__ = ["TOOL_CHOICES", "Tool", "ToolSet", "schema_problems", "tool_name_problem"]

# The tool_choice values that name no tool.
TOOL_CHOICES = ("auto", "none", "required")

# What every provider accepts as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Most validator messages kept per call (the first ones name the problem).
_MAX_PROBLEMS = 5


def tool_name_problem(name: object) -> str | None:
    """What is wrong with a tool name, or None (1-64 letters, digits, ``_`` or ``-``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        return f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'"
    return None


def schema_problems(schema: object) -> list[str]:
    """What is wrong with a tool's ``parameters`` as a JSON Schema (Draft 2020-12)."""
    if not isinstance(schema, dict):
        return [f"parameters must be a JSON Schema object, not {type(schema).__name__}"]
    # Imported when tools are first used: a config without tools does not pay for it.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return [
            f"parameters is not a valid JSON Schema: {exc.message}"
            + (f" (at {where})" if where else "")
        ]
    if schema.get("type", "object") != "object":
        return [f"parameters must describe an object (type: object), not {schema['type']!r}"]
    return []


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: ``name``, what it does, and ``parameters``, the JSON
    Schema of its arguments (an object). Checked when built: a bad name or schema is
    a RequestError."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    def __post_init__(self) -> None:
        problem = tool_name_problem(self.name)
        problems = [problem] if problem else []
        problems += schema_problems(self.parameters)
        if problems:
            raise RequestError(f"tool {self.name!r}: " + "; ".join(problems))

    def __hash__(self) -> int:
        # parameters is a dict: hashed as its canonical JSON text, so tools can be
        # kept in sets and used as keys (equal tools, equal hashes).
        return hash((self.name, self.description, json.dumps(self.parameters, sort_keys=True)))

    @classmethod
    def from_model(
        cls, model: type[Any], name: str | None = None, description: str | None = None
    ) -> Tool:
        """A tool whose arguments are ``model``'s fields (a pydantic model's JSON
        schema). ``name`` defaults to the model's class name, ``description`` to its
        docstring (else the empty string)."""
        schema = model.model_json_schema()
        doc = description if description is not None else (model.__doc__ or "").strip()
        return cls(name or model.__name__, doc, schema)


@dataclass(frozen=True, slots=True)
class ToolSet:
    """The tools of one call (or route) and its ``tool_choice``, with their validators
    built once."""

    tools: tuple[Tool, ...]
    choice: str = "auto"  # auto | none | required | a tool's name
    # By tool name: jsonschema's Draft202012Validator (imported when tools are used).
    _validators: Mapping[str, Any] = field(
        init=False, compare=False, repr=False, default_factory=dict
    )
    # The estimated input tokens of the definitions (providers bill them as prompt).
    tokens: int = field(init=False, compare=False, repr=False, default=0)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RequestError(f"tools: {', '.join(map(repr, dupes))} declared more than once")
        if self.choice not in TOOL_CHOICES and self.choice not in names:
            raise RequestError(
                f"tool_choice {self.choice!r} is not auto, none, required or a tool's name"
                f" (tools: {', '.join(names) or 'none'})"
            )
        from jsonschema import Draft202012Validator

        validators = {t.name: Draft202012Validator(t.parameters) for t in self.tools}
        object.__setattr__(self, "_validators", validators)
        text = json.dumps(
            [[t.name, t.description, t.parameters] for t in self.tools], separators=(",", ":")
        )
        object.__setattr__(self, "tokens", estimate_text_tokens(text))

    @classmethod
    def of(cls, tools: Sequence[Tool], choice: str | None) -> ToolSet:
        """A ToolSet from a call's arguments (``choice`` None: auto)."""
        for t in tools:
            if not isinstance(t, Tool):
                raise RequestError(f"tools: {type(t).__name__} is not a Tool")
        return cls(tuple(tools), choice or "auto")

    def offers(self, name: str) -> bool:
        """Whether a tool of this name is offered."""
        return name in self._validators

    @property
    def sent(self) -> bool:
        """Whether the tools go to the provider at all (not with tool_choice none)."""
        return bool(self.tools) and self.choice != "none"

    def problems(self, calls: Sequence[ToolCall]) -> list[str]:
        """What is wrong with an answer's tool calls: arguments that were not a JSON
        object, a tool not offered, arguments its schema rejects. Empty: all fine."""
        out: list[str] = []
        for i, call in enumerate(calls):
            where = f"tool call {i} ({call.name!r}, id {call.id!r})"
            validator = self._validators.get(call.name)
            if validator is None:
                out.append(f"{where}: no such tool was offered")
            elif call.invalid_arguments:
                out.append(f"{where}: arguments are not a JSON object")
            else:
                for err in list(validator.iter_errors(call.arguments))[:_MAX_PROBLEMS]:
                    at = "/".join(str(p) for p in err.absolute_path)
                    out.append(f"{where}: {at + ': ' if at else ''}{err.message}")
        return out


def call_tools(
    route: str,
    declared: ToolSet | None,
    tools: Sequence[Tool] | None,
    choice: str | None,
) -> ToolSet | None:
    """The tools a call offers: the route's (``declared``), unless the call passes
    its own ``tools`` (an empty list: none) or a ``tool_choice``. A call's tools
    without a tool_choice take the route's when it names no tool, else auto."""
    if tools is None and choice is None:
        return declared
    try:
        if tools is None:
            if declared is None:
                raise RequestError(f"tool_choice={choice!r} but the route declares no tools")
            return ToolSet(declared.tools, choice or "auto")
        if not tools:
            return None
        if choice is None and declared is not None and declared.choice in TOOL_CHOICES:
            choice = declared.choice
        return ToolSet.of(tools, choice)
    except RequestError as exc:
        raise RequestError(f"route {route!r}: {exc.message}", route=route) from None
