"""models.<m>.context_window: a step whose model cannot hold the call's estimated input
plus its max_tokens is skipped before sending (skip kind context_window), and the dry
run (Plan.fit, Router.fit, ``router render``) shows per step whether a call fits."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from router.cli import main as cli_main
from router.errors import AllProvidersFailedError
from router.estimate import estimate_tokens
from router.plan import StepFit
from router.router import Router
from router.types import Message, SkipKind
from tests.routerkit import make_config, write_config

CHAIN = """\
providers:
  small:
    kind: mock
    mock: {reply: "small answered"}
    input_overhead_tokens: 7
    models: {s: {context_window: 200, price: {input_per_mtok: 1, output_per_mtok: 2}}}
  big:
    kind: mock
    mock: {reply: "big answered"}
    models: {b: {context_window: 100000}}
  unknown:
    kind: mock
    models: {u: {}}
routes:
  r:
    prompt: "{{ text }}"
    vars: {text: str}
    max_tokens: 50
    fallback: [small/s, big/b]
  capped:
    prompt: "{{ text }}"
    vars: {text: str}
    max_tokens: 50
    fallback: [small/s]
  open:
    prompt: "{{ text }}"
    max_tokens: 50
    fallback: [unknown/u]
"""
LONG = "word " * 200  # ~300 estimated tokens: too much for a window of 200


def _estimate(text: str) -> int:
    return estimate_tokens([Message("user", text)])


async def test_a_step_too_small_for_the_call_is_skipped_before_sending(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, CHAIN)) as router:
        result = await router.complete("r", {"text": LONG})
        stats = router.stats()
    assert result.text == "big answered"
    skipped, ok = result.attempts
    assert (skipped.provider, skipped.outcome, skipped.skip) == (
        "small",
        "skipped",
        SkipKind.CONTEXT_WINDOW,
    )
    assert skipped.status is None and skipped.latency_s == 0  # nothing was sent
    need = _estimate(LONG) + 7  # the messages' estimate plus the hidden overhead
    assert skipped.reason == (
        f"estimated input {need} + max_tokens 50 = {need + 50} tokens"
        " is more than the model's context_window 200"
    )
    assert ok.outcome == "ok"
    assert stats["routes"]["r"]["skips"] == {"context_window": 1}


async def test_a_call_that_fits_is_sent_to_the_first_step(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, CHAIN)) as router:
        result = await router.complete("r", {"text": "short"})
    assert result.text == "small answered"
    assert [a.outcome for a in result.attempts] == ["ok"]


async def test_max_tokens_counts_towards_the_window(tmp_path: Path) -> None:
    """The same short input is skipped once the output cap no longer fits beside it."""
    async with Router(make_config(tmp_path, CHAIN)) as router:
        result = await router.complete("r", {"text": "short"}, max_tokens=190)
    assert [a.skip for a in result.attempts] == [SkipKind.CONTEXT_WINDOW, None]


async def test_when_no_step_fits_the_error_says_nothing_was_sent(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, CHAIN)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("capped", {"text": LONG})
    message = str(info.value)
    assert "every step was skipped, nothing was sent" in message
    assert "does not fit any step's context_window" in message
    assert "small/s: estimated input" in message
    assert [a.skip for a in info.value.attempts] == [SkipKind.CONTEXT_WINDOW]


async def test_a_model_without_a_window_is_never_skipped_for_it(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, CHAIN)) as router:
        result = await router.complete("open", {"text": LONG * 50}, max_tokens=10**6)
    assert [a.outcome for a in result.attempts] == ["ok"]


def test_the_dry_run_says_per_step_whether_a_call_fits(tmp_path: Path) -> None:
    plan = make_config(tmp_path, CHAIN)
    need = _estimate(LONG)
    assert plan.fit("r", {"text": LONG}) == [
        StepFit("small", "s", 200, 50, need + 7, False),
        StepFit("big", "b", 100000, 50, need, True),
    ]
    short = plan.fit("r", {"text": "short"})
    assert [f.fits for f in short] == [True, True]
    # Without variables only an output cap beyond the window is known not to fit.
    assert [f.fits for f in plan.fit("r")] == [None, None]
    assert [f.fits for f in plan.fit("r", max_tokens=500)] == [False, None]
    # An unknown window is not checked: such a step is never skipped for it.
    assert plan.fit("open", {"text": "x"})[0][2:] == (None, 50, _estimate("x"), True)
    assert plan.fit("open")[0].fits is None
    assert Router(plan).fit("r", {"text": LONG}) == plan.fit("r", {"text": LONG})


def test_router_render_prints_the_fit_of_every_step(tmp_path: Path) -> None:
    path = write_config(tmp_path, CHAIN)
    out = io.StringIO()
    code = cli_main(["render", "r", "--config", str(path), "--var", f"text={LONG}"], out)
    assert code == 0
    text = out.getvalue()
    need = _estimate(LONG)
    assert (
        f"~{need + 7} tokens in (estimate) + 50 out do NOT fit its context window of 200:"
        " a call skips this step"
    ) in text
    assert f"~{need} tokens in (estimate) + 50 out fit its context window of 100000" in text
