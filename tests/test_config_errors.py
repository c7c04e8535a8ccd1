"""Bad input gets one clear error naming its place: file, line, column, dotted path.

Each test starts from tests/data/minimal.yaml (valid), breaks one thing, and
checks the problem's line and message. Line numbers of minimal.yaml:
5 api_key_env, 7 gpt-5.5, 8 price, 15 prompt, 16 fallback, 17 and 18 the steps.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from router.config import load_config
from router.errors import ConfigError, ConfigProblem
from router.validate import run_validate

DATA = Path(__file__).parent / "data"
MINIMAL = (DATA / "minimal.yaml").read_text()
ENV = {"OPENAI_API_KEY": "sk-test-0123456789abcdef"}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, files: dict[str, str] | None = None) -> None:
    Path("providers.yaml").write_text(text)
    for name, body in (files or {}).items():
        Path("templates").mkdir(exist_ok=True)
        Path("templates", name).write_text(body)


def problems(
    text: str,
    *,
    env: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    require_env: bool = True,
) -> list[ConfigProblem]:
    write(text, files)
    with pytest.raises(ConfigError) as info:
        load_config("providers.yaml", env=ENV if env is None else env, require_env=require_env)
    return info.value.problems


def only(text: str, **kw: object) -> ConfigProblem:
    found = problems(text, **kw)  # type: ignore[arg-type]
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def test_minimal_is_valid(cwd: Path) -> None:
    """The base of every mutation below loads cleanly."""
    write(MINIMAL)
    config = load_config("providers.yaml", env=ENV)
    assert [s.model for s in config.chain("r")] == ["openai/gpt-5.5", "mock/mock-1"]


def test_missing_env_key_names_variable_provider_and_line(cwd: Path) -> None:
    p = only(MINIMAL, env={})
    assert (p.file, p.line, p.col) == ("providers.yaml", 5, 18)
    assert p.path == "providers.openai.api_key_env"
    assert "OPENAI_API_KEY is not set" in p.message
    assert "'openai'" in p.message
    assert str(p).startswith("providers.yaml:5:18: providers.openai.api_key_env: ")


def test_two_missing_keys_are_reported_together(cwd: Path) -> None:
    text = MINIMAL.replace(
        "  mock:\n",
        "  anthropic:\n    kind: anthropic\n    api_key_env: ANTHROPIC_API_KEY\n"
        "    models: {claude-haiku-4-5: {price: {input_per_mtok: 1, output_per_mtok: 5}}}\n"
        "  mock:\n",
    )
    found = problems(text, env={})
    assert [(p.line, p.path) for p in found] == [
        (5, "providers.openai.api_key_env"),
        (11, "providers.anthropic.api_key_env"),
    ]
    assert "OPENAI_API_KEY" in found[0].message
    assert "ANTHROPIC_API_KEY" in found[1].message


def test_typo_in_chain_provider_suggests_the_declared_one(cwd: Path) -> None:
    p = only(MINIMAL.replace("- openai/gpt-5.5", "- opnai/gpt-5.5"))
    assert (p.line, p.path) == (17, "routes.r.fallback[0]")
    assert p.message == "unknown provider 'opnai' (did you mean 'openai'?)"


def test_model_not_declared_under_its_provider(cwd: Path) -> None:
    p = only(MINIMAL.replace("- openai/gpt-5.5", "- openai/gpt-5.6"))
    assert (p.line, p.path) == (17, "routes.r.fallback[0]")
    assert "model 'gpt-5.6' is not declared under providers.openai.models" in p.message
    assert "did you mean 'gpt-5.5'" in p.message


def test_model_check_in_a_step_mapping_points_at_its_model_key(cwd: Path) -> None:
    text = MINIMAL.replace("- openai/gpt-5.5", "- {model: openai/gpt-4o, retries: 0}")
    p = only(text)
    assert (p.line, p.path) == (17, "routes.r.fallback[0].model")


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "hint"),
    [
        ("version: 1", "verison: 1", 1, "verison", "version"),
        ("    kind: openai", "    knd: openai", 4, "providers.openai.knd", "kind"),
        ("input_per_mtok: 5", "input_per_mtoken: 5", 8, "", "input_per_mtok"),
        ('    prompt: "Hi', '    promt: "Hi', 15, "routes.r.promt", "prompt"),
    ],
)
def test_unknown_key_anywhere_is_named_with_a_suggestion(
    cwd: Path, old: str, new: str, line: int, path: str, hint: str
) -> None:
    found = problems(MINIMAL.replace(old, new))
    unknown = [p for p in found if p.message.startswith("unknown key")]
    assert len(unknown) == 1, [str(p) for p in found]
    p = unknown[0]
    assert p.line == line
    if path:
        assert p.path == path
    assert f"did you mean {hint!r}" in p.message


def test_unknown_settings_key(cwd: Path) -> None:
    p = only(MINIMAL.replace("version: 1\n", "version: 1\nsettings:\n  deadline: 5\n"))
    assert (p.line, p.col, p.path) == (3, 3, "settings.deadline")
    assert "did you mean 'deadline_s'" in p.message


def test_duplicate_yaml_key_points_at_the_second_and_the_first(cwd: Path) -> None:
    text = MINIMAL.replace("    kind: openai\n", "    kind: openai\n    kind: anthropic\n")
    p = only(text)
    assert (p.line, p.path) == (5, "providers.openai.kind")
    assert p.message == "duplicate key 'kind' (first defined at line 4)"


def test_negative_price(cwd: Path) -> None:
    p = only(MINIMAL.replace("input_per_mtok: 5", "input_per_mtok: -5"))
    assert p.line == 8
    assert p.path == 'providers.openai.models["gpt-5.5"].price.input_per_mtok'
    assert "greater than or equal to 0" in p.message


KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345"


@pytest.mark.parametrize("value", [KEY, "xai-9f8e7d6c5b4a39281706f5e4", "a8F3kd92LmQ0zX7pW4tR6yB1"])
def test_key_pasted_into_yaml_is_refused_without_echoing_it(cwd: Path, value: str) -> None:
    write(MINIMAL.replace("OPENAI_API_KEY", value))
    with pytest.raises(ConfigError) as info:
        load_config("providers.yaml", env=ENV)
    p = info.value.problems[0]
    assert (p.line, p.path) == (5, "providers.openai.api_key_env")
    assert "looks like an API key" in p.message
    assert "NAME" in p.message
    assert value not in str(info.value)
    assert value not in repr(info.value)
    assert all(value not in str(q) for q in info.value.problems)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("sk-test-0123456789\nabcdef", "a line break (CR or LF)"),
        ("sk-test-0123456789\r\nabcdef", "a line break (CR or LF)"),
        ("sk-test-0123456789\rabcdef", "a line break (CR or LF)"),
        ("sk-test-0123456789\x00abcdef", "a control character"),
        ("sk-test-0123456789\tabcdef", "a control character"),
        ("sk-test-0123456789\x7fabcdef", "a control character"),
        ("sk-test-0123456789éabcdef", "a non-ASCII character"),
        ("sk-test-0123456789\u200babcdef", "a non-ASCII character"),
    ],
    ids=["lf", "crlf", "cr", "nul", "tab", "del", "latin1", "zero-width-space"],
)
@pytest.mark.parametrize("require_env", [True, False], ids=["load", "no-env"])
def test_key_variable_with_a_bad_character_is_a_config_error_naming_the_variable(
    cwd: Path, value: str, what: str, require_env: bool
) -> None:
    """A key no HTTP header can carry is refused at load (also with require_env=False,
    as ``router validate --no-env`` loads), naming the variable and the kind of
    character, never the value: not a bare ValueError when the Router starts."""
    p = only(MINIMAL, env={"OPENAI_API_KEY": value}, require_env=require_env)
    assert (p.line, p.path) == (5, "providers.openai.api_key_env")
    assert f"environment variable OPENAI_API_KEY holds {what}" in p.message
    assert "'openai'" in p.message
    for piece in ("0123456789", "abcdef"):
        assert piece not in str(p)


def test_router_validate_reports_a_key_variable_with_a_newline(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``router validate`` says invalid (exit 1) and names the variable, not the value."""
    write(MINIMAL)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789\nabcdef")
    out = io.StringIO()
    assert run_validate("providers.yaml", out=out) == 1
    text = out.getvalue()
    assert "providers.yaml:5:" in text and "OPENAI_API_KEY holds a line break" in text
    assert "0123456789" not in text and "invalid, 1 problem" in text


