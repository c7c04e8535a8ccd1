"""YAML read the way ``yaml.safe_load`` reads it, remembering where every value came from.

``safe_load`` forgets positions and silently keeps the last of two equal keys.
Here the safe loader only *composes* the node graph (same tags, same scalar
resolution as ``safe_load``); a small walk then builds plain Python data,
records the 1-based line and column of every key and value under its path, and
reports duplicate keys. :func:`validation_problems` turns a pydantic
``ValidationError`` raised on that data into :class:`~router.errors.ConfigProblem`
values that point at the offending line.

A *path* is a tuple of mapping keys and list indexes from the document root,
e.g. ``("routes", "analysis", "fallback", 1)``; it prints as
``routes.analysis.fallback[1]``.

Given an environment, the walk also interpolates string values (never keys):
``${NAME}`` is the variable's value, ``${NAME:-default}`` the default when the
variable is unset or empty, and ``$${`` a literal ``${``. This happens on the
raw values, before any schema sees them, so a variable that is not set is
reported at the line and column of its ``${``. Which values are left as written
(template text, the names of variables) is the caller's choice.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from router.errors import ConfigError, ConfigProblem
from router.files import FileRefusedError, read_config_file

__all__ = [
    "Interpolation",
    "KeyPath",
    "Mark",
    "YamlDoc",
    "did_you_mean",
    "format_path",
    "load_yaml",
    "parse_yaml",
    "validation_problems",
]

KeyPath = tuple[Any, ...]

# libyaml's composer when PyYAML was built with it (several times faster), else pure Python.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Values an alias may stand for, counted over every alias use (an alias of an alias
# counts each time it is expanded). A config's anchors expand to some hundreds; an alias
# bomb (ten aliases of ten aliases of ...) to billions. Values written out in the file
# are not counted: their number is bounded by the file's size.
_MAX_ALIAS_VALUES = 100_000
# Exceptions a scalar constructor raises on bad input (e.g. ``2026-13-45``, ``!!int x``).
_SCALAR_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError)
# Keys printed bare in a dotted path; anything else is quoted.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# An environment reference in a string value: "$${" (a literal "${"), "${body}", or an
# unterminated "${".
_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based position in the file.

    ``block`` is true for a literal or folded block scalar (``|`` / ``>``), whose
    text starts on the line after the mark.
    """

    line: int
    col: int
    block: bool = False


def format_path(path: Sequence[Any]) -> str:
    """Print a path as ``a.b[1]["c.d"]`` (keys with dots or colons are quoted)."""
    out = ""
    for el in path:
        if isinstance(el, int) and not isinstance(el, bool):
            out += f"[{el}]"
        elif isinstance(el, str) and _BARE_KEY.fullmatch(el):
            out += f".{el}" if out else el
        else:
            text = str(el).replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{text}"]'
    return out


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(slots=True)
class Interpolation:
    """How string values are interpolated from the environment (see the module doc).

    ``literal(path)`` says which values are kept as written. With ``require`` false, a
    variable that is unset and has no default is a warning, not a problem: the value
    is taken as empty and its path is listed in :attr:`YamlDoc.unknown`.
    """

    env: Mapping[str, str]
    literal: Callable[[KeyPath], bool] = lambda path: False
    require: bool = True


