"""Shared test setup: no test may reach the network beyond loopback."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import structlog

from tests.netguard import guarded_connect, guarded_connect_ex

# The local upstream server fixtures, for every test module.
from tests.upstream import upstream, upstream_factory  # noqa: F401


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection to a non-loopback address."""
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Any:
    """Undo any structlog configuration a test made (the CLI configures it), so a later
    test's capture_logs() is not filtered by an earlier test's level."""
    yield
    structlog.reset_defaults()
