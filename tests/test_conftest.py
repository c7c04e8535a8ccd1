"""The test setup keeps the default output short: the fault suites' figures only with
``--fault-report``, and no xfail reason longer than one short line."""

from __future__ import annotations

from typing import Any

import pytest

from tests import conftest


class Reporter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def section(self, title: str) -> None:
        self.lines.append(f"== {title} ==")

    def write_line(self, line: str) -> None:
        self.lines.append(line)


class Config:
    def __init__(self, report: bool) -> None:
        self.stash = pytest.Stash()
        self.report = report

    def getoption(self, name: str) -> Any:
        assert name == "--fault-report"
        return self.report


class Request:
    def __init__(self, config: Config) -> None:
        self.config = config


@pytest.mark.parametrize("flag", [False, True])
def test_fault_figures_are_printed_at_the_end_only_with_the_flag(flag: bool) -> None:
    config = Config(flag)
    record = conftest.fault_report.__wrapped__(Request(config))  # type: ignore[attr-defined]
    record(["mixed run: 10 calls", "  outcomes: {}"])
    record(["money: 3 calls"])
    reporter = Reporter()
    conftest.pytest_terminal_summary(reporter, config)  # type: ignore[arg-type]
    expected = ["== fault report ==", "mixed run: 10 calls", "  outcomes: {}", "money: 3 calls"]
    assert reporter.lines == (expected if flag else [])


class Item:
    def __init__(self, reason: str) -> None:
        self.nodeid = "tests/x.py::test_x"
        self.mark = pytest.mark.xfail(reason=reason, strict=True).mark

    def iter_markers(self, name: str) -> list[Any]:
        return [self.mark] if name == "xfail" else []


def test_a_long_xfail_reason_is_refused() -> None:
    conftest.pytest_collection_modifyitems([Item("router bug: probe not released")])  # type: ignore[list-item]
    with pytest.raises(pytest.UsageError, match=r"xfail reason is 150 characters"):
        conftest.pytest_collection_modifyitems([Item("x" * 150)])  # type: ignore[list-item]
