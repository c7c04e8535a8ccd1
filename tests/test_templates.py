"""Route templates: strict rendering, typed variables, includes, and no parsing per call."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import SandboxedEnvironment

from router.errors import ConfigError, TemplateError
from router.plan import load_config
from router.router import Router
from router.templates import RouteTemplates, make_environment, parse_var_type
from router.types import Message

DATA = Path(__file__).parent / "data"


def route(
    tmp_path: Path,
    prompt: str,
    *,
    system: str | None = None,
    vars: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> RouteTemplates:
    """Load a one-route config and return its compiled templates."""
    lines = ["version: 1", "providers:", "  mock: {kind: mock, models: {m: {}}}", "routes:", "  r:"]
    if system is not None:
        lines.append(f"    system: {system}")
    lines.append(f"    prompt: {prompt}")
    if vars is not None:
        lines.append("    vars: {" + ", ".join(f"{k}: '{v}'" for k, v in vars.items()) + "}")
    lines.append("    fallback: [mock/m]")
    (tmp_path / "p.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, body in (files or {}).items():
        (tmp_path / "templates" / name).write_text(body)
    return load_config(tmp_path / "p.yaml", env={}).routes["r"].templates


TYPED = {"ticker": "str", "prices": "list[float]", "days": "int", "live": "bool"}
GOOD: dict[str, Any] = {"ticker": "ACME", "prices": [1.5, 2], "days": 3, "live": True}
PROMPT = "'{{ ticker }} {{ prices }} {{ days }} {{ live }}'"


def render_error(templates: RouteTemplates, values: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        templates.render(values)
    return info.value


def test_system_message_comes_first_then_the_prompt(tmp_path: Path) -> None:
    t = route(tmp_path, "'Q: {{ q }}'", system="'Be brief.'")
    assert t.render({"q": "why"}) == [Message("system", "Be brief."), Message("user", "Q: why")]


def test_a_template_without_variables_is_rendered_once_at_load(tmp_path: Path) -> None:
    """The system message has no variable: every call gets the same pre-rendered message,
    while the prompt is rendered per call."""
    t = route(tmp_path, "'Q: {{ q }}'", system="'Be brief: {{ 2 + 3 }} points.'")
    first, second = t.render({"q": "a"}), t.render({"q": "b"})
    assert first[0] == Message("system", "Be brief: 5 points.")
    assert first[0] is second[0]
    assert first[1] is not second[1] and second[1].content == "Q: b"


def test_a_constant_message_is_estimated_once_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route's input estimate is the same number as estimate_tokens, but the
    constant system message's text is not estimated again per call."""
    import router.estimate as estimate

    system = "You are a terse market analyst. Answer BUY, SELL or HOLD with one reason."
    t = route(tmp_path, "'Q: {{ q }}'", system=f"'{system}'")
    seen: list[bytes] = []
    quarter = estimate._quarter_tokens

    def counting(text: str) -> int:
        seen.append(text.encode())
        return quarter(text)

    monkeypatch.setattr(estimate, "_quarter_tokens", counting)
    for q in ("a", "bb"):
        messages = t.render({"q": q})
        expected = estimate.estimate_tokens(messages)
        seen.clear()
        assert t.estimate_tokens(messages) == expected
        assert seen == [f"Q: {q}".encode()]
    # A message that is not the route's own object is estimated, even with equal text.
    copy = [Message("system", system), Message("user", "Q: a")]
    seen.clear()
    assert t.estimate_tokens(copy) == estimate.estimate_tokens(copy)
    assert system.encode() in seen


def test_without_system_only_the_user_message(tmp_path: Path) -> None:
    assert route(tmp_path, "hello").render() == [Message("user", "hello")]


def test_file_templates_keep_trailing_newline_and_do_not_escape(tmp_path: Path) -> None:
    t = route(tmp_path, "{file: p.j2}", files={"p.j2": "<b>{{ x }}</b> & co\n"})
    assert t.render({"x": "<i>"})[0].content == "<b><i></b> & co\n"


def test_typed_vars_render(tmp_path: Path) -> None:
    t = route(tmp_path, PROMPT, vars=TYPED)
    assert t.render(GOOD)[0].content == "ACME [1.5, 2] 3 True"
    assert t.variables == frozenset(TYPED)