@pytest.mark.parametrize("value", ["httpx", "aiohttp"])
def test_removed_transport_setting_says_it_was_removed_and_why(cwd: Path, value: str) -> None:
    """``settings.transport`` (the httpcore pool) was removed: naming it, with either
    value, is one clear problem at its line, not "unknown key"."""
    p = only(MINIMAL.replace("version: 1\n", f"version: 1\nsettings:\n  transport: {value}\n"))
    assert (p.line, p.col, p.path) == (3, 3, "settings.transport")
    assert p.message.startswith("settings.transport was removed: aiohttp's connection pool")
    assert "httpcore" in p.message and "Delete this line" in p.message


def test_api_key_env_that_is_not_a_variable_name(cwd: Path) -> None:
    p = only(MINIMAL.replace("OPENAI_API_KEY", "'OPENAI KEY'"))
    assert p.line == 5
    assert "NAME of an environment variable" in p.message


def test_inline_template_syntax_error_points_at_the_yaml_line(cwd: Path) -> None:
    p = only(MINIMAL.replace("Hi {{ name }}", "Hi {{ name }"))
    assert (p.file, p.line, p.path) == ("providers.yaml", 15, "routes.r.prompt")
    assert p.message.startswith("template syntax error in routes.r.prompt:")


def test_block_template_syntax_error_points_at_the_broken_line(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n',
        "    prompt: |\n      line one\n      {% if name %}never closed\n",
    )
    p = only(text)
    # Line 1 of the template is file line 16; the tag left open is reported at the end.
    assert p.file == "providers.yaml"
    assert p.path == "routes.r.prompt"
    assert p.line is not None
    assert 16 <= p.line <= 18
    assert "template syntax error" in p.message


