"""The public surface: ``router/__init__.py`` re-exports the API with a sorted
``__all__``, and importing the package does nothing (no logging setup, no loop, no
threads, no files, no env reads of keys).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from pydantic import BaseModel

import router
import router.errors as errors_module
from router.errors import RouterError

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_sorted_and_unique() -> None:
    assert list(router.__all__) == sorted(router.__all__)
    assert len(set(router.__all__)) == len(router.__all__)


@pytest.mark.parametrize("name", router.__all__)
def test_every_exported_name_is_importable(name: str) -> None:
    """``from router import <name>`` works for every name in __all__, and the object is
    defined inside the package (not a re-export of a dependency)."""
    obj = getattr(router, name)
    assert obj is not None
    assert getattr(obj, "__module__", "router").startswith("router")


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from router import *", namespace)  # the point of the test
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(router.__all__)


@pytest.mark.parametrize(
    "name", ["Router", "load_config", "Completion", "Attempt", "Usage", "Config", "Message"]
)
def test_the_core_names_are_public(name: str) -> None:
    assert name in router.__all__


def _error_classes() -> list[type[RouterError]]:
    """Every RouterError subclass defined in router.errors (walked, not listed by hand)."""
    return sorted(
        (
            cls
            for _, cls in inspect.getmembers(errors_module, inspect.isclass)
            if issubclass(cls, RouterError) and cls.__module__ == errors_module.__name__
        ),
        key=lambda c: c.__name__,
    )


ERROR_NAMES = [cls.__name__ for cls in _error_classes()]


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_every_error_class_is_public(name: str) -> None:
    """Every error a caller can see is importable from ``router`` itself."""
    assert name in router.__all__
    assert getattr(router, name) is getattr(errors_module, name)


def test_the_error_walk_found_the_whole_tree() -> None:
    """The walk above is not vacuous: it finds the documented tree."""
    for name in (
        "RouterError",
        "ConfigError",
        "TemplateError",
        "BudgetExceededError",
        "DeadlineExceededError",
        "AllProvidersFailedError",
        "ProviderError",
        "RateLimitError",
        "ServerError",
        "ProviderTimeoutError",
        "ProviderConnectionError",
        "AuthenticationError",
        "ModelNotFoundError",
        "EndpointNotFoundError",
        "GoneError",
        "ContextLengthError",
        "BadRequestError",
        "ContentFilterError",
        "InvalidResponseError",
    ):
        assert name in ERROR_NAMES
    assert all(
        issubclass(getattr(router, n), RouterError) for n in router.__all__ if n.endswith("Error")
    )


def test_errors_module_all_lists_every_error_class() -> None:
    assert sorted(errors_module.__all__) == sorted([*ERROR_NAMES, "ConfigProblem"])


_PROBE = r"""
import asyncio, json, os, sys, threading, logging

read = []

before_files = set(os.listdir("."))
before_threads = threading.active_count()
before_handlers = list(logging.getLogger().handlers)

# Record every environment variable read during the import.
environ = os.environ
orig_getitem = type(environ).__getitem__
def getitem(self, key):
    read.append(key)
    return orig_getitem(self, key)
type(environ).__getitem__ = getitem

import router, router.cli, router.logging, router.router  # noqa: F401

type(environ).__getitem__ = orig_getitem
structlog_imported = "structlog" in sys.modules
import structlog

try:
    asyncio.get_running_loop()
    running = True
except RuntimeError:
    running = False
policy_loop = getattr(asyncio.get_event_loop_policy(), "_local", None)
print(json.dumps({
    "structlog_configured": structlog.is_configured(),
    "structlog_imported": structlog_imported,
    "router_handlers": [type(h).__name__ for h in logging.getLogger("router").handlers],
    "threads": threading.active_count() - before_threads,
    "running_loop": running,
    "policy_loop_set": getattr(policy_loop, "_loop", None) is not None,
    "new_files": sorted(set(os.listdir(".")) - before_files),
    "root_handlers_changed": logging.getLogger().handlers != before_handlers,
    "key_vars_read": [k for k in read if "KEY" in k.upper()],
}))
"""


def test_importing_router_does_nothing(tmp_path: Path) -> None:
    """In a fresh interpreter (cwd: an empty folder, an API key in the env), importing
    router and its CLI does not import structlog, configures no logging (the ``router``
    logger has only its NullHandler), starts no thread
    and no event loop, creates no file (no ledger), and reads no key variable."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PYTHONPATH": str(ROOT),
            "OPENAI_API_KEY": "sk-import-time-0123456789",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {
        "structlog_configured": False,
        "structlog_imported": False,  # only router.logging.configure() needs it
        "router_handlers": ["NullHandler"],  # nothing printed until the app configures
        "threads": 0,
        "running_loop": False,
        "policy_loop_set": False,
        "new_files": [],
        "root_handlers_changed": False,
        "key_vars_read": [],
    }
    assert proc.stderr == ""