def test_missing_declared_variable(tmp_path: Path) -> None:
    t = route(tmp_path, PROMPT, vars=TYPED)
    err = render_error(t, {k: v for k, v in GOOD.items() if k != "days"})
    assert (err.route, err.variable, err.template) == ("r", "days", "routes.r.prompt")
    assert str(err) == "route 'r': missing variable 'days'"


def test_misspelled_variable_is_unexpected_with_a_suggestion(tmp_path: Path) -> None:
    t = route(tmp_path, PROMPT, vars=TYPED)
    values = {**{k: v for k, v in GOOD.items() if k != "ticker"}, "tikcer": "ACME"}
    err = render_error(t, values)
    assert err.variable == "tikcer"
    assert err.route == "r"
    assert "unexpected variable 'tikcer' (did you mean 'ticker'?)" in str(err)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("days", True, "variable 'days' must be int, got bool"),
        ("days", 3.0, "variable 'days' must be int, got float"),
        ("ticker", 7, "variable 'ticker' must be str, got int"),
        ("live", 1, "variable 'live' must be bool, got int"),
        ("prices", "1,2", "variable 'prices' must be list[float], got str"),
        ("prices", [1.0, "2"], "variable 'prices' item [1] must be float, got str"),
        ("prices", [1.0, False], "variable 'prices' item [1] must be float, got bool"),
    ],
)
def test_mistyped_variable(tmp_path: Path, name: str, value: Any, expected: str) -> None:
    t = route(tmp_path, PROMPT, vars=TYPED)
    err = render_error(t, {**GOOD, name: value})
    assert err.variable == name
    assert expected in str(err)


def test_int_decimal_and_tuple_are_accepted_where_documented(tmp_path: Path) -> None:
    t = route(tmp_path, PROMPT, vars=TYPED)
    t.render({**GOOD, "prices": (1, Decimal("2.5"), 3.0)})


def test_nested_list_and_dict_types() -> None:
    check = parse_var_type("list[list[int]]")
    assert check([[1, 2], []]) is None
    assert check([[1], [2, "x"]]) == "item [1] item [1] must be int, got str"
    assert parse_var_type("dict")({"a": 1}) is None
    assert parse_var_type("dict")([1]) == "must be dict, got list"
    assert parse_var_type(" list [ str ] ")(["a"]) is None


@pytest.mark.parametrize("spec", ["string", "list[]", "list[integer]", "tuple", "List[int]", ""])
def test_unknown_type_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown type"):
        parse_var_type(spec)


def test_undeclared_route_reports_a_missing_variable_by_name(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ greeting }}, {{ name }}'")
    assert t.variables == {"greeting", "name"}
    err = render_error(t, {"greeting": "hi", "nmae": "x"})
    assert (err.variable, err.template) == ("name", "routes.r.prompt")
    assert "missing variable 'name'" in str(err)
    assert "did you pass 'nmae'?" in str(err)


def test_undeclared_route_ignores_extra_variables(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ a }}'")
    assert t.render({"a": 1, "unused": 2})[0].content == "1"


def test_default_filter_works_under_strict_undefined(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ n | default(3) }}'")
    assert t.render()[0].content == "3"


def test_attribute_of_a_missing_key_is_a_template_error(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ d.missing }}'")
    err = render_error(t, {"d": {}})
    assert err.route == "r"
    assert err.variable is None
    assert "missing" in str(err)


def test_sandbox_blocks_unsafe_attribute_access(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ x.__class__.__mro__ }}'")
    err = render_error(t, {"x": "a"})
    assert err.route == "r"
    assert err.template == "routes.r.prompt"


def test_runtime_failure_inside_a_template_is_a_template_error(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ a / b }}'")
    err = render_error(t, {"a": 1, "b": 0})
    assert "ZeroDivisionError" in str(err)
    assert isinstance(err.__cause__, ZeroDivisionError)


def test_vars_must_be_a_mapping(tmp_path: Path) -> None:
    t = route(tmp_path, "hi")
    err = render_error(t, ["a"])
    assert "vars must be a mapping" in str(err)


