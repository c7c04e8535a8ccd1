"""A route's ``image`` variables: a call's value turned into an image part.

A variable declared ``image`` (``vars: {chart: image}``) is not text: its value
becomes an :class:`~router.types.Image` part of the rendered prompt, after the
prompt's text, in the order the route declares its image variables. Its value
is one of

- an ``http://`` or ``https://`` URL: passed on as it is, never fetched (its
  size is then unknown to the token estimate, which counts the provider's
  worst case);
- a file path (``str`` or ``os.PathLike``): read when the call renders, before
  any traffic. Read inline, on the caller's thread: a 20 MB file takes about
  10 ms from the page cache (docs/conversations.md, "Images");
- ``bytes``.

Bytes (read or given) must be a PNG, JPEG, GIF or WebP image (sniffed from
their magic number, whatever a file's name says) of at most
``settings.max_image_bytes``; a file larger than that is refused before it is
read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from router.images import bytes_problem, sniff
from router.types import Image

__all__ = ["check_image_value", "image_from_value"]


def check_image_value(value: Any) -> str | None:
    """The type check of an ``image`` variable (its content is checked when read)."""
    if isinstance(value, str | bytes | bytearray | memoryview | os.PathLike):
        return None
    return f"must be image (a file path, an http(s) URL or bytes), got {type(value).__name__}"


def image_from_value(value: Any, max_bytes: int) -> Image:
    """The Image part for an ``image`` variable's value.

    Raises:
        ValueError: what is wrong (the caller names the route and the variable).
    """
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        where = ""
    elif isinstance(value, str) and value.startswith(("http://", "https://")):
        return Image(url=value)
    elif isinstance(value, str | os.PathLike):
        data = _read(Path(value), max_bytes)
        where = f"file {os.fspath(value)!r}: "
    else:
        raise ValueError(check_image_value(value))
    problem = bytes_problem(data, max_bytes)
    if problem is not None:
        raise ValueError(where + problem)
    return Image(data=data, mime=sniff(data))


def _read(path: Path, max_bytes: int) -> bytes:
    """A file's bytes, refused before reading when it is not a regular file or is
    larger than ``max_bytes``."""
    shown = os.fspath(path)
    try:
        with path.open("rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"{shown!r} is not a regular file")
            if info.st_size > max_bytes:
                raise ValueError(
                    f"file {shown!r} is {info.st_size:,} bytes, over"
                    f" settings.max_image_bytes ({max_bytes:,})"
                )
            return f.read(max_bytes + 1)  # a file that grew meanwhile is refused by the cap
    except FileNotFoundError:
        raise ValueError(f"file {shown!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{shown!r} is a directory, not an image file") from None
    except OSError as exc:
        raise ValueError(
            f"cannot read file {shown!r}: {exc.strerror or type(exc).__name__}"
        ) from None
