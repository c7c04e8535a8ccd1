"""Router behaviour through the offline mock provider (same path as real providers)."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from router.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    DeadlineExceededError,
    ProviderTimeoutError,
    RouterError,
    ServerError,
    TemplateError,
)
from router.router import Router
from router.types import SkipKind
from tests.logs import capture_logs
from tests.routerkit import make_config

CHAIN = """\
providers:
  flaky:
    kind: mock
    mock: {failures: [503, 503]}
    models: {m1: {price: {input_per_mtok: 1, output_per_mtok: 2}}}
  steady:
    kind: mock
    mock: {reply: "answer about {prompt}"}
    models: {m2: {price: {input_per_mtok: 3, output_per_mtok: 6}}}
routes:
  r:
    prompt: "{{ ticker }}"
    vars: {ticker: str}
    max_tokens: 50
    fallback:
      - flaky/m1
      - steady/m2
"""


async def test_falls_back_after_retries_and_reports_every_attempt(tmp_path: Path) -> None:
    config = make_config(tmp_path, CHAIN)
    async with Router(config) as router:
        result = await router.complete("r", {"ticker": "ACME"})
    assert result.text == "answer about ACME"
    assert (result.provider, result.model, result.route) == ("steady", "m2", "r")
    outcomes = [(a.provider, a.outcome, a.status) for a in result.attempts]
    # settings.retries defaults to 1: the flaky step is tried twice.
    assert outcomes == [("flaky", "error", 503), ("flaky", "error", 503), ("steady", "ok", 200)]
    assert all(isinstance(a.error, ServerError) for a in result.attempts[:2])
    assert result.usage.input_tokens == 1  # ceil(len("ACME") / 4), reported by the mock
    assert result.usage.output_tokens == 5  # ceil(len("answer about ACME") / 4)
    assert not result.usage.estimated
    assert result.cost_usd == Decimal(1 * 3 + 5 * 6) / Decimal(1_000_000)
    assert result.attempts[2].cost_usd == result.cost_usd


async def test_a_retry_of_the_same_step_can_succeed(tmp_path: Path) -> None:
    config = make_config(tmp_path, CHAIN.replace("failures: [503, 503]", "failures: [503]"))
    async with Router(config) as router:
        result = await router.complete("r", {"ticker": "X"})
    assert result.provider == "flaky"
    assert [a.outcome for a in result.attempts] == ["error", "ok"]


async def test_template_error_is_raised_before_any_attempt(tmp_path: Path) -> None:
    config = make_config(tmp_path, CHAIN)
    async with Router(config) as router:
        with capture_logs() as logs, pytest.raises(TemplateError) as info:
            await router.complete("r", {"tickr": "ACME"})
    assert "ticker" in str(info.value)
    assert not [e for e in logs if e["event"] == "llm_attempt"]


async def test_unknown_route_names_the_closest(tmp_path: Path) -> None:
    async with Router(make_config(tmp_path, CHAIN)) as router:
        with pytest.raises(RouterError, match="did you mean 'r'"):
            await router.complete("rr", {"ticker": "X"})


async def test_all_steps_failing_raises_with_every_attempt(tmp_path: Path) -> None:
    body = CHAIN.replace('mock: {reply: "answer about {prompt}"}', "mock: {failures: [500, 500]}")
    async with Router(make_config(tmp_path, body)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"ticker": "X"})
    err = info.value
    assert len(err.attempts) == 4
    assert all(isinstance(a.error, ServerError) for a in err.attempts)
    assert "flaky/m1" in str(err) and "steady/m2" in str(err)


async def test_a_one_step_chain_failure_still_carries_the_provider_error(tmp_path: Path) -> None:
    body = """\
providers:
  p:
    kind: mock
    mock: {failures: [401]}
    models: {m: {}}
routes:
  r: {prompt: "hi", fallback: [p/m]}
