"""The project's docs stand on their own: nothing points outside the repository.

README.md, docs/, providers.yaml, templates/, router/, scripts/ and examples/ may
not refer to design notes, issue numbers or fixture folders that are not in the
repository: a reader cannot follow such a reference.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.sandbox import REPO

SCANNED = ("README.md", "providers.yaml", "docs", "templates", "router", "scripts", "examples")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".j2", ".json", ".toml", ".txt", ""}
# What a reference to something outside the repository looks like.
OUTSIDE = [
    ("a design document", re.compile(r"\bDESIGN(\.md)?\b")),
    ("a folder beside the repository", re.compile(r"\.\./shared\b|\bshared/fixtures\b")),
    ("an issue or ticket number", re.compile(r"\b(issue|ticket|PR)\s*#?\s*\d+", re.I)),
    ("an issue", re.compile(r"\bthe ([\w-]+ )?issue\b(?!s? (a|an|the|with)\b)", re.I)),
    ("a brief", re.compile(r"\bthe brief\b", re.I)),
]


def _files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
            ]
    return files


def outside_references(text: str) -> list[tuple[int, str, str]]:
    """(line, what, matched text) for each reference outside the repository."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, pattern in OUTSIDE:
            if m := pattern.search(line):
                found.append((n, what, m.group(0)))
    return found


def test_docs_and_code_refer_to_nothing_outside_the_repository() -> None:
    problems = [
        f"{path.relative_to(REPO)}:{n}: {what}: {match!r}"
        for path in _files()
        for n, what, match in outside_references(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        'lateness per DESIGN.md "One deadline per call"',
        "copied from ../shared/fixtures",
        "see issue 7 item 4",
        "as Issue #12 says",
        "in the scale-out issue",
        "as the issue requires",
        "what the brief asks",
    ],
)
def test_each_kind_of_outside_reference_is_caught(line: str) -> None:
    assert outside_references(line)


@pytest.mark.parametrize(
    "line",
    [
        "isolation_level=None,  # we issue BEGIN/COMMIT ourselves",
        "a Ticket holding the reservation",
        "the designated provider",
        "fixtures in tests/fixtures",
    ],
)
def test_ordinary_words_are_not_references(line: str) -> None:
    assert not outside_references(line)
