"""kind: azure_openai end to end: YAML on disk, Router.from_yaml, complete(), stream(),
health and the dry run, against a 127.0.0.1 server replaying the Azure recordings.

Also the config rules of the kind (what is refused and where) and the key's
confinement: it travels only in its header, never in a URL, error, repr or log line.
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest

from router import (
    AllProvidersFailedError,
    Completion,
    ContentFilterError,
    Router,
    StreamInterruptedError,
    Usage,
)
from router.cli import main
from router.errors import ConfigError
from router.plan import load_config
from tests.logs import capture_logs
from tests.routerkit import write_config
from tests.test_adapter_azure import LISTING
from tests.test_e2e_health import _uncached_logging  # noqa: F401 (autouse fixture)
from tests.upstream import Upstream, replay, reply

KEY = "sk-azure-e2e-canary-5f1c0e9a7b3d4c2e8f6a1b0c9d8e7f6a"
CHAT = "/openai/deployments/prod-mini/chat/completions"
PRICE = "{input_per_mtok: 0.15, output_per_mtok: 0.60, cached_input_per_mtok: 0.075}"


def azure_yaml(url: str, *, extra: str = "", model_extra: str = "") -> str:
    return f"""\
providers:
  az:
    kind: azure_openai
    base_url: {url}
    api_key_env: AZ_KEY
{extra}    models:
      gpt-4o-mini:
        deployment: prod-mini
        price: {PRICE}
{model_extra}settings: {{retries: 0}}
routes:
  r:
    system: "You are terse."
    prompt: "Say {{{{ word }}}}"
    # Above every recorded output (4600 tokens, a reasoning model).
    max_tokens: 8192
    fallback: [az/gpt-4o-mini]
