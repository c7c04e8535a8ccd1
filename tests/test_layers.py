"""The layering rules are checked: the import-linter contracts in pyproject.toml hold
for router/, and each breaks when a forbidden import is added back.

``lint-imports`` runs them in scripts/check too; here they are part of the suite.
Each run is a subprocess (about half a second) on a copy of the package, so that
the graph is built from the files and not from the modules already imported.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# lint-imports, run by the interpreter running the tests (the same venv).
_LINT = (
    "import sys; from importlinter.cli import lint_imports_command; "
    "sys.exit(lint_imports_command())"
)


def lint_imports(cwd: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    args = [a for c in contracts for a in ("--contract", c)]
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def contract_ids() -> set[str]:
    return set(contracts())


def router_modules() -> set[str]:
    """Every module and package directly under router/ (``__main__`` aside)."""
    pkg = ROOT / "router"
    modules = {f"router.{p.stem}" for p in pkg.glob("*.py") if not p.stem.startswith("__")}
    return modules | {f"router.{p.parent.name}" for p in pkg.glob("*/__init__.py")}


def test_every_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "BROKEN" not in out
    assert f"Contracts: {len(contract_ids())} kept, 0 broken." in out


def test_every_module_is_placed() -> None:
    """A new module is a base type or is forbidden to the base types and the adapters:
    the contracts name modules, so one left out would be unchecked."""
    everything = router_modules()
    base = contracts()["base"]
    base_types = set(base["source_modules"])
    assert base_types | set(base["forbidden_modules"]) == everything
    assert not base_types & set(base["forbidden_modules"])
    adapters = contracts()["adapters"]
    forbidden = {m for m in adapters["forbidden_modules"] if m.startswith("router.")}
    assert forbidden == everything - base_types - {"router.providers"}


# (module file under router/, the import added back, the contract it breaks, what it says)
LEAKS = [
    (
        "transport.py",
        "from router.providers.base import Adapter",
        "transport",
        "router.transport is not allowed to import router.providers",
    ),
    (
        "transport.py",
        "from router.config import Config",
        "transport",
        "router.transport is not allowed to import router.config",
    ),
    (
        "providers/mock.py",
        "from router.config import MockSettings",
        "adapters",
        "router.providers is not allowed to import router.config",
    ),
    (
        "providers/openai.py",
        "from router.transport import Transport",
        "adapters",
        "router.providers is not allowed to import router.transport",
    ),
    (
        "providers/anthropic.py",
        "from router.router import Router",
        "adapters",
        "router.providers is not allowed to import router.router",
    ),
    (
        "providers/ollama.py",
        "import asyncio",
        "adapters",
        "router.providers is not allowed to import asyncio",
    ),
    (
        "providers/base.py",
        "import httpx",
        "adapters",
        "router.providers is not allowed to import httpx",
    ),
    (
        "providers/error_body.py",
        "import time",
        "adapters",
        "router.providers is not allowed to import time",
    ),
    (
        "providers/error_body.py",
        "from router.providers.base import Adapter",
        "adapter-layers",
        "router.providers.error_body is not allowed to import router.providers.base",
    ),
    (
        "config.py",
        "from router.router import Router",
        "config",
        "router.config is not allowed to import router.router",
    ),
    (
        "templates.py",
        "from router.providers import build_adapter",
        "config",
        "router.templates is not allowed to import router.providers",
    ),
    (
        "types.py",
        "from router.config import Config",
        "base",
        "router.types is not allowed to import router.config",
    ),
    (
        "errors.py",
        "from router.call import Call",
        "base",
        "router.errors is not allowed to import router.call",
    ),
    (
        "redact.py",
        "from router.logging import get_logger",
        "base",
        "router.redact is not allowed to import router.logging",
    ),
]


def test_every_contract_has_a_leak_case() -> None:
    assert {contract for _, _, contract, _ in LEAKS} == contract_ids()


@pytest.mark.parametrize(("module", "line", "contract", "says"), LEAKS)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str, says: str
) -> None:
    shutil.copytree(ROOT / "router", tmp_path / "router", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "router" / module
    target.write_text(target.read_text() + f"\n{line}\n")

    result = lint_imports(tmp_path, contract)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "BROKEN" in out
    assert says in out
