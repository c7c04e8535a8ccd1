"""Shared state in Redis (settings.state.backend: redis): budgets, rate limits,
concurrency and cooldowns across OS processes, against a real redis-server.

The multi-process tests start real app processes (tests/state_worker.py) that call a
loopback upstream served by this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router import (
    BudgetExceededError,
    Refusal,
    Router,
    RouterError,
    Skip,
    SkipKind,
    StateUnavailableError,
)
from router.ledger import SqliteLedger
from router.plan import load_config
from router.state_redis import RedisState
from tests.logs import capture_logs
from tests.redis_server import RedisServer, redis_server  # noqa: F401
from tests.upstream import Behaviour, Exchange, Upstream, reply

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
# Every answer bills exactly the worst case: 10 output tokens at $1/Mtok, input free.
MAX_TOKENS = 10
COST = Decimal("0.00001")
ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": MAX_TOKENS, "total_tokens": 17},
}


def answer(delay_s: float = 0.0) -> Behaviour:
    async def run(ex: Exchange) -> bool:
        if delay_s:
            await asyncio.sleep(delay_s)
        return await reply(200, ANSWER).run(ex)

    return Behaviour("answer", run)


def write_config(
    folder: Path,
    upstream: str,
    *,
    prefix: str = "t",
    limit_usd: Decimal | str = "1",
    limits: str = "{}",
    state: str = ", timeout_ms: 3000",
    deadline_s: float = 20,
    cooldown: str = "{failures: 3, seconds: 30}",
) -> Path:
    price = "{input_per_mtok: 0, output_per_mtok: 1}"
    text = f"""\
version: 1
settings:
  deadline_s: {deadline_s}
  retries: 0
  cooldown: {cooldown}
  ledger: {{backend: memory}}
  state: {{backend: redis, key_prefix: {prefix}{state}}}
providers:
  paid: {{kind: openai, base_url: '{upstream}/v1', models: {{m: {{price: {price}}}}},
          limits: {limits}}}
  free: {{kind: mock, models: {{local: {{}}}}}}
budgets:
  all: {{limit_usd: {limit_usd}, period: day}}
routes:
  paid_only: {{prompt: hi, max_tokens: {MAX_TOKENS}, fallback: [paid/m]}}
  with_free: {{prompt: hi, max_tokens: {MAX_TOKENS}, fallback: [paid/m, free/local]}}