def test_file_template_syntax_error_names_the_file_and_its_line(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: p.j2}")
    p = only(text, files={"p.j2": "ok\nstill ok\n{% for x in %}\n"})
    assert (p.file, p.line, p.path) == ("templates/p.j2", 3, "routes.r.prompt")
    assert "template syntax error in p.j2" in p.message


def test_template_using_an_undeclared_variable(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n', '    prompt: "Hi {{ nme }}"\n    vars: {name: str}\n'
    )
    p = only(text)
    assert (p.line, p.path) == (15, "routes.r.prompt")
    assert "uses variable 'nme', which is not declared in routes.r.vars" in p.message
    assert "did you mean 'name'" in p.message


def test_undeclared_variable_in_a_file_template_names_file_and_line(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: p.j2}\n    vars: {name: str}")
    p = only(text, files={"p.j2": "Hi {{ name }}\nAlso {{ other }}\n"})
    assert (p.file, p.line) == ("templates/p.j2", 2)
    assert "'other'" in p.message


def test_non_existent_template_file(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: promt.j2}")
    p = only(text, files={"prompt.j2": "Hi\n"})
    assert (p.line, p.path) == (15, "routes.r.prompt.file")
    assert "template file 'promt.j2' not found in templates" in p.message
    assert "did you mean 'prompt.j2'" in p.message


def test_missing_include_names_the_including_template(cwd: Path) -> None:
    text = MINIMAL.replace('"Hi {{ name }}"', "{file: p.j2}")
    p = only(text, files={"p.j2": '{% include "nope.j2" %}\n'})
    assert p.line == 15
    assert "p.j2 includes 'nope.j2', not found" in p.message


def test_computed_include_name_is_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("Hi {{ name }}", "{% include name %}"))
    assert p.line == 15
    assert "computed template name" in p.message


def test_empty_file(cwd: Path) -> None:
    p = only("# only a comment\n")
    assert (p.line, p.path) == (1, "")
    assert "file is empty" in p.message


@pytest.mark.parametrize(
    ("text", "what"), [("- a\n- b\n", "a list"), ("hello\n", "a single value")]
)
def test_non_mapping_top_level(cwd: Path, text: str, what: str) -> None:
    p = only(text)
    assert p.line == 1
    assert "top level must be a mapping" in p.message
    assert what in p.message


def test_yaml_syntax_error_has_its_line(cwd: Path) -> None:
    text = MINIMAL.replace("      - mock/mock-1", "      - mock/mock-1\n    bad: [unclosed")
    p = only(text)
    assert p.line == 20
    assert p.message.startswith("YAML syntax error")


def test_tab_indentation_is_a_syntax_error_with_its_line(cwd: Path) -> None:
    p = only(MINIMAL.replace("    kind: openai", "\tkind: openai"))
    assert p.line == 4
    assert "YAML syntax error" in p.message


def test_plain_http_to_a_remote_host(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        "    api_key_env: OPENAI_API_KEY\n    base_url: http://api.example.com/v1\n",
    )
    p = only(text)
    assert (p.line, p.path) == (6, "providers.openai.base_url")
    assert "plain http:// to non-local host 'api.example.com' is refused" in p.message
    assert "allow_http: true" in p.message


@pytest.mark.parametrize(
    "url", ["http://localhost:8000/v1", "http://127.0.0.1:8000", "http://[::1]:9/v1"]
)
def test_plain_http_to_loopback_is_allowed(cwd: Path, url: str) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        f"    api_key_env: OPENAI_API_KEY\n    base_url: {url}\n",
    )
    write(text)
    assert load_config("providers.yaml", env=ENV).resolved_base_url("openai") == url.rstrip("/")