def test_python_c_import_router_leaves_structlog_unconfigured() -> None:
    """The literal check of the brief: ``python -c "import router"`` then
    ``structlog.is_configured()`` is False."""
    code = "import router, structlog; print(structlog.is_configured())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def _own_doc(obj: object) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return (doc or "").strip()


def test_public_functions_and_non_error_classes_have_docstrings() -> None:
    """Google-style docstrings on public names (STYLE.md 8)."""
    undocumented = [
        name
        for name in router.__all__
        if not name.endswith("Error")
        and (inspect.isclass(getattr(router, name)) or inspect.isfunction(getattr(router, name)))
        and not _own_doc(getattr(router, name))
    ]
    assert undocumented == []


def test_every_public_error_class_documents_when_it_is_raised() -> None:
    undocumented = [
        n for n in router.__all__ if n.endswith("Error") and not _own_doc(getattr(router, n))
    ]
    assert undocumented == []


def test_fallback_on_vocabulary_is_exactly_the_error_kinds() -> None:
    """The YAML's fallback_on names (a Literal in the schema) and the errors' kinds agree,
    and the policy table has a rule for every kind."""
    from typing import get_args

    from router.config import ErrorKind
    from router.errors import ERROR_KINDS
    from router.policy import POLICY

    assert set(get_args(ErrorKind)) == set(ERROR_KINDS) == set(POLICY)


# Names for annotations written under TYPE_CHECKING (e.g. Attempt.error: RouterError).
_NAMES = {**vars(errors_module), **vars(router)}


def _hints(obj: object) -> dict[str, object]:
    return get_type_hints(obj, localns=_NAMES)


def _router_types(annotation: object) -> Iterator[type]:
    """Every class defined in the router package that ``annotation`` names (through
    unions, generics, Callable arguments and the like)."""
    if isinstance(annotation, type) and annotation.__module__.split(".")[0] == "router":
        yield annotation
    for arg in get_args(annotation):
        yield from _router_types(arg)


def _public_hints(cls: type) -> Iterator[tuple[str, object]]:
    """(where, annotation) for the public methods, properties and fields of ``cls``."""
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in ("__init__", "__aenter__", "__aiter__"):
            continue
        if name == "__init__" and cls is not router.Router:
            continue  # apps build only the Router; the rest are handed to them
        target = member.fget if isinstance(member, property) else member
        if not callable(target):
            continue
        try:
            hints = _hints(target)
        except TypeError:
            continue  # a builtin or a non-function attribute
        for key, hint in hints.items():
            yield f"{cls.__name__}.{name}:{key}", hint
    if dataclasses.is_dataclass(cls):
        for key, hint in _hints(cls).items():
            if not key.startswith("_"):
                yield f"{cls.__name__}.{key}", hint


def test_every_type_a_public_method_takes_or_returns_is_exported() -> None:
    """Walk from Router (and every exported class reached): each router-defined type in a
    public signature or a public result's fields is importable from ``router``. The
    YAML schema models (pydantic, under Config) are described by docs/config.md and the
    JSON schema instead, so the walk does not descend into them."""
    exported = {id(getattr(router, n)) for n in router.__all__}
    seen: set[type] = set()
    todo: list[type] = [router.Router]
    missing: dict[str, str] = {}
    functions = [
        getattr(router, n) for n in router.__all__ if inspect.isfunction(getattr(router, n))
    ]
    for fn in functions:
        for key, hint in _hints(fn).items():
            todo += [t for t in _router_types(hint)]
            for t in _router_types(hint):
                if id(t) not in exported:
                    missing[t.__qualname__] = f"{fn.__name__}:{key}"
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if issubclass(cls, BaseModel) and cls is not router.Router:
            continue
        for where, hint in _public_hints(cls):
            for t in _router_types(hint):
                if id(t) not in exported:
                    missing.setdefault(t.__qualname__, where)
                todo.append(t)
    assert missing == {}, f"router-defined types in public signatures but not exported: {missing}"
    # The walk is not vacuous: it reached the types apps get back from calls and reloads.
    for name in ("RouteStream", "ReloadReport", "Observer", "ProviderState", "Completion"):
        assert getattr(router, name) in seen, name


def test_the_metrics_read_the_router_through_its_public_methods_only() -> None:
    """The exporters and stats read no private attribute of a Router, and stats does not
    import router.router (the old metrics.stats <-> router cycle)."""
    metrics = ROOT / "router" / "metrics"
    for path in sorted(metrics.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                base = node.value
                owner = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                assert owner not in ("router", "_router"), (
                    f"{path.name}:{node.lineno}: reads {owner}.{node.attr}"
                )
    stats = ast.parse((metrics / "stats.py").read_text())
    imported = {
        node.module for node in ast.walk(stats) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "router.router" not in imported
