"""``--var`` values: ``NAME=VALUE``, ``NAME=@FILE`` (the file's text), ``NAME=@-``
(standard input, once), ``NAME=@@...`` (a value that starts with ``@``).

A value is typed by the route's declared ``vars``:

- declared ``str``: the text as given;
- declared otherwise (``int``, ``float``, ``bool``, ``list[...]``, ``dict``): the text
  parsed as JSON (``5``, ``[1.5, 2]``, ``true``, ``{"a": 1}``); text that is not
  JSON is passed as a string, and the route's check then names the variable and
  the type it wanted;
- not declared (a route without ``vars``): an inline value is JSON when it parses
  as JSON, else a string; a value read from a file or stdin is always a string.

Text read from a file or stdin loses its final line end (one ``\n`` or ``\r\n``),
the one a text file's last line or ``echo`` ends with; nothing else is changed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from .common import UsageError

__all__ = ["add_var_argument", "parse_vars"]

_FORMS = "NAME=VALUE, NAME=@FILE, NAME=@- (stdin) or NAME=@@VALUE (a literal '@')"


def add_var_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "a template variable (repeatable). VALUE is typed by the route's declared vars "
            "(JSON for int, float, bool, list, dict); NAME=@FILE reads the value from a "
            "file, NAME=@- from stdin, NAME=@@x is the literal '@x'"
        ),
    )


def parse_vars(
    pairs: Sequence[str], declared: Mapping[str, str] | None, stdin: TextIO
) -> dict[str, Any]:
    """The ``--var`` values, typed by ``declared`` (the route's ``vars``, or None).

    Raises:
        UsageError: a pair is malformed, a name is given twice, stdin is named twice,
            or a file cannot be read.
    """
    out: dict[str, Any] = {}
    stdin_used = False
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--var {pair!r}: expected {_FORMS}")
        if name in out:
            raise UsageError(f"--var {name}: given more than once")
        from_file = False
        if raw.startswith("@@"):
            raw = raw[1:]
        elif raw == "@-":
            if stdin_used:
                raise UsageError(f"--var {name}=@-: standard input can be read only once")
            stdin_used = from_file = True
            raw = _one_line_end_off(stdin.read())
        elif raw.startswith("@"):
            raw = _one_line_end_off(_read(name, raw[1:]))
            from_file = True
        out[name] = _typed(raw, None if declared is None else declared.get(name), from_file)
    return out


def _read(name: str, path: str) -> str:
    if not path:
        raise UsageError(f"--var {name}=@: no file named after '@' (write @@ for a literal '@')")
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"--var {name}=@{path}: file not found (write {name}=@@... for a value"
            " that starts with '@')"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"--var {name}=@{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"--var {name}=@{path}: cannot read: {exc.strerror}") from None


def _one_line_end_off(text: str) -> str:
    """The text without its final line end (a file's last line ends with one; `echo` adds one)."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _typed(raw: str, declared: str | None, from_file: bool) -> Any:
    if declared is not None and declared.strip() == "str":
        return raw
    if declared is None and from_file:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw
