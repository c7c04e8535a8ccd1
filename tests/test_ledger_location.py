"""Where the spend ledger lives, and that a config without budgets keeps none.

A router whose config folder is read-only (a ConfigMap, a ``:ro`` volume) must start
when it has no budgets; with budgets, ``settings.ledger.path`` or the variable named by
``settings.ledger.path_env`` places the file (relative paths from the YAML's folder),
and ``router validate`` reports a place where it cannot be written, at its line.

Tests may run as root, for whom permission bits do not stop writes: a read-only folder
is then one the kernel refuses files in for everyone (``/proc``), and a missing folder
is made real with a path through a regular file.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from router.cli import main as cli_main
from router.config import LedgerPlan
from router.errors import ConfigError
from router.plan import load_config
from router.router import Router
from router.validate import run_validate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """``router.cli.main`` configures structlog; give the next test the defaults back."""
    yield
    structlog.reset_defaults()


PROVIDERS = """\
version: 1
settings:
  ledger:
    path: {path}
providers:
  m:
    kind: mock
    models: {{x: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
routes:
  r:
    prompt: hi
    fallback: [m/x]
"""
BUDGETS = "budgets:\n  all: {limit_usd: 5}\n"


def _write(folder: Path, path: str, budgets: bool, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = PROVIDERS.format(path=path).replace("    path:", extra + "    path:", 1)
    cfg = folder / "providers.yaml"
    cfg.write_text(body + (BUDGETS if budgets else ""))
    return cfg


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in, for whoever runs the tests."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder  # an ordinary user: the permission bits hold
    (folder / "probe").unlink()  # root writes through 0555
    return Path("/proc")  # the kernel creates no file here, even for root


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- no budgets: no ledger ---------------------------------------------------------


async def test_without_budgets_no_ledger_is_opened_or_created(tmp_path: Path) -> None:
    """The ledger path points where nothing can be created; without budgets the router
    starts, answers and closes anyway, and creates no file beside the config."""
    (tmp_path / "a-file").write_text("")
    cfg = _write(tmp_path / "cfg", str(tmp_path / "a-file" / "spend.sqlite3"), budgets=False)
    plan = load_config(cfg, env={})
    assert plan.ledger is None
    async with Router(plan) as router:
        assert (await router.complete("r")).text
        assert router.spend() == []
    assert _files(tmp_path / "cfg") == ["providers.yaml"]


async def test_without_budgets_a_read_only_config_folder_starts(tmp_path: Path) -> None:
    folder = _read_only_folder(tmp_path)
    cfg = _write(tmp_path / "cfg", str(folder / "spend.sqlite3"), budgets=False)
    async with Router.from_yaml(cfg, env={}) as router:
        assert (await router.complete("r")).text
    assert run_validate(str(cfg), out=io.StringIO()) == 0


def test_router_spend_without_budgets_says_no_ledger_is_kept(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "spend.sqlite3", budgets=False)
    out = io.StringIO()
    assert cli_main(["spend", "--config", str(cfg)], out) == 0
    assert "no budgets" in out.getvalue() and "no spend ledger is kept" in out.getvalue()
    out = io.StringIO()
    assert cli_main(["spend", "--config", str(cfg), "--json"], out) == 0
    assert out.getvalue() == "[]\n"
    assert _files(tmp_path) == ["providers.yaml"]


# --- where the ledger is -------------------------------------------------------------


def test_a_relative_path_is_taken_from_the_yaml_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _write(tmp_path / "conf", "data/spend.db", budgets=True)
    assert load_config(cfg, env={}).ledger == LedgerPlan("sqlite", tmp_path / "conf/data/spend.db")
    # Also when loaded through a relative path.
    assert load_config("conf/providers.yaml", env={}).ledger == LedgerPlan(
        "sqlite", tmp_path / "conf/data/spend.db"
    )


def test_path_env_names_the_variable_holding_the_path(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "spend.sqlite3", budgets=True, extra="    path_env: LEDGER_AT\n")
    elsewhere = tmp_path / "var" / "spend.db"
    assert load_config(cfg, env={"LEDGER_AT": str(elsewhere)}).ledger == LedgerPlan(
        "sqlite", elsewhere
    )
    # Relative: from the YAML file's folder, like path.
    assert load_config(cfg, env={"LEDGER_AT": "rel/s.db"}).ledger == LedgerPlan(
        "sqlite", tmp_path / "rel" / "s.db"
    )
    # Unset or empty: path is used.
    for env in ({}, {"LEDGER_AT": ""}, {"LEDGER_AT": "  "}):
        assert load_config(cfg, env=env).ledger == LedgerPlan("sqlite", tmp_path / "spend.sqlite3")


def test_path_env_must_be_a_variable_name(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "spend.sqlite3", budgets=True, extra="    path_env: /var/lib/x\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    (p,) = info.value.problems
    assert (p.path, p.line) == ("settings.ledger.path_env", 4)
    assert "NAME of an environment variable" in p.message


def test_memory_backend_has_no_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "spend.sqlite3", budgets=True)
    cfg.write_text(cfg.read_text().replace("  ledger:\n", "  ledger:\n    backend: memory\n"))
    assert load_config(cfg, env={}).ledger == LedgerPlan("memory", None)


# --- validate: a ledger that cannot be written ------------------------------------------


def _validate(cfg: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = run_validate(str(cfg), no_env="--no-env" in args, out=out)
    return code, out.getvalue()


def test_validate_reports_a_read_only_ledger_folder_at_its_line(tmp_path: Path) -> None:
    folder = _read_only_folder(tmp_path)
    ledger = folder / "spend.sqlite3"
    cfg = _write(tmp_path / "cfg", str(ledger), budgets=True)
    for flags in ((), ("--no-env",)):
        code, text = _validate(cfg, *flags)
        assert code == 1, text
        line = next(t for t in text.splitlines() if "settings.ledger.path" in t)
        assert line.startswith(f"{cfg}:4:11: settings.ledger.path: the spend ledger {ledger}")
        assert f"no file can be created in its folder {folder}" in line
    assert not ledger.exists()


def test_validate_reports_a_missing_folder_and_a_path_through_a_file(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "nope/spend.sqlite3", budgets=True)
    code, text = _validate(cfg)
    assert code == 1
    assert (
        f"{cfg}:4:11: settings.ledger.path: the spend ledger {tmp_path}/nope/spend.sqlite3" in text
    )
    assert f"its folder {tmp_path / 'nope'} does not exist" in text
    assert not (tmp_path / "nope").exists()  # nothing is created
    (tmp_path / "a-file").write_text("")
    cfg = _write(tmp_path, "a-file/spend.sqlite3", budgets=True)
    code, text = _validate(cfg)
    assert code == 1
    assert f"its folder {tmp_path / 'a-file'} is not a directory" in text
    cfg = _write(tmp_path, "a-file/deeper/spend.sqlite3", budgets=True)
    code, text = _validate(cfg)
    assert code == 1
    assert f"a part of the path to its folder {tmp_path / 'a-file/deeper'} is a file" in text


def test_validate_reports_a_ledger_that_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "spend.sqlite3").mkdir()
    cfg = _write(tmp_path, "spend.sqlite3", budgets=True)
    code, text = _validate(cfg)
    assert code == 1 and "it is a directory, not a regular file" in text


def test_validate_points_at_path_env_when_the_path_came_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _write(tmp_path, "spend.sqlite3", budgets=True, extra="    path_env: LEDGER_AT\n")
    monkeypatch.setenv("LEDGER_AT", str(tmp_path / "gone" / "s.db"))
    code, text = _validate(cfg)
    assert code == 1
    assert f"{cfg}:4:15: settings.ledger.path_env: the spend ledger {tmp_path}/gone/s.db" in text
    assert "(from environment variable LEDGER_AT)" in text


def test_validate_points_at_budgets_when_the_default_path_is_unwritable(tmp_path: Path) -> None:
    """No ledger settings at all: the default spend.sqlite3 beside the YAML (here a
    directory, which no one can use as the ledger file)."""
    body = PROVIDERS.format(path="x").replace("settings:\n  ledger:\n    path: x\n", "")
    cfg = tmp_path / "providers.yaml"
    cfg.write_text(body + BUDGETS)
    (tmp_path / "spend.sqlite3").mkdir()
    code, text = _validate(cfg)
    assert code == 1, text
    assert f"{cfg}:10:1: budgets: the spend ledger {tmp_path / 'spend.sqlite3'}" in text


async def test_with_budgets_a_router_on_a_read_only_folder_fails_at_start(tmp_path: Path) -> None:
    """What validate prevents: the router itself cannot open the ledger."""
    from router.errors import LedgerError

    folder = _read_only_folder(tmp_path)
    cfg = _write(tmp_path / "cfg", str(folder / "spend.sqlite3"), budgets=True)
    router = Router.from_yaml(cfg, env={})
    with pytest.raises(LedgerError) as info:
        await router.start()
    assert str(folder / "spend.sqlite3") in str(info.value)


# --- reload ------------------------------------------------------------------------------


async def test_reload_adding_budgets_without_a_ledger_needs_a_restart(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "spend.sqlite3", budgets=False)
    async with Router.from_yaml(cfg, env={}) as router:
        cfg.write_text(cfg.read_text() + BUDGETS)
        with pytest.raises(ConfigError) as info:
            await router.reload()
        (p,) = info.value.problems
        assert p.path == "budgets" and "started without budgets" in p.message
        assert router.plan.ledger is None
    assert _files(tmp_path) == ["providers.yaml"]


async def test_reload_may_drop_and_restore_budgets_on_the_open_ledger(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "spend.sqlite3", budgets=True)
    with_budgets = cfg.read_text()
    async with Router.from_yaml(cfg, env={}) as router:
        await router.complete("r")
        cfg.write_text(with_budgets.replace(BUDGETS, ""))
        await router.reload()
        assert router.plan.ledger is None and router.spend() == []
        cfg.write_text(with_budgets)
        report = await router.reload()
        assert report.budgets_changed
        (status,) = router.spend()
        assert status.spent_usd > 0  # read back from the ledger kept open


# --- scripts/demo --------------------------------------------------------------------------


def test_demo_leaves_the_working_tree_untouched(tmp_path: Path) -> None:
    """scripts/demo in a copy of the repository (its tracked files, committed): afterwards
    ``git status --ignored`` shows nothing but the .venv the demo runs from."""
    repo = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=repo, check=True)
    # A .venv that runs this interpreter, stamped as installed (no pip, no network).
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env |= {"PYTHON": sys.executable, "PYTHONPATH": str(repo), "TMPDIR": str(tmp_path)}
    stamp = subprocess.run(
        ["bash", "-c", '(cat pyproject.toml; "$PYTHON" --version) | sha256sum | cut -c1-16'],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (repo / ".venv" / f".stamp-run-{stamp}").touch()
    proc = subprocess.run(
        ["bash", "scripts/demo"], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "answered by mock/mock-1" in proc.stdout
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [s for s in status if not s.startswith("!! .venv/")] == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("router-demo.")]
