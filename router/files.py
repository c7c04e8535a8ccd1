"""Reading the files a config names (regular files only, of bounded size), and
checking that a file the router will write can be written.

``providers.yaml`` and every template file (including what a template includes,
imports or extends) is read through :func:`read_config_file`. A FIFO would block
the read forever and a device such as ``/dev/zero`` would read until memory runs
out, so anything but a regular file is refused before a byte is read, and a file
larger than :data:`MAX_FILE_BYTES` is refused with the limit in the message.
"""

from __future__ import annotations

import os
import stat
import tempfile

__all__ = ["MAX_FILE_BYTES", "FileRefusedError", "read_config_file", "why_unwritable"]

# The largest file the loader reads. A real providers.yaml is a few kilobytes and a
# long prompt template some tens; 1 MiB leaves room for generated files while the
# slowest file of that size (half a million one-character values) loads in seconds.
MAX_FILE_BYTES = 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefusedError(OSError):
    """The path names something the loader will not read; ``str()`` says why."""


def read_config_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit``.

    Raises:
        FileNotFoundError: nothing exists at ``path``.
        FileRefusedError: ``path`` is not a regular file, or is larger than ``limit``.
        OSError: the file cannot be opened or read.
    """
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        # fstat of the opened file: what is read is what was checked.
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise FileRefusedError(f"{what}, not a regular file: the loader reads only files")
        too_big = f"larger than the {_size(limit)} limit for a config file"
        if os.fstat(fd).st_size > limit:
            raise FileRefusedError(too_big)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # read one byte past the limit to see a file that grew
            chunk = os.read(fd, min(1024 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefusedError(too_big)
        return b"".join(chunks)
    finally:
        os.close(fd)


def why_unwritable(path: str | os.PathLike[str]) -> str | None:
    """Why a file that will be created or written at ``path`` (with companions beside
    it, as SQLite's journal and a lock file) cannot be, or None when it can.

    The folder must exist and take a new file: that is tried for real (a probe file
    is created and removed at once), because permission bits do not tell the whole
    story (a read-only mount, root, ACLs, a pseudo file system). An existing file
    must be a regular file that may be written; it is checked, not opened.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        return f"its folder {folder} does not exist"
    except NotADirectoryError:
        return f"a part of the path to its folder {folder} is a file, not a directory"
    except OSError as exc:
        return f"its folder {folder} cannot be read: {exc.strerror or type(exc).__name__}"
    if not stat.S_ISDIR(mode):
        return f"its folder {folder} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".router-write-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"no file can be created in its folder {folder}: {reason}"
    os.close(fd)
    os.unlink(probe)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None  # created on first open
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or type(exc).__name__}"
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        return f"it is {what}, not a regular file"
    if not os.access(path, os.W_OK):
        return "the file is not writable"
    return None


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB ({n} bytes)"
    return f"{n} bytes"
