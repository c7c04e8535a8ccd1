"""Importing an exporter without its optional extra names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.sandbox import REPO

# module, the extra it needs, the top-level package that extra provides
EXPORTERS = [
    ("router.metrics.prometheus", "prometheus", "prometheus_client"),
    ("router.metrics.otel", "otel", "opentelemetry"),
]


def _import_without(module: str, missing: str) -> subprocess.CompletedProcess[str]:
    """Import ``module`` in a fresh interpreter where ``missing`` cannot be imported."""
    code = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # as if the package were not installed\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e.name, '|', e)\n"
        "else:\n"
        "    print('imported')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )


@pytest.mark.parametrize(("module", "extra", "package"), EXPORTERS)
def test_missing_dependency_names_the_extra(module: str, extra: str, package: str) -> None:
    out = _import_without(module, package).stdout.strip()
    assert out.startswith(f"ImportError {package}"), out  # e.name: the missing module
    assert f'{module} needs the "{extra}" extra: ' in out
    assert f'pip install "yaml-llm-router[{extra}]"' in out


@pytest.mark.parametrize(("module", "extra", "package"), EXPORTERS)
def test_with_the_dependency_the_module_imports(module: str, extra: str, package: str) -> None:
    assert _import_without(module, "not_a_dependency_of_" + extra).stdout.strip() == "imported"
