"""What the README says about installing matches pyproject.toml and the LICENSE file."""

from __future__ import annotations

import re
import tomllib

from tests.sandbox import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_license_file_is_the_license_pyproject_declares() -> None:
    declared = PYPROJECT["project"]["license"]["text"]
    license_text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert license_text.splitlines()[0] == f"{declared} License"
    assert "yaml-llm-router contributors" in license_text


def test_readme_lists_every_extra_and_no_other() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    section = README.split("## Install", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w-]+)` \|", section, re.M))
    assert listed == extras


def test_readme_install_names_the_distribution() -> None:
    name = PYPROJECT["project"]["name"]
    assert f'pip install "{name} @ git+https://' in README
    assert f'pip install "{name}[prometheus,otel] @ git+https://' in README