def test_allow_http_opts_in_to_a_remote_host(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        "    api_key_env: OPENAI_API_KEY\n    base_url: http://vllm.internal/v1\n"
        "    allow_http: true\n",
    )
    write(text)
    assert load_config("providers.yaml", env=ENV).resolved_base_url("openai").startswith("http:")


def test_credentials_in_base_url_are_refused(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n",
        "    api_key_env: OPENAI_API_KEY\n    base_url: https://user:pw@api.example.com\n",
    )
    assert "must not contain credentials" in only(text).message


def test_remote_openai_kind_needs_api_key_env(cwd: Path) -> None:
    p = only(MINIMAL.replace("    api_key_env: OPENAI_API_KEY\n", ""))
    assert (p.line, p.path) == (3, "providers.openai")
    assert "needs api_key_env" in p.message


def test_price_required_for_paid_kinds(cwd: Path) -> None:
    text = MINIMAL.replace("        price: {input_per_mtok: 5, output_per_mtok: 30}\n", "")
    text = text.replace("      gpt-5.5:\n", "      gpt-5.5: {}\n")
    p = only(text)
    assert (p.line, p.path) == (7, 'providers.openai.models["gpt-5.5"]')
    assert "price is required for kind openai" in p.message


def test_mock_section_only_for_kind_mock(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    models:\n      gpt", "    mock: {reply: hi}\n    models:\n      gpt"
    )
    p = only(text)
    assert (p.line, p.path) == (6, "providers.openai.mock")
    assert "only for kind: mock" in p.message


def test_budget_scopes_must_exist(cwd: Path) -> None:
    text = MINIMAL.replace(
        "routes:\n",
        "budgets:\n  b:\n    limit_usd: 1\n    provider: opneai\n  c:\n    limit_usd: 1\n"
        "    route: rr\nroutes:\n",
    )
    found = problems(text)
    assert [(p.line, p.path) for p in found] == [
        (16, "budgets.b.provider"),
        (19, "budgets.c.route"),
    ]
    assert "did you mean 'openai'" in found[0].message
    assert "did you mean 'r'" in found[1].message


def test_budget_cannot_have_both_scopes(cwd: Path) -> None:
    text = MINIMAL.replace(
        "routes:\n",
        "budgets:\n  b:\n    limit_usd: 1\n    provider: openai\n    route: r\nroutes:\n",
    )
    p = only(text)
    assert (p.line, p.path) == (14, "budgets.b")
    assert "not both" in p.message


def test_chain_empty_after_optional_providers_are_dropped(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    api_key_env: OPENAI_API_KEY\n", "    api_key_env: OPENAI_API_KEY\n    optional: true\n"
    )
    text = text.replace("      - mock/mock-1\n", "")
    p = only(text, env={})
    assert (p.line, p.path) == (17, "routes.r.fallback")
    assert "no usable step" in p.message
    assert "OPENAI_API_KEY not set" in p.message


def test_route_var_type_must_be_known(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n', '    prompt: "Hi {{ name }}"\n    vars: {name: string}\n'
    )
    p = only(text)
    assert (p.line, p.path) == (16, "routes.r.vars.name")
    assert "unknown type 'string'" in p.message
    assert "did you mean 'str'" in p.message


def test_route_var_name_must_be_an_identifier(cwd: Path) -> None:
    text = MINIMAL.replace(
        '    prompt: "Hi {{ name }}"\n', '    prompt: "Hi"\n    vars: {my-var: str}\n'
    )
    p = only(text)
    assert p.line == 16
    assert "invalid key 'my-var'" in p.message


def test_provider_name_with_a_slash(cwd: Path) -> None:
    p = problems(MINIMAL.replace("  mock:\n", "  mo/ck:\n"))[0]
    assert (p.line, p.path) == (9, 'providers["mo/ck"]')
    assert "without '/'" in p.message


def test_secret_header_is_refused(cwd: Path) -> None:
    text = MINIMAL.replace(
        "    models:\n      gpt", "    headers: {Authorization: x}\n    models:\n      gpt"
    )
    p = only(text)
    assert p.line == 6
    assert "carries a credential" in p.message


def test_missing_required_key_points_at_its_parent(cwd: Path) -> None:
    p = only(MINIMAL.replace('    prompt: "Hi {{ name }}"\n', ""))
    assert (p.line, p.path) == (14, "routes.r")
    assert p.message == "missing required key 'prompt'"


