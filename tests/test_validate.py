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
    for var in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "DEEPSEEK_API_KEY",
        "XAI_API_KEY",
        "GEMINI_API_KEY",
    ):
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
    assert "valid: 9 providers, 3 routes" in out
    assert "openai (OPENAI_API_KEY not set)" in out
    assert "--no-env" in out


def test_all_keys_set_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(var, CANARY)
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    monkeypatch.setenv("XAI_API_KEY", "xai-somekey-1234567890")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-somekey-1234567890")
    code, out = run(EXAMPLE)
    assert code == 0
    disabled = "disabled: deepseek (DEEPSEEK_API_KEY not set)"
    assert out == f"{EXAMPLE}: valid: 9 providers, 3 routes; {disabled}\n"
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


def _warned(tmp_path: Path, providers: str, fmt: str = "text") -> tuple[int, list[str]]:
    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\n"
        "settings: {ledger: {backend: memory}}\n"
        f"providers:\n{providers}"
        "routes:\n  r: {prompt: hi, fallback: [p/m]}\n"
    )
    code, out = run(str(path), fmt=fmt)  # type: ignore[arg-type]
    return code, out.splitlines()


P = "    api_key_env: W_KEY\n    models: {m: {price: {input_per_mtok: 1, output_per_mtok: 1}}}\n"


@pytest.mark.parametrize(
    ("kind", "base_url", "expected"),
    [
        # An endpoint pasted into base_url.
        (
            "openai",
            "https://api.openai.com/v1/chat/completions",
            "base_url ends in the endpoint path '/chat/completions', but the openai adapter"
            " appends '/chat/completions' itself (requests would go to"
            " '/v1/chat/completions/chat/completions' and fail with 404); base_url is the API"
            " root: https://api.openai.com/v1",
        ),
        (
            "anthropic",
            "https://api.anthropic.com/v1/messages",
            "base_url ends in the endpoint path '/v1/messages', but the anthropic adapter"
            " appends '/v1/messages' itself (requests would go to '/v1/messages/v1/messages'"
            " and fail with 404); base_url is the API root: https://api.anthropic.com",
        ),
        (
            "ollama",
            "http://localhost:11434/api/chat",
            "base_url ends in the endpoint path '/api/chat', but the ollama adapter appends"
            " '/api/chat' itself (requests would go to '/api/chat/api/chat' and fail with"
            " 404); base_url is the API root: http://localhost:11434",
        ),
        (
            "openai",
            "https://vllm.internal.example/v1/models",
            "base_url ends in the endpoint path '/models', but the openai adapter appends"
            " '/chat/completions' itself (requests would go to '/v1/models/chat/completions'"
            " and fail with 404); base_url is the API root: https://vllm.internal.example/v1",
        ),
        # A well-known OpenAI-compatible host without its root path.
        (
            "openai",
            "https://api.x.ai",
            "api.x.ai serves its OpenAI-compatible API under '/v1': set base_url to"
            " https://api.x.ai/v1 (requests would go to '/chat/completions' and fail with 404)",
        ),
        (
            "openai",
            "https://api.groq.com/v1",
            "api.groq.com serves its OpenAI-compatible API under '/openai/v1': set base_url to"
            " https://api.groq.com/openai/v1 (requests would go to '/v1/chat/completions' and"
            " fail with 404)",
        ),
        (
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/models",
            "base_url ends in the endpoint path '/models', but the gemini adapter appends"
            " '/models/<model>:generateContent' itself (requests would go to"
            " '/v1beta/models/models/<model>:generateContent' and fail with 404); base_url is"
            " the API root: https://generativelanguage.googleapis.com/v1beta",
        ),
        # The Gemini API's host without its version, or with its OpenAI-compatible path.
        (
            "gemini",
            "https://generativelanguage.googleapis.com",
            "generativelanguage.googleapis.com serves the native Gemini API under '/v1beta'"
            " (or '/v1'): set base_url to https://generativelanguage.googleapis.com/v1beta"
            " (requests would go to '/models/<model>:generateContent' and fail with 404)",
        ),
        (
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "generativelanguage.googleapis.com serves the native Gemini API under '/v1beta'"
            " (or '/v1'): set base_url to https://generativelanguage.googleapis.com/v1beta"
            " (requests would go to '/v1beta/openai/models/<model>:generateContent' and fail"
            " with 404); its OpenAI-compatible API is kind: openai",
        ),
        # /v1 on kinds whose adapter adds it (or speaks another API).
        (
            "anthropic",
            "https://api.anthropic.com/v1",
            "base_url ends in '/v1', but the anthropic adapter appends '/v1/messages' itself"
            " (requests would go to '/v1/v1/messages' and fail with 404); base_url is the API"
            " root: https://api.anthropic.com",
        ),
        (
            "ollama",
            "http://localhost:11434/v1",
            "base_url ends in '/v1', but the ollama adapter appends '/api/chat' itself"
            " (requests would go to '/v1/api/chat' and fail with 404); base_url is the API"
            " root: http://localhost:11434; Ollama's OpenAI-compatible /v1 API is kind: openai",
        ),
    ],
)
def test_a_base_url_that_would_404_is_a_warning_at_its_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    base_url: str,
    expected: str,
) -> None:
    monkeypatch.setenv("W_KEY", CANARY)
    code, lines = _warned(tmp_path, f"  p:\n    kind: {kind}\n    base_url: {base_url}\n{P}")
    assert code == 0
    where = f"{tmp_path / 'w.yaml'}:6:15: providers.p.base_url"  # the base_url line
    assert lines[0] == f"{where}: warning: {expected}"
    assert lines[-1].endswith("; 1 warning")
    assert CANARY not in "\n".join(lines)


