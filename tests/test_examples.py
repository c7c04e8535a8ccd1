"""The apps in examples/ run offline, as their READMEs say.

The trading-signal app runs as a subprocess (tests/sandbox.py: loopback only), from a
copy of its folder so its spend ledger is the test's own. The FastAPI app is driven
in-process through its ASGI app (httpx.ASGITransport) with its lifespan entered.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import yaml

from tests.sandbox import REPO, offline_env
from tests.upstream import Upstream, reply

EXAMPLES = REPO / "examples"
CANARY = "sk-ant-canary-0123456789abcdefghij"


def _copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(
        EXAMPLES / name, dest, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3*")
    )
    return dest


def _run_trading(
    app_dir: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=app_dir,
        env=offline_env(tmp_path / "bin", env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines (every stderr line must be one: structured logging)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


# ----------------------------------------------------------------- trading signal


def test_trading_signal_runs_offline_with_fallback_budget_and_json_logs(tmp_path: Path) -> None:
    app_dir = _copy("trading_signal", tmp_path)
    # Keys in the environment are not used offline (and never printed).
    proc = _run_trading(app_dir, tmp_path, env={"ANTHROPIC_API_KEY": CANARY})
    assert proc.returncode == 0, proc.stderr
    assert CANARY not in proc.stdout + proc.stderr

    lines = proc.stdout.splitlines()
    signals = [
        re.match(r"(\w+)\s+(BUY|SELL|HOLD|NONE)\s+confidence\s+(\d+)\s+via (\S+)", ln)
        for ln in lines[:3]
    ]
    assert all(signals), proc.stdout
    assert sorted(m[1] for m in signals if m) == ["ACME", "GLOBEX", "INITECH"]
    # desk_busy refuses its first two requests: two calls fall back to desk (HOLD 55),
    # the third is answered by desk_busy (BUY 61).
    assert sorted((m[2], m[3], m[4]) for m in signals if m) == [
        ("BUY", "61", "desk_busy/analyst-1"),
        ("HOLD", "55", "desk/analyst-1"),
        ("HOLD", "55", "desk/analyst-1"),
    ]
    budget = re.search(r"budget signals_daily: spent \$(\d+\.\d+) of \$2\.00 \(day\)", proc.stdout)
    assert budget and float(budget[1]) > 0, proc.stdout

    events = _events(proc.stderr)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_kind.setdefault(e["event"], []).append(e)
    assert {e["provider"] for e in by_kind["provider_disabled"]} == {"anthropic", "openai"}
    assert len(by_kind["llm_call"]) == 3 and len(by_kind["signal"]) == 3
    failed = [e for e in by_kind["llm_attempt"] if e["outcome"] == "error"]
    assert [(e["provider"], e["status"]) for e in failed] == [("desk_busy", 503)] * 2


def test_trading_signal_spend_survives_a_restart(tmp_path: Path) -> None:
    app_dir = _copy("trading_signal", tmp_path)
    spent = []
    for _ in range(2):
        proc = _run_trading(app_dir, tmp_path, "ACME")
        assert proc.returncode == 0, proc.stderr
        m = re.search(r"budget signals_daily: spent \$([\d.E-]+) ", proc.stdout)
        assert m, proc.stdout
        spent.append(Decimal(m[1]))
    assert (app_dir / "spend.sqlite3").exists()
    assert spent[1] == 2 * spent[0] and spent[0] > 0  # exact: the ledger keeps decimals


def test_trading_signal_live_needs_its_keys(tmp_path: Path) -> None:
    app_dir = _copy("trading_signal", tmp_path)
    proc = _run_trading(app_dir, tmp_path, "--live")
    assert proc.returncode == 1
    assert "ANTHROPIC_API_KEY" in proc.stderr and "OPENAI_API_KEY" in proc.stderr


async def test_trading_signal_live_calls_the_paid_provider_first(
    tmp_path: Path, upstream: Upstream
) -> None:
    """--live as it runs against Anthropic, with a loopback server in its place."""
    app_dir = _copy("trading_signal", tmp_path)
    config = yaml.safe_load((app_dir / "providers.yaml").read_text())
    config["providers"]["anthropic"]["base_url"] = upstream.url
    (app_dir / "providers.yaml").write_text(yaml.safe_dump(config))
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Momentum is negative.\nSignal: SELL, confidence 70"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 90, "output_tokens": 12},
    }
    upstream.route("/v1/messages", reply(200, message))
    env = offline_env(
        tmp_path / "bin", {"ANTHROPIC_API_KEY": CANARY, "OPENAI_API_KEY": "sk-openai-canary-42"}
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "app.py",
        "--live",
        "GLOBEX",
        cwd=app_dir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err
    assert re.search(r"GLOBEX\s+SELL confidence\s+70\s+via anthropic/claude-haiku-4-5", out), out
    assert [r.headers["x-api-key"] for r in upstream.requests] == [CANARY]
    assert CANARY not in out + err and "sk-openai-canary-42" not in out + err


# ----------------------------------------------------------------------- FastAPI


def _fastapi_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fastapi_example_app", EXAMPLES / "fastapi_app" / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _client_calls(app: Any, *calls: tuple[str, str, Any]) -> list[httpx.Response]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c,
    ):
        return [await c.request(method, url, json=body) for method, url, body in calls]


BODY = {"ticker": "ACME", "prices": [101.2, 102.8, 104.0], "horizon_days": 5}


async def test_fastapi_app_serves_the_route_metrics_and_stats(tmp_path: Path) -> None:
    app_dir = _copy("fastapi_app", tmp_path)
    app = _fastapi_module().create_app(app_dir / "providers.yaml", live=False)
    answer, bad, metrics, stats = await _client_calls(
        app,
        ("POST", "/analysis", BODY),
        ("POST", "/analysis", {**BODY, "horizon_days": 0}),
        ("GET", "/metrics", None),
        ("GET", "/stats", None),
    )
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert (out["provider"], out["model"], out["attempts"]) == ("mock", "mock-1", 1)
    assert out["text"] == "Signal: HOLD, confidence 50 (offline mock mock-1)"
    assert float(out["cost_usd"]) > 0 and out["input_tokens"] > 0

    assert bad.status_code == 422  # validated before the router is asked

    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert re.search(
        r'^llm_calls_total\{error_type="none",outcome="ok",route="analysis"\} 1\.0$',
        metrics.text,
        re.M,
    ), metrics.text
    assert 'llm_budget_limit_usd{budget="api_daily"} 5.0' in metrics.text

    assert stats.json()["routes"]["analysis"]["ok"] == 1


async def test_fastapi_app_maps_a_spent_budget_to_429(tmp_path: Path) -> None:
    app_dir = _copy("fastapi_app", tmp_path)
    config = yaml.safe_load((app_dir / "providers.yaml").read_text())
    config["budgets"]["api_daily"]["limit_usd"] = 0.000001
    (app_dir / "providers.yaml").write_text(yaml.safe_dump(config))
    app = _fastapi_module().create_app(app_dir / "providers.yaml", live=False)
    (refused,) = await _client_calls(app, ("POST", "/analysis", BODY))
    assert refused.status_code == 429, refused.text
    detail = refused.json()["detail"]
    assert detail["error"] == "BudgetExceededError" and "api_daily" in detail["message"]
