"""kind: azure_openai — the adapter on its own: URLs, auth, content filters, listing.

The recorded Azure exchanges are checked with every other recording in
tests/test_adapter_fixtures.py. No public recording exists of a content-filter
400, of a filtered completion, of a 404 DeploymentNotFound or of the deployment
listing (tests/fixtures/INDEX.md): the bodies for those cases are built here, in
the shapes Azure documents, and named as such.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.errors import ContentFilterError, ModelNotFoundError, RateLimitError
from router.output import OutputRequest, output_spec
from router.providers import build_adapter
from router.providers.azure_openai import (
    DEFAULT_API_VERSION,
    AzureOpenAIAdapter,
    AzureSettings,
)
from router.providers.error_body import error_from_response
from router.tools import Tool, ToolSet
from router.types import Image, Message, Text, Usage
from tests.fixtures_util import consume, load, stream_events

KEY = "sk-azure-canary-0123456789abcdef0123456789"
MSGS = [Message("system", "Be terse."), Message("user", "hi")]


def adapter(**settings: Any) -> AzureOpenAIAdapter:
    a = build_adapter("azure_openai", "az", KEY, None, AzureSettings(**settings))
    assert isinstance(a, AzureOpenAIAdapter)
    return a


# ------------------------------------------------------------------ requests


def test_a_chat_goes_to_the_deployment_with_the_api_version_and_the_key_in_a_header() -> None:
    a = adapter(deployments={"gpt-4o-mini": "prod-mini"})
    req = a.chat_request("gpt-4o-mini", MSGS, {"max_tokens": 5, "temperature": 0.2})
    assert req.method == "POST"
    assert req.path == (
        f"openai/deployments/prod-mini/chat/completions?api-version={DEFAULT_API_VERSION}"
    )
    assert DEFAULT_API_VERSION == "2024-10-21"
    assert req.json is not None
    assert req.json["model"] == "prod-mini"
    assert req.json["max_tokens"] == 5 and req.json["temperature"] == 0.2
    assert a.auth_headers() == {"api-key": KEY}
    assert KEY not in req.path and KEY not in repr(a) and KEY not in str(a)


def test_a_model_without_a_deployment_is_deployed_under_its_own_name() -> None:
    req = adapter(api_version="2025-04-01-preview").chat_request("gpt-4o", MSGS, {})
    assert req.path == "openai/deployments/gpt-4o/chat/completions?api-version=2025-04-01-preview"


def test_the_v1_api_has_no_api_version_and_names_the_deployment_in_the_body() -> None:
    a = adapter(api_version="v1", deployments={"gpt-4o": "chat-prod"})
    req = a.chat_request("gpt-4o", MSGS, {}, stream=True)
    assert req.path == "openai/v1/chat/completions"
    assert req.json is not None and req.json["model"] == "chat-prod"
    assert req.json["stream_options"] == {"include_usage": True}


def test_bearer_auth_sends_the_token_as_authorization() -> None:
    a = adapter(auth="bearer")
    assert a.auth_headers() == {"Authorization": f"Bearer {KEY}"}
    assert build_adapter("azure_openai", "az", None).auth_headers() == {}


@pytest.mark.parametrize(
    ("version", "usage"),
    [
        ("2023-07-01-preview", False),
        ("2024-06-01", False),
        ("2024-08-01-preview", False),
        ("2024-09-01-preview", True),
        ("2024-10-21", True),
        ("2025-04-01-preview", True),
        ("preview", True),
        ("v1", True),
    ],
)
def test_stream_usage_is_asked_only_of_api_versions_that_take_it(version: str, usage: bool) -> None:
    req = adapter(api_version=version).chat_request("gpt-4o", MSGS, {}, stream=True)
    assert req.json is not None and req.json["stream"] is True
    assert ("stream_options" in req.json) is usage


def test_reasoning_models_are_judged_by_the_model_name_not_the_deployment() -> None:
    """gpt-5-mini deployed as "prod" still takes max_completion_tokens and no temperature."""
    a = adapter(deployments={"gpt-5-mini": "prod"})
    body = a.chat_request("gpt-5-mini", MSGS, {"max_tokens": 50, "temperature": 0.3}).json
    assert body is not None
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body and "temperature" not in body


def test_tools_structured_output_and_images_are_openai_bodies() -> None:
    a = adapter()
    tools = ToolSet((Tool("quote", "a quote", {"type": "object"}),), "required")
    fields = a.tool_fields(tools)
    assert isinstance(fields, dict) and fields["tool_choice"] == "required"
    spec = output_spec({"type": "object", "properties": {"x": {"type": "integer"}}})
    image = Image(data=b"\x89PNG\r\n\x1a\n", mime="image/png")
    msgs = [Message("user", [Text("what is this?"), image])]
    body = a.chat_request(
        "gpt-4o", msgs, dict(fields), output=OutputRequest(spec, "json_schema")
    ).json
    assert body is not None
    assert body["tools"][0]["function"]["name"] == "quote"
    assert body["response_format"]["type"] == "json_schema"
    parts = body["messages"][0]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


# ------------------------------------------------------------------ content filters


def _results(**filtered: str | None) -> dict[str, Any]:
    """A content_filter_results object: the named categories filtered (with severity,
    or None for a detection category such as jailbreak), the others safe."""
    out: dict[str, Any] = {
        c: {"filtered": False, "severity": "safe"}
        for c in ("hate", "self_harm", "sexual", "violence")
    }
    for name, severity in filtered.items():
        out[name] = (
            {"filtered": True, "severity": severity}
            if severity
            else {"filtered": True, "detected": True}
        )
    return out


def _reply(finish: str, content: str | None, results: dict[str, Any]) -> bytes:
    """A chat.completion in Azure's shape (built here: no recording has a filtered one)."""
    return json.dumps(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _results()}],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": content},
                    "content_filter_results": results,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }
    ).encode()