"""


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AZ_KEY", KEY)
    return KEY


def cost(usage: Usage) -> Decimal:
    return (
        (usage.input_tokens - usage.cached_input_tokens) * Decimal("0.15")
        + usage.cached_input_tokens * Decimal("0.075")
        + usage.output_tokens * Decimal("0.60")
    ) / 1_000_000


def assert_no_key(*texts: object) -> None:
    for t in texts:
        assert KEY not in str(t) and KEY not in repr(t)


async def test_complete_goes_to_the_deployment_and_bills_the_exact_usage(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    upstream.route(
        CHAT, replay("azure-openai/azure-chat-200-json-deployment-content-filter-results.meta.json")
    )
    path = write_config(tmp_path, azure_yaml(upstream.url, extra="    api_version: 2024-10-21\n"))
    with capture_logs() as events:
        async with Router.from_yaml(path) as router:
            result = await router.complete("r", {"word": "hi"}, deadline_s=5)
    assert isinstance(result, Completion)
    assert result.text == (
        "I'm sorry, as an AI language model, I do not have real-time information. Please check"
    )
    assert result.finish_reason == "length"
    assert result.usage == Usage(input_tokens=18, output_tokens=20)
    assert result.cost_usd == cost(result.usage) == Decimal("0.0000147")
    (request,) = upstream.requests
    assert request.method == "POST"
    assert request.target == f"{CHAT}?api-version=2024-10-21"
    assert request.headers["api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.json()["model"] == "prod-mini"
    assert KEY not in request.target
    assert_no_key(result, *events, json.dumps(events, default=str))


async def test_stream_gives_the_exact_text_usage_and_cost(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """Azure's first chunk (empty choices, prompt filter results) is tolerated; the final
    usage chunk is billed exactly."""
    upstream.route(
        CHAT,
        replay("azure-openai/azure-chat-200-sse-deployment-usage.meta.json", chunk_size=512),
    )
    path = write_config(tmp_path, azure_yaml(upstream.url))
    async with Router.from_yaml(path) as router, router.stream("r", {"word": "hi"}) as stream:
        deltas = [d async for d in stream]
    done = stream.completion
    assert "".join(deltas) == done.text
    assert done.text == (
        "Not much—here and ready to help. What do you want to talk about or work on?"
    )
    assert done.usage == Usage(input_tokens=12, output_tokens=24)
    assert done.cost_usd == cost(done.usage) == Decimal("0.0000162")
    assert done.response_id == "chatcmpl-DmfZu2BjJmBGSSHpj9hWtFQYBUxYn"
    (request,) = upstream.requests
    assert request.target == f"{CHAT}?api-version=2024-10-21"
    body = request.json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_a_stream_on_an_old_api_version_asks_no_usage_and_is_estimated(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """2023-07-01-preview (the recording's) refuses stream_options: none is sent, the
    stream carries no usage, and the router bills its own estimate (never $0)."""
    upstream.route(
        CHAT, replay("azure-openai/azure-chat-200-sse-deployment-content-filter.meta.json")
    )
    extra = "    api_version: 2023-07-01-preview\n"
    path = write_config(tmp_path, azure_yaml(upstream.url, extra=extra))
    async with Router.from_yaml(path) as router, router.stream("r", {"word": "hi"}) as stream:
        text = "".join([d async for d in stream])
    assert text.startswith("I'm unable to provide real-time weather updates.")
    assert stream.completion.usage.estimated
    assert stream.completion.cost_usd > 0
    (request,) = upstream.requests
    assert request.target == f"{CHAT}?api-version=2023-07-01-preview"
    assert "stream_options" not in request.json()


async def test_the_v1_api_and_bearer_auth(tmp_path: Path, upstream: Upstream, key: str) -> None:
    upstream.route(
        "/openai/v1/chat/completions",
        replay("azure-openai/azure-foundry-chat-200-json-content-filter-results.meta.json"),
    )
    extra = "    api_version: v1\n    auth: bearer\n"
    path = write_config(tmp_path, azure_yaml(upstream.url, extra=extra))
    async with Router.from_yaml(path) as router:
        result = await router.complete("r", {"word": "hi"}, deadline_s=5)
    assert result.usage == Usage(input_tokens=50, output_tokens=4600, reasoning_tokens=4416)
    assert result.cost_usd == cost(result.usage) == Decimal("0.0027675")
    (request,) = upstream.requests
    assert request.target == "/openai/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "api-key" not in request.headers
    assert request.json()["model"] == "prod-mini"


async def test_a_content_filter_400_fails_the_step_once_naming_the_categories(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """Not retried (the same prompt would be refused again); the key never shows."""
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's"
            " content management policy.",
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": True, "severity": "high"},
                    "sexual": {"filtered": False, "severity": "safe"},
                },
            },
        }
    }
    upstream.route(CHAT, reply(400, json.dumps(body).encode()))
    yaml_text = azure_yaml(upstream.url).replace("{retries: 0}", "{retries: 2}")
    path = write_config(tmp_path, yaml_text)
    with capture_logs() as events:
        async with Router.from_yaml(path) as router:
            with pytest.raises(AllProvidersFailedError) as info:
                await router.complete("r", {"word": "hi"}, deadline_s=5)
    err = info.value.attempts[0].error
    assert isinstance(err, ContentFilterError) and err.status == 400
    assert err.detail.endswith("[filtered: hate (severity high)]")
    assert len(upstream.requests) == 1
    assert_no_key(info.value, err, json.dumps(events, default=str))


def _sse(*docs: object) -> bytes:
    return b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs) + (
        b"data: [DONE]\n\n"
    )


async def test_a_stream_cut_by_the_content_filter_is_interrupted_with_the_categories(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    """Text already delivered, then a chunk that finishes with content_filter: the stream
    ends in StreamInterruptedError whose cause names the filtered category (the body is
    built here in Azure's shape: no such recording exists)."""
    safe = {"hate": {"filtered": False, "severity": "safe"}}
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk"}
    body = _sse(
        {"id": "", "choices": [], "prompt_filter_results": [{"content_filter_results": safe}]},
        {
            **chunk,
            "choices": [{"delta": {"content": "Step one: "}, "content_filter_results": safe}],
        },
        {
            **chunk,
            "choices": [
                {
                    "delta": {},
                    "finish_reason": "content_filter",
                    "content_filter_results": {"violence": {"filtered": True, "severity": "high"}},
                }
            ],
        },
    )
    upstream.route(CHAT, reply(200, body, {"content-type": "text/event-stream"}))
    path = write_config(tmp_path, azure_yaml(upstream.url))

    async def drain(router: Router) -> None:
        async with router.stream("r", {"word": "hi"}) as stream:
            async for _ in stream:
                pass

    async with Router.from_yaml(path) as router:
        with pytest.raises(StreamInterruptedError) as info:
            await drain(router)
    err = info.value
    assert err.partial_text == "Step one: "
    assert isinstance(err.cause, ContentFilterError)
    assert err.cause.detail == (
        "Azure's content filter stopped the answer [filtered: violence (severity high)]"
    )


async def test_health_lists_deployments_and_names_a_missing_one(
    tmp_path: Path, upstream: Upstream, key: str
) -> None:
    upstream.route("/openai/deployments", reply(200, LISTING))
    model_extra = f"      o3:\n        deployment: reason\n        price: {PRICE}\n"
    path = write_config(tmp_path, azure_yaml(upstream.url, model_extra=model_extra))
    async with Router.from_yaml(path) as router:
        (report,) = await router.health()
    assert (report.ok, report.reachable, report.status) == (False, True, 200)
    assert report.missing_models == [
        "o3 (no deployment 'reason' on this resource: deploy it, or set the model's"
        " deployment: to the name it is deployed under)"
    ]
    assert report.url is not None and report.url.endswith("/openai/deployments")
    (request,) = upstream.requests
    assert request.target == "/openai/deployments?api-version=2023-03-15-preview"
    assert request.headers["api-key"] == KEY
    assert_no_key(report)


def test_the_dry_run_shows_the_deployment_url_version_and_auth(tmp_path: Path, key: str) -> None:
    path = write_config(tmp_path, azure_yaml("https://myres.openai.azure.com"))
    out, err = StringIO(), StringIO()
    code = main(["--config", str(path), "render", "r", "--var", "word=hi"], out=out, err=err)
    assert code == 0, err.getvalue()
    assert (
        "  1. az/gpt-4o-mini: POST https://myres.openai.azure.com/openai/deployments/prod-mini"
        "/chat/completions?api-version=2024-10-21, key in header api-key (from AZ_KEY)"
    ) in out.getvalue()
    out = StringIO()
    main(["--config", str(path), "--json", "render", "r", "--var", "word=hi"], out=out)
    (step,) = json.loads(out.getvalue())["chain"]
    assert step["request"]["url"] == (
        "https://myres.openai.azure.com/openai/deployments/prod-mini/chat/completions"
        "?api-version=2024-10-21"
    )
    assert step["request"]["key_header"] == "api-key"
    assert KEY not in out.getvalue()


# ------------------------------------------------------------------ config rules


def load_problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, text), env={"AZ_KEY": KEY})
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_azure_keys_belong_to_kind_azure_openai_only(tmp_path: Path) -> None:
    text = """\
providers:
  oa:
    kind: openai
    api_key_env: AZ_KEY
    api_version: 2024-10-21
    auth: bearer
    models:
      m: {deployment: x, price: {input_per_mtok: 1, output_per_mtok: 1}}
routes:
  r: {prompt: hi, fallback: [oa/m]}
"""
    assert load_problems(tmp_path, text) == [
        "providers.oa.api_version: api_version is only for kind: azure_openai",
        "providers.oa.auth: auth is only for kind: azure_openai",
        "providers.oa.models.m.deployment: deployment is only for kind: azure_openai",
    ]


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (None, "providers.az: kind azure_openai needs base_url: the resource endpoint"),
        (
            "https://myres.openai.azure.com/openai/deployments/prod-mini",
            "providers.az.base_url: base_url has an Azure API path",
        ),
        ("https://myres.openai.azure.com/openai/v1", "providers.az.base_url: base_url has an"),
        (
            "https://myres.openai.azure.com?api-version=2024-10-21",
            "providers.az.base_url: must not contain a query or fragment",
        ),
    ],
)
def test_base_url_is_the_resource_endpoint(
    tmp_path: Path, base_url: str | None, expected: str
) -> None:
    text = azure_yaml(base_url or "X")
    if base_url is None:
        text = text.replace("    base_url: X\n", "")
    (problem,) = load_problems(tmp_path, text)
    assert problem.startswith(expected), problem