class YamlDoc:
    """Plain data parsed from one YAML file, with the position of every key and value."""

    __slots__ = (
        "_keys",
        "_values",
        "broken",
        "data",
        "env_values",
        "file",
        "interpolated",
        "problems",
        "unknown",
        "warnings",
    )

    def __init__(
        self,
        file: str,
        data: dict[Any, Any],
        values: dict[KeyPath, Mark],
        keys: dict[KeyPath, Mark],
        problems: list[ConfigProblem],
        broken: frozenset[KeyPath] = frozenset(),
    ) -> None:
        self.file = file  # the name problems are reported under
        self.data = data  # what yaml.safe_load would have returned
        self._values = values  # path -> where the value starts
        self._keys = keys  # path -> where the key naming that value is
        self.problems = problems  # found while reading (duplicate keys, bad scalars)
        # Paths whose value could not be read and stands as None (already reported).
        self.broken = broken
        # Interpolation: the paths of values that used the environment; the value each
        # variable supplied (by name: error messages must show names, never values);
        # paths whose value is unknown (a variable unset, no default, not required);
        # and warnings about those.
        self.interpolated: frozenset[KeyPath] = frozenset()
        self.env_values: dict[str, str] = {}
        self.unknown: frozenset[KeyPath] = frozenset()
        self.warnings: list[ConfigProblem] = []

    def value_mark(self, path: KeyPath) -> Mark | None:
        """Where the value at ``path`` starts, if it exists."""
        return self._values.get(path)

    def key_mark(self, path: KeyPath) -> Mark | None:
        """Where the key naming the value at ``path`` is, if it exists."""
        return self._keys.get(path)

    def nearest(self, path: KeyPath) -> Mark | None:
        """The position of ``path`` or of its nearest existing ancestor."""
        for n in range(len(path), -1, -1):
            mark = self._values.get(path[:n])
            if mark is not None:
                return mark
        return None

    def problem(self, path: KeyPath, message: str, *, at_key: bool = False) -> ConfigProblem:
        """A problem reported at ``path`` (its key when ``at_key``, else its value)."""
        mark = (self._keys.get(path) if at_key else None) or self.nearest(path)
        return ConfigProblem(
            self.file,
            mark.line if mark else None,
            mark.col if mark else None,
            format_path(path),
            message,
        )


