"""Local OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) on a loopback base_url
need no price: their models are free, like Ollama's. A remote host still needs one."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from router.config import FREE
from router.errors import ConfigError
from router.plan import load_config
from router.router import Router
from tests.routerkit import write_config
from tests.upstream import Upstream, reply


def _yaml(base_url: str, *, key: bool = False) -> str:
    key_line = "    api_key_env: LOCAL_KEY\n" if key else ""
    return (
        "providers:\n"
        "  local:\n"
        "    kind: openai\n"
        f"    base_url: {base_url}\n"
        f"{key_line}"
        "    models:\n"
        "      qwen3-8b: {}\n"
        "routes:\n"
        "  r:\n"
        "    prompt: hi\n"
        "    fallback: [local/qwen3-8b]\n"
    )


@pytest.mark.parametrize(
    "base_url",
    [
        "http://localhost:8000/v1",
        "http://127.0.0.1:8080/v1",
        "http://127.3.4.5:1234/v1",
        "http://[::1]:8000/v1",
        "https://localhost/v1",
    ],
)
def test_loopback_openai_model_may_omit_price(tmp_path: Path, base_url: str) -> None:
    plan = load_config(write_config(tmp_path, _yaml(base_url)), env={})
    assert plan.providers["local"].models["qwen3-8b"].price == FREE
    assert plan.chain("r")[0].price == FREE


@pytest.mark.parametrize(
    ("base_url", "host"),
    [
        ("https://vllm.internal.example/v1", "vllm.internal.example"),
        ("https://10.0.0.5/v1", "10.0.0.5"),
        ("https://128.0.0.1/v1", "128.0.0.1"),
        ("https://localhost.example.com/v1", "localhost.example.com"),
    ],
)
def test_remote_openai_model_still_needs_a_price(tmp_path: Path, base_url: str, host: str) -> None:
    path = write_config(tmp_path, _yaml(base_url, key=True))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"LOCAL_KEY": "k" * 12})
    (p,) = info.value.problems
    assert p.path == "providers.local.models.qwen3-8b"
    assert p.line is not None and p.line > 1
    text = path.read_text().splitlines()[p.line - 1]
    assert text.strip().startswith("qwen3-8b")
    assert f"price is required for kind openai on non-loopback host {host!r}" in p.message


def test_default_openai_base_url_needs_a_price(tmp_path: Path) -> None:
    body = _yaml("x").replace("    base_url: x\n", "    api_key_env: LOCAL_KEY\n")
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, body), env={"LOCAL_KEY": "k" * 12})
    assert "non-loopback host 'api.openai.com'" in info.value.problems[0].message


def test_local_anthropic_kind_still_needs_a_price(tmp_path: Path) -> None:
    """Only the openai kind is taken as a local server; a local anthropic endpoint is
    usually a proxy to the paid API."""
    body = _yaml("http://localhost:9000").replace("kind: openai", "kind: anthropic")
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, body), env={})
    assert "price is required for kind anthropic" in info.value.problems[0].message


async def test_a_call_to_a_local_server_costs_nothing(tmp_path: Path, upstream: Upstream) -> None:
    upstream.route(
        "/v1/chat/completions",
        reply(
            body={
                "id": "c1",
                "object": "chat.completion",
                "model": "qwen3-8b",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hello"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            }
        ),
    )
    body = _yaml(f"{upstream.url}/v1") + "budgets:\n  all: {limit_usd: 0}\n"
    async with Router.from_yaml(write_config(tmp_path, body), env={}) as router:
        result = await router.complete("r")
    assert result.text == "hello"
    assert result.cost_usd == Decimal(0)
    assert len(upstream.requests) == 1
