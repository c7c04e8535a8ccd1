"""Live config reload: validated before anything changes, swapped atomically, nothing dropped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from router.errors import ConfigError
from router.router import Router
from tests.logs import capture_logs
from tests.routerkit import write_config
from tests.upstream import Behaviour, Exchange, Upstream, reply

ENV = {"KEY_A": "sk-test-aaaaaaaaaaaaaaaa", "KEY_B": "sk-test-bbbbbbbbbbbbbbbb"}


def _answer(text: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
    ).encode()


def slow_answer(text: str, delay_s: float) -> Behaviour:
    ok = reply(200, _answer(text))

    async def run(ex: Exchange) -> bool:
        if not await ex.pause(delay_s):
            return False
        return await ok.run(ex)

    return Behaviour(f"slow {text}", run)


def _yaml(url_a: str, url_b: str, first: str, extra: str = "") -> str:
    return f"""\
version: 1
settings:
  ledger: {{backend: sqlite, path: spend.sqlite3}}
providers:
  a:
    kind: openai
    base_url: {url_a}
    api_key_env: KEY_A
    models: {{m: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
  b:
    kind: openai
    base_url: {url_b}
    api_key_env: KEY_B
    models: {{m: {{price: {{input_per_mtok: 1, output_per_mtok: 1}}}}}}
budgets:
  all: {{limit_usd: 100, period: total}}
routes:
  r:
    prompt: "hi {{{{ who }}}}"
    fallback: [{first}/m]
{extra}"""


async def _two(upstream_factory) -> tuple[Upstream, Upstream]:  # type: ignore[no-untyped-def]
    a = await upstream_factory()
    b = await upstream_factory()
    a.handler = lambda request: slow_answer("from a", 0.2)
    b.handler = lambda request: slow_answer("from b", 0.2)
    return a, b


async def test_reload_during_200_calls_drops_none_and_splits_old_and_new(
    tmp_path: Path, upstream_factory
) -> None:
    """Calls started before the swap answer from the old chain, calls after from the new."""
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV) as router:
        before = [asyncio.create_task(router.complete("r", {"who": i})) for i in range(200)]
        await asyncio.sleep(0.05)  # all 200 are in flight on provider a
        path.write_text(_yaml(a.url, b.url, "b"))
        report = await router.reload()
        after = [asyncio.create_task(router.complete("r", {"who": i})) for i in range(50)]
        old = await asyncio.gather(*before)
        new = await asyncio.gather(*after)
    assert {c.text for c in old} == {"from a"}
    assert {c.text for c in new} == {"from b"}
    assert report.routes_changed == ["r"]
    assert report.providers_changed == []


async def test_an_invalid_edit_keeps_the_old_config_serving(
    tmp_path: Path, upstream_factory
) -> None:
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV) as router:
        broken = (
            _yaml(a.url, b.url, "a")
            .replace("kind: openai", "kind: opnai", 1)
            .replace('prompt: "hi {{ who }}"', 'prompt: "hi {{ who "')
        )
        path.write_text(broken)
        with capture_logs() as logs, pytest.raises(ConfigError) as info:
            await router.reload()
        text = str(info.value)
        # Every problem, each with its line.
        assert "providers.yaml:6:" in text and "kind" in text
        assert "routes.r.prompt" in text
        failed = [e for e in logs if e["event"] == "reload_failed"]
        assert failed and any(":6:" in p for p in failed[0]["problems"])
        # The old config still serves.
        result = await router.complete("r", {"who": "x"})
        assert result.text == "from a"


async def test_a_missing_key_on_reload_is_refused(tmp_path: Path, upstream_factory) -> None:
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV) as router:
        path.write_text(_yaml(a.url, b.url, "a").replace("KEY_B", "KEY_C"))
        with pytest.raises(ConfigError, match="KEY_C"):
            await router.reload()
        assert (await router.complete("r", {"who": 1})).provider == "a"


async def test_an_unchanged_provider_keeps_its_pool_and_a_removed_one_closes_when_idle(
    tmp_path: Path, upstream_factory
) -> None:
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV) as router:
        await router.complete("r", {"who": 1})
        runtime_a = router.provider_states()["a"].runtime_id
        in_flight = asyncio.create_task(router.complete("r", {"who": 2}))
        await asyncio.sleep(0.05)
        # Remove b, keep a exactly as it was (only the route's retries change).
        edited = _yaml(a.url, b.url, "a")
        start = edited.index("  b:\n")
        edited = edited[:start] + edited[edited.index("budgets:") :]
        path.write_text(
            edited.replace("    fallback: [a/m]", "    retries: 0\n    fallback: [a/m]")
        )
        report = await router.reload()
        assert report.providers_removed == ["b"]
        # The same runtime: connection pool, limiter and cooldown state.
        assert router.provider_states()["a"].runtime_id == runtime_a
        assert list(router.provider_states()) == ["a"]
        assert router.calls_in_flight == 1  # the call started before the reload
        await in_flight
        assert router.calls_in_flight == 0
        await router.complete("r", {"who": 3})
        assert a.connections_opened == 1  # one connection across the reload
        assert report.routes_changed == ["r"]


async def test_a_changed_provider_is_closed_after_its_in_flight_call(
    tmp_path: Path, upstream_factory
) -> None:
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV) as router:
        old_runtime = router.provider_states()["a"].runtime_id
        in_flight = asyncio.create_task(router.complete("r", {"who": 1}))
        await asyncio.sleep(0.05)
        path.write_text(
            _yaml(a.url, b.url, "a").replace(
                "    api_key_env: KEY_A\n", "    api_key_env: KEY_A\n    timeout_s: 30\n", 1
            )
        )
        report = await router.reload()
        assert report.providers_changed == ["a"]
        assert router.provider_states()["a"].runtime_id != old_runtime  # rebuilt
        assert a.disconnects == 0  # the old client is still serving its call
        result = await in_flight
        assert result.text == "from a"
        await a.wait_until(lambda: a.disconnects >= 1)  # closed once idle


async def test_budgets_keep_their_spend_across_a_reload(tmp_path: Path, upstream_factory) -> None:
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV) as router:
        await router.complete("r", {"who": 1})
        (before,) = router.spend()
        assert before.spent_usd > 0
        path.write_text(
            _yaml(a.url, b.url, "a").replace("limit_usd: 100", "limit_usd: 50")
            + "  extra_route:\n    prompt: hello\n    fallback: [b/m]\n"
        )
        report = await router.reload()
        assert report.budgets_changed and report.routes_added == ["extra_route"]
        (after,) = router.spend()
        assert after.spent_usd == before.spent_usd
        assert after.limit_usd == 50


async def test_changing_the_ledger_needs_a_restart(tmp_path: Path, upstream_factory) -> None:
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV) as router:
        path.write_text(_yaml(a.url, b.url, "a").replace("path: spend.sqlite3", "path: other.db"))
        with pytest.raises(ConfigError, match=r"settings\.ledger"):
            await router.reload()


async def test_watch_reloads_on_a_file_change(tmp_path: Path, upstream_factory) -> None:
    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    async with Router.from_yaml(path, env=ENV, watch=True, watch_interval_s=0.05) as router:
        with capture_logs() as logs:
            path.write_text(_yaml(a.url, b.url, "b"))
            for _ in range(100):
                if router.config.routes["r"].fallback[0].model == "b/m":
                    break
                await asyncio.sleep(0.02)
            assert (await router.complete("r", {"who": 1})).text == "from b"
            # An invalid edit is logged and ignored.
            path.write_text("version: 1\nproviders: {}\n")
            for _ in range(100):
                if any(e["event"] == "reload_failed" for e in logs):
                    break
                await asyncio.sleep(0.02)
        assert any(e["event"] == "reload" for e in logs)
        assert any(e["event"] == "reload_failed" for e in logs)
        assert (await router.complete("r", {"who": 1})).text == "from b"


async def test_a_slow_load_does_not_stall_calls_in_flight(
    tmp_path: Path, upstream_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new file is read and resolved off the event loop: a load that takes 0.5 s
    (a large file near the size cap takes seconds) lets other tasks run meanwhile."""
    import time

    import router.router as router_module

    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    real = router_module.load_config

    def slow_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        return real(*args, **kwargs)

    async with Router.from_yaml(path, env=ENV) as router:
        monkeypatch.setattr(router_module, "load_config", slow_load)
        path.write_text(_yaml(a.url, b.url, "b"))
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            report = await router.reload()
        finally:
            ticker.cancel()
        assert report.changed
        assert ticks >= 20  # the loop kept turning through the 0.5 s load
        assert (await router.complete("r", {"who": 1})).provider == "b"


async def test_watch_sees_a_same_size_edit_within_one_mtime_tick(
    tmp_path: Path, upstream_factory
) -> None:
    """A file system clock ticks every few milliseconds: an edit that keeps the size
    can keep the mtime too. The watcher compares content, so it still reloads."""
    import os

    a, b = await _two(upstream_factory)
    path = write_config(tmp_path, _yaml(a.url, b.url, "a"))
    before = path.stat()
    async with Router.from_yaml(path, env=ENV, watch=True, watch_interval_s=0.02) as router:
        edited = path.read_text().replace("- a/m", "- b/m")
        assert "- b/m" in edited and len(edited.encode()) == before.st_size
        path.write_text(edited)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if in the same tick
        for _ in range(200):
            if router.plan.routes["r"].steps[0].provider == "b":
                break
            await asyncio.sleep(0.02)
        assert (await router.complete("r", {"who": 1})).text == "from b"
