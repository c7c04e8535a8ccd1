"""Docs that run: every Python and shell example in README.md and docs/*.md is executed.

What runs
    Every fenced block whose info string is ``python``, ``bash``, ``sh`` or
    ``console``, in README.md, docs/*.md and examples/*/README.md (commands there
    are written from the repository root). Each one is a test named after where
    it starts (``pytest tests/test_docs_examples.py -k 'streaming.md:10'``); a
    failure shows ``FILE:LINE``, the block, and the process's output.

Where it runs
    A fresh temporary directory per block (the *sandbox*) holding:

    - ``providers.yaml``: the repository's providers.yaml made offline (its paid
      providers swapped for mocks of the same names, models and prices: see
      :func:`tests.sandbox.offline_twin`), so ``Router.from_yaml("providers.yaml")``
      and ``router complete analysis ...`` work without a key or a network;
    - copies of ``templates/``, ``scripts/`` and ``examples/``;
    - every file declared earlier in the same document with a ``file:`` marker (below).

    The process has ``router``, ``python`` and ``python3`` on ``PATH`` (this checkout's
    router and interpreter), no ``*_API_KEY`` variables, :data:`EXAMPLE_ENV` (e.g.
    ``METRICS_PORT=0``: an example that listens takes its port from the environment),
    and may connect to loopback only (tests/netguard.py). Nothing may wait for input
    or run until stopped.

How it runs
    ``python``: as a script, with top-level ``await``/``async with`` allowed (as in
    ``python -m asyncio``); the block is compiled under the Markdown file's name with
    its own line numbers, so a traceback points at ``docs/x.md:LINE``.
    ``bash``/``sh``: by ``bash`` with ``set -euo pipefail``; the failing command's
    ``FILE:LINE`` is printed. ``console``: the lines starting with ``$ `` are the
    commands (run as for bash); the other lines are sample output and are not checked.

Markers: an HTML comment on the line right before the opening fence (invisible
when the Markdown is rendered).

- ``<!-- file: PATH -->``: the block is not run; it is written to ``PATH`` in the
  sandbox of every later runnable block of the same document. A YAML file with
  ``providers:`` is made offline as above. Use it to show the config (or template)
  that the following examples run against::

      <!-- file: providers.yaml -->
      ```yaml
      version: 1
      ...
      ```

- ``<!-- illustration: WHY -->``: the block is shown, never run. Keep this rare: for
  what cannot run offline in a test (setting up a virtualenv from the package
  index, a minutes-long benchmark). ``WHY`` is required; at most
  :data:`MAX_ILLUSTRATIONS` in all.

Every fence must name its language (``text`` for formulas, tables and output), so a
shell or Python example cannot hide in an unmarked fence and escape this test.

Writing an example that passes: make it complete enough to paste and run (imports,
the config it opens); use the route names, variables and budget names of the
repository's providers.yaml (or declare a config with ``file:``); keep it fast
(each block has :data:`TIMEOUT_S`). Run ``pytest tests/test_docs_examples.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.sandbox import REPO, offline_env, offline_twin

TIMEOUT_S = 90.0
# Set for every block: an example serving metrics reads its port from METRICS_PORT
# (0: any free port, so parallel test runs do not collide).
EXAMPLE_ENV = {"METRICS_PORT": "0"}
# Shown-only examples allowed in all the docs together (installing, benchmarks).
MAX_ILLUSTRATIONS = 5
RUNNABLE = frozenset({"python", "bash", "sh", "console"})
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<ticks>`{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>file|illustration)\s*:\s*(?P<arg>.*?)\s*-->\s*$")
# Copied into every sandbox (the examples in the docs may name them).
_SANDBOX_DIRS = ("templates", "scripts", "examples")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3", "*.sqlite3-*")

# Runs a Python block: compiled under the document's name, top-level await allowed.
_PY_DRIVER = textwrap.dedent(
    """
    import ast, asyncio, inspect, sys
    source_path, label = sys.argv[1], sys.argv[2]
    source = open(source_path, encoding="utf-8").read()
    code = compile(source, label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)
    """
)


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of a Markdown document."""

    doc: str  # path relative to the repository, e.g. "docs/money.md"
    line: int  # line of the opening fence (1-based)
    lang: str  # first word of the info string, lower case ("" when none)
    body: str
    marker: str | None  # "file" | "illustration" | None
    marker_arg: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE and self.marker is None