def test_includes_and_imports_are_followed_for_variables() -> None:
    config = load_config(DATA / "includes.yaml")
    t = config.routes["with_include"].templates
    messages = t.render({"question": "q?", "ticker": "ACME", "desk": "rates"})
    assert messages[0].content == "Desk: rates\nInstrument: ACME\n\nREADY!\n"
    assert config.routes["undeclared_include"].templates.variables == {"desk", "ticker"}


def test_declared_route_rejects_a_variable_used_only_by_an_include(tmp_path: Path) -> None:
    files = {"p.j2": '{% include "inc.j2" %}', "inc.j2": "{{ secret_var }}"}
    with pytest.raises(ConfigError) as info:
        route(tmp_path, "{file: p.j2}", vars={"other": "str"}, files=files)
    assert "'secret_var', which is not declared" in str(info.value)


def test_variables_assigned_in_the_template_are_not_inputs(tmp_path: Path) -> None:
    prompt = "'{% if x %}{% set y = x * 2 %}{{ y }}{% endif %}'"
    t = route(tmp_path, prompt, vars={"x": "int"})
    assert t.render({"x": 2})[0].content == "4"


def test_rendering_parses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All parsing and compiling happens at load; a render only runs compiled code."""
    files = {"p.j2": '{% include "inc.j2" %}!', "inc.j2": "{{ a }}"}
    t = route(tmp_path, "{file: p.j2}", files=files)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed or compiled during render")

    monkeypatch.setattr(SandboxedEnvironment, "_parse", fail)
    monkeypatch.setattr(SandboxedEnvironment, "compile", fail)
    assert t.render({"a": "x"})[0].content == "x!"


def test_environment_is_sandboxed_and_strict(tmp_path: Path) -> None:
    env = make_environment(tmp_path)
    assert isinstance(env, SandboxedEnvironment)
    assert env.keep_trailing_newline
    assert not env.autoescape
    assert env.undefined.__name__ == "StrictUndefined"


def test_repr_names_route_and_templates(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ a }}'", system="sys")
    assert repr(t) == "<RouteTemplates 'r' [routes.r.system, routes.r.prompt] vars=['a']>"


# ------------------------------------------------------------------ sandbox size bounds


def load_error(tmp_path: Path, prompt: str, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        route(tmp_path, prompt, **kw)
    [problem] = info.value.problems
    assert problem.file == str(tmp_path / "p.yaml")
    assert (problem.line, problem.path) == (6, "routes.r.prompt")
    return problem.message


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # Built by the compiler's constant folding before this sandbox bound it.
        ("\"{{ 'x' * 50000000 }}\"", "'*' would build a str of 50000000 items"),
        ("'{{ ([0] * 2000000) | length }}'", "'*' would build a list of 2000000 items"),
        ("'{% set a = [0] * 1000 %}{{ (a * 1000 * 2) | length }}'", "a list of 2000000 items"),
        ("'{{ range(20000) | list | length }}'", "range() of more than 10000 numbers"),
        ("'{{ range(10 ** 30) | length }}'", "range() of more than 10000 numbers"),
        ("'{{ (2 ** 200000).bit_length() }}'", "'**' would build an integer of about 200000 bits"),
        ("\"{{ '%50000000d' % 1 }}\"", "a '%' format pads wider than the template sandbox allows"),
        # Widths of filters and str methods (constant filters are also folded by the compiler).
        ("\"{{ 'x' | center(50000000) }}\"", "a width above 1000000"),
        ("\"{{ 'x\ny' | indent(50000000) }}\"", "a width above 1000000"),
        ("\"{{ '%50000000d' | format(1) }}\"", "a '%' format pads wider"),
        ("\"{{ 'x'.ljust(50000000) }}\"", "a width above 1000000"),
        ("\"{{ '{:>50000000}'.format(1) }}\"", "a width above 1000000"),
        ("\"{{ '{:>{w}}'.format(1, w=50000000) }}\"", "a width above 1000000"),
        ("'{{ lipsum(20000) }}'", "lipsum() of up to 2000000 words"),
    ],
)
def test_a_constant_template_that_builds_too_much_fails_the_load(
    tmp_path: Path, prompt: str, expected: str
) -> None:
    """A template without variables runs at load and at every reload: a bound it breaks
    is a load error naming the template, raised before anything big is built."""
    message = load_error(tmp_path, prompt)
    assert message.startswith("template routes.r.prompt cannot be rendered: ")
    assert expected in message
    assert "the template sandbox allows" in message


def test_a_constant_file_template_that_builds_too_much_names_the_file(tmp_path: Path) -> None:
    files = {"p.j2": '{% include "inc.j2" %}', "inc.j2": "{{ (['a'] * 10 ** 7) | length }}"}
    message = load_error(tmp_path, "{file: p.j2}", files=files)
    assert message.startswith("template p.j2 cannot be rendered: ")
    assert "'*' would build a list of 10000000 items" in message


def test_repetition_with_variables_is_bounded_per_call(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ (items * n) | length }}'")
    assert t.render({"items": [1, 2], "n": 500_000})[0].content == "1000000"
    err = render_error(t, {"items": [0], "n": 10_000_000})
    assert (err.route, err.template) == ("r", "routes.r.prompt")
    assert "SecurityError: '*' would build a list of 10000000 items" in str(err)
    assert "at most 1000000" in str(err)
    err = render_error(t, {"items": "ab", "n": 600_000})
    assert "a str of 1200000 items" in str(err)


def test_ordinary_arithmetic_and_formatting_still_work(tmp_path: Path) -> None:
    prompt = "\"{{ 3 * 4 }} {{ 2 ** 10 }} {{ 1.5 * 2 }} {{ '-' * 3 }} {{ '%5.1f|%s' % (x, 'k') }}"
    prompt += " {{ range(3) | list }} {{ 7 % 3 }} {{ 'ab' | center(6) }}|{{ '{:>4}'.format(x) }}"
    prompt += "|{{ 'a'.ljust(3) }}|{{ '%03d' | format(7) }}|{{ lipsum(1, false) | length > 0 }}\""
    t = route(tmp_path, prompt, vars={"x": "float"})
    assert t.render({"x": 2.25})[0].content == (
        "12 1024 3.0 ---   2.2|k [0, 1, 2] 1   ab  |2.25|a  |007|True"
    )


@settings(max_examples=60, deadline=None)
@given(
    target=st.integers(0, 1_000_000),
    over=st.booleans(),
    times=st.integers(-3, 1_000),
    as_text=st.booleans(),
    swapped=st.booleans(),
)
def test_repetition_is_exact_up_to_the_bound_and_refused_beyond(
    repeat_route: RouteTemplates,
    target: int,
    over: bool,
    times: int,
    as_text: bool,
    swapped: bool,
) -> None:
    """Property: `s * n` (or `n * s`) renders as Python computes it while the result has at
    most 1,000,000 items, and beyond that is a TemplateError naming the bound."""
    # A result of about `target` items, or of just over the bound.
    n = max(times, 1)
    length = -(-(target + 1_000_001) // n) if over else target // n
    seq: Any = "x" * length if as_text else [0] * length
    values = {"a": times, "b": seq} if swapped else {"a": seq, "b": times}
    size = length * max(times, 0)
    event("refused" if size > 1_000_000 else "rendered")
    if size <= 1_000_000:
        assert repeat_route.render(values)[0].content == str(size)
    else:
        err = render_error(repeat_route, values)
        assert f"of {size} items; the template sandbox allows at most 1000000" in str(err)
        assert err.template == "routes.r.prompt"


@pytest.fixture(scope="module")
def repeat_route(tmp_path_factory: pytest.TempPathFactory) -> RouteTemplates:
    return route(tmp_path_factory.mktemp("repeat"), "'{{ (a * b) | length }}'")


async def test_a_reload_to_a_template_that_builds_too_much_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """The bound holds on reload too: the edited constant template is refused before it
    builds anything, and the router keeps serving the old one."""
    path = tmp_path / "p.yaml"
    base = "version: 1\nsettings: {ledger: {backend: memory}}\nproviders:\n"
    base += "  mock: {kind: mock, models: {m: {}}, mock: {reply: '{prompt}'}}\nroutes:\n"
    path.write_text(base + "  r: {prompt: 'hello', fallback: [mock/m]}\n")
    async with Router.from_yaml(path) as router:
        path.write_text(
            base + "  r: {prompt: '{{ ([0] * 100000000) | length }}', fallback: [mock/m]}\n"
        )
        started = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            await router.reload()
        assert time.perf_counter() - started < 1.0
        assert "template routes.r.prompt cannot be rendered" in str(info.value)
        assert "a list of 100000000 items" in str(info.value)
        assert (await router.complete("r")).text == "hello"


# Templates whose output must not change with how a call's context is built: globals,
# loops, assignments, macros, namespaces, filters, includes and imports.
SAME_OUTPUT = {
    "'{{ ticker }}: {{ prices | join(\", \") }}'": {},
    "'{% for p in prices %}{{ loop.index }}={{ p }};{% endfor %}'": {},
    "'{% set n = namespace(s=0) %}{% for p in prices %}{% set n.s = n.s + p %}"
    "{% endfor %}{{ n.s }}'": {},
    "'{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(ticker) }}{{ range(3) | list }}'": {},
    '\'{% set c = cycler("a", "b") %}{{ c.next() }}{{ c.next() }} {{ dict(a=1) }}\'': {},
    "{file: main.j2}": {
        "main.j2": "{% include 'part.j2' %}|{% import 'lib.j2' as lib %}{{ lib.up(ticker) }}",
        "part.j2": "{{ ticker }} x{{ prices | length }}",
        "lib.j2": "{% macro up(s) %}{{ s | upper }}{% endmacro %}",
    },
}


@pytest.mark.parametrize("prompt", list(SAME_OUTPUT))
def test_render_skips_jinja_per_call_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prompt: str
) -> None:
    """A call renders without Template.render (whose new_context merges the template's
    globals, a ChainMap, into a new dict per call): the context is built from globals
    made at load, and the text is what Template.render gives."""
    from jinja2 import Template

    t = route(tmp_path, prompt, files=SAME_OUTPUT[prompt])
    values = {"ticker": "acme", "prices": [1.5, 2, 3]}
    env = make_environment(tmp_path / "templates")
    source = (
        (tmp_path / "templates" / "main.j2").read_text()
        if prompt.startswith("{file")
        else prompt[1:-1]
    )
    expected = env.from_string(source).render(values)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Jinja's per-call context set-up on the hot path")

    monkeypatch.setattr(Template, "render", refuse)  # (includes still use new_context)
    assert t.render(values) == [Message("user", expected)]
    assert t.render(values) == [Message("user", expected)]  # nothing carried over


@pytest.mark.parametrize(
    ("spec", "value", "ok"),
    [
        ("list[float]", [1.0, 2, Decimal("3")], True),
        ("list[float]", [1.0, True], False),
        ("list[int]", [1, False], False),
        ("list[int]", [1, 2.0], False),
        ("list[str]", ["a", type("S", (str,), {})("b")], True),  # a subclass: item by item
        ("list[bool]", [True, 0], False),
        ("list[float]", [], True),
    ],
)
def test_list_checks_by_item_type(spec: str, value: list[Any], ok: bool) -> None:
    """list[T] accepts a list at once when every item's type fits T exactly, and
    otherwise checks item by item, with the same verdicts (bool is not int or float)."""
    assert (parse_var_type(spec)(value) is None) is ok


def test_every_missing_declared_variable_is_named_at_once(tmp_path: Path) -> None:
    t = route(tmp_path, PROMPT, vars=TYPED)
    err = render_error(t, {"ticker": "ACME"})
    assert str(err) == "route 'r': missing variables 'prices', 'days', 'live'"
    assert err.variables == ("prices", "days", "live")
    assert err.variable == "prices"


def test_unexpected_missing_and_mistyped_are_reported_together(tmp_path: Path) -> None:
    t = route(tmp_path, PROMPT, vars=TYPED)
    err = render_error(t, {"tikcer": "ACME", "prices": "1,2", "days": 3, "live": True})
    text = str(err)
    assert "unexpected variable 'tikcer' (did you mean 'ticker'?)" in text
    assert "missing variable 'ticker'" in text
    assert "variable 'prices' must be list[float], got str" in text
    assert err.variables == ("tikcer", "ticker", "prices")


def test_undeclared_route_names_the_other_unpassed_variables_too(tmp_path: Path) -> None:
    t = route(tmp_path, "'{{ a }} {{ b }} {{ c }}'")
    err = render_error(t, {"b": 1})
    assert "missing variable 'a' (used by routes.r.prompt)" in str(err)
    assert "not passed either: 'c'" in str(err)
    assert err.variables == ("a", "c")


def test_a_declared_variable_no_template_uses_is_a_warning_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  mock: {kind: mock, models: {m: {}}}\n"
        "routes:\n"
        "  r:\n"
        "    prompt: 'Hi {{ name }}'\n"
        "    vars:\n"
        "      name: str\n"
        "      spare: int\n"
        "    fallback: [mock/m]\n"
    )
    from router.config import read_config

    loaded = read_config(tmp_path / "p.yaml", env={})
    (warning,) = loaded.warnings
    assert (warning.path, warning.line, warning.col) == ("routes.r.vars.spare", 9, 7)
    assert "'spare' is declared but no template of route 'r' uses it" in warning.message


_ODD = type("Odd", (), {"__str__": lambda self: "odd!"})


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(min_size=0, max_size=12),
    items=st.lists(
        st.one_of(
            st.integers(),
            st.floats(allow_nan=True),
            st.text(max_size=8),
            st.booleans(),
            st.none(),
            st.decimals(allow_nan=False, places=3),
            st.just(_ODD()),
        ),
        max_size=6,
    ),
    sep=st.sampled_from(["", ", ", "|", "\n", "é"]),
)
def test_a_substitution_template_renders_as_jinja_does_without_jinja(
    name: str, items: list[Any], sep: str
) -> None:
    """Text, ``{{ name }}`` and ``{{ name | join(sep) }}`` only: rendered from pieces read
    at load, without Jinja, to exactly the text Jinja renders (str() of each value)."""
    from router.templates import _Renderer, _substitution

    env = make_environment(Path("."))
    source = f"a {{{{ who }}}}: {{{{ xs | join({sep!r}) }}}}; {{{{ xs }}}}.{{{{ xs|join }}}}"
    pieces = _substitution(env.parse(source), env)
    assert pieces is not None
    template = env.from_string(source)
    renderer = _Renderer(template, pieces)
    values = {"who": name, "xs": items}
    expected = template.render(values)

    def refuse(context: Any) -> Any:
        raise AssertionError("Jinja ran")

    renderer._root = refuse  # type: ignore[assignment]  # the compiled template's code
    assert renderer(values, True) == expected


@pytest.mark.parametrize(
    "source",
    [
        "{{ a.b }}",  # attribute access: the sandbox decides
        "{{ a | upper }}",
        "{{ a | join(b) }}",  # a separator that is a variable
        "{{ a ~ 'x' }}",
        "{% if a %}x{% endif %}",
        "{{ a | join(', ', attribute='x') }}",
        "{{ 'x' * 3 }}",
    ],
)
def test_anything_else_is_left_to_jinja(source: str) -> None:
    env = make_environment(Path("."))
    assert _substitution_of(env, source) is None


def _substitution_of(env: SandboxedEnvironment, source: str) -> Any:
    from router.templates import _substitution

    return _substitution(env.parse(source), env)


def test_substitution_falls_back_to_jinja_for_its_errors_and_globals(tmp_path: Path) -> None:
    """A name not passed (a global like ``range``, or missing), a value that cannot be
    joined: Jinja renders it or raises its own error, as before."""
    t = route(tmp_path, "'{{ xs | join(\",\") }} {{ range }}'")
    assert t.render({"xs": [1, 2], "range": "r"}) == [Message("user", "1,2 r")]
    text = t.render({"xs": [1, 2]})[0].content
    assert text.startswith("1,2 <function")  # the sandbox's range global, as Jinja renders it
    assert "join" not in str(render_error(t, {"xs": 5}))  # Jinja's TypeError, reported
    assert "'int' object is not iterable" in str(render_error(t, {"xs": 5}))
    assert "missing variable 'xs'" in str(render_error(t, {}))


def test_a_name_that_is_not_a_string_goes_to_jinja(tmp_path: Path) -> None:
    """An undeclared route's vars with a non-string name: Jinja's own refusal, as before."""
    t = route(tmp_path, "'{{ xs }}'")
    err = render_error(t, {"xs": 1, 2: "two"})
    assert "keywords must be strings" in str(err)
