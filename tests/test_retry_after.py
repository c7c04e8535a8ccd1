"""Retry-After is capped by ``settings.retry_after_max_s``: an absurd value (1e308 seconds, a
date in year 9999, ``retry-after-ms: 1e20``) sidelines a provider for the cap at most,
never until restart, and every wait is printed readably."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from router import Completion, RateLimitError, Router
from router.limits import readable_seconds
from router.providers.error_body import parse_retry_after
from router.types import SkipKind
from tests.fakeclock import FakeClock
from tests.routerkit import write_config
from tests.upstream import Upstream, replay, reply

Factory = Callable[..., Awaitable[Upstream]]
CHAT = "/v1/chat/completions"
OK = "openai/openai-chat-200-json-cached-tokens.meta.json"
ABSURD = [
    {"retry-after": "1e308"},
    {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"},
    {"retry-after-ms": "1e20"},
]


@pytest.mark.parametrize("headers", ABSURD)
def test_parse_retry_after_caps_absurd_values(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers, time.time(), max_s=600.0) == 600.0
    assert parse_retry_after({"retry-after": "7"}, None, max_s=600.0) == 7.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "0.25s"), (7.0, "7.0s"), (59.96, "60.0s"), (600.0, "10m00s"), (3725.0, "1h02m05s")],
)
def test_waits_print_readably(seconds: float, text: str) -> None:
    assert readable_seconds(seconds) == text


def chain(url1: str, url2: str, settings: str) -> str:
    price = "{input_per_mtok: 1, output_per_mtok: 2}"
    return (
        "providers:\n"
        f"  s1: {{kind: openai, base_url: '{url1}/v1', models: {{m: {{price: {price}}}}}}}\n"
        f"  s2: {{kind: openai, base_url: '{url2}/v1', models: {{m: {{price: {price}}}}}}}\n"
        f"settings: {{{settings}}}\n"
        "routes:\n  r: {prompt: hi, fallback: [s1/m, s2/m]}\n"
    )


@pytest.mark.parametrize("headers", ABSURD, ids=["seconds", "year-9999", "ms"])
async def test_an_absurd_retry_after_sidelines_a_provider_only_for_the_cap(
    tmp_path: Path, upstream_factory: Factory, headers: dict[str, str]
) -> None:
    s1, s2 = await upstream_factory(), await upstream_factory()
    s1.route(CHAT, replay(OK))
    s1.queue(reply(429, {"error": {"message": "slow down"}}, headers), path=CHAT)
    s2.route(CHAT, replay(OK))
    clock = FakeClock()
    path = write_config(tmp_path, chain(s1.url, s2.url, "retry_after_max_s: 120"))
    async with Router.from_yaml(path, clock=clock) as router:
        first = await router.complete("r", deadline_s=5)
        assert first.provider == "s2"
        err = first.attempts[0].error
        assert isinstance(err, RateLimitError) and err.retry_after == 120.0
        clock.advance(1)
        skipped = (await router.complete("r", deadline_s=5)).attempts[0]
        assert skipped.outcome == "skipped"
        assert skipped.reason == (
            "provider asked to wait 1m59s (Retry-After), past this attempt's share"
        )
        assert skipped.skip is SkipKind.RETRY_AFTER
        state = router.stats()["providers"]["s1"]["state"]
        assert state["retry_after_s"] == 119.0
        assert router.provider_states()["s1"].retry_after_s == 119.0
        clock.advance(120)
        again = await router.complete("r", deadline_s=5)
    assert isinstance(again, Completion)
    assert (again.provider, again.attempts[0].outcome) == ("s1", "ok")


async def test_the_cap_defaults_to_ten_minutes(tmp_path: Path, upstream_factory: Factory) -> None:
    s1, s2 = await upstream_factory(), await upstream_factory()
    s1.route(CHAT, reply(429, {"error": {"message": "slow down"}}, {"retry-after": "1e308"}))
    s2.route(CHAT, replay(OK))
    async with Router.from_yaml(write_config(tmp_path, chain(s1.url, s2.url, ""))) as router:
        result = await router.complete("r", deadline_s=5)
    err = result.attempts[0].error
    assert isinstance(err, RateLimitError) and err.retry_after == 600.0