"""
    async with Router(make_config(tmp_path, body)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r")
        assert isinstance(info.value.attempts[0].error, AuthenticationError)
        assert len(info.value.attempts) == 1  # a bad key is never retried
        # ... and the provider now cools down: the next call skips it without sending.
        with pytest.raises(AllProvidersFailedError) as again:
            await router.complete("r")
    skipped = again.value.attempts[0]
    assert skipped.outcome == "skipped" and "cooling down" in (skipped.reason or "")
    assert skipped.skip is SkipKind.COOLDOWN


async def test_fallback_on_narrows_which_errors_move_on(tmp_path: Path) -> None:
    body = CHAIN.replace("failures: [503, 503]", "failures: [400]").replace(
        "    max_tokens: 50\n", "    max_tokens: 50\n    fallback_on: [server, timeout]\n"
    )
    async with Router(make_config(tmp_path, body)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"ticker": "X"})
    assert len(info.value.attempts) == 1
    assert isinstance(info.value.attempts[0].error, BadRequestError)


async def test_fallback_on_does_not_suppress_same_step_retries(tmp_path: Path) -> None:
    """A kind left out of fallback_on is still retried on its step as the policy says;
    fallback_on only decides whether the call may move to the next step."""
    body = CHAIN.replace("failures: [503, 503]", "failures: [429]").replace(
        "    max_tokens: 50\n", "    max_tokens: 50\n    fallback_on: [server, timeout]\n"
    )
    body += "settings: {retries: 3}\n"
    waits: list[float] = []

    async def instant(seconds: float) -> None:  # the mock's 429 says retry-after: 1
        waits.append(seconds)

    async with Router(make_config(tmp_path, body), sleep=instant) as router:
        result = await router.complete("r", {"ticker": "X"})
    assert result.provider == "flaky"
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert waits and waits[0] == 1.0


async def test_fallback_on_stops_after_the_retries_of_an_omitted_kind(tmp_path: Path) -> None:
    body = CHAIN.replace("failures: [503, 503]", "failures: [429, 429, 429]").replace(
        "    max_tokens: 50\n", "    max_tokens: 50\n    fallback_on: [server, timeout]\n"
    )
    body += "settings: {retries: 2}\n"

    async def instant(seconds: float) -> None:
        pass

    async with Router(make_config(tmp_path, body), sleep=instant) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"ticker": "X"})
    # Three tries of the flaky step (1 + retries: 2), then the call stops: no fallback.
    assert [(a.provider, a.status) for a in info.value.attempts] == [("flaky", 429)] * 3


async def test_deadline_bounds_a_chain_of_hanging_steps(tmp_path: Path) -> None:
    body = """\
providers:
  slow:
    kind: mock
    mock: {latency_s: 30}
    models: {a: {}, b: {}}
settings: {attempt_floor_s: 0.05}
routes:
  r: {prompt: "hi", fallback: [slow/a, slow/b]}
"""
    async with Router(make_config(tmp_path, body)) as router:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError) as info:
            await router.complete("r", deadline_s=0.4)
        elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 0.45
    errors = [a.error for a in info.value.attempts if a.error is not None]
    assert errors and all(isinstance(e, ProviderTimeoutError) for e in errors)
    # The first step got only its share (0.2 s), so the second step was tried.
    assert {a.model for a in info.value.attempts} == {"a", "b"}


async def test_a_hung_first_step_leaves_time_for_the_next(tmp_path: Path) -> None:
    body = """\
providers:
  slow: {kind: mock, mock: {latency_s: 30}, models: {a: {}}}
  fast: {kind: mock, models: {b: {}}}
settings: {retries: 0, attempt_floor_s: 0.1}
routes:
  r: {prompt: "hi", fallback: [slow/a, fast/b]}
"""
    async with Router(make_config(tmp_path, body)) as router:
        t0 = time.monotonic()
        result = await router.complete("r", deadline_s=1.0)
        elapsed = time.monotonic() - t0
    assert result.provider == "fast"
    assert 0.5 <= elapsed < 0.6  # step 1 was cut at half the deadline
    assert isinstance(result.attempts[0].error, ProviderTimeoutError)


async def test_cancelling_the_caller_releases_slots_and_reservations(tmp_path: Path) -> None:
    body = """\
providers:
  slow:
    kind: mock
    mock: {latency_s: 30}
    limits: {max_concurrency: 1}
    models: {a: {price: {input_per_mtok: 1, output_per_mtok: 1}}}
budgets:
  all: {limit_usd: 10}
routes:
  r: {prompt: "hi", fallback: [slow/a]}