def test_a_gateway_path_before_the_api_is_allowed(tmp_path: Path) -> None:
    plan = load_config(
        write_config(tmp_path, azure_yaml("https://gw.example.com/aoai")), env={"AZ_KEY": KEY}
    )
    assert plan.providers["az"].base_url == "https://gw.example.com/aoai"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("    api_version: 2024-10\n", "providers.az.api_version: not an Azure API version"),
        ("    auth: basic\n", "providers.az.auth:"),
        ("    headers: {api-key: abc}\n", "providers.az.headers.api-key"),
    ],
)
def test_bad_azure_settings_are_refused(tmp_path: Path, line: str, expected: str) -> None:
    (problem,) = load_problems(tmp_path, azure_yaml("https://myres.openai.azure.com", extra=line))
    assert problem.startswith(expected), problem


def test_a_bad_deployment_name_is_refused_without_quoting_it(tmp_path: Path) -> None:
    text = azure_yaml("https://myres.openai.azure.com").replace(
        "deployment: prod-mini", "deployment: sk-ant-not/a-name"
    )
    (problem,) = load_problems(tmp_path, text)
    assert problem.startswith(
        "providers.az.models.gpt-4o-mini.deployment: not an Azure deployment name"
    )
    assert "sk-ant" not in problem


def test_a_keyless_or_priceless_azure_provider_is_refused(tmp_path: Path) -> None:
    text = (
        azure_yaml("https://myres.openai.azure.com")
        .replace("    api_key_env: AZ_KEY\n", "")
        .replace(f"        price: {PRICE}\n", "")
    )
    problems = load_problems(tmp_path, text)
    assert problems[0].startswith("providers.az: kind azure_openai on a non-local host needs")
    assert problems[1].startswith("providers.az.models.gpt-4o-mini: price is required")