@pytest.mark.parametrize(
    ("kind", "base_url"),
    [
        ("openai", "https://api.openai.com/v1"),
        ("openai", "https://api.x.ai/v1/"),
        ("openai", "https://api.groq.com/openai/v1"),
        ("openai", "https://api.deepseek.com"),
        ("openai", "http://localhost:8000/v1"),
        ("anthropic", "https://api.anthropic.com"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta"),
        ("gemini", "https://generativelanguage.googleapis.com/v1/"),
        ("ollama", "http://localhost:11434"),
    ],
)
def test_a_base_url_at_the_api_root_gets_no_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, base_url: str
) -> None:
    monkeypatch.setenv("W_KEY", CANARY)
    code, lines = _warned(tmp_path, f"  p:\n    kind: {kind}\n    base_url: {base_url}\n{P}")
    assert code == 0
    assert len(lines) == 1 and "warning" not in lines[0]


def test_xai_search_parameters_is_a_warning_wherever_it_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the provider's extra, a model's extra, or a step's params; named at its key;
    GitHub format prints ::warning annotations."""
    monkeypatch.setenv("W_KEY", CANARY)
    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\n"
        "settings: {ledger: {backend: memory}}\n"
        "providers:\n"
        "  xai:\n"
        "    kind: openai\n"
        "    base_url: https://api.x.ai/v1\n"
        "    api_key_env: W_KEY\n"
        "    extra:\n"
        "      search_parameters: {mode: 'off'}\n"
        "    models:\n"
        "      g: {price: {input_per_mtok: 1, output_per_mtok: 1}}\n"
        "routes:\n"
        "  r:\n"
        "    prompt: hi\n"
        "    fallback:\n"
        "      - {model: xai/g, params: {search_parameters: {mode: auto}}}\n"
    )
    code, out = run(str(path))
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith(
        f"{path}:9:7: providers.xai.extra.search_parameters: warning: xAI retired Live Search:"
        " every request carrying search_parameters is refused with 410 Gone."
    )
    assert lines[1].startswith(
        f"{path}:16:33: routes.r.fallback[0].params.search_parameters: warning: xAI retired"
    )
    assert lines[-1].endswith("; 2 warnings")
    code, out = run(str(path), fmt="github")
    assert out.startswith(f"::warning file={path},line=9,col=7::providers.xai.extra.")


def test_search_parameters_for_another_host_is_not_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("W_KEY", CANARY)
    providers = (
        "  p:\n    kind: openai\n    base_url: https://llm.internal.example/v1\n"
        "    extra: {search_parameters: {mode: auto}}\n" + P
    )
    code, lines = _warned(tmp_path, providers)
    assert code == 0 and len(lines) == 1