"""
    path = folder / "providers.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def redis_env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> RedisServer:  # noqa: F811
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    return redis_server


def spawn(config: Path, route: str, calls: int, concurrency: int, pace: float = 0.0) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.state_worker", str(config), route]
        + [str(n) for n in (calls, concurrency, pace)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def finish(proc: Any, timeout: float = 90) -> dict[str, Any]:
    out, err = await asyncio.to_thread(proc.communicate, None, timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


async def read_spend(config: Path) -> tuple[Decimal, Decimal]:
    """Spent and reserved of budget ``all``, read from Redis by a fresh state."""
    state = RedisState(load_config(config))
    await state.connect()
    try:
        [status] = await state.read_spend()
    finally:
        await state.aclose()
    return status.spent_usd, status.reserved_usd


# ------------------------------------------------------------------ must show: budgets


@pytest.mark.slow
async def test_four_processes_never_admit_more_than_the_budget(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    """4 processes x 250 calls at concurrency 50 on one budget that fits exactly 100
    calls' worst case: exactly 100 are admitted in all, spend is the limit, nothing
    stays reserved."""
    upstream.handler = lambda request: answer(0.01)
    config = write_config(tmp_path, upstream.url, limit_usd=COST * 100)
    procs = [spawn(config, "paid_only", 250, 50) for _ in range(4)]
    results = [await finish(p) for p in procs]
    ok = sum(r["outcomes"].get("ok", 0) for r in results)
    refused = sum(r["outcomes"].get("BudgetExceededError", 0) for r in results)
    assert ok == 100, results
    assert refused == 900, results
    assert len(upstream.requests) == 100
    assert all(Decimal(r["reserved"]) == 0 for r in results)
    spent, reserved = await read_spend(config)
    assert spent == COST * 100
    assert reserved == 0
    assert redis_env.command("HGET", "{t}:reserved", "all") == "0"


@pytest.mark.slow
async def test_a_killed_process_releases_its_reservations_within_the_lease(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    """kill -9 of one of 4 processes mid-burst: the others finish, its reservations
    are reclaimed within lease_s, no settled spend is lost, spend <= limit."""
    upstream.handler = lambda request: answer(0.3)
    config = write_config(
        tmp_path, upstream.url, limit_usd=COST * 100, state=", timeout_ms: 3000, lease_s: 2"
    )
    procs = [spawn(config, "paid_only", 250, 50) for _ in range(4)]
    victim = procs[0]
    await upstream.wait_until(lambda: len(upstream.requests) >= 60, timeout=30)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.communicate(timeout=10)  # reaped, its pipes closed
    held_at_kill = int(redis_env.command("HGET", "{t}:reserved", "all"))
    assert held_at_kill > 0  # calls were in flight: the victim held reservations
    results = [await finish(p) for p in procs[1:]]
    survivors_ok = sum(r["outcomes"].get("ok", 0) for r in results)
    # Within the lease (and one sync) everything the victim held is back.
    while True:
        spent, reserved = await read_spend(config)
        if reserved == 0 or time.monotonic() - killed_at > 2 + 1.5:
            break
        await asyncio.sleep(0.1)
    assert reserved == 0
    assert spent <= COST * 100
    # Every answer a survivor got is billed; the victim's settled answers too (the
    # upstream answered at most that many).
    assert spent >= survivors_ok * COST
    assert spent / COST <= len(upstream.requests)
    assert (spent / COST) == int(spent / COST)


# ------------------------------------------------------------------ must show: rate


@pytest.mark.slow
async def test_requests_per_minute_is_shared_by_four_processes(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    """requests_per_minute: 120 across 4 processes each trying 100 calls in 30 s: the
    rate at the upstream stays within the limit (a full bucket of 120, then 2/s)."""
    upstream.handler = lambda request: answer()
    config = write_config(
        tmp_path,
        upstream.url,
        limits="{requests_per_minute: 120}",
        deadline_s=2,
    )
    procs = [spawn(config, "paid_only", 100, 20, pace=0.3) for _ in range(4)]
    results = [await finish(p, timeout=120) for p in procs]
    times = sorted(r.at for r in upstream.requests)
    ok = sum(r["outcomes"].get("ok", 0) for r in results)
    assert 0 < ok <= len(times)  # a call admitted late may still miss its deadline
    assert 120 < len(times) < 400  # limited, and shared: not 100 per process
    # Every window [t_i, t_j] holds at most a full bucket plus what refills in it.
    for i in range(len(times)):
        for j in range(i, len(times)):
            # (+3: requests admitted in order may reach the upstream a little apart)
            assert j - i + 1 <= 120 + 2 * (times[j] - times[i]) + 3, (i, j)


# ------------------------------------------------------------------ must show: cooldown


async def test_a_401_in_one_process_cools_the_provider_down_for_another(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    upstream.handler = lambda request: reply(401, {"error": {"message": "bad key"}})
    config = write_config(tmp_path, upstream.url)
    result = await finish(spawn(config, "with_free", 1, 1))
    assert result["outcomes"] == {"ok": 1}  # answered by the free step
    assert len(upstream.requests) == 1
    async with Router.from_yaml(config) as router:
        done = await router.complete("with_free")
    assert done.provider == "free"
    first = done.attempts[0]
    assert first.provider == "paid"
    assert first.skip is SkipKind.COOLDOWN
    assert len(upstream.requests) == 1  # B never called it


async def test_the_half_open_probe_is_taken_by_exactly_one_process(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    config = write_config(tmp_path, upstream.url, cooldown="{failures: 1, seconds: 1}")
    plan = load_config(config)
    states = [RedisState(plan) for _ in range(3)]
    for s in states:
        await s.start()
    try:
        handles = [s.provider(plan.providers["paid"]) for s in states]
        redis_env.command("HSET", "{t}:p:paid", "until", "1")  # a cooldown that has ended

        async def attempt(i: int) -> Any:
            t = states[i % 3].begin(
                handles[i % 3],
                route="paid_only",
                model="m",
                amount=Decimal(0),
                max_cost_usd=None,
                est_in=1,
                max_tokens=1,
            )
            assert not isinstance(t, Skip | Refusal)
            return t, await t.admit(1, 1.0)

        outcomes = await asyncio.gather(*(attempt(i) for i in range(12)))
        admitted = [t for t, skip in outcomes if skip is None]
        skipped = [skip for _, skip in outcomes if skip is not None]
        assert len(admitted) == 1 and admitted[0].probe
        assert all(s.kind is SkipKind.COOLDOWN and "probe" in s.reason for s in skipped)
        admitted[0].succeeded()
        admitted[0].release()
        await admitted[0].state.flush()
        assert redis_env.command("HGET", "{t}:p:paid", "until") == "0"
    finally:
        for s in states:
            await s.aclose()


# ------------------------------------------------------------------ must show: Redis down


async def test_redis_down_closed_refuses_paid_steps_fast_and_recovers(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    upstream.handler = lambda request: answer()
    config = write_config(tmp_path, upstream.url, deadline_s=5, state=", timeout_ms: 500")
    async with Router.from_yaml(config) as router:
        assert (await router.complete("paid_only")).provider == "paid"
        redis_env.stop()
        with capture_logs() as logs:
            t0 = time.monotonic()
            with pytest.raises(StateUnavailableError) as caught:
                await router.complete("paid_only")
            first = time.monotonic() - t0
            t0 = time.monotonic()
            with pytest.raises(StateUnavailableError):
                await router.complete("paid_only")
            second = time.monotonic() - t0
            free = await router.complete("with_free")
        # Within timeout_ms (500 ms) and the deadline; then at once, without waiting on
        # Redis again (the bound leaves room for a loaded machine's scheduling).
        assert first < 1.0 and second < 0.25
        assert caught.value.attempts[0].skip is SkipKind.STATE
        assert free.provider == "free"
        assert free.attempts[0].skip is SkipKind.STATE
        assert any(e["event"] == "state_unavailable" for e in logs)
        stats = router.stats()["routes"]
        assert stats["paid_only"]["errors"].get("state_unavailable") == 2
        assert stats["with_free"]["skips"].get("state") == 1
        redis_env.start()
        deadline = time.monotonic() + 5
        while router.state.ledger_status().error is not None:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "no recovery"
            await asyncio.sleep(0.05)
        assert (await router.complete("paid_only")).provider == "paid"


async def test_redis_down_local_goes_on_and_reconciles_spend(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    upstream.handler = lambda request: answer()
    config = write_config(tmp_path, upstream.url, state=", timeout_ms: 500, on_unavailable: local")
    async with Router.from_yaml(config) as router:
        for _ in range(2):
            await router.complete("paid_only")
        await router.state.flush()
        redis_env.stop()
        with capture_logs() as logs:
            for _ in range(3):
                assert (await router.complete("paid_only")).provider == "paid"
        assert any(e["event"] == "state_unavailable" for e in logs)
        assert router.spend()[0].spent_usd == 5 * COST
        # Redis lost everything (no persistence): what it gets back is what this
        # process settled while it was down.
        redis_env.start()
        deadline = time.monotonic() + 5
        while router.state.ledger_status().pending:
            assert time.monotonic() < deadline, "not reconciled"
            await asyncio.sleep(0.05)
        assert (await router.complete("paid_only")).provider == "paid"
        await router.state.flush()
    spent, reserved = await read_spend(config)
    assert spent == 4 * COST and reserved == 0


async def test_a_slow_redis_never_holds_a_call_past_its_deadline(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    """Redis paused (SIGSTOP): calls end within timeout_ms, paid ones refused."""
    upstream.handler = lambda request: answer()
    config = write_config(tmp_path, upstream.url, deadline_s=1, state=", timeout_ms: 100")
    async with Router.from_yaml(config) as router:
        # Connected and scripts loaded (a loaded machine may need a second try at 100 ms).
        for _ in range(5):
            try:
                await router.complete("paid_only")
                break
            except StateUnavailableError:
                await asyncio.sleep(0.2)
        else:
            pytest.fail("redis never answered within 100 ms before the pause")
        assert redis_env.proc is not None
        redis_env.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            free = await router.complete("with_free")
            took = time.monotonic() - t0
        finally:
            redis_env.proc.send_signal(signal.SIGCONT)
    assert free.provider == "free"
    assert took < 0.5


# ------------------------------------------------------------------ concurrency


async def test_max_concurrency_is_one_semaphore_for_every_process(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    upstream.handler = lambda request: answer(0.2)
    config = write_config(tmp_path, upstream.url, limits="{max_concurrency: 2}")
    async with Router.from_yaml(config) as a, Router.from_yaml(config) as b:
        await asyncio.gather(*(r.complete("paid_only") for r in (a, b) for _ in range(3)))
    starts = sorted(r.at for r in upstream.requests)
    assert len(starts) == 6
    # Two at a time: the 3rd starts only once one of the first two has answered.
    assert starts[2] - starts[0] >= 0.18
    assert starts[4] - starts[2] >= 0.18


# ------------------------------------------------------------------ config and secrets


def test_state_config_errors_name_the_line(tmp_path: Path) -> None:
    from router.errors import ConfigError

    config = write_config(tmp_path, "http://127.0.0.1:1", state=", on_unavailabel: local")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    text = str(caught.value)
    assert "providers.yaml:7:" in text and "did you mean 'on_unavailable'" in text
    config = write_config(tmp_path, "http://127.0.0.1:1")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    assert "settings.state" in str(caught.value) and "REDIS_URL is not set" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={"REDIS_URL": "http://127.0.0.1:6379"})
    assert "redis://" in str(caught.value)


@pytest.fixture
def secret_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="s3cret-Redis-pass-77")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_redis_password_never_appears(
    tmp_path: Path, secret_redis: RedisServer, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.handler = lambda request: answer()
    password = "s3cret-Redis-pass-77"
    monkeypatch.setenv("REDIS_URL", secret_redis.url)
    config = write_config(tmp_path, upstream.url)
    seen: list[str] = []
    with capture_logs() as logs:
        plan = load_config(config)
        seen += [repr(plan), repr(plan.state)]
        async with Router.from_yaml(config) as router:
            seen.append(repr(router.state))
            await router.complete("paid_only")
            secret_redis.stop()
            with pytest.raises(StateUnavailableError) as caught:
                await router.complete("paid_only")
            seen += [str(caught.value), repr(caught.value), repr(caught.value.attempts)]
            seen.append(json.dumps(router.stats(), default=str))
    seen += [json.dumps(e, default=str) for e in logs]
    assert any("state_unavailable" in s for s in seen)
    assert any("127.0.0.1" in s for s in seen)  # where it is, yes
    for text in seen:
        assert password not in text, text


# ------------------------------------------------------------------ import


def test_spend_import_sqlite_adds_a_ledger_once(tmp_path: Path, redis_env: RedisServer) -> None:
    ledger_path = tmp_path / "spend.sqlite3"

    async def fill() -> None:
        ledger = SqliteLedger(ledger_path)
        await ledger.open()
        for _ in range(3):
            await ledger.record(
                ts=time.time(), route="paid_only", provider="paid", model="m", cost=COST
            )
        await ledger.close()

    asyncio.run(fill())
    config = write_config(tmp_path, "http://127.0.0.1:1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "router", *args, "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = cli("spend", "--import-sqlite", str(ledger_path))
    assert first.returncode == 0, first.stderr
    assert "imported" in first.stdout
    again = cli("spend", "--import-sqlite", str(ledger_path))
    assert again.returncode != 0
    assert "already imported" in again.stderr
    shown = cli("spend", "--json")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)
    assert Decimal(row["spent_usd"]) == 3 * COST


# ------------------------------------------------------------------ leases, rates, extra


async def test_a_long_call_keeps_its_reservation_past_the_lease(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    """The lease is renewed while the call runs: a call longer than lease_s still holds
    its money, so another process cannot take it meanwhile."""
    upstream.handler = lambda request: answer(2.5)
    config = write_config(
        tmp_path, upstream.url, limit_usd=COST, state=", timeout_ms: 3000, lease_s: 1"
    )
    async with Router.from_yaml(config) as a, Router.from_yaml(config) as b:
        first = asyncio.create_task(a.complete("paid_only"))
        await upstream.wait_until(lambda: len(upstream.requests) == 1, timeout=5)
        await asyncio.sleep(1.6)  # past the lease: renewed, not expired
        with pytest.raises(BudgetExceededError):
            await b.complete("paid_only")
        assert (await first).cost_usd == COST
    assert len(upstream.requests) == 1


async def test_a_shared_rate_wait_past_the_share_is_skipped_at_once(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    upstream.handler = lambda request: answer()
    config = write_config(tmp_path, upstream.url, limits="{requests_per_minute: 1}", deadline_s=2)
    async with Router.from_yaml(config) as a, Router.from_yaml(config) as b:
        await a.complete("paid_only")
        t0 = time.monotonic()
        done = await b.complete("with_free")
        took = time.monotonic() - t0
    assert done.provider == "free"
    skip = done.attempts[0]
    assert skip.skip is SkipKind.RATE
    # The exact wait: one request per minute, less the moments since the first call.
    need = re.search(r"would need ([0-9.]+)s", skip.reason or "")
    assert need is not None and 59 < float(need.group(1)) <= 60
    assert took < 0.5


def test_backend_redis_without_the_extra_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # as if not installed
    config = write_config(tmp_path, "http://127.0.0.1:1")
    plan = load_config(config, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(StateUnavailableError, match=r"yaml-llm-router\[redis\]"):
        asyncio.run(RedisState(plan).start())


async def test_an_attempt_share_shorter_than_timeout_ms_is_not_an_outage(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    """Redis slower than an attempt's share (but within timeout_ms): the attempt is
    skipped (deadline), the call ends in time, and Redis is not marked unavailable."""
    upstream.handler = lambda request: answer()
    config = write_config(tmp_path, upstream.url, deadline_s=0.3, state=", timeout_ms: 5000")
    async with Router.from_yaml(config) as router:
        await router.complete("paid_only")
        assert redis_env.proc is not None
        redis_env.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(RouterError) as caught:
                await router.complete("paid_only")
            took = time.monotonic() - t0
        finally:
            redis_env.proc.send_signal(signal.SIGCONT)
        assert router.state.ledger_status().error is None
    assert not isinstance(caught.value, StateUnavailableError)
    assert caught.value.attempts[0].skip is SkipKind.DEADLINE  # type: ignore[attr-defined]
    assert took < 0.5


async def test_a_stream_holds_its_reservation_until_it_is_billed(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    """A priced mock model streamed through the shared state: reserved while it runs,
    billed once in Redis after, nothing left reserved."""
    config = write_config(tmp_path, upstream.url)
    text = config.read_text().replace(
        "free: {kind: mock, models: {local: {}}}",
        "free: {kind: mock, mock: {reply: 'a b c d'},"
        " models: {local: {price: {input_per_mtok: 0, output_per_mtok: 1}}}}",
    )
    config.write_text(text.replace("fallback: [paid/m, free/local]", "fallback: [free/local]"))
    async with Router.from_yaml(config) as router:
        async with router.stream("with_free") as stream:
            held = router.reserved_usd
            chunks = [delta async for delta in stream]
        assert "".join(chunks)
        assert held > 0
        await router.state.flush()
        cost = stream.completion.cost_usd
        assert cost > 0
        assert router.reserved_usd == 0
    spent, reserved = await read_spend(config)
    assert spent == cost and reserved == 0


async def test_a_reload_cannot_move_the_state(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    from router.errors import ConfigError

    config = write_config(tmp_path, upstream.url)
    async with Router.from_yaml(config) as router:
        config.write_text(config.read_text().replace("key_prefix: t", "key_prefix: other"))
        with pytest.raises(ConfigError, match=r"settings\.state.*restart to apply"):
            await router.reload()
        assert router.state.settings.key_prefix == "t"  # type: ignore[attr-defined]


async def test_a_retry_after_seen_by_one_process_holds_back_the_others(
    tmp_path: Path, redis_env: RedisServer, upstream: Upstream
) -> None:
    upstream.handler = lambda request: reply(
        429, {"error": {"message": "slow down"}}, headers={"retry-after": "30"}
    )
    config = write_config(tmp_path, upstream.url, deadline_s=2)
    async with Router.from_yaml(config) as a, Router.from_yaml(config) as b:
        first = await a.complete("with_free")
        assert first.attempts[0].provider == "paid" and first.attempts[0].skip is None
        await a.state.flush()
        second = await b.complete("with_free")
    assert second.provider == "free"
    assert second.attempts[0].skip is SkipKind.RETRY_AFTER
    assert len(upstream.requests) == 1  # b never called it


# ------------------------------------------------------------------ hedging on shared state


async def test_a_hedged_call_holds_and_settles_both_reservations_in_redis(
    tmp_path: Path, redis_env: RedisServer, upstream_factory: Any
) -> None:
    """A hedge on Redis state: the slow primary and its hedge each hold a reservation
    in Redis while they race; the winner settles its cost, the cancelled loser its
    input estimate (input is free here), and nothing stays reserved."""
    slow, fast = await upstream_factory(), await upstream_factory()
    slow.handler = lambda request: answer(2.0)
    fast.handler = lambda request: answer(0.3)
    config = write_config(tmp_path, slow.url)
    text = config.read_text().replace(
        "  free: {kind: mock",
        "  fast: {kind: openai, base_url: '"
        + fast.url
        + "/v1', models: {m: {price: {input_per_mtok: 0, output_per_mtok: 1}}}}\n"
        "  free: {kind: mock",
    )
    text += (
        "  hedged: {prompt: hi, max_tokens: 10, hedge: {after_s: 0.1},"
        " fallback: [paid/m, fast/m]}\n"
    )
    config.write_text(text)
    async with Router.from_yaml(config) as router:
        call = asyncio.create_task(router.complete("hedged"))
        await asyncio.sleep(0.25)  # both attempts in flight: both reservations in Redis
        held = int(redis_env.command("HGET", "{t}:reserved", "all"))
        done = await call
    assert done.provider == "fast"
    assert held >= 2 * int(COST * 10**9)  # two worst cases, in nano-dollars
    spent, reserved = await read_spend(config)
    assert reserved == 0
    assert spent == sum(a.cost_usd for a in done.attempts) == COST
    assert sorted(a.outcome for a in done.attempts) == ["cancelled", "ok"]