"""
    async with Router(make_config(tmp_path, body)) as router:
        task = asyncio.create_task(router.complete("r", deadline_s=20))
        await asyncio.sleep(0.05)
        assert router.provider_states()["slow"].in_flight == 1
        assert router.reserved_usd > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert router.provider_states()["slow"].in_flight == 0
        assert router.reserved_usd == 0
        assert router.spend()[0].spent_usd == 0


async def test_budget_refusal_skips_every_step_and_names_the_budget(tmp_path: Path) -> None:
    body = CHAIN + "budgets:\n  tiny: {limit_usd: 0.0000001}\n"
    async with Router(make_config(tmp_path, body)) as router:
        with pytest.raises(BudgetExceededError) as info:
            await router.complete("r", {"ticker": "X"})
    assert info.value.budget == "tiny"
    assert "tiny" in str(info.value)
    assert [a.outcome for a in info.value.attempts] == ["skipped", "skipped"]
    assert [a.skip for a in info.value.attempts] == [SkipKind.BUDGET, SkipKind.BUDGET]


async def test_route_max_cost_skips_steps_whose_worst_case_is_too_dear(tmp_path: Path) -> None:
    # worst case of step 2: 1 token * $3/M + 50 * $6/M = $0.000303 > $0.0002 >= step 1's $0.000101
    body = CHAIN.replace("max_tokens: 50\n", "max_tokens: 50\n    max_cost_usd: 0.0002\n").replace(
        "failures: [503, 503]", "failures: [503, 503, 503, 503]"
    )
    async with Router(make_config(tmp_path, body)) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"ticker": "X"})
    last = info.value.attempts[-1]
    assert last.provider == "steady" and last.outcome == "skipped"
    assert "max_cost_usd" in (last.reason or "")
    assert last.skip is SkipKind.MAX_COST


async def test_using_the_router_from_another_loop_is_a_clear_error(tmp_path: Path) -> None:
    config = make_config(tmp_path, CHAIN)
    async with Router(config) as router:
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                asyncio.run(router.complete("r", {"ticker": "X"}))
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "different event loop" in str(errors[0])


async def test_calling_before_start_is_a_clear_error(tmp_path: Path) -> None:
    router = Router(make_config(tmp_path, CHAIN))
    with pytest.raises(RuntimeError, match="not running"):
        await router.complete("r", {"ticker": "X"})


async def test_logs_and_hooks_see_every_attempt_and_the_call(tmp_path: Path) -> None:
    seen_attempts: list[tuple[str, str]] = []
    seen_calls: list[tuple[str, bool]] = []
    router = Router(
        make_config(tmp_path, CHAIN),
        on_attempt=lambda route, a: seen_attempts.append((route, a.outcome)),
        on_call=lambda route, c, e: seen_calls.append((route, c is not None and e is None)),
    )
    async with router:
        with capture_logs() as logs:
            await router.complete("r", {"ticker": "X"})
    assert seen_attempts == [("r", "error"), ("r", "error"), ("r", "ok")]
    assert seen_calls == [("r", True)]
    attempt_logs = [e for e in logs if e["event"] == "llm_attempt"]
    assert [e["outcome"] for e in attempt_logs] == ["error", "error", "ok"]
    assert attempt_logs[0]["error_type"] == "server" and attempt_logs[0]["status"] == 503
    assert all("deadline_left_ms" in e and "latency_ms" in e for e in attempt_logs)
    (call,) = [e for e in logs if e["event"] == "llm_call"]
    assert call["provider"] == "steady" and call["attempts"] == 3


def test_a_config_built_in_code_is_refused_with_a_clear_error() -> None:
    """The router runs from a resolved Plan; the schema document alone is not one."""
    from router.config import Config

    config = Config.model_validate(
        {
            "version": 1,
            "providers": {"m": {"kind": "mock", "models": {"x": {}}}},
            "routes": {"r": {"prompt": "hi", "fallback": ["m/x"]}},
        }
    )
    with pytest.raises(TypeError, match=r"Plan from router\.load_config"):
        Router(config)  # type: ignore[arg-type]


async def test_a_call_that_overrides_nothing_uses_its_steps_params_made_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The params of a call with the route's max_tokens and temperature and no params
    are made once per step, at load (read-only); any override builds its own."""
    import router.call

    made: list[tuple[int, float | None]] = []
    real = router.call.request_params

    def counting(
        plan: object,
        max_tokens: int,
        temperature: float | None,
        params: object,
        tools: object = None,
    ) -> object:
        made.append((max_tokens, temperature))
        return real(plan, max_tokens, temperature, params, tools)  # type: ignore[arg-type]

    config = make_config(
        tmp_path,
        "providers:\n  p: {kind: mock, models: {m: {max_output_tokens: 50}}}\n"
        "routes:\n  r: {prompt: hi, fallback: [p/m], max_tokens: 80, temperature: 0.5}\n",
    )
    async with Router(config) as r:
        monkeypatch.setattr(router.call, "request_params", counting)
        (step,) = r._gen.routes["r"].steps
        assert step.defaults is not None
        params, max_tokens = step.defaults
        assert (dict(params), max_tokens) == ({"max_tokens": 50, "temperature": 0.5}, 50)
        with pytest.raises(TypeError):
            params["max_tokens"] = 1  # type: ignore[index]
        await r.complete("r")
        await r.complete("r", temperature=0.5, max_tokens=80)  # the route's own values
        assert made == []
        await r.complete("r", max_tokens=10)
        await r.complete("r", temperature=0.1)
        await r.complete("r", params={"seed": 1})
        assert made == [(10, 0.5), (80, 0.1), (80, 0.5)]
