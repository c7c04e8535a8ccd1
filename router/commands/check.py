"""``validate`` (router/validate.py does the work, shared with
scripts/validate_config.py) and ``schema``."""

from __future__ import annotations

import argparse

from router import validate as validate_module

from .common import Exit, Output, UsageError, config_path, dumps

__all__ = ["add_validate_arguments", "schema", "validate"]


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    # --no-env is one of the options every command has (router/cli.py).
    validate_module.add_arguments(parser, no_env=False)


def validate(args: argparse.Namespace, output: Output) -> int:
    """Check a providers.yaml: exit 0 valid, 1 invalid (every problem listed)."""
    if args.path is not None and getattr(args, "config", None) not in (None, args.path):
        raise UsageError(
            f"validate: two files given, {args.path!r} and --config {args.config!r}; give one"
        )
    if args.path is None:
        args.path = config_path(args)
    if output.json:
        if args.format not in ("text", "json"):
            raise UsageError(f"validate: --json and --format {args.format} do not go together")
        args.format = "json"
    return validate_module.run_args(args, output.out)


def schema(args: argparse.Namespace, output: Output) -> int:
    """Print the JSON Schema of providers.yaml (JSON with or without --json)."""
    from router.config import config_json_schema

    output.text(dumps(config_json_schema(), indent=2) + "\n")
    return Exit.OK
