"""``${VAR}`` and ``${VAR:-default}`` in string values of providers.yaml, ``$${`` for a
literal ``${``: interpolated on the raw YAML (so errors keep their line and column),
never in template text or in the names of variables, and never echoed in an error."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from router.errors import ConfigError
from router.plan import load_config
from router.redact import REDACTED, redact
from router.router import Router
from router.validate import run_validate

BASE = """\
version: 1
providers:
  local:
    kind: openai
    base_url: {base_url}
    timeout_s: {timeout}
    headers:
      X-Team: {team}
    models:
      m: {{}}
  mock:
    kind: mock
    mock:
      reply: "{reply}"
    models:
      m: {{}}
routes:
  r:
    prompt: "Price: ${{{{ price }}}} and $${{literal}}"
    fallback: [{step}, mock/m]
"""


def _write(tmp_path: Path, **over: str) -> Path:
    values = {
        "base_url": "${LLM_URL:-http://127.0.0.1:8000/v1}",
        "timeout": "${LLM_TIMEOUT:-7.5}",
        "team": "${TEAM}",
        "reply": "hello from ${STAGE:-dev}, $${NOT_A_VAR}",
        "step": "local/m",
    }
    values.update(over)
    path = tmp_path / "providers.yaml"
    path.write_text(BASE.format(**values))
    return path


def _problems(path: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    return [str(p) for p in info.value.problems]


def test_values_come_from_the_environment_with_defaults_and_escapes(tmp_path: Path) -> None:
    path = _write(tmp_path)
    plan = load_config(path, env={"TEAM": "desk-7", "LLM_URL": "http://localhost:9000/v1"})
    local = plan.providers["local"]
    assert local.base_url == "http://localhost:9000/v1"
    assert local.timeout_s == 7.5  # a default, converted where the schema wants a number
    assert local.headers == {"X-Team": "desk-7"}
    assert plan.providers["mock"].mock is not None
    assert plan.providers["mock"].mock.reply == "hello from dev, ${NOT_A_VAR}"
    # An empty variable takes the default too; without ":-" an empty value is kept.
    plan = load_config(path, env={"TEAM": "", "LLM_URL": "", "STAGE": "prod"})
    assert plan.providers["local"].base_url == "http://127.0.0.1:8000/v1"
    assert plan.providers["local"].headers == {"X-Team": ""}
    assert plan.providers["mock"].mock.reply == "hello from prod, ${NOT_A_VAR}"  # type: ignore[union-attr]


def test_template_text_is_never_interpolated(tmp_path: Path) -> None:
    plan = load_config(_write(tmp_path), env={"TEAM": "t", "price": "NO"})
    (message,) = plan.render("r", {"price": 101})
    assert message.content == "Price: $101 and $${literal}"


def test_an_unset_variable_without_a_default_is_an_error_at_its_column(tmp_path: Path) -> None:
    path = _write(tmp_path, base_url="http://127.0.0.1:${LLM_PORT}/v1")
    problems = _problems(path, env={})
    assert problems == [
        f"{path}:5:32: providers.local.base_url: environment variable LLM_PORT is not set,"
        " and ${LLM_PORT} has no default (set it, or write ${LLM_PORT:-default})",
        f"{path}:8:15: providers.local.headers.X-Team: environment variable TEAM is not set,"
        " and ${TEAM} has no default (set it, or write ${TEAM:-default})",
    ]
    text = path.read_text().splitlines()
    assert text[4][31:].startswith("${LLM_PORT}") and text[7][14:].startswith("${TEAM}")


@pytest.mark.parametrize(
    ("value", "col", "message"),
    [
        ('"x ${1BAD} y"', 18, "a ${...} reference must be ${NAME} or ${NAME:-default}"),
        ('"x ${OPEN"', 18, "'${' is not closed by '}' (write $${ for a literal ${)"),
    ],
)
def test_a_malformed_reference_is_an_error_at_its_column(
    tmp_path: Path, value: str, col: int, message: str
) -> None:
    path = _write(tmp_path, team=value)
    (problem,) = _problems(path, env={})
    assert problem.startswith(f"{path}:8:{col}: providers.local.headers.X-Team: {message}")


def test_an_interpolated_value_is_never_echoed_in_an_error(tmp_path: Path) -> None:
    """Checks that quote a value (an unknown provider, a remote plain-http host) show the
    variable's name in its place."""
    path = _write(
        tmp_path,
        base_url="http://${LLM_HOST}:8000/v1",
        step='"${PRIMARY}/m"',
    )
    env = {"TEAM": "t", "LLM_HOST": "gpu-box-17.internal", "PRIMARY": "prim4ry-7391"}
    problems = "\n".join(_problems(path, env=env))
    assert "host '${LLM_HOST}'" in problems
    assert "unknown provider '${PRIMARY}'" in problems
    for value in env.values():
        if len(value) > 1:
            assert value not in problems