# ------------------------------------------------------------------ the example


def test_the_commented_azure_example_in_providers_yaml_loads(tmp_path: Path) -> None:
    """Uncommented, the example's Azure provider loads beside the others and sends to its
    deployment with the default api-version and the key in the api-key header."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "providers.yaml").read_text()
    start = text.index("  # --- azure example ---\n")
    end = text.index("  # --- end of azure example ---\n")
    block = text[start:end].splitlines()[1:]
    assert block and all(line.startswith("  # ") for line in block)
    uncommented = "".join("  " + line[4:] + "\n" for line in block)
    (tmp_path / "providers.yaml").write_text(text[:start] + uncommented + text[end:])
    shutil.copytree(root / "templates", tmp_path / "templates")
    plan = load_config(
        tmp_path / "providers.yaml", env={"AZURE_OPENAI_API_KEY": KEY}, require_env=False
    )
    az = plan.providers["azure"]
    assert (az.kind, az.base_url, az.key_env) == (
        "azure_openai",
        "https://my-resource.openai.azure.com",
        "AZURE_OPENAI_API_KEY",
    )
    assert az.azure is not None
    assert az.azure.chat_path("gpt-4o-mini") == (
        "openai/deployments/prod-4o-mini/chat/completions?api-version=2024-10-21"
    )
    assert az.models["gpt-4o-mini"].price.input_per_mtok == Decimal("0.15")
