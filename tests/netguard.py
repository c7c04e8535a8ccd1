"""The loopback-only guard: no test, and no process a test starts, reaches the network.

:func:`install` patches ``socket.socket.connect``/``connect_ex`` for the whole
process so that any address that is not loopback (or a Unix socket) raises
``RuntimeError``. ``tests/conftest.py`` applies the same two functions to every
test; ``tests/offline_site/sitecustomize.py`` installs them in every Python
subprocess started with :func:`tests.sandbox.offline_env` (the docs' examples,
``examples/``).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return True  # AF_UNIX paths and socketpairs are local


def guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_loopback(address):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _is_loopback(address):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


def install() -> None:
    """Guard this whole process (for subprocesses; tests use the conftest fixture)."""
    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
