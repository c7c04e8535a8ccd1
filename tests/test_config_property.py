"""Property: any mutation of the example config loads or raises ConfigError, nothing else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import ConfigError
from router.plan import Plan, load_config
from tests.logs import capture_logs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TEXT = (ROOT / "providers.yaml").read_text()
ENV = {
    "OPENAI_API_KEY": "sk-prop-0123456789abcdef",
    "ANTHROPIC_API_KEY": "sk-ant-prop-0123456789",
    "DEEPSEEK_API_KEY": "sk-ds-prop-0123456789",
    "XAI_API_KEY": "xai-prop-0123456789",
}


def example_data() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE_TEXT)
    # Mutated files live in a temp folder: point templates at the real ones.
    data["settings"]["templates_dir"] = str(ROOT / "templates")
    return data


BASE = example_data()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["mock/mock-1", "openai/gpt-5.5", "http://x.example", "list[int]", "sk-" + "a" * 30]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def all_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += all_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += all_paths(v, (*path, i))
    return out


def mutate(data: dict[str, Any], draw: st.DataObject) -> dict[str, Any]:
    paths = [p for p in all_paths(data) if p]
    path = draw.draw(st.sampled_from(paths), label="path")
    parent: Any = data
    for el in path[:-1]:
        parent = parent[el]
    last = path[-1]
    op = draw.draw(st.sampled_from(["delete", "replace", "rename", "retype"]), label="op")
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = draw.draw(values, label="value")
    elif op == "rename" and isinstance(parent, dict):
        new = draw.draw(st.one_of(st.text(max_size=12), st.just(str(last)[:-1])), label="key")
        parent[new] = parent.pop(last)
    else:
        current = parent[last]
        parent[last] = [current] if not isinstance(current, list) else {"x": current}
    return data


def text_mutation(text: str, draw: st.DataObject) -> str:
    lines = text.splitlines(keepends=True)
    i = draw.draw(st.integers(0, len(lines) - 1), label="line")
    op = draw.draw(st.sampled_from(["duplicate", "delete", "insert", "indent"]), label="text-op")
    if op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "delete":
        del lines[i]
    elif op == "insert":
        junk = draw.draw(st.text(alphabet=" :-[]{}&*!|>'\"#%@`\n\tab1", max_size=10), label="junk")
        lines.insert(i, junk + "\n")
    else:
        lines[i] = "  " + lines[i]
    return "".join(lines)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutations")


def check(path: Path, require_env: bool, env: dict[str, str]) -> None:
    error: ConfigError | None = None
    try:
        with capture_logs():
            result = load_config(path, env=env, require_env=require_env)
    except ConfigError as exc:
        error = exc
    if error is None:
        assert isinstance(result, Plan)
        return
    assert error.problems, "a ConfigError always lists at least one problem"
    for p in error.problems:
        assert p.line is None or p.line >= 1
        assert p.message


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(draw=st.data(), n=st.integers(1, 3), require_env=st.booleans())
def test_structural_mutations_load_or_raise_config_error(
    workdir: Path, draw: st.DataObject, n: int, require_env: bool
) -> None:
    data = copy.deepcopy(BASE)
    for _ in range(n):
        data = mutate(data, draw)
    path = workdir / "providers.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    dropped = draw.draw(st.sets(st.sampled_from(sorted(ENV))), label="unset")
    check(path, require_env, {k: v for k, v in ENV.items() if k not in dropped})


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(draw=st.data(), n=st.integers(1, 3))
def test_text_mutations_load_or_raise_config_error(
    workdir: Path, draw: st.DataObject, n: int
) -> None:
    text = EXAMPLE_TEXT.replace("templates_dir: templates", f"templates_dir: {ROOT / 'templates'}")
    for _ in range(n):
        text = text_mutation(text, draw)
    path = workdir / "providers.yaml"
    path.write_text(text)
    check(path, True, ENV)


def test_unmutated_example_passes_the_same_check(workdir: Path) -> None:
    """The property's baseline: the example itself loads as a Plan."""
    path = workdir / "providers.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    with capture_logs():
        assert isinstance(load_config(path, env=ENV), Plan)
