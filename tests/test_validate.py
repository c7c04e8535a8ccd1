"""validate_config: exit codes, text and GitHub output, --no-env, and no leaked keys."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from router.validate import main, run_validate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "providers.yaml")
CANARY = "sk-canary-Vd83jQp20LmZx71NcR5t"


def run(path: str, **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    code = run_validate(path, out=out, **kw)  # type: ignore[arg-type]
    return code, out.getvalue()


def clear_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "XAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def test_missing_keys_exit_1_listing_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_keys(monkeypatch)
    code, out = run(EXAMPLE)
    assert code == 1
    lines = out.splitlines()
    assert any("OPENAI_API_KEY is not set" in line for line in lines)
    assert any("ANTHROPIC_API_KEY is not set" in line for line in lines)
    assert lines[-1].endswith("invalid, 2 problems")
    assert all(":" in line for line in lines[:-1])


def test_no_env_exits_0_and_names_the_disabled_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_keys(monkeypatch)
    code, out = run(EXAMPLE, no_env=True)
    assert code == 0
    assert out.count("\n") == 1, "one summary line, no log noise"
    assert "valid: 7 providers, 2 routes" in out
    assert "openai (OPENAI_API_KEY not set)" in out
    assert "--no-env" in out


def test_all_keys_set_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(var, CANARY)
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    monkeypatch.setenv("XAI_API_KEY", "xai-somekey-1234567890")
    code, out = run(EXAMPLE)
    assert code == 0
    disabled = "disabled: deepseek (DEEPSEEK_API_KEY not set)"
    assert out == f"{EXAMPLE}: valid: 7 providers, 2 routes; {disabled}\n"
    assert CANARY not in out


def test_github_format_prints_error_annotations(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_keys(monkeypatch)
    code, out = run(EXAMPLE, fmt="github")
    assert code == 1
    annotations = [line for line in out.splitlines() if line.startswith("::error ")]
    assert len(annotations) == 2
    first = annotations[0]
    assert first.startswith(f"::error file={EXAMPLE},line=")
    assert ",col=" in first
    assert "::providers.openai.api_key_env: environment variable" in first


def test_github_format_escapes_properties_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "a,b:c.yaml"
    path.write_text("version: 1\nversion: 1\n")
    code, out = run(str(path), fmt="github")
    assert code == 1
    assert "a%2Cb%3Ac.yaml,line=2,col=1::version: duplicate key" in out


def test_problem_without_a_line_has_no_line_property(tmp_path: Path) -> None:
    code, out = run(str(tmp_path / "nope.yaml"), fmt="github")
    assert code == 1
    assert out.splitlines()[0] == f"::error file={tmp_path / 'nope.yaml'}::file not found"


def test_missing_file_is_invalid_with_a_clear_message(tmp_path: Path) -> None:
    code, out = run(str(tmp_path / "nope.yaml"))
    assert code == 1
    assert "nope.yaml: file not found" in out


def test_key_pasted_into_yaml_is_never_printed(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = (
        (ROOT / "providers.yaml")
        .read_text()
        .replace("api_key_env: OPENAI_API_KEY", f"api_key_env: {CANARY}")
    )
    path.write_text(text)
    (tmp_path / "templates").symlink_to(ROOT / "templates")
    for fmt in ("text", "github"):
        code, out = run(str(path), no_env=True, fmt=fmt)
        assert code == 1
        assert "looks like an API key" in out
        assert CANARY not in out


def test_main_parses_arguments_and_defaults_to_providers_yaml(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_keys(monkeypatch)
    monkeypatch.chdir(ROOT)
    assert main(["--no-env"]) == 0
    assert capsys.readouterr().out.startswith("providers.yaml: valid:")
    assert main([]) == 1
    assert main(["providers.yaml", "--format", "github"]) == 1
    assert "::error file=providers.yaml,line=" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--bogus"], ["--format", "xml"], ["a.yaml", "b.yaml"]])
def test_bad_arguments_are_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--no-env" in capsys.readouterr().out


def test_script_runs_from_the_repo_root_without_installation() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("PYTHONPATH", None)
    script = ["scripts/validate_config.py"]
    done = subprocess.run(
        [sys.executable, *script, "--no-env"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("providers.yaml: valid:")
    done = subprocess.run(
        [sys.executable, *script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "OPENAI_API_KEY" in done.stdout
    assert "ANTHROPIC_API_KEY" in done.stdout
    done = subprocess.run(
        [sys.executable, *script, "--nope"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
