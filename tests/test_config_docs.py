"""docs/config.md cannot drift from the schema: every key is documented, with its real default."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from router.config import Config

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"
# How a mapping of named entries is written in a documented key path.
PLACEHOLDERS = {
    "providers": "<name>",
    "models": "<model>",
    "budgets": "<name>",
    "routes": "<name>",
    "pools": "<name>",
}
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|[^|]*\|\s*([^|]+?)\s*\|")


def _members(ann: Any) -> Iterator[Any]:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        yield from _members(typing.get_args(ann)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(ann):
            yield from _members(arg)
    else:
        yield ann


def schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every key path of the schema with its default (``...`` when required)."""
    for name, field in model.model_fields.items():
        path = prefix + name
        yield path, (... if field.is_required() else field.default)
        for t in _members(field.annotation):
            origin = typing.get_origin(t)
            if isinstance(t, type) and issubclass(t, BaseModel):
                yield from schema_keys(t, path + ".")
            elif origin is dict:
                for v in _members(typing.get_args(t)[1]):
                    if isinstance(v, type) and issubclass(v, BaseModel):
                        yield from schema_keys(v, f"{path}.{PLACEHOLDERS[name]}.")
            elif origin is list:
                for v in _members(typing.get_args(t)[0]):
                    if isinstance(v, type) and issubclass(v, BaseModel):
                        yield from schema_keys(v, f"{path}[].")


def documented() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} documented twice"
            rows[m.group(1)] = m.group(2)
    return rows


def _same(doc_value: Any, default: Any) -> bool:
    if isinstance(default, Decimal | float) and not isinstance(default, bool):
        return isinstance(doc_value, int | float) and Decimal(str(doc_value)) == Decimal(
            str(default)
        )
    return type(doc_value) is type(default) and doc_value == default


def test_every_schema_key_is_documented() -> None:
    rows = documented()
    missing = [path for path, _ in schema_keys() if path not in rows]
    assert not missing, f"keys missing from docs/config.md: {missing}"


def test_no_documented_key_is_unknown_to_the_schema() -> None:
    known = {path for path, _ in schema_keys()}
    extra = [path for path in documented() if path not in known]
    assert not extra, f"docs/config.md documents keys the schema lacks: {extra}"


def test_documented_defaults_match_the_schema() -> None:
    rows = documented()
    wrong = []
    for path, default in schema_keys():
        cell = rows[path]
        if default is ...:
            ok = cell == "*required*"
        elif isinstance(default, BaseModel):
            ok = cell == "*section*"
        else:
            ok = cell.startswith("`") and _same(yaml.safe_load(cell.strip("`")), default)
        if not ok:
            wrong.append(f"{path}: documented {cell!r}, schema {default!r}")
    assert not wrong, "\n".join(wrong)


def test_doc_states_the_template_rule_and_the_key_rules() -> None:
    text = DOC.read_text()
    assert "a *string* value of a route's `system` or `prompt` is the template" in text
    assert "a *mapping* `{file: name.j2}`" in text
    assert "`api_key_env` holds the **name** of an environment variable" in text
    assert "`optional: true`" in text


def _rel(path: str) -> tuple[Any, ...]:
    """A documented key path as a path into a config (placeholders become names)."""
    out: list[Any] = []
    for part in path.split("."):
        if part.startswith("<"):
            out.append("x")
        elif part.endswith("[]"):
            out += [part[:-2], 0]
        else:
            out.append(part)
    return tuple(out)


def test_every_bounded_number_documents_its_range() -> None:
    """The type column of a number with an upper bound names that bound, as the schema has it."""
    from router.yamlsrc import _constraints_at

    types = {
        m.group(1): m.group(2)
        for line in DOC.read_text().splitlines()
        if (m := re.match(r"^\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|", line))
    }
    wrong = []
    for path, _ in schema_keys():
        for c in _constraints_at(Config, _rel(path)):
            bound = getattr(c, "le", None)
            if bound is None:
                continue
            text = str(int(bound)) if float(bound).is_integer() else str(bound)
            if text not in types[path]:
                wrong.append(f"{path}: type {types[path]!r} does not name its maximum {text}")
    assert not wrong, "\n".join(wrong)
