"""Shared test setup: no test may reach the network beyond loopback; each test starts
with logging unconfigured; the fault suites' figures are printed only on request
(``--fault-report``); an xfail reason fits on one line."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import structlog

from router.logger import LOGGER_NAMES
from tests.netguard import guarded_connect, guarded_connect_ex

# The local upstream server fixtures, for every test module.
from tests.upstream import upstream, upstream_factory  # noqa: F401


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection to a non-loopback address."""
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Any:
    """Undo any logging configuration a test made (router.logging.configure(), which
    the CLI calls, sets structlog up and puts a handler and a level on the ``router``
    logger), so a later test starts from an unconfigured library."""
    loggers = [logging.getLogger(name) for name in LOGGER_NAMES]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    yield
    structlog.reset_defaults()
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


# -------------------------------------------------------------------------- fault report

# fault_report(lines): a fault suite's figures (calls, outcomes, overshoot, loop lag).
FaultReport = Callable[[Sequence[str]], None]
_FAULT_REPORT = pytest.StashKey[list[list[str]]]()
# Longest xfail reason: the story goes in the test's docstring, the reason in -ra's line.
XFAIL_REASON_LIMIT = 100


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-report",
        action="store_true",
        help="print the fault suites' figures (calls, outcomes, deadline overshoot, loop lag)"
        " at the end of the run",
    )


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    """Keep a fault suite's figures for the end of the run (shown with --fault-report)."""
    blocks = request.config.stash.setdefault(_FAULT_REPORT, [])
    return lambda lines: blocks.append(list(lines))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    blocks = config.stash.get(_FAULT_REPORT, [])
    if blocks and config.getoption("--fault-report"):
        terminalreporter.section("fault report")
        for block in blocks:
            for line in block:
                terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse an xfail reason longer than one short line (-ra prints it per test)."""
    for item in items:
        for mark in item.iter_markers("xfail"):
            reason = str(mark.kwargs.get("reason", ""))
            if len(reason) > XFAIL_REASON_LIMIT:
                raise pytest.UsageError(
                    f"{item.nodeid}: xfail reason is {len(reason)} characters (at most"
                    f" {XFAIL_REASON_LIMIT}); put the explanation in the test's docstring"
                )
