"""Validate a providers.yaml: the one implementation behind ``scripts/validate_config.py``
and ``router validate``.

Exit codes: 0 valid, 1 invalid (every problem printed, one per line), 2 usage
error (bad arguments). A file that does not exist is invalid (1), with a
message saying so. A valid file may also get warnings (:mod:`router.advice`:
a base_url that will 404, a field a provider has retired; and a declared
template variable no template uses), printed before the summary, one per line
(``file:line:col: path: warning: ...``); they do not change the exit code.

``--online`` then checks every key with its provider's free model listing (the
check ``Router.start(verify_keys=True)`` runs): a key a provider rejects (401 or
403) is a problem (exit 1); a provider that cannot be reached is listed as not
checked, and the file is still valid (exit 0).

The command's arguments are declared once, in :func:`add_arguments`, and read once,
in :func:`run_args`: the script and the ``router validate`` subcommand share both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from router.advice import config_advice
from router.config import Loaded, read_config
from router.errors import ConfigError, ConfigProblem
from router.redact import redact
from router.yamlsrc import load_yaml

if TYPE_CHECKING:
    from router.types import KeyCheck

__all__ = ["add_arguments", "main", "problem_dict", "run_args", "run_validate"]

Format = Literal["text", "github", "json"]
FORMATS: tuple[Format, ...] = ("text", "github", "json")


def run_validate(
    path: str,
    *,
    no_env: bool = False,
    fmt: Format = "text",
    out: TextIO | None = None,
    online: bool = False,
    timeout_s: float | None = None,
) -> int:
    """Load ``path`` and report: a one-line summary when valid, every problem when not,
    and every warning either way. Beyond what loading checks, the spend ledger file
    (kept when there are budgets) must be creatable and writable where the config
    puts it.

    Args:
        path: the YAML file.
        no_env: check structure only; providers whose key variable is unset are
            reported as disabled instead of failing (CI runners often lack secrets).
        fmt: ``text`` prints ``file:line:col: path: message``; ``github`` prints
            ``::error file=...,line=...,col=...::...`` workflow annotations; ``json``
            prints one JSON document (docs/cli.md).
        out: where to write; defaults to stdout.
        online: also check each key against its provider (one free model
            listing per provider, concurrently); a rejected key is a problem.
        timeout_s: how long the online check waits for each provider (None: the
            router's default, ``router.health.KEY_CHECK_TIMEOUT_S``).

    Returns:
        0 when valid, 1 when not.
    """
    stream = sys.stdout if out is None else out
    problems: list[ConfigProblem] = []
    try:
        loaded = read_config(path, require_env=not no_env, check_paths=True)
        warnings = list(loaded.warnings)
    except ConfigError as exc:
        problems = exc.problems
        warnings = exc.warnings
        loaded = None
    check: KeyCheck | None = None
    if loaded is not None and online:
        try:
            check = asyncio.run(_check_keys(loaded, timeout_s))
        except ConfigError as exc:
            problems = exc.problems
    if loaded is not None:
        # The document is read again for its positions (read_config keeps only the values).
        advice = config_advice(loaded.config, load_yaml(Path(path), path))
        warnings = sorted([*warnings, *advice], key=lambda w: (w.file, w.line or 0, w.col or 0))
    valid = loaded is not None and not problems
    if fmt == "json":
        doc = _document(path, loaded if valid else None, problems, warnings, no_env, check)
        stream.write(json.dumps(doc, indent=2) + "\n")
        return 0 if valid else 1
    for warning in warnings:
        stream.write(redact(_format(warning, fmt, "warning")) + "\n")
    if not valid:
        for problem in problems:
            stream.write(redact(_format(problem, fmt, "error")) + "\n")
        n = len(problems)
        stream.write(f"{path}: invalid, {n} problem{'s' if n != 1 else ''}\n")
        return 1
    assert loaded is not None  # valid
    summary = _summary(path, loaded, no_env)
    if warnings:
        n = len(warnings)
        summary += f"; {n} warning{'s' if n != 1 else ''}"
    stream.write(summary + "\n")
    if check is not None:
        stream.write(redact(_key_report(check)) + "\n")
    return 0


def problem_dict(problem: ConfigProblem) -> dict[str, Any]:
    """A problem (or warning) as JSON: ``file``, ``line``, ``col``, ``path``, ``message``."""
    doc = dataclasses.asdict(problem)
    doc["message"] = redact(problem.message)
    return doc


def _document(
    path: str,
    loaded: Loaded | None,
    problems: list[ConfigProblem],
    warnings: list[ConfigProblem],
    no_env: bool,
    check: KeyCheck | None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"path": path, "valid": loaded is not None, "no_env": no_env}
    if loaded is not None:
        config = loaded.config
        doc["providers"] = sorted(config.providers)
        doc["routes"] = sorted(config.routes)
        doc["disabled"] = [
            {"provider": p, "env_var": loaded.disabled_because[p]} for p in sorted(loaded.disabled)
        ]
    doc["problems"] = [problem_dict(p) for p in problems]
    doc["warnings"] = [problem_dict(w) for w in warnings]
    if check is not None:  # --online
        doc["keys"] = {
            "accepted": list(check.verified),
            "not_checked": [
                {"provider": r.provider, "status": r.status, "error": redact(r.error or "")}
                for r in check.unverified
            ],
            "without_key": list(check.skipped),
        }
    return doc


async def _check_keys(loaded: Loaded, timeout_s: float | None) -> KeyCheck:
    """Start a router on the file (its spend ledger in memory: validating writes no
    file) just long enough to check every key."""
    from router.config import LedgerPlan
    from router.plan import resolve
    from router.router import Router

    plan = dataclasses.replace(resolve(loaded), ledger=LedgerPlan(backend="memory", path=None))
    async with Router(plan) as router:
        if timeout_s is None:
            return await router.verify_keys()
        return await router.verify_keys(timeout_s=timeout_s)


def _key_report(check: KeyCheck) -> str:
    """One line per provider checked online, after a count of each outcome."""
    lines = [
        f"keys: {len(check.verified)} accepted, {len(check.unverified)} not checked,"
        f" {len(check.skipped)} without a key"
    ]
    lines += [f"  {p}: key accepted" for p in check.verified]
    for r in check.unverified:
        why = r.error or (f"HTTP {r.status}" if r.status is not None else "no answer")
        lines.append(f"  {r.provider}: NOT CHECKED (warning): {why}")
    lines += [f"  {p}: no key to check" for p in check.skipped]
    return "\n".join(lines)


def _summary(path: str, loaded: Loaded, no_env: bool) -> str:
    config = loaded.config
    n_prov, n_routes = len(config.providers), len(config.routes)
    line = (
        f"{path}: valid: {n_prov} provider{'s' if n_prov != 1 else ''}, "
        f"{n_routes} route{'s' if n_routes != 1 else ''}"
    )
    disabled = sorted(loaded.disabled)
    if disabled:
        why = ", ".join(f"{p} ({loaded.disabled_because[p]} not set)" for p in disabled)
        line += f"; disabled: {why}"
    else:
        line += "; disabled: none"
    if no_env:
        line += " [--no-env: keys not required]"
    return line


def _format(problem: ConfigProblem, fmt: Format, level: Literal["error", "warning"]) -> str:
    if fmt != "github":
        if level == "error":
            return str(problem)
        return str(dataclasses.replace(problem, message=f"warning: {problem.message}"))
    props = f"file={_prop(problem.file)}"
    if problem.line is not None:
        props += f",line={problem.line}"
        if problem.col is not None:
            props += f",col={problem.col}"
    text = f"{problem.path}: {problem.message}" if problem.path else problem.message
    return f"::{level} {props}::{_data(text)}"


def _data(text: str) -> str:
    """Escape a workflow-command message (GitHub Actions rules)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    """Escape a workflow-command property value."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def add_arguments(parser: argparse.ArgumentParser, *, no_env: bool = True) -> None:
    """Add validate's arguments to a parser: ``[PATH] [--format ...] [--online]``, and
    ``--no-env`` unless the caller declares that one itself (the CLI does, for every
    command)."""
    parser.add_argument(
        "path",
        nargs="?",
        default=None,
        help="config file (default: --config, then $ROUTER_CONFIG, then providers.yaml)",
    )
    if no_env:
        parser.add_argument(
            "--no-env",
            action="store_true",
            help="check structure only: do not require the API key env vars",
        )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (default), github (workflow ::error annotations) or json",
    )
    parser.add_argument(
        "--online",
        action="store_true",
        help="also check each key with its provider's free model listing:"
        " a rejected key fails (exit 1), an unreachable provider is a warning",
    )


def run_args(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a validation from parsed :func:`add_arguments` (``args.path`` set)."""
    fmt: Format = args.format
    return run_validate(args.path, no_env=args.no_env, fmt=fmt, out=out, online=args.online)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: returns the exit code (0 valid, 1 invalid, 2 usage error)."""
    parser = argparse.ArgumentParser(
        prog="validate_config.py",
        description="Validate a providers.yaml. Exit 0 valid, 1 invalid, 2 usage error.",
    )
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on bad arguments (2) and on --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    if args.path is None:
        args.path = "providers.yaml"
    return run_args(args)