def test_wrong_type_names_the_value(cwd: Path) -> None:
    p = only(MINIMAL.replace("mock-1: {}", "mock-1: {context_window: lots}"))
    assert p.line == 12
    assert p.path.endswith("context_window")
    assert "integer" in p.message


def test_prompt_of_the_wrong_shape(cwd: Path) -> None:
    p = only(MINIMAL.replace('"Hi {{ name }}"', "[1, 2]"))
    assert p.line == 15
    assert "inline template text or a mapping {file: name.j2}" in p.message


def test_literal_typo_gets_a_suggestion(cwd: Path) -> None:
    p = only(MINIMAL.replace("kind: openai", "kind: opneai"))
    assert p.line == 4
    assert "did you mean 'openai'" in p.message


def test_infinity_is_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("version: 1\n", "version: 1\nsettings: {deadline_s: .inf}\n"))
    assert p.path == "settings.deadline_s"
    assert p.line == 2


def test_python_tags_are_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("version: 1", "version: !!python/object:os.system 1"))
    assert p.line == 1


def test_invalid_timestamp_scalar_is_a_problem_not_a_crash(cwd: Path) -> None:
    found = problems(MINIMAL.replace("mock-1: {}", "mock-1: {extra: {when: 2026-13-45}}"))
    assert found[0].line == 12
    assert "invalid value" in found[0].message


def test_two_documents_are_refused(cwd: Path) -> None:
    p = only(MINIMAL + "---\nversion: 1\n")
    assert p.line == 19
    assert "YAML syntax error" in p.message


def test_alias_bomb_is_refused(cwd: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    p = only("\n".join(lines) + "\n")
    assert "alias" in p.message


def test_recursive_alias_is_a_problem(cwd: Path) -> None:
    found = problems(MINIMAL + "budgets: &b\n  x: *b\n")
    assert any("recursive" in p.message for p in found)


def test_merge_keys_work_and_explicit_keys_win(cwd: Path) -> None:
    text = MINIMAL.replace(
        "routes:\n  r:\n",
        "routes:\n  base: &base\n    prompt: base\n    fallback: [mock/mock-1]\n"
        "  r:\n    <<: *base\n",
    )
    write(text)
    config = load_config("providers.yaml", env=ENV)
    assert config.routes["r"].prompt == "Hi {{ name }}"
    assert [s.model for s in config.routes["base"].fallback] == ["mock/mock-1"]


def test_every_problem_is_collected_in_line_order(cwd: Path) -> None:
    text = (
        MINIMAL.replace("version: 1", "version: 2")
        .replace("input_per_mtok: 5", "input_per_mtok: -1")
        .replace("- mock/mock-1", "- mock/mock-2")
    )
    found = problems(text, env={})
    lines = [p.line for p in found]
    assert lines == sorted(lines)
    assert lines == [1, 5, 8, 18]
    assert str(ConfigError(found)).startswith("4 problems in config:")


def test_file_not_found(cwd: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("nope.yaml")
    assert str(info.value.problems[0]) == "nope.yaml: file not found"


def test_invalid_utf8_is_reported(cwd: Path) -> None:
    Path("providers.yaml").write_bytes(b"version: 1\nx: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config("providers.yaml", env=ENV)
    assert info.value.problems[0].line == 2
    assert "UTF-8" in info.value.problems[0].message


def test_empty_routes_and_empty_chain_are_refused(cwd: Path) -> None:
    p = only(MINIMAL.replace("      - openai/gpt-5.5\n      - mock/mock-1\n", "      []\n"))
    assert (p.line, p.path, p.message) == (17, "routes.r.fallback", "must not be empty")
    text = MINIMAL[: MINIMAL.index("routes:")] + "routes: {}\n"
    p = only(text)
    assert (p.line, p.path, p.message) == (13, "routes", "must not be empty")


def test_ordinary_headers_pass_but_a_key_shaped_value_does_not(cwd: Path) -> None:
    headers = (
        "    headers: {anthropic-version: '2023-06-01', Accept: 'application/json; charset=utf-8',"
        " OpenAI-Project: proj_9f8e7d6c5b4a3928170f6e5d}\n"
    )
    text = MINIMAL.replace("    models:\n      gpt", headers + "    models:\n      gpt")
    write(text)
    assert "Accept" in load_config("providers.yaml", env=ENV).providers["openai"].headers
    bad = text.replace("'2023-06-01'", "'Bearer abcdefgh12345678'")
    p = only(bad)
    assert p.line == 6
    assert "looks like a credential" in p.message
    assert "abcdefgh12345678" not in str(p)