def parse_blocks(text: str, doc: str) -> list[Block]:
    """Every fenced block of ``text``, with the marker on the line before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, info = m["ticks"], m["info"].strip()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        prev = _MARKER.match(lines[i - 1]) if i > 0 else None
        blocks.append(
            Block(
                doc=doc,
                line=i + 1,
                lang=info.split()[0].lower() if info else "",
                body="\n".join(lines[i + 1 : end]) + "\n",
                marker=prev["kind"] if prev else None,
                marker_arg=prev["arg"] if prev else "",
            )
        )
        i = end + 1
    return blocks


def _documents() -> list[Path]:
    return [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "examples").glob("*/README.md")),
    ]


def _all_blocks() -> list[Block]:
    return [
        block
        for path in _documents()
        for block in parse_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]


BLOCKS = _all_blocks()


def make_sandbox(root: Path, files: list[Block]) -> Path:
    """The directory a block runs in: the offline config, the shared dirs, ``files``."""
    box = root / "sandbox"
    box.mkdir(parents=True)
    for name in _SANDBOX_DIRS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, box / name, ignore=_IGNORE)
    _write(box / "providers.yaml", (REPO / "providers.yaml").read_text(encoding="utf-8"))
    for block in files:
        _write(box / block.marker_arg, block.body)
    return box


def _write(path: Path, text: str) -> None:
    """Write a sandbox file; a providers.yaml-shaped YAML document is made offline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in {".yaml", ".yml"}:
        doc = yaml.safe_load(text)
        if isinstance(doc, dict) and "providers" in doc:
            text = yaml.safe_dump(offline_twin(doc), sort_keys=False)
    path.write_text(text, encoding="utf-8")


def _shell_source(block: Block) -> str:
    body = block.body
    if block.lang == "console":
        # Commands are the "$ " lines; output lines become blank (line numbers kept).
        body = "".join(
            line[2:] + "\n" if line.startswith("$ ") else "\n" for line in body.splitlines()
        )
    # Line 1 is the prelude; the block's first line lands on its line in the document.
    prelude = (
        f"set -euo pipefail; trap 'echo \"{block.doc}:$LINENO: command failed (exit $?)\" >&2' ERR"
    )
    return prelude + "\n" * block.line + body


