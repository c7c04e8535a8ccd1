"""Route prompts: Jinja2 templates compiled at load, rendered strictly per call.

The rule for where a template lives: in ``providers.yaml`` a *string* value of a
route's ``system`` or ``prompt`` is the template text itself (inline); a mapping
``{file: name.j2}`` names a file under ``settings.templates_dir``.

Templates run in a :class:`~jinja2.sandbox.SandboxedEnvironment` with
:class:`~jinja2.StrictUndefined` (a missing variable is an error, never an empty
string), autoescape off and trailing newlines kept. Everything is parsed and
compiled once, at load: a syntax error, a missing file or (when the route
declares ``vars``) an undeclared variable fails the load. ``{% include %}``,
``{% import %}`` and ``{% extends %}`` are followed when their target is a
literal name; their variables count as the route's. A computed target name is
refused, since its variables cannot be known at load.

Per call, :meth:`RouteTemplates.render` checks the variables against the
declared types with validators built at load, then renders; nothing is parsed.

The sandbox also bounds what a template can build, since a template that uses
no variable is rendered once at load (and at every reload): ``*`` may not build
a list or string longer than :data:`MAX_REPEAT`, ``range`` may not span more
than :data:`MAX_RANGE` numbers, ``**`` may not build an integer wider than
:data:`MAX_POWER_BITS` bits, and no width may exceed :data:`MAX_REPEAT` (of a
``%`` or ``str.format`` format, of the ``center``, ``indent``, ``wordwrap`` and
``format`` filters, or of ``str`` methods such as ``ljust``). Breaking one is a
:class:`~jinja2.exceptions.SecurityError`, reported as a load error for a
template without variables and as a :class:`~router.errors.TemplateError`
otherwise. Template files are read as :mod:`router.files` reads every config
file: regular files, size-capped.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import string
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateNotFound, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.filters import FILTERS
from jinja2.loaders import split_template_path
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from router.errors import ConfigProblem, TemplateError
from router.estimate import estimate_text_tokens, estimate_tokens
from router.files import FileRefusedError, read_config_file
from router.image_vars import check_image_value, image_from_value
from router.images import DEFAULT_MAX_IMAGE_BYTES
from router.types import Image, Message, Role, Text
from router.yamlsrc import did_you_mean, format_path

if TYPE_CHECKING:
    from router.config import RouteConfig
    from router.yamlsrc import KeyPath, YamlDoc

__all__ = [
    "MAX_POWER_BITS",
    "MAX_RANGE",
    "MAX_REPEAT",
    "VAR_TYPES",
    "RouteTemplates",
    "compile_routes",
    "make_environment",
    "parse_var_type",
]

# Returns None when a value fits, else what is wrong ("must be int, got bool").
VarCheck = Callable[[Any], "str | None"]

# The simple type names a route may declare; ``list[T]`` nests any of them.
VAR_TYPES = ("str", "int", "float", "bool", "dict", "list", "image")

# The type of a variable whose value is an image part, not text (router.image_vars).
IMAGE_TYPE = "image"

_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    # int widens to float; Decimal is accepted since prices often arrive as Decimal.
    return isinstance(v, float | Decimal) or _is_int(v)


# Exact types every value of which fits a declared type: a list whose items are all
# of these passes ``list[T]`` without a check per item.
_EXACT: dict[str, frozenset[type]] = {
    "str": frozenset({str}),
    "int": frozenset({int}),
    "float": frozenset({float, int, Decimal}),
    "bool": frozenset({bool}),
}

_PREDICATES: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "float": _is_float,
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, Mapping),
    "list": lambda v: isinstance(v, list | tuple),
}


def parse_var_type(spec: str) -> VarCheck:
    """Compile a declared type (``str``, ``int``, ``float``, ``bool``, ``dict``, ``list``,
    ``list[T]``) into a validator.

    ``bool`` is not an ``int``; an ``int`` (or ``Decimal``) is accepted for ``float``;
    a list may be a tuple; ``list[T]`` checks every item.

    Raises:
        ValueError: the spec is not one of the forms above.
    """
    text = spec.replace(" ", "")
    if text == IMAGE_TYPE:
        return check_image_value
    if text in _PREDICATES:
        pred = _PREDICATES[text]

        def check(v: Any) -> str | None:
            return None if pred(v) else f"must be {text}, got {type(v).__name__}"

        return check
    if text.startswith("list[") and text.endswith("]"):
        if text[5:-1] == IMAGE_TYPE:
            raise ValueError("an image variable holds one image: declare one variable per image")
        inner = parse_var_type(text[5:-1])
        exact = _EXACT.get(text[5:-1], frozenset())

        def check_list(v: Any) -> str | None:
            if type(v) is not list and not isinstance(v, list | tuple):
                return f"must be {text}, got {type(v).__name__}"
            if exact and exact.issuperset(map(type, v)):
                return None  # every item is of a type that fits (bool is not int)
            for i, item in enumerate(v):
                err = inner(item)
                if err is not None:
                    return f"item [{i}] {err}"
            return None

        return check_list
    hint = did_you_mean(text, VAR_TYPES)
    raise ValueError(
        f"unknown type {spec!r}{hint}; use one of str, int, float, bool, dict, list, list[T], image"
    )


# One piece of a substitution template (:func:`_substitution`): (literal text, variable
# name or None, the ``join`` separator when the variable is joined, else None).
Piece = tuple[str, str | None, str | None]

# (role, template name for errors, compiled template, pre-rendered message or None,
# whether the message is a prompt-cache breakpoint, its substitution pieces or None)
Part = tuple[Role, str, Template, Message | None, bool, tuple[Piece, ...] | None]

# Longest list or string one ``*`` may build (items or characters), and widest ``%`` pad.
MAX_REPEAT = 1_000_000
# Most numbers one ``range`` may span.
MAX_RANGE = 10_000
# Widest integer one ``**`` may build, in bits (about 3,000 decimal digits).
MAX_POWER_BITS = 10_000
# Most words ``lipsum()`` may generate.
MAX_LIPSUM_WORDS = 100_000

_SEQUENCES = (str, bytes, list, tuple)
# One conversion of a printf-style format (flags, width, precision), or a literal %%.
_PERCENT_SPEC = re.compile(r"%%|%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, _SEQUENCES) and isinstance(times, int):
            size = len(seq) * max(times, 0)
            if size > MAX_REPEAT:
                raise SecurityError(
                    f"'*' would build a {type(seq).__name__} of {size} items; "
                    f"the template sandbox allows at most {MAX_REPEAT}"
                )


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        bits = (abs(base).bit_length() - 1) * exponent
        if bits > MAX_POWER_BITS:
            raise SecurityError(
                f"'**' would build an integer of about {bits} bits; "
                f"the template sandbox allows at most {MAX_POWER_BITS}"
            )


def _check_percent(fmt: Any, args: Any) -> None:
    if not isinstance(fmt, str):
        return
    star_args = [a for a in (args if isinstance(args, tuple) else (args,)) if _is_int(a)]
    for match in _PERCENT_SPEC.finditer(fmt):
        for field in match.groups():
            widths = star_args if field == "*" else [int(field)] if field else []
            if any(abs(w) > MAX_REPEAT for w in widths):
                raise SecurityError(
                    f"a '%' format pads wider than the template sandbox allows ({MAX_REPEAT})"
                )


def _check_widths(values: Any) -> None:
    if any(_is_int(v) and abs(v) > MAX_REPEAT for v in values):
        raise SecurityError(f"a width above {MAX_REPEAT}; the template sandbox allows at most that")


def _check_format(fmt: str, args: Any) -> None:
    """``str.format``: no width or precision above MAX_REPEAT, literal or from an argument."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the call itself will fail on it
    for _, _, spec, _ in fields:
        if not spec:
            continue
        _check_widths(int(n) for n in re.findall(r"\d+", spec))
        if "{" in spec:  # a nested field: the width is an argument
            _check_widths(args)


