"""``init [DIR]``: write a commented starter providers.yaml and its templates.

The starter ships inside the package (router/starter/): an offline mock provider
that answers without a key or network, and the real providers commented out. It
loads, validates (``validate --no-env``) and renders as written.
"""

from __future__ import annotations

import argparse
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from .common import Exit, Output, WouldOverwriteError

__all__ = ["add_arguments", "init", "starter_files"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir",
        nargs="?",
        default=".",
        metavar="DIR",
        help="where to write providers.yaml and templates/ (default: the current folder)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite files that already exist (default: refuse, and write nothing)",
    )


def starter_files() -> dict[str, bytes]:
    """The starter's files, by path relative to the target folder."""
    root = resources.files("router") / "starter"
    out: dict[str, bytes] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name.startswith((".", "__")):
                continue
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                out[rel] = child.read_bytes()

    walk(root, "")
    return out


def init(args: argparse.Namespace, output: Output) -> int:
    """Write the starter into ``args.dir``; refuse (exit 1, nothing written) when a
    file would be overwritten, unless ``--force``."""
    target = Path(args.dir)
    files = starter_files()
    existing = [rel for rel in files if (target / rel).exists()]
    if existing and not args.force:
        names = ", ".join(str(target / rel) for rel in existing)
        raise WouldOverwriteError(
            f"init: not overwriting {names} (nothing was written; --force replaces them)",
            [str(target / rel) for rel in existing],
        )
    written = []
    for rel, data in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(str(path))
    if output.json:
        output.document({"dir": str(target), "written": written, "replaced": existing})
        return Exit.OK
    for path_text in written:
        output.text(f"wrote {path_text}\n")
    config = target / "providers.yaml"
    output.note(
        f"next: router validate --config {config} --no-env; "
        f"router render hello --config {config} --var name=Ada"
    )
    return Exit.OK