def load_yaml(path: Path, file: str, interpolation: Interpolation | None = None) -> YamlDoc:
    """Read and parse ``path``; problems are reported under the name ``file``; string
    values are interpolated when ``interpolation`` is given.

    Raises:
        ConfigError: the file cannot be read, is not a regular file, is larger than
            :data:`~router.files.MAX_FILE_BYTES`, is empty, is not valid YAML, or its
            top level is not a mapping.
    """
    try:
        raw = read_config_file(path)
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, None, None, "", "file not found")]) from None
    except FileRefusedError as exc:
        raise ConfigError([ConfigProblem(file, None, None, "", str(exc))]) from None
    except OSError as exc:
        msg = f"cannot read file: {exc.strerror or type(exc).__name__}"
        raise ConfigError([ConfigProblem(file, None, None, "", msg)]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        msg = f"not valid UTF-8 (byte {exc.start})"
        raise ConfigError([ConfigProblem(file, line, None, "", msg)]) from None
    return parse_yaml(text, file, interpolation)


def parse_yaml(text: str, file: str, interpolation: Interpolation | None = None) -> YamlDoc:
    """Parse YAML text with ``safe_load`` semantics, keeping positions (and interpolating
    string values from the environment when ``interpolation`` is given).

    Raises:
        ConfigError: empty document, YAML syntax error, or a non-mapping top level.
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, file)]) from None
    except yaml.YAMLError as exc:
        line = None
        if isinstance(exc, yaml.reader.ReaderError):
            line = text.count("\n", 0, exc.position) + 1
        msg = f"YAML error: {exc}"
        raise ConfigError([ConfigProblem(file, line, None, "", msg)]) from None
    except RecursionError:
        msg = "YAML is nested too deeply"
        raise ConfigError([ConfigProblem(file, None, None, "", msg)]) from None
    if root is None:
        msg = "file is empty (expected a mapping with version, providers and routes)"
        raise ConfigError([ConfigProblem(file, 1, 1, "", msg)])
    if not isinstance(root, MappingNode) or root.tag != _MAP_TAG:
        got = "a list" if isinstance(root, SequenceNode) else "a single value"
        msg = f"the top level must be a mapping (version, providers, routes, ...), got {got}"
        mark = root.start_mark
        raise ConfigError([ConfigProblem(file, mark.line + 1, mark.column + 1, "", msg)])
    walker = _Walker(file, text, interpolation)
    try:
        data = walker.walk(root, ())
    except _TooBig as exc:
        msg = (
            f"aliases expand to more than {_MAX_ALIAS_VALUES} values (alias bomb?); "
            "write the values out or use fewer nested aliases"
        )
        mark = walker.key_mark_near(exc.path)
        raise ConfigError(
            [
                ConfigProblem(
                    file,
                    mark.line if mark else None,
                    mark.col if mark else None,
                    format_path(exc.path),
                    msg,
                )
            ]
        ) from None
    except RecursionError:
        msg = "YAML is nested too deeply"
        raise ConfigError([ConfigProblem(file, None, None, "", msg)]) from None
    doc = YamlDoc(file, data, walker.values, walker.keys, walker.problems, frozenset(walker.broken))
    doc.interpolated = frozenset(walker.interpolated)
    doc.env_values = walker.env_values
    doc.unknown = frozenset(walker.unknown)
    doc.warnings = walker.warnings
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    msg = f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        msg += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if mark is None:
        return ConfigProblem(file, None, None, "", msg)
    return ConfigProblem(file, mark.line + 1, mark.column + 1, "", msg)


class _TooBig(Exception):
    """Alias expansion exceeded _MAX_ALIAS_VALUES; ``path`` is where the alias that did it is."""

    def __init__(self, path: KeyPath) -> None:
        super().__init__()
        self.path = path


def _mark(node: Node) -> Mark:
    block = isinstance(node, ScalarNode) and node.style in ("|", ">")
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1, block)


class _Walker:
    """Builds Python data from a composed node graph, recording positions."""

    def __init__(self, file: str, text: str, interpolation: Interpolation | None) -> None:
        self.file = file
        self.text = text
        self.interpolation = interpolation
        self.interpolated: set[KeyPath] = set()
        self.env_values: dict[str, str] = {}
        self.unknown: set[KeyPath] = set()
        self.warnings: list[ConfigProblem] = []
        # (index in the text, variable) of each unset variable reported (aliases repeat).
        self._reported: set[tuple[int, str]] = set()
        self.values: dict[KeyPath, Mark] = {}
        self.keys: dict[KeyPath, Mark] = {}
        self.problems: list[ConfigProblem] = []
        # Scalar construction is delegated so that scalars resolve exactly as in safe_load.
        self._constructor = yaml.constructor.SafeConstructor()
        self._seen: set[int] = set()  # ids of nodes walked once: walking one again is an alias
        self._expanded = 0  # values produced by aliases, to stop alias bombs
        self._alias_path: KeyPath | None = None  # where the outermost alias being expanded is
        self._stack: set[int] = set()  # ids of collection nodes being walked (recursive aliases)
        self.broken: set[KeyPath] = set()  # paths whose value was replaced by None

    def _problem(self, node: Node, path: KeyPath, message: str) -> None:
        self.broken.add(path)
        m = _mark(node)
        self.problems.append(ConfigProblem(self.file, m.line, m.col, format_path(path), message))

    def key_mark_near(self, path: KeyPath) -> Mark | None:
        """The position of the key naming ``path``, or of its nearest named ancestor."""
        for n in range(len(path), -1, -1):
            mark = self.keys.get(path[:n])
            if mark is not None:
                return mark
        return None

    def walk(self, node: Node, path: KeyPath) -> Any:
        if id(node) not in self._seen:
            self._seen.add(id(node))
            return self._walk(node, path)
        # The node was walked before: this is an alias (or a node inside one) expanded again.
        self._expanded += 1
        outermost = self._alias_path is None
        if outermost:
            self._alias_path = path
        try:
            if self._expanded > _MAX_ALIAS_VALUES:
                raise _TooBig(self._alias_path or path)
            return self._walk(node, path)
        finally:
            if outermost:
                self._alias_path = None

    def _walk(self, node: Node, path: KeyPath) -> Any:
        self.values[path] = _mark(node)
        if isinstance(node, ScalarNode):
            try:
                value = self._constructor.construct_object(node)
            except _SCALAR_ERRORS as exc:
                self._problem(node, path, f"invalid value: {_first_line(exc)}")
                return None
            if (
                self.interpolation is not None
                and isinstance(value, str)
                and "${" in value
                and not self.interpolation.literal(path)
            ):
                return self._interpolate(node, path, value, self.interpolation)
            return value
        if id(node) in self._stack:
            self._problem(node, path, "an alias refers to its own parent (recursive data)")
            return None
        if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
            self._stack.add(id(node))
            try:
                return self._mapping(node, path)
            finally:
                self._stack.discard(id(node))
        if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
            self._stack.add(id(node))
            try:
                return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self._stack.discard(id(node))
        self._problem(node, path, f"unsupported YAML tag {node.tag!r}")
        return None

    def _interpolate(self, node: Node, path: KeyPath, value: str, how: Interpolation) -> str:
        """``value`` with its ``${...}`` references replaced (see the module doc)."""
        # Where in the file the scalar is written, to put each reference at its column.
        start, end = node.start_mark.index, node.end_mark.index
        cursor = start
        out: list[str] = []
        pos = 0
        for m in _REFERENCE.finditer(value):
            out.append(value[pos : m.start()])
            pos = m.end()
            escape = m.group(0) == "$${"
            # The same reference in the file text (past the ones already placed).
            at = self.text.find("$${" if escape else "${", cursor, end)
            index = at if at >= 0 else start
            if at >= 0:
                cursor = at + (3 if escape else 2)
            if escape:
                out.append("${")
                continue
            body = m.group("body")
            if body is None:
                self._reference_problem(
                    index, path, "'${' is not closed by '}' (write $${ for a literal ${)"
                )
                continue
            name, sep, default = body.partition(":-")
            if not _VAR_NAME.fullmatch(name):
                self._reference_problem(
                    index,
                    path,
                    "a ${...} reference must be ${NAME} or ${NAME:-default}, NAME made of"
                    " letters, digits and '_' (write $${ for a literal ${)",
                )
                continue
            self.interpolated.add(path)
            got = how.env.get(name)
            if got is not None and (got or not sep):
                self.env_values[name] = got
                out.append(got)
            elif sep:
                out.append(default)
            else:
                self._unset(index, path, name, how.require)
        out.append(value[pos:])
        return "".join(out)

    def _reference_problem(self, index: int, path: KeyPath, message: str) -> None:
        line, col = self._line_col(index)
        self.broken.add(path)
        self.problems.append(ConfigProblem(self.file, line, col, format_path(path), message))

    def _unset(self, index: int, path: KeyPath, name: str, required: bool) -> None:
        """A variable without a default is not set: a problem, or (not required) a warning
        and a value taken as empty."""
        if (index, name) in self._reported:
            return
        self._reported.add((index, name))
        line, col = self._line_col(index)
        where = format_path(path)
        if required:
            self.broken.add(path)
            msg = (
                f"environment variable {name} is not set, and ${{{name}}} has no default"
                f" (set it, or write ${{{name}:-default}})"
            )
            self.problems.append(ConfigProblem(self.file, line, col, where, msg))
            return
        self.unknown.add(path)
        msg = (
            f"environment variable {name} is not set and ${{{name}}} has no"
            " default: this value is not checked, and loading fails unless it is set"
        )
        self.warnings.append(ConfigProblem(self.file, line, col, where, msg))

    def _line_col(self, index: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, index) + 1
        return line, index - (self.text.rfind("\n", 0, index) + 1) + 1

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        # ``<<: *base`` merges come first so that explicit keys override them (YAML merge rules).
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(value_node, path, out)
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self._problem(key_node, path, "a mapping key must be a plain value")
                continue
            try:
                key = self._constructor.construct_object(key_node)
            except _SCALAR_ERRORS as exc:
                self._problem(key_node, path, f"invalid key: {_first_line(exc)}")
                continue
            kpath = (*path, key)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self._problem(
                    key_node,
                    kpath,
                    f"duplicate key {key!r} (first defined at line {first_line[key]})",
                )
            else:
                first_line[key] = line
            self.keys[kpath] = _mark(key_node)
            out[key] = self.walk(value_node, kpath)
        return out

    def _merge(self, node: Node, path: KeyPath, out: dict[Any, Any]) -> None:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            if not (isinstance(source, MappingNode) and source.tag == _MAP_TAG):
                self._problem(source, path, "'<<' merge needs a mapping or a list of mappings")
                continue
            value = self.walk(source, path)
            # Earlier sources win over later ones, per the YAML merge-key spec.
            for key, item in value.items():
                out.setdefault(key, item)


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0]


# ---------------------------------------------------------------------------
# pydantic errors -> ConfigProblem


def validation_problems(
    exc: ValidationError, doc: YamlDoc, root: type[BaseModel], prefix: KeyPath = ()
) -> list[ConfigProblem]:
    """Turn a pydantic error on ``doc`` data (validated as ``root`` at ``prefix``) into problems.

    Each error's location is mapped back to the YAML key or value it names, with
    union member tags removed, and unknown keys get a did-you-mean suggestion
    taken from the fields of the model where they appear.
    """
    out: list[ConfigProblem] = []
    seen: set[tuple[KeyPath, str]] = set()
    for err in exc.errors(include_url=False, include_input=False):
        path, is_key = _clean_loc(err["loc"], doc.data, prefix)
        if any(path[:n] in doc.broken for n in range(len(path) + 1)):
            continue  # the YAML problem there was reported already
        kind = err["type"]
        at_key = is_key
        if kind == "extra_forbidden":
            fields = _fields_at(root, path[len(prefix) : -1])
            msg = f"unknown key {path[-1]!r}" + did_you_mean(path[-1], fields)
            at_key = True
        elif kind == "missing":
            msg = f"missing required key {path[-1]!r}"
            path = path[:-1] if path else path
            at_key = True
        else:
            msg = _message(err, _value_at(doc.data, path))
            if kind in _BOUND_ERRORS:
                msg = _range_message(root, path[len(prefix) :]) or msg
            if is_key:
                msg = f"invalid key {path[-1]!r}: {msg}"
        if (path, msg) in seen:
            continue
        seen.add((path, msg))
        out.append(doc.problem(path, msg, at_key=at_key))
    return out


_TAG_LIKE = re.compile(r".*[\[\]-].*")


def _is_tag(el: object) -> bool:
    """Whether a loc element is a pydantic union/validator tag rather than a key."""
    if not isinstance(el, str):
        return False
    return el in {"str", "int", "float", "bool", "decimal", "none"} or (
        el[:1].isupper() or bool(_TAG_LIKE.fullmatch(el))
    )


def _clean_loc(loc: tuple[int | str, ...], data: Any, prefix: KeyPath) -> tuple[KeyPath, bool]:
    """Follow ``loc`` through ``data``; drop tags; say whether it names a mapping key."""
    path: list[Any] = list(prefix)
    cur: Any = data
    for el in prefix:
        cur = cur[el]
    found = True
    is_key = False
    for el in loc:
        if el == "[key]":
            is_key = True
            continue
        if found and _has(cur, el):
            path.append(el)
            cur = cur[el]
        elif _is_tag(el):
            continue
        else:
            path.append(el)
            found = False
    return tuple(path), is_key


def _has(node: Any, el: Any) -> bool:
    """Whether ``node[el]`` exists (a mapping key or a list index)."""
    if isinstance(node, dict):
        return el in node
    return isinstance(node, list) and isinstance(el, int) and 0 <= el < len(node)


def _value_at(data: Any, path: KeyPath) -> Any:
    for el in path:
        if _has(data, el):
            data = data[el]
        else:
            return None
    return data


def _message(err: Any, value: Any) -> str:
    if err["type"] == "too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    if err["type"] == "decimal_max_places":
        return f"must have at most {err.get('ctx', {}).get('decimal_places')} decimal places"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    msg = re.sub(r"a valid dictionary or instance of \w+", "a mapping", msg)
    msg = msg.replace("Input should be", "must be").replace("Input is", "is")
    if err["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        msg += did_you_mean(value, choices)
    return msg


_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _number(value: Any) -> str:
    """A bound as written in YAML: 86400, not 86400.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _range_message(root: type[BaseModel], rel: KeyPath) -> str | None:
    """'must be greater than or equal to 0 and less than or equal to 86400' for the number
    at ``rel`` below ``root``: both ends of its allowed range, whichever one it broke."""
    low = high = None
    for constraint in _constraints_at(root, rel):
        if isinstance(constraint, annotated_types.Ge):
            low = f"greater than or equal to {_number(constraint.ge)}"
        elif isinstance(constraint, annotated_types.Gt):
            low = f"greater than {_number(constraint.gt)}"
        elif isinstance(constraint, annotated_types.Le):
            high = f"less than or equal to {_number(constraint.le)}"
        elif isinstance(constraint, annotated_types.Lt):
            high = f"less than {_number(constraint.lt)}"
    if low is None or high is None:
        return None
    return f"must be {low} and {high}"


def _constraints_at(root: type[BaseModel], rel: KeyPath) -> list[Any]:
    """The annotated-types constraints (Ge, Le, ...) of the field or item at ``rel``."""
    # (annotation, metadata pydantic moved off it) of each candidate for the value at rel.
    candidates: list[tuple[Any, list[Any]]] = [(root, [])]
    for el in rel:
        nxt: list[tuple[Any, list[Any]]] = []
        for ann, _ in candidates:
            for t in _types_in(ann):
                origin = typing.get_origin(t)
                if isinstance(t, type) and issubclass(t, BaseModel):
                    field = t.model_fields.get(el) if isinstance(el, str) else None
                    if field is not None:
                        nxt.append((field.annotation, list(field.metadata)))
                elif origin is dict:
                    nxt.append((typing.get_args(t)[1], []))
                elif origin is list and isinstance(el, int):
                    nxt.append((typing.get_args(t)[0], []))
        candidates = nxt
    out: list[Any] = []
    for ann, metadata in candidates:
        out += metadata
        out += _metadata_in(ann)
    return out


def _metadata_in(ann: Any) -> Iterator[Any]:
    """Constraints inside Annotated members of ``ann`` (through unions and Field())."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        for extra in ann.__metadata__:
            yield from getattr(extra, "metadata", [extra])
        yield from _metadata_in(typing.get_args(ann)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(ann):
            yield from _metadata_in(arg)


def _types_in(ann: Any) -> Iterator[Any]:
    """Flatten Annotated/Union/Optional wrappers into their member types."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        yield from _types_in(typing.get_args(ann)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(ann):
            yield from _types_in(arg)
    else:
        yield ann


def _fields_at(root: type[BaseModel], rel: KeyPath) -> list[str]:
    """Field names of the model found at ``rel`` below ``root`` (empty if none)."""
    candidates: list[Any] = [root]
    for el in rel:
        nxt: list[Any] = []
        for ann in candidates:
            for t in _types_in(ann):
                origin = typing.get_origin(t)
                if isinstance(t, type) and issubclass(t, BaseModel):
                    field = t.model_fields.get(el) if isinstance(el, str) else None
                    if field is not None:
                        nxt.append(field.annotation)
                elif origin is dict:
                    nxt.append(typing.get_args(t)[1])
                elif origin is list and isinstance(el, int):
                    nxt.append(typing.get_args(t)[0])
        candidates = nxt
    names: list[str] = []
    for ann in candidates:
        for t in _types_in(ann):
            if isinstance(t, type) and issubclass(t, BaseModel):
                names.extend(t.model_fields)
    return names