def test_key_variable_names_are_not_interpolated(tmp_path: Path) -> None:
    body = _write(tmp_path).read_text()
    body = body.replace("    timeout_s:", "    api_key_env: ${OPENAI_API_KEY}\n    timeout_s:")
    path = tmp_path / "providers.yaml"
    path.write_text(body)
    key = "sk-live-0123456789abcdefghij"
    (problem,) = _problems(path, env={"TEAM": "t", "OPENAI_API_KEY": key})
    assert "providers.local.api_key_env: write the NAME of the environment variable" in problem
    assert "never interpolated" in problem and key not in problem


def test_header_values_from_the_environment_are_redacted(tmp_path: Path) -> None:
    token = "team-token-5f2a9c7e1b"
    load_config(_write(tmp_path), env={"TEAM": token})
    assert redact(f"sent X-Team: {token}") == f"sent X-Team: {REDACTED}"


def test_validate_no_env_warns_about_an_unset_variable_and_passes(tmp_path: Path) -> None:
    path = _write(tmp_path, base_url="http://127.0.0.1:${LLM_PORT}/v1")
    out = io.StringIO()
    assert run_validate(str(path), no_env=True, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        f"{path}:5:32: providers.local.base_url: warning: environment variable LLM_PORT is not"
        " set and ${LLM_PORT} has no default: this value is not checked, and loading fails"
        " unless it is set"
    )
    assert "TEAM is not set" in lines[1]
    assert lines[2].startswith(f"{path}: valid: 2 providers, 1 route")
    # Without --no-env the same file is invalid, naming both variables.
    out = io.StringIO()
    assert run_validate(str(path), out=out) == 1
    assert "LLM_PORT is not set" in out.getvalue() and "invalid, 2 problems" in out.getvalue()
    # --format github prints the warnings as workflow warnings.
    out = io.StringIO()
    assert run_validate(str(path), no_env=True, fmt="github", out=out) == 0
    assert out.getvalue().startswith(f"::warning file={path},line=5,col=32::")


def test_no_env_still_reports_problems_that_do_not_depend_on_the_unset_value(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, timeout="${LLM_TIMEOUT:-0}")
    out = io.StringIO()
    assert run_validate(str(path), no_env=True, out=out) == 1
    assert "providers.local.timeout_s: must be greater than 0" in out.getvalue()
    assert "warning: environment variable TEAM is not set" in out.getvalue()


async def test_a_reload_reads_the_environment_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM", "t")
    monkeypatch.setenv("STAGE", "staging")
    async with Router.from_yaml(_write(tmp_path, step="mock/m")) as router:
        assert (await router.complete("r", {"price": 1})).text.startswith("hello from staging")
        monkeypatch.setenv("STAGE", "prod")
        report = await router.reload()
        assert report.providers_changed == ["mock"]
        assert (await router.complete("r", {"price": 1})).text.startswith("hello from prod")


def test_the_ledger_path_may_come_from_a_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path)
    path.write_text(
        path.read_text().replace(
            "version: 1\n",
            "version: 1\nsettings:\n  ledger:\n    path: ${DATA_DIR:-.}/spend.sqlite3\n",
        )
        + "budgets:\n  all: {limit_usd: 1}\n"
    )
    plan = load_config(path, env={"TEAM": "t", "DATA_DIR": str(tmp_path / "data")})
    assert plan.ledger is not None and plan.ledger.path == tmp_path / "data" / "spend.sqlite3"
    plan = load_config(path, env={"TEAM": "t"})
    assert plan.ledger is not None and plan.ledger.path == tmp_path / "spend.sqlite3"
    # validate names the raw text's variable, never the directory it holds.
    out = io.StringIO()
    env_dir = tmp_path / "nowhere-xyz"
    monkeypatch.setenv("DATA_DIR", str(env_dir))
    monkeypatch.setenv("TEAM", "t")
    assert run_validate(str(path), out=out) == 1
    assert "settings.ledger.path: the spend ledger ${DATA_DIR}/spend.sqlite3" in out.getvalue()
    assert "${DATA_DIR}/spend.sqlite3" in out.getvalue()
    assert str(env_dir) not in out.getvalue()