def _bounded_filter(func: Callable[..., Any], skip: int) -> Callable[..., Any]:
    """``func`` (a Jinja2 filter) refusing an int argument above MAX_REPEAT; the first
    ``skip`` arguments (the environment, the value) are not checked."""

    @functools.wraps(func)  # keeps the pass_environment marker too
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_widths([*args[skip:], *kwargs.values()])
        return func(*args, **kwargs)

    return bounded


def _format_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_percent(value, tuple(args))
        return func(value, *args, **kwargs)

    return bounded


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja2's ``lipsum``, refusing more than MAX_LIPSUM_WORDS words."""
    words = n * (min if min > max else max) if _is_int(n) and _is_int(min) and _is_int(max) else 0
    if words > MAX_LIPSUM_WORDS:
        raise SecurityError(
            f"lipsum() of up to {words} words; the template sandbox allows at most"
            f" {MAX_LIPSUM_WORDS}"
        )
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


# str methods whose int arguments are widths of the string they build.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _range(*args: int) -> range:
    """``range`` spanning at most MAX_RANGE numbers."""
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:  # longer than a C ssize_t
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise SecurityError(
            f"range() of more than {MAX_RANGE} numbers; the template sandbox allows at most"
            f" {MAX_RANGE}"
        )
    return numbers


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox, with the size bounds above on ``*``, ``**``, ``%`` and ``range``."""

    # Intercepted operators also stay out of compile-time constant folding: a constant
    # ``{{ 'x' * 10**9 }}`` is checked when it runs instead of being built by the compiler.
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum
        # Filters are also run by the compiler on constant input (constant folding): a
        # refused width there leaves the filter to run, and be refused, at render.
        self.filters["center"] = _bounded_filter(self.filters["center"], 1)
        self.filters["indent"] = _bounded_filter(self.filters["indent"], 1)
        self.filters["wordwrap"] = _bounded_filter(self.filters["wordwrap"], 2)
        self.filters["format"] = _format_filter(self.filters["format"])

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        target = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name in _WIDTH_METHODS:
                _check_widths([*args, *kwargs.values()])
            elif name == "format":
                _check_format(owner, [*args, *kwargs.values()])
            elif name == "format_map" and args and isinstance(args[0], Mapping):
                _check_format(owner, list(args[0].values()))
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)


class _FileLoader(FileSystemLoader):
    """Jinja2's FileSystemLoader, reading through :func:`router.files.read_config_file`:
    a FIFO, a device or an oversized file is refused instead of read."""

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)
        for searchpath in self.searchpath:
            filename = posixpath.join(searchpath, *pieces)
            if os.path.exists(filename):
                break
        else:
            raise TemplateNotFound(template)
        # Decoded as text-mode reading would: universal newlines.
        text = read_config_file(filename).decode(self.encoding)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        mtime = os.path.getmtime(filename)

        def uptodate() -> bool:
            try:
                return os.path.getmtime(filename) == mtime
            except OSError:
                return False

        return text, os.path.normpath(filename), uptodate


def _constant(
    role: Role, template: Template, cache: bool = False
) -> tuple[Message | None, str | None]:
    """The message of a template that uses no variable, rendered once.

    Returns (message, None); (None, why) when it breaks a sandbox bound (a load
    error); (None, None) when it fails otherwise: then it fails, with a
    TemplateError, on each call as any template would.
    """
    try:
        return Message(role, template.render({}), cache), None
    except SecurityError as exc:
        return None, str(exc)
    except Exception:
        return None, None


def make_environment(templates_dir: Path) -> SandboxedEnvironment:
    """The one Jinja2 environment of a config: sandboxed (with size bounds), strict,
    files from ``templates_dir``."""
    return _Sandbox(
        loader=_FileLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        # Templates are fixed once loaded: no mtime checks on the hot path.
        auto_reload=False,
    )


_JOIN = FILTERS["join"]


def _substitution(ast: nodes.Template, env: SandboxedEnvironment) -> tuple[Piece, ...] | None:
    """The pieces of a template that is only text, ``{{ name }}`` and
    ``{{ name | join(sep) }}`` (``sep`` a literal string), or None for any other.

    Such a template renders, in this environment (no autoescape, no ``finalize``,
    Jinja's own ``join``), to its text with ``str(value)`` and
    ``sep.join(map(str, value))`` in place: what Jinja's compiled code does, without
    building a context (:class:`_Renderer` uses the pieces, and Jinja for the rest).
    Read from the parsed template, before compiling (the compiler may fold nodes).
    """
    if env.autoescape is not False or env.finalize is not None or env.filters["join"] is not _JOIN:
        return None
    pieces: list[Piece] = []
    for node in ast.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                pieces.append((child.data, None, None))
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                pieces.append(("", child.name, None))
            elif (
                isinstance(child, nodes.Filter)
                and child.name == "join"
                and isinstance(child.node, nodes.Name)
                and child.node.ctx == "load"
                and not child.kwargs
                and child.dyn_args is None
                and child.dyn_kwargs is None
                and len(child.args) <= 1
                and all(isinstance(a, nodes.Const) and type(a.value) is str for a in child.args)
            ):
                sep = child.args[0].as_const() if child.args else ""
                pieces.append(("", child.node.name, sep))
            else:
                return None
    return tuple(pieces)


def _substitute(pieces: tuple[Piece, ...], values: dict[str, Any]) -> str | None:
    """A substitution template's text, or None when Jinja should render it: a name
    not passed (Jinja may find it among its globals) or any exception (Jinja raises
    its own). Every name in ``values`` is a string (the caller checked)."""
    out: list[str] = []
    try:
        for text, name, sep in pieces:
            if name is None:
                out.append(text)
            elif sep is None:
                out.append(str(values[name]))
            else:
                out.append(sep.join(map(str, values[name])))
    except Exception:
        return None
    return "".join(out)


class _Renderer:
    """One compiled template, rendered as ``Template.render`` would but without its
    per-call set-up: Jinja builds each call's context by merging the template's
    globals (a ``ChainMap`` of the template's and the environment's) into a new dict,
    and takes the set of their names; both are made here once, at load.

    A substitution template (:func:`_substitution`) is rendered from its pieces
    without Jinja when every variable it names was passed (a name Jinja would find
    elsewhere, a non-string name, or any exception goes through Jinja, so the result
    or the error is Jinja's).

    Exceptions come out as they are raised by the template code (``Template.render``
    would only rewrite their traceback).
    """

    __slots__ = ("_blocks", "_context", "_env", "_globals", "_keys", "_name", "_pieces", "_root")

    def __init__(self, template: Template, pieces: tuple[Piece, ...] | None = None) -> None:
        self._pieces = pieces
        env = template.environment
        self._env = env
        self._context = env.context_class
        self._globals = dict(template.globals)
        self._keys = set(self._globals)
        self._name = template.name
        self._blocks = template.blocks
        self._root = template.root_render_func

    def __call__(self, values: Mapping[str, Any], plain: bool = False) -> str:
        """The text for ``values``; ``plain``: they are a dict with string names only
        (else Jinja refuses the names, or reads the mapping its own way)."""
        pieces = self._pieces
        if pieces is not None and plain:
            text = _substitute(pieces, values)  # type: ignore[arg-type]  # a dict: plain
            if text is not None:
                return text
        return self._jinja(values)

    def _jinja(self, values: Mapping[str, Any]) -> str:
        # As jinja2.runtime.new_context builds it: the globals, then the call's values.
        parent = dict(self._globals, **values)
        context = self._context(self._env, parent, self._name, self._blocks)
        context.globals_keys = self._keys  # read-only in Jinja; shared by every call
        return str(self._env.concat(self._root(context)))


class RouteTemplates:
    """A route's compiled templates and the checks its variables must pass.

    Attributes:
        route: the route's name.
        variables: the names a call should pass: the declared ``vars`` when the
            route declares them, else every name its templates use.
        images: the route's ``image`` variables, in declaration order: their values
            become image parts of the prompt, after its text (router.image_vars).
        max_image_bytes: ``settings.max_image_bytes``, the cap on image bytes (image
            variables here, a history's images in router.conversation).
    """

    __slots__ = (
        "_checks",
        "_known",
        "_parts",
        "_render",
        "has_prompt",
        "images",
        "max_image_bytes",
        "route",
        "variables",
    )

    def __init__(
        self,
        route: str,
        parts: list[Part],
        variables: frozenset[str],
        checks: dict[str, VarCheck] | None,
        images: tuple[str, ...] = (),
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> None:
        self.route = route
        self.variables = variables
        self.images = images
        self.max_image_bytes = max_image_bytes
        # False for a route without a prompt: a call's history ends with the turn.
        self.has_prompt = any(part[0] == "user" for part in parts)
        # (role, template name for errors, compiled template, its message when it
        # uses no variable: rendered once at load, cache breakpoint), system first.
        self._parts = parts
        # Declared name -> validator; None when the route declares no vars.
        self._checks = checks
        # Per part: its message when constant, else a renderer prepared at load (and
        # whether its message is a prompt-cache breakpoint).
        self._render = [
            (role, name, constant if constant is not None else _Renderer(template, pieces), cache)
            for role, name, template, constant, cache, pieces in parts
        ]
        # id(constant message) -> its estimate, made once (the messages live as long).
        self._known = {
            id(constant): estimate_text_tokens(constant.content)
            for _, _, _, constant, _, _ in parts
            if constant is not None and isinstance(constant.content, str)
        }

    def __repr__(self) -> str:
        names = ", ".join(part[1] for part in self._parts)
        return f"<RouteTemplates {self.route!r} [{names}] vars={sorted(self.variables)}>"

    def render(self, vars: Mapping[str, Any] | None = None) -> list[Message]:
        """Render the route's messages: the system message (if any), then the user prompt.

        Raises:
            TemplateError: a variable is missing, unexpected or of the wrong type,
                or a template fails while rendering. Nothing has been sent yet.
        """
        values: Mapping[str, Any] = {} if vars is None else vars
        plain = type(values) is dict
        if not plain and not isinstance(values, Mapping):
            raise TemplateError(
                f"route {self.route!r}: vars must be a mapping, got {type(values).__name__}",
                route=self.route,
            )
        if self._checks is not None:
            self._check(values, self._checks)  # then every name is a declared one
        elif plain:
            plain = all(type(k) is str for k in values)
        out: list[Message] = []
        for role, name, prepared, cache in self._render:
            if isinstance(prepared, Message):
                out.append(prepared)
                continue
            try:
                text = prepared(values, plain)
            except UndefinedError as exc:
                raise self._undefined(exc, name, values) from None
            except Exception as exc:
                # A template can raise anything on odd input (e.g. a type error inside
                # an expression); it is still the caller's variables that did not fit.
                raise TemplateError(
                    f"route {self.route!r}: template {name} failed: {type(exc).__name__}: {exc}",
                    route=self.route,
                    template=name,
                ) from exc
            out.append(Message(role, text, cache))
        if self.images:
            self._add_images(out, values)
        return out

    def _add_images(self, out: list[Message], values: Mapping[str, Any]) -> None:
        """Make the prompt (the last message) its text then one image part per image
        variable (read, capped and sniffed here: before any traffic)."""
        images: list[Image] = []
        for name in self.images:
            try:
                images.append(image_from_value(values[name], self.max_image_bytes))
            except ValueError as exc:
                raise TemplateError(
                    f"route {self.route!r}: image variable {name!r}: {exc}",
                    route=self.route,
                    template=self._parts[-1][1],
                    variables=[name],
                ) from None
        prompt = out[-1]
        text = prompt.content if isinstance(prompt.content, str) else ""
        parts: list[Text | Image] = [Text(text)] if text else []
        out[-1] = Message(prompt.role, [*parts, *images], prompt.cache)

    def estimate_tokens(
        self, messages: Sequence[Message], images: list[Image] | None = None
    ) -> int:
        """:func:`router.estimate.estimate_tokens` of messages this route rendered (the
        same number), with each constant message's text estimated once, at load.
        ``images``: collect the image parts here instead of counting them (the caller
        counts them per provider)."""
        return estimate_tokens(messages, self._known, images)

    def _check(self, values: Mapping[str, Any], checks: dict[str, VarCheck]) -> None:
        """Every unexpected, missing and mistyped variable, reported at once."""
        if values.keys() == checks.keys():  # the usual call: every name, nothing else
            for name, check in checks.items():
                if check(values[name]) is not None:
                    break  # reported below, with the other checks
            else:
                return
        # Unexpected names first: a misspelled name is also a missing one, and the
        # suggestion is the useful message.
        unexpected = [str(name) for name in values if name not in checks]
        missing = [name for name in checks if name not in values]
        mistyped: list[tuple[str, str]] = []
        for name, check in checks.items():
            if name in values:
                err = check(values[name])
                if err is not None:
                    mistyped.append((name, err))
        if not (unexpected or missing or mistyped):
            return
        parts = [f"unexpected variable {n!r}" + did_you_mean(n, checks) for n in unexpected]
        if missing:
            s = "s" if len(missing) > 1 else ""
            parts.append(f"missing variable{s} " + ", ".join(repr(n) for n in missing))
        parts += [f"variable {n!r} {err}" for n, err in mistyped]
        if unexpected:
            parts.append(f"declared: {', '.join(sorted(checks)) or 'none'}")
        raise TemplateError(
            f"route {self.route!r}: " + "; ".join(parts),
            route=self.route,
            template=self._parts[-1][1] if self._parts else None,
            variables=[*unexpected, *missing, *(n for n, _ in mistyped)],
        )

    def _undefined(
        self, exc: UndefinedError, template: str, values: Mapping[str, Any]
    ) -> TemplateError:
        match = _UNDEFINED_NAME.match(str(exc.message or ""))
        if match is None:
            return TemplateError(
                f"route {self.route!r}: template {template}: {exc.message}",
                route=self.route,
                template=template,
            )
        name = match.group(1)
        hint = did_you_mean(name, [k for k in values if isinstance(k, str)])
        if hint:
            hint = hint.replace("did you mean", "did you pass")
        # The other names the templates use that were not passed either (all at once;
        # one may be optional, e.g. read under `is defined`).
        others = sorted(self.variables - {name} - {k for k in values if isinstance(k, str)})
        also = ""
        if others:
            also = "; not passed either: " + ", ".join(repr(n) for n in others)
        return TemplateError(
            f"route {self.route!r}: missing variable {name!r} (used by {template}){hint}{also}",
            route=self.route,
            template=template,
            variables=[name, *others],
        )


class _Compiler:
    """Compiles every route's templates, collecting problems instead of stopping."""

    def __init__(
        self,
        env: SandboxedEnvironment,
        doc: YamlDoc,
        dir_label: str,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> None:
        self.env = env
        self.max_image_bytes = max_image_bytes
        self.doc = doc
        self.dir_label = dir_label  # templates_dir as the user would write it, for messages
        self.problems: list[ConfigProblem] = []
        # Not errors: the load succeeds; `router validate` reports them.
        self.warnings: list[ConfigProblem] = []
        # Names defined by the environment (range, dict, ...), not variables.
        self._globals = frozenset(env.globals)
        # File template name -> (variables, ok); shared by routes using the same file.
        self._files: dict[str, tuple[frozenset[str], bool]] = {}

    def _file_label(self, name: str) -> str:
        return f"{self.dir_label.rstrip('/')}/{name}"

    def route(self, name: str, route: RouteConfig) -> RouteTemplates | None:
        parts: list[Part] = []
        used: set[str] = set()
        ok = True
        images = tuple(
            var for var, spec in (route.vars or {}).items() if spec.strip() == IMAGE_TYPE
        )
        if images and route.prompt is None:
            msg = (
                f"image variable(s) {', '.join(repr(v) for v in images)} need a prompt:"
                " an image is sent with the route's prompt, after its text"
            )
            self.problems.append(self.doc.problem(("routes", name, "vars", images[0]), msg))
            ok = False
        sources: list[tuple[Role, str]] = [] if route.prompt is None else [("user", "prompt")]
        if route.system is not None:
            sources.insert(0, ("system", "system"))
        for role, key in sources:
            compiled = self._one(name, key, getattr(route, key), route.vars, images)
            if compiled is None:
                ok = False
                continue
            tname, template, names, pieces = compiled
            # The route's prompt_cache marks the system message a cache breakpoint.
            cache = role == "system" and route.prompt_cache.system
            constant = None
            if not names:
                constant, refused = _constant(role, template, cache)
                if refused is not None:
                    msg = f"template {tname} cannot be rendered: {refused}"
                    self.problems.append(self.doc.problem(("routes", name, key), msg))
                    ok = False
                    continue
            parts.append((role, tname, template, constant, cache, pieces))
            used |= names
        if not ok:
            return None
        if route.vars is None:
            return RouteTemplates(name, parts, frozenset(used), None)
        for var in route.vars:
            if var not in used and var not in images:
                msg = (
                    f"variable {var!r} is declared but no template of route"
                    f" {name!r} uses it (a call must still pass it)"
                )
                self.warnings.append(
                    self.doc.problem(("routes", name, "vars", var), msg, at_key=True)
                )
        checks = {var: parse_var_type(spec) for var, spec in route.vars.items()}
        return RouteTemplates(name, parts, frozenset(checks), checks, images, self.max_image_bytes)

    def _one(
        self,
        route: str,
        key: str,
        source: Any,
        declared: Mapping[str, str] | None,
        images: tuple[str, ...] = (),
    ) -> tuple[str, Template, frozenset[str], tuple[Piece, ...] | None] | None:
        path: KeyPath = ("routes", route, key)
        if isinstance(source, str):
            tname = format_path(path)
            ast = self._parse_inline(source, tname, path)
        else:
            tname = source.file
            ast = self._parse_file(tname, (*path, "file"), path)
        if ast is None:
            return None
        names = self._variables(ast, tname, path, set())
        if names is None:
            return None
        if declared is not None:
            undeclared = sorted(names - set(declared))
            for var in undeclared:
                self._undeclared(var, declared, ast, source, tname, path)
            if undeclared:
                return None
        as_text = [var for var in images if var in names]
        for var in as_text:
            msg = (
                f"template {tname} uses image variable {var!r} as text: an image is sent"
                " as an image part after the prompt's text, so leave it out of the template"
                " (describe it in words, e.g. 'the chart below')"
            )
            self._place(var, msg, ast, source, tname, path)
        if as_text:
            return None
        pieces = _substitution(ast, self.env)  # before compiling: it may fold the tree
        try:
            template = self.env.from_string(ast)
        except TemplateSyntaxError as exc:
            self._syntax(exc, source, tname, path)
            return None
        return tname, template, names, pieces

    def _parse_inline(self, source: str, tname: str, path: KeyPath) -> nodes.Template | None:
        try:
            return self.env.parse(source, name=tname)
        except TemplateSyntaxError as exc:
            self._syntax(exc, source, tname, path)
            return None

    def _parse_file(self, name: str, where: KeyPath, path: KeyPath) -> nodes.Template | None:
        loader = self.env.loader
        assert loader is not None  # make_environment always sets one
        try:
            text, filename, _ = loader.get_source(self.env, name)
        except TemplateNotFound:
            self._missing(name, where)
            return None
        except FileRefusedError as exc:
            msg = f"cannot read template file {name!r}: {exc}"
            self.problems.append(self.doc.problem(where, msg))
            return None
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"cannot read template file {name!r}: {type(exc).__name__}"
            self.problems.append(self.doc.problem(where, msg))
            return None
        try:
            return self.env.parse(text, name=name, filename=filename)
        except TemplateSyntaxError as exc:
            self._syntax(exc, None, name, path)
            return None

    def _missing(self, name: str, where: KeyPath, included_by: str | None = None) -> None:
        try:
            known = self.env.list_templates()
        except OSError:
            known = []
        hint = did_you_mean(name, known)
        if included_by is None:
            msg = f"template file {name!r} not found in {self.dir_label}{hint}"
        else:
            msg = f"template {included_by} includes {name!r}, not found in {self.dir_label}{hint}"
        self.problems.append(self.doc.problem(where, msg))

    def _variables(
        self, ast: nodes.Template, tname: str, path: KeyPath, seen: set[str]
    ) -> frozenset[str] | None:
        """Names the template (and what it includes, imports or extends) reads."""
        # jinja2.meta also reports names the template assigns itself inside a branch
        # ({% if %}{% set x = ... %}); a name the template assigns is not an input.
        assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        names = set(meta.find_undeclared_variables(ast)) - self._globals - assigned
        ok = True
        for ref in meta.find_referenced_templates(ast):
            if ref is None:
                msg = (
                    f"template {tname} includes, imports or extends a computed template name;"
                    " only literal names are supported"
                )
                self.problems.append(self.doc.problem(path, msg))
                ok = False
                continue
            if ref in seen:
                continue
            seen.add(ref)
            sub = self._file_vars(ref, tname, path, seen)
            if sub is None:
                ok = False
            else:
                names |= sub
        return frozenset(names) if ok else None

    def _file_vars(
        self, ref: str, parent: str, path: KeyPath, seen: set[str]
    ) -> frozenset[str] | None:
        if ref in self._files:
            cached, good = self._files[ref]
            return cached if good else None
        loader = self.env.loader
        assert loader is not None
        try:
            text, filename, _ = loader.get_source(self.env, ref)
        except FileRefusedError as exc:
            msg = f"template {parent} includes {ref!r}, which cannot be read: {exc}"
            self.problems.append(self.doc.problem(path, msg))
            self._files[ref] = (frozenset(), False)
            return None
        except (TemplateNotFound, OSError, UnicodeDecodeError):
            self._missing(ref, path, included_by=parent)
            self._files[ref] = (frozenset(), False)
            return None
        try:
            ast = self.env.parse(text, name=ref, filename=filename)
            # Compile now so that the render-time include finds it in the cache.
            self.env.get_template(ref)
        except TemplateSyntaxError as exc:
            self._syntax(exc, None, ref, path)
            self._files[ref] = (frozenset(), False)
            return None
        except (OSError, UnicodeDecodeError) as exc:  # replaced between the two reads
            msg = f"template {parent} includes {ref!r}, which cannot be read: {exc}"
            self.problems.append(self.doc.problem(path, msg))
            self._files[ref] = (frozenset(), False)
            return None
        names = self._variables(ast, ref, path, seen)
        self._files[ref] = (names or frozenset(), names is not None)
        return names

    def _syntax(
        self, exc: TemplateSyntaxError, inline: str | None, tname: str, path: KeyPath
    ) -> None:
        msg = f"template syntax error in {tname}: {exc.message}"
        if inline is not None:
            self.problems.append(self._inline_problem(path, exc.lineno, msg))
        else:
            name = exc.name or tname
            self.problems.append(
                ConfigProblem(self._file_label(name), exc.lineno, None, format_path(path), msg)
            )

    def _inline_problem(self, path: KeyPath, lineno: int, msg: str) -> ConfigProblem:
        """Point at the YAML line holding line ``lineno`` of an inline template."""
        mark = self.doc.value_mark(path)
        if mark is None:
            return self.doc.problem(path, msg)
        if mark.block:  # the text of a `|` block starts on the next line
            return ConfigProblem(self.doc.file, mark.line + lineno, None, format_path(path), msg)
        if lineno == 1:
            return ConfigProblem(self.doc.file, mark.line, mark.col, format_path(path), msg)
        return ConfigProblem(self.doc.file, mark.line + lineno - 1, None, format_path(path), msg)

    def _undeclared(
        self,
        var: str,
        declared: Mapping[str, str],
        ast: nodes.Template,
        source: Any,
        tname: str,
        path: KeyPath,
    ) -> None:
        route = path[1]
        msg = (
            f"template {tname} uses variable {var!r}, which is not declared in "
            f"{format_path(('routes', route, 'vars'))}" + did_you_mean(var, declared)
        )
        self._place(var, msg, ast, source, tname, path)

    def _place(
        self, var: str, msg: str, ast: nodes.Template, source: Any, tname: str, path: KeyPath
    ) -> None:
        """Report ``msg`` at the line of the template that reads ``var``."""
        lineno = next(
            (n.lineno for n in ast.find_all(nodes.Name) if n.name == var and n.ctx == "load"),
            None,
        )
        if lineno is None:  # used by an included template
            self.problems.append(self.doc.problem(path, msg))
        elif isinstance(source, str):
            self.problems.append(self._inline_problem(path, lineno, msg))
        else:
            self.problems.append(
                ConfigProblem(self._file_label(tname), lineno, None, format_path(path), msg)
            )


def compile_routes(
    routes: Mapping[str, RouteConfig],
    templates_dir: Path,
    dir_label: str,
    doc: YamlDoc,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> tuple[dict[str, RouteTemplates], list[ConfigProblem], list[ConfigProblem]]:
    """Compile every route's templates in one environment rooted at ``templates_dir``.

    Args:
        routes: the routes to compile, by name.
        templates_dir: where ``{file: ...}`` templates are read from.
        dir_label: ``templates_dir`` as shown in messages (relative to the caller's view).
        doc: the YAML the routes came from, to place problems on its lines.
        max_image_bytes: settings.max_image_bytes, the cap on a call's image bytes.

    Returns:
        The compiled routes that had no problem, every problem found, and every
        warning (a declared variable no template uses).
    """
    compiler = _Compiler(make_environment(templates_dir), doc, dir_label, max_image_bytes)
    out: dict[str, RouteTemplates] = {}
    for name, route in routes.items():
        compiled = compiler.route(name, route)
        if compiled is not None:
            out[name] = compiled
    return out, compiler.problems, compiler.warnings