def run_block(block: Block, files: list[Block], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run one block in a fresh sandbox under ``tmp``."""
    box = make_sandbox(tmp, files)
    env = offline_env(tmp / "bin", EXAMPLE_ENV)
    if block.lang == "python":
        source = box.parent / "block.py"
        # Padded so that line numbers in tracebacks are the document's.
        source.write_text("\n" * block.line + block.body, encoding="utf-8")
        driver = box.parent / "driver.py"
        driver.write_text(_PY_DRIVER, encoding="utf-8")
        argv = [sys.executable, str(driver), str(source), block.doc]
    else:
        script = box.parent / "block.sh"
        script.write_text(_shell_source(block), encoding="utf-8")
        argv = ["bash", str(script)]
    return subprocess.run(
        argv,
        cwd=box,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def failure_report(block: Block, proc: subprocess.CompletedProcess[str]) -> str:
    numbered = "\n".join(
        f"{block.line + n:>5} | {text}" for n, text in enumerate(block.body.splitlines(), 1)
    )
    return (
        f"{block.where}: the {block.lang} example failed (exit {proc.returncode})\n"
        f"{numbered}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n"
        f"{proc.stderr[-4000:]}"
    )


def _files_before(block: Block) -> list[Block]:
    return [b for b in BLOCKS if b.doc == block.doc and b.line < block.line and b.marker == "file"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.runnable], ids=lambda b: b.where.replace("docs/", "")
)
def test_example_runs(block: Block, tmp_path: Path) -> None:
    proc = run_block(block, _files_before(block), tmp_path)
    assert proc.returncode == 0, failure_report(block, proc)


def test_every_fence_names_its_language() -> None:
    unnamed = [b.where for b in BLOCKS if not b.lang]
    assert not unnamed, f"fences without a language (use `text` for non-code): {unnamed}"


def test_markers_are_well_formed() -> None:
    problems = [
        f"{b.where}: illustration needs a reason"
        for b in BLOCKS
        if b.marker == "illustration" and not b.marker_arg
    ] + [
        f"{b.where}: file path {b.marker_arg!r} must be relative and inside the sandbox"
        for b in BLOCKS
        if b.marker == "file" and (not b.marker_arg or ".." in Path(b.marker_arg).parts)
    ]
    problems += [
        f"{b.where}: only python/bash/sh/console fences can be illustrations, not {b.lang!r}"
        for b in BLOCKS
        if b.marker == "illustration" and b.lang not in RUNNABLE
    ]
    assert not problems, problems


def test_illustrations_are_rare() -> None:
    shown_only = [b.where for b in BLOCKS if b.marker == "illustration"]
    assert len(shown_only) <= MAX_ILLUSTRATIONS, (
        f"{len(shown_only)} examples are only shown, never run (at most {MAX_ILLUSTRATIONS}): "
        f"{shown_only}; make them run, or raise MAX_ILLUSTRATIONS on purpose"
    )


# The harness itself.


def test_parse_reads_language_marker_and_line() -> None:
    text = "intro\n<!-- file: conf/p.yaml -->\n```yaml\na: 1\n```\n\n```Python title\nx = 1\n```\n"
    first, second = parse_blocks(text, "x.md")
    assert (first.line, first.lang, first.marker, first.marker_arg) == (
        3,
        "yaml",
        "file",
        "conf/p.yaml",
    )
    assert first.body == "a: 1\n" and not first.runnable
    assert (second.line, second.lang, second.marker, second.body) == (7, "python", None, "x = 1\n")
    assert second.runnable


def test_failing_python_example_is_reported_at_its_document_line(tmp_path: Path) -> None:
    block = parse_blocks("a\n\n```python\nx = 1\nraise SystemExit(x + 1)\n```\n", "d.md")[0]
    proc = run_block(block, [], tmp_path)
    assert proc.returncode == 2
    block = parse_blocks("```python\nimport json\njson.loads('{')\n```\n", "docs/d.md")[0]
    proc = run_block(block, [], tmp_path / "2")
    report = failure_report(block, proc)
    assert 'File "docs/d.md", line 3' in proc.stderr
    assert report.startswith("docs/d.md:1: the python example failed")


def test_failing_shell_command_is_reported_at_its_document_line(tmp_path: Path) -> None:
    text = "x\n```console\n$ true\noutput line\n$ router validate missing.yaml\n```\n"
    block = parse_blocks(text, "docs/c.md")[0]
    proc = run_block(block, [], tmp_path)
    assert proc.returncode != 0
    assert "docs/c.md:5: command failed" in proc.stderr


def test_sandbox_is_offline_and_keyless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-examples")
    code = (
        "import os, socket\n"
        "assert 'OPENAI_API_KEY' not in os.environ\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 443), timeout=1)\n"
        "except RuntimeError as e:\n"
        "    print('refused', e)\n"
    )
    block = parse_blocks(f"```python\n{code}```\n", "n.md")[0]
    proc = run_block(block, [], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "refused test tried to reach the network" in proc.stdout


def test_file_marker_writes_an_offline_config(tmp_path: Path) -> None:
    text = (
        "<!-- file: providers.yaml -->\n```yaml\nversion: 1\nproviders:\n"
        "  paid: {kind: openai, api_key_env: SOME_KEY, models: {m: {price: "
        "{input_per_mtok: 1, output_per_mtok: 2}}}}\n"
        "routes:\n  r: {prompt: hi, fallback: [paid/m]}\n```\n"
        "```bash\nrouter complete r --json | grep -q 'offline answer from m'\n```\n"
    )
    config, shell = parse_blocks(text, "f.md")
    proc = run_block(shell, [config], tmp_path)
    assert proc.returncode == 0, failure_report(shell, proc)
