"""Run documentation examples and example apps offline, as a user would run them.

:func:`offline_env` builds the environment for a subprocess: a ``bin/`` directory
first on ``PATH`` with ``python``/``python3`` (this interpreter) and ``router``
(``python -m router``) shims, ``PYTHONPATH`` pointing at this checkout and at
``tests/offline_site`` (whose ``sitecustomize`` lets the process connect to loopback
only, tests/netguard.py), and no ``*_API_KEY`` variables.

:func:`offline_twin` turns a providers.yaml document into one that runs without a
network or a key: every provider that is not ``kind: mock`` becomes a mock of the
same name serving the same models at the same prices, so routes, budgets, fallback
chains and stats keep their names and shape.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OFFLINE_SITE = Path(__file__).resolve().parent / "offline_site"
# What an offline twin's providers answer; {model} is the model asked for.
TWIN_REPLY = "offline answer from {model}"
# The model fields a twin keeps (a mock serves any model; these shape costs and caps).
_MODEL_KEYS = ("price", "context_window", "max_output_tokens")


def offline_env(bin_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an offline subprocess, with its shims written to ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shims = {
        "python": f'exec "{sys.executable}" "$@"\n',
        "python3": f'exec "{sys.executable}" "$@"\n',
        "router": f'exec "{sys.executable}" -m router "$@"\n',
    }
    for name, body in shims.items():
        shim = bin_dir / name
        shim.write_text("#!/bin/sh\n" + body)
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{OFFLINE_SITE}{os.pathsep}{REPO}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONSTARTUP", None)
    env.update(extra or {})
    return env


def offline_twin(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` (a parsed providers.yaml) with every non-mock provider made a mock."""
    twin = dict(doc)
    providers: dict[str, Any] = {}
    for name, provider in (doc.get("providers") or {}).items():
        if provider.get("kind") == "mock":
            providers[name] = provider
            continue
        models = {
            model: {k: v for k, v in (spec or {}).items() if k in _MODEL_KEYS}
            for model, spec in (provider.get("models") or {}).items()
        }
        providers[name] = {
            "kind": "mock",
            "mock": {"reply": TWIN_REPLY, "latency_s": 0.0},
            "models": models,
        }
    twin["providers"] = providers
    return twin