def test_a_400_content_filter_names_the_filtered_categories() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure"
                " OpenAI's content management policy.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": _results(violence="medium", jailbreak=None),
                },
            }
        }
    ).encode()
    err = error_from_response(adapter(), "gpt-4o", 400, {}, body)
    assert type(err) is ContentFilterError
    assert err.kind == "content_filter" and not err.retryable
    # (The param, "prompt", is already in the message, so it is not added again.)
    assert err.detail == (
        "The response was filtered due to the prompt triggering Azure OpenAI's content"
        " management policy. [filtered: violence (severity medium), jailbreak]"
    )


@pytest.mark.parametrize("content", [None, "Here is how to"])
def test_a_filtered_completion_is_a_content_filter_error_even_with_partial_text(
    content: str | None,
) -> None:
    body = _reply("content_filter", content, _results(hate="high", violence="medium"))
    with pytest.raises(ContentFilterError) as info:
        adapter().parse_reply("gpt-4o", body)
    assert info.value.detail == (
        "Azure's content filter stopped the answer"
        " [filtered: hate (severity high), violence (severity medium)]"
    )
    assert info.value.status == 200
    assert info.value.usage == Usage(10, 3)  # Azure bills a filtered answer: so does the router


def test_a_content_filter_finish_without_categories_is_still_an_error() -> None:
    with pytest.raises(ContentFilterError, match="finish_reason content_filter"):
        adapter().parse_reply("gpt-4o", _reply("content_filter", "partial", _results()))


def test_a_filtered_prompt_result_in_a_200_is_an_error() -> None:
    doc = json.loads(_reply("stop", "ok", _results()))
    doc["prompt_filter_results"][0]["content_filter_results"] = _results(self_harm="low")
    with pytest.raises(
        ContentFilterError, match=r"stopped the prompt \[filtered: self_harm"
    ) as info:
        adapter().parse_reply("gpt-4o", json.dumps(doc).encode())
    assert info.value.usage == Usage(10, 3)


def test_unfiltered_annotations_are_ignored() -> None:
    reply = adapter().parse_reply("gpt-4o", _reply("stop", "fine", _results()))
    assert (reply.text, reply.finish_reason) == ("fine", "stop")
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (10, 3)


def test_text_that_quotes_a_filter_result_is_not_mistaken_for_one() -> None:
    reply = adapter().parse_reply("gpt-4o", _reply("stop", '{"filtered": true}', _results()))
    assert reply.text == '{"filtered": true}'


def test_the_first_stream_chunk_with_only_prompt_results_carries_nothing() -> None:
    fx = load("azure-chat-200-sse-deployment-usage")
    event, data = stream_events(fx)[0]
    assert json.loads(data)["choices"] == [] and json.loads(data)["id"] == ""
    ev = adapter().parse_stream_event("gpt-5.2", event, data)
    assert ev is not None
    assert (ev.text, ev.usage, ev.finish_reason, ev.response_id) == ("", None, None, None)
    result = consume(adapter(), "gpt-5.2", stream_events(fx))
    assert result.response_id == "chatcmpl-DmfZu2BjJmBGSSHpj9hWtFQYBUxYn"


def test_a_filtered_stream_chunk_raises_naming_the_categories() -> None:
    chunk = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": 0,
                "delta": {},
                "finish_reason": "content_filter",
                "content_filter_results": _results(sexual="medium"),
            }
        ],
    }
    a = adapter()
    with pytest.raises(ContentFilterError, match=r"sexual \(severity medium\)"):
        a.parse_stream_event("gpt-4o", "", json.dumps(chunk))
    chunk["choices"][0]["content_filter_results"] = {}
    with pytest.raises(ContentFilterError, match="finish_reason content_filter"):
        a.parse_stream_event("gpt-4o", "", json.dumps(chunk))


# ------------------------------------------------------------------ errors


def test_deployment_not_found_is_model_not_found() -> None:
    body = (
        b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this'
        b" resource does not exist. If you created the deployment within the last 5 minutes,"
        b' please wait a moment and try again."}}'
    )
    err = error_from_response(adapter(), "gpt-4o", 404, {"apim-request-id": "abc-1"}, body)
    assert type(err) is ModelNotFoundError
    assert err.request_id == "abc-1"


def test_an_error_object_inside_a_200_is_typed_by_its_azure_code() -> None:
    body = b'{"error":{"code":"RateLimitReached","message":"slow down"}}'
    with pytest.raises(RateLimitError):
        adapter().parse_reply("gpt-4o", body)


# ------------------------------------------------------------------ health


# The data-plane deployment listing, in the documented shape (no recording exists).
LISTING = json.dumps(
    {
        "object": "list",
        "data": [
            {"id": "prod-mini", "model": "gpt-4o-mini", "object": "deployment"},
            {"id": "gpt-4o", "model": "gpt-4o", "object": "deployment"},
        ],
    }
).encode()


def test_health_lists_the_deployments_and_maps_them_to_models() -> None:
    a = adapter(deployments={"gpt-4o-mini": "prod-mini", "gpt-4o": "gpt-4o", "o3": "reason"})
    req = a.health_request()
    assert (req.method, req.path) == ("GET", "openai/deployments?api-version=2023-03-15-preview")
    listed = a.parse_models(LISTING)
    assert {"gpt-4o-mini", "gpt-4o"} <= listed
    assert "o3" not in listed
    assert a.missing_model_hint("o3") == (
        "no deployment 'reason' on this resource: deploy it, or set the model's deployment:"
        " to the name it is deployed under"
    )
