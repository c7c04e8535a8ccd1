"""Helpers to build a Router from a YAML snippet written to a temp folder."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import yaml

from router.plan import Plan, load_config


def write_config(tmp_path: Path, body: str, templates: Mapping[str, str] | None = None) -> Path:
    """Write ``body`` as providers.yaml (adding version 1 and a memory ledger unless given).

    Also writes ``templates`` into templates/; returns the YAML's path.
    """
    doc = yaml.safe_load(textwrap.dedent(body))
    doc.setdefault("version", 1)
    doc.setdefault("settings", {}).setdefault("ledger", {"backend": "memory"})
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    for name, source in (templates or {}).items():
        tdir = tmp_path / "templates"
        tdir.mkdir(exist_ok=True)
        (tdir / name).write_text(source)
    return path


def make_config(
    tmp_path: Path,
    body: str,
    env: Mapping[str, str] | None = None,
    templates: Mapping[str, str] | None = None,
) -> Plan:
    return load_config(write_config(tmp_path, body, templates), env=dict(env or {}))
