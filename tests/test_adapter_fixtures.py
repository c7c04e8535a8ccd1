"""Every recorded provider response, fed as bytes to its adapter: right text, exact usage,
right error type. The expected numbers are read by hand from each body."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from router.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    ContextLengthError,
    EndpointNotFoundError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from router.providers.error_body import Sent, error_from_response
from router.types import Citation, Usage
from tests.fixtures_util import consume, fixture_ids, load, manifest, stream_events

MODEL = "test-model"


def U(
    inp: int,
    out: int,
    cached: int = 0,
    write: int = 0,
    reasoning: int = 0,
    calls: dict[str, int] | None = None,
) -> Usage:
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
        server_tool_calls=calls or {},
    )


@dataclass(frozen=True)
class Ok:
    """A success: the text (exact, or its start with ``prefix=True``), finish and usage."""

    text: str
    finish: str | None
    usage: Usage | None
    prefix: bool = False
    details: dict[str, Any] = field(default_factory=dict)  # exact values expected in details
    detail_keys: tuple[str, ...] = ()  # keys that must be present (long values)
    citations: tuple[Citation, ...] = ()  # exact (none for most)


SUCCESS: dict[str, Ok] = {
    # -- Azure OpenAI: OpenAI's usage; filter annotations (none filtered) leave no trace ----
    "azure-chat-200-json-deployment-content-filter-results": Ok(
        "I'm sorry, as an AI language model, I do not have real-time information. Please check",
        "length",
        U(18, 20),
    ),
    "azure-foundry-chat-200-json-content-filter-results": Ok(
        "- The question to ask: “Will your answer to this question be ‘no’?”",
        "stop",
        U(50, 4600, reasoning=4416),
        prefix=True,
    ),
    # The first chunk (choices: [], empty id) and a chunk with no delta carry nothing.
    "azure-chat-200-sse-deployment-content-filter": Ok(
        "I'm unable to provide real-time weather updates. To find the current weather in New"
        " York City, I recommend checking a reliable weather website or app for the most"
        " accurate and up-to-date information.",
        "stop",
        None,  # no usage chunk in this recording: the router estimates
    ),
    "azure-chat-200-sse-deployment-usage": Ok(
        "Not much—here and ready to help. What do you want to talk about or work on?",
        "stop",
        U(12, 24),
    ),
    # -- Anthropic: input = input_tokens + cache_read + cache_creation ---------------------
    "anthropic-messages-200-json-basic": Ok("2 + 2 = 4", "stop", U(16, 13)),
    "anthropic-messages-200-json-cache-read": Ok("OK", "stop", U(10 + 7351, 4, cached=7351)),
    "anthropic-messages-200-json-cache-write": Ok("OK", "stop", U(10 + 7351, 4, write=7351)),
    "anthropic-messages-200-json-parallel-tool-use": Ok(
        "",
        "tool_calls",
        U(701, 98),
        details={
            "finish_reason": "tool_use",
            "tool_calls": [
                {
                    "id": "toolu_01TjHdHxyQNDy4DipRieJU5n",
                    "name": "weather",
                    "arguments": '{"latitude":"52.5200","longitude":"13.4050"}',
                },
                {
                    "id": "toolu_01QHFWAkMuVLb3VgS4EDGUGY",
                    "name": "best_language_to_learn",
                    "arguments": "{}",
                },
            ],
        },
    ),
    "anthropic-messages-200-json-thinking": Ok(
        "I'd ask: **",
        "stop",
        U(80, 755, reasoning=456),
        prefix=True,
        detail_keys=("thinking",),
    ),
    # Structured output (output_config.format json_schema): the JSON document as text.
    "anthropic-messages-200-json-structured-output": Ok(
        '{"name":"John","age":30}', "stop", U(181, 12)
    ),
    "anthropic-messages-200-json-wire": Ok(
        "Hello! As an AI language model, I don't have feelings, but I'm functioning properly"
        " and ready to assist you. How can I help you today?",
        "stop",
        U(13, 35),
    ),
    "anthropic-messages-200-sse-cache-read": Ok("Goodbye.", "stop", U(3 + 1217, 6, cached=1217)),
    "anthropic-messages-200-sse-text-ping-padding": Ok("- Captain\n- Scoop", "stop", U(17, 10)),
    "anthropic-messages-200-sse-thinking": Ok(
        "1. **Pouch** - references their iconic bill pouch\n"
        '2. **Pelé** - playful take on "pelican"',
        "stop",
        U(46, 133),
        detail_keys=("thinking",),
    ),
    "anthropic-messages-200-sse-tool-use": Ok(
        "",
        "tool_calls",
        U(543, 40),
        details={
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01CzN6riCPqw4pVSuTd9Dwn7",
                    "name": "pelican_name_generator",
                    "arguments": "",
                },
                {"index": 0, "id": None, "name": None, "arguments": ""},
            ]
        },
    ),
    "anthropic-messages-200-sse-wire": Ok("1\n2\n3\n4\n5", "stop", U(15, 13)),
    # The answer after a tool result (the request carried tool_use and tool_result blocks).
    "anthropic-messages-200-json-after-tool-result": Ok(
        "The weather in Berlin is currently:\n- **Temperature**: 15°C\n- **Wind**: 10 km/h\n\n"
        "It's a relatively cool day with light winds. You might want to bring a light jacket if"
        " you're heading out!",
        "stop",
        U(748, 55),
    ),
    "anthropic-messages-200-sse-after-tool-result": Ok(
        "The weather in Berlin is currently:\n- **Temperature:** 15°C\n- **Wind:** 10 km/h\n\n"
        "It's relatively mild with a light breeze. Perfect for a walk around the city!",
        "stop",
        U(748, 49),
    ),
    # An image input: its tokens are inside input_tokens (no separate field).
    "anthropic-messages-200-json-image-input": Ok(
        "# Image Description\n\nThis is a **3D rendered geometric icon**",
        "stop",
        U(43, 132),
        prefix=True,
    ),
    # -- DeepSeek: cached inside prompt_tokens, reasoning inside completion_tokens ----------
    "deepseek-chat-200-json-basic": Ok("4", "stop", U(12, 1)),
    "deepseek-chat-200-json-cache-hit": Ok(
        'The query "test data" has been processed successfully. The result returned is:'
        ' **"Processed: test data"**.',
        "stop",
        U(359, 25, cached=256),
    ),
    "deepseek-chat-200-json-reasoner-long": Ok(
        'To see your future self, ask: **"Will you show me my future self?"**',
        "stop",
        U(48, 5074, reasoning=4910),
        prefix=True,
        detail_keys=("reasoning",),
    ),
    "deepseek-chat-200-json-reasoning-content": Ok(
        "4",
        "stop",
        U(97, 17, reasoning=15),
        details={"reasoning": "We need answer simple. 2+2=4. Just number."},
    ),
    "deepseek-chat-200-sse-basic": Ok("1, 2, 3.", "stop", U(11, 8)),
    "deepseek-chat-200-sse-reasoner": Ok(
        "Hello there! 😊 How can I help you today?",
        "stop",
        U(6, 212, reasoning=198),
        detail_keys=("reasoning",),
    ),
    "deepseek-chat-200-sse-tool-calls-cache-hit": Ok(
        "", "tool_calls", U(496, 31, cached=384), detail_keys=("tool_calls",)
    ),
    # -- Gemini: thoughtsTokenCount BESIDE candidatesTokenCount (output = their sum);
    # cachedContentTokenCount inside promptTokenCount ------------------------------------
    "gemini-generatecontent-200-json": Ok("2 + 2 = **4**", "stop", U(10, 8 + 23, reasoning=23)),
    "gemini-generatecontent-200-json-cached-content": Ok(
        "The RubyLLM release engineering handbook describes the essential checks every change"
        " must pass before release, including cassette hygiene, provider wire format drift,"
        " backwards compatibility, and documentation accuracy reviews.",
        "stop",
        U(9622, 35 + 136, cached=9609, reasoning=136),
    ),
    # Gemini 2.5 gives the call no id: it gets call_0, its position.
    "gemini-generatecontent-200-json-function-call": Ok(
        "",
        "tool_calls",
        U(103, 30 + 106, reasoning=106),
        details={
            "finish_reason": "STOP",
            "tool_calls": [
                {
                    "id": "call_0",
                    "name": "weather",
                    "arguments": '{"latitude":"52.5200","longitude":"13.4050"}',
                }
            ],
        },
    ),
    # Gemini 3 gives the call an id; the thought summary goes to details, not the text.
    "gemini-generatecontent-200-json-thought-parts-function-call": Ok(
        "",
        "tool_calls",
        U(120, 32 + 132, reasoning=132),
        details={
            "tool_calls": [
                {
                    "id": "call_883098",
                    "name": "weather",
                    "arguments": '{"latitude":"52.5200","longitude":"13.4050"}',
                }
            ],
        },
        detail_keys=("thinking",),
    ),
    "gemini-generatecontent-200-json-thoughts-token-count": Ok(
        "Let's think step by step:\n\n1.  You have the number 2.\n2.  You are adding another 2"
        " to it.\n3.  Counting forward 2 steps from 2 gives you 3, then 4.\n\nSo, 2 + 2 = **4**.",
        "stop",
        U(13, 65 + 110, reasoning=110),
    ),
    "gemini-streamgeneratecontent-200-sse": Ok("1, 2, 3", "stop", U(8, 7 + 20, reasoning=20)),
    # Every chunk repeats the cumulative counts; the max over them is the last.
    "gemini-streamgeneratecontent-200-sse-thoughts-token-count": Ok(
        "Let's think step-by-step:\n\n1.  You have the number 2.\n2.  You are adding another"
        " 2 to it.\n3.  If you count two items, and then count two more items, you will have a"
        " total of four items.\n\nSo, 2 + 2 = 4.",
        "stop",
        U(13, 71 + 137, reasoning=137),
    ),
    # -- Ollama: prompt_eval_count / eval_count ---------------------------------------------
    "ollama-chat-200-json-basic": Ok(
        "I'm just a language model, so I don't have feelings or emotions like humans do."
        " However, I'm functioning properly and ready to help with any questions or tasks you"
        " may have! How can I assist you today?",
        "stop",
        U(31, 46),
    ),
    "ollama-chat-200-json-missing-prompt-eval-count": Ok(
        "A joke about OpenTelemetry! Here it is:",
        "stop",
        U(0, 79),
        prefix=True,
        details={"usage_missing": ["input_tokens"]},
    ),
    "ollama-chat-200-json-tool-calls-thinking": Ok(
        "",
        "tool_calls",
        U(292, 143),
        details={
            "finish_reason": "stop",
            "tool_calls": [
                {
                    "id": "call_gsiiy8py",
                    "name": "get_current_weather",
                    "arguments": '{"city":"Paris"}',
                }
            ],
        },
        detail_keys=("thinking",),
    ),
    "ollama-chat-200-ndjson-stream-ruby": Ok(
        "I'm just a language model, so I don't have emotions or feelings like humans do."
        " However, I'm functioning properly and ready to help with any questions or tasks you"
        " may have. How about you? How's your day going so far?",
        "stop",
        U(31, 51),
    ),
    "ollama-chat-200-ndjson-stream-thinking": Ok(
        "1\n2\n3\n4\n5", "stop", U(21, 889), detail_keys=("thinking",)
    ),
    "ollama-chat-200-ndjson-stream-wire": Ok(
        "Okay, here we go!\n\n1, 2, 3, 4, 5\n", "stop", U(16, 22)
    ),
    # -- OpenAI: cached and reasoning inside prompt/completion tokens -------------------------
    "openai-chat-200-json-basic-reasoning-usage": Ok(
        "2 + 2 = 4.", "stop", U(13, 209, reasoning=192)
    ),
    "openai-chat-200-json-cached-tokens": Ok("Hello!", "stop", U(1144, 2, cached=1024)),
    "openai-chat-200-json-parallel-tool-calls": Ok(
        "",
        "tool_calls",
        U(194, 191, reasoning=128),
        details={
            "tool_calls": [
                {
                    "id": "call_5Brxo90SHuOxfJol2Pubf4BX",
                    "name": "weather",
                    "arguments": '{"latitude": "52.5200", "longitude": "13.4050"}',
                },
                {
                    "id": "call_SRydeRpiPuKkNTBwOHKgFDLX",
                    "name": "best_language_to_learn",
                    "arguments": "{}",
                },
            ]
        },
    ),
    # response_format json_schema: the JSON document as the message content.
    "openai-chat-200-json-json-schema": Ok(
        '{"name":"John","age":30}', "stop", U(49, 213, reasoning=192)
    ),
    # An image_url part: the image's tokens are inside prompt_tokens.
    "openai-chat-200-json-image-input": Ok(
        "A red gemstone or jewel. It looks like a stylized, faceted ruby (3D rendering)",
        "stop",
        U(39, 504, reasoning=448),
        prefix=True,
    ),
    "openai-chat-200-json-wire": Ok(
        "Hello! I'm just a computer program, so I don't have feelings, but I'm here to help"
        " you. How can I assist you today?",
        "stop",
        U(13, 31),
    ),
    "openai-chat-200-sse-basic": Ok("1\n2\n3", "stop", U(13, 206, reasoning=192)),
    "openai-chat-200-sse-cached-tokens": Ok("Farewell.", "stop", U(1144, 3, cached=1024)),
    "openai-chat-200-sse-include-usage-reasoning-length": Ok(
        "", "length", U(12, 100, reasoning=100)
    ),
    "openai-chat-200-sse-include-usage-wire": Ok("1, 2, 3, 4, 5", "stop", U(14, 13)),
    "openai-chat-200-sse-tool-calls": Ok("", "tool_calls", U(54, 20), detail_keys=("tool_calls",)),
    # -- Other OpenAI-compatible servers ----------------------------------------------------
    # Ollama's /v1 ignored stream_options.include_usage: no usage at all (the router estimates).
    "ollama-local-openai-compat-200-sse": Ok(
        "Hello! How are you today? Is there something I can help you with"
        " or would you like to chat?",
        "stop",
        None,
    ),
    "openrouter-chat-200-sse-processing-comment": Ok("test response", "stop", U(586, 3)),
    # -- xAI: cached inside prompt_tokens, reasoning *beside* completion_tokens -------------
    "xai-chat-200-json-basic": Ok("4", "stop", U(137, 1 + 116, cached=128, reasoning=116)),
    "xai-chat-200-json-parallel-tool-calls": Ok(
        "", "tool_calls", U(461, 58, cached=158), detail_keys=("tool_calls",)
    ),
    "xai-chat-200-json-reasoning-content": Ok(
        "The question to ask the mirror is: \"Will you answer this question with the word 'no'?\"",
        "stop",
        U(173, 145 + 2662, cached=128, reasoning=2662),
        prefix=True,
        detail_keys=("reasoning",),
    ),
    "xai-chat-200-sse-basic": Ok("1, 2, 3", "stop", U(137, 7 + 126, cached=128, reasoning=126)),
    # grok-2 repeats cumulative usage in every chunk; the max over them is the last.
    "xai-chat-200-sse-grok-2": Ok("Hello! How can I assist you today?", "stop", U(9, 10)),
    # -- Responses API (kind openai_responses): cached inside input_tokens, reasoning
    # inside output_tokens, as the router counts them; server-tool calls counted.
    "openai-responses-200-json-basic": Ok("4", "stop", U(13, 157, reasoning=128)),
    "openai-responses-200-json-cached-tokens": Ok("OK", "stop", U(4565, 5, cached=4352)),
    "openai-responses-200-json-function-call": Ok(
        "",
        "tool_calls",
        U(87, 211, reasoning=128),
        details={
            "tool_calls": [
                {
                    "id": "call_R1nRm6zHHaYdJmzUTyHeErE1",
                    "name": "weather",
                    "arguments": '{"latitude":"52.5200","longitude":"13.4050"}',
                }
            ]
        },
    ),
    "openai-responses-200-json-after-function-call-output": Ok(
        "Current weather in Berlin (52.5200, 13.4050): 15°C, wind 10 km/h. \n\nWant a full"
        " forecast or humidity/precipitation details?",
        "stop",
        U(330, 259, reasoning=192),
    ),
    "openai-responses-200-json-web-search-url-citation": Ok(
        "The latest stable Ruby (MRI/CRuby) version is **Ruby 4.0.6**. ([ruby-lang.org]"
        "(https://www.ruby-lang.org/en/downloads/?utm_source=openai))",
        "stop",
        U(8614, 95, reasoning=48, calls={"web_search": 1}),
        details={
            "server_tool_calls": [
                {
                    "type": "web_search",
                    "id": "ws_0a4b29f86cea8812016a85bef0ea8087d2a25ae52f20427c1d",
                    "status": "completed",
                    "action": {
                        "type": "search",
                        "queries": [
                            "latest stable Ruby version",
                            "Ruby releases stable version latest ruby-lang.org",
                        ],
                        "query": "latest stable Ruby version",
                    },
                }
            ]
        },
        citations=(
            Citation(
                "https://www.ruby-lang.org/en/downloads/?utm_source=openai",
                "Download Ruby | Ruby",
                62,
                138,
            ),
        ),
    ),
    "openai-responses-200-json-json-schema": Ok(
        '{"name":"John","age":30}', "stop", U(45, 752, reasoning=704)
    ),
    "openai-responses-200-json-image-input": Ok(
        "A glossy, red gemstone or jewel. It looks like a stylized, 3D-rendered gem with"
        " triangular facets, a bright highlight, and a curved rim giving it depth. Not a photo"
        " of a real object, but a digital icon.",
        "stop",
        U(38, 729, reasoning=640),
    ),
    "openai-responses-200-sse-basic": Ok("1, 2, 3", "stop", U(13, 284, reasoning=256)),
    "openai-responses-200-sse-function-call": Ok(
        "", "tool_calls", U(87, 339, reasoning=256), detail_keys=("tool_calls",)
    ),
    "xai-responses-200-json-basic": Ok(
        "4",
        "stop",
        U(204, 80, cached=128, reasoning=79),
        details={"reasoning": 'The question is: "What is 2 + 2? Just the number."\n'},
    ),
    "xai-responses-200-json-function-call": Ok(
        "",
        "tool_calls",
        U(340, 127, cached=192, reasoning=105),
        details={
            "tool_calls": [
                {
                    "id": "call-cf08a1a3-d6a7-4fed-b17d-bf4860ffe04c-0",
                    "name": "weather",
                    "arguments": '{"latitude":"52.5200","longitude":"13.4050"}',
                }
            ]
        },
        detail_keys=("reasoning",),
    ),
    # Two web_search_call items; usage.server_side_tool_usage_details.web_search_calls=2.
    "xai-responses-200-json-web-search-citations": Ok(
        "**The latest stable Ruby version is 4.0.6** (released July 14, 2026).[[1]]"
        "(https://www.ruby-lang.org/en/downloads/)",
        "stop",
        U(5913, 364, cached=2048, reasoning=263, calls={"web_search": 2}),
        prefix=True,
        detail_keys=("reasoning", "server_tool_calls"),
        citations=(Citation("https://www.ruby-lang.org/en/downloads/", "1", 69, 115),),
    ),
    "xai-responses-200-sse-reasoning-summary": Ok(
        "1, 2, 3.",
        "stop",
        U(199, 160, cached=128, reasoning=152),
        details={"reasoning": 'The user said: "Count from 1 to 3"\n'},
    ),
}


@dataclass(frozen=True)
class Err:
    """An error: its type, its readable message (exact), retry_after and request id."""

    cls: type[ProviderError]
    message: str
    retry_after: float | None = None
    request_id: str | None = None
    prefix: bool = False


_OPENAI_RPM = (
    "Rate limit reached for gpt-3.5-turbo in organization org-zIQe0qsKlsW7cksvlHpU411T on"
    " requests per min (RPM)"
)

ERRORS: dict[str, Err] = {
    # Azure's envelope: {"error": {"code": "401" | "RateLimitReached", "message"}}.
    "azure-foundry-chat-401-invalid-subscription-key": Err(
        AuthenticationError,
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to"
        " provide a valid key for an active subscription and use a correct regional API"
        " endpoint for your resource.",
        request_id="5dbe34e9-da3c-4e3c-a7e7-6295264bde58",
    ),
    # Retry-After: 1 and Retry-After-Ms: 0 - the precise one (milliseconds) wins.
    "azure-foundry-chat-429-rate-limit-reached": Err(
        RateLimitError,
        "Your requests to grok-4-1-fast-non-reasoning for grok-4-1-fast-non-reasoning in"
        " westeurope have exceeded rate limit.",
        retry_after=0.0,
        request_id="d3be1dcd-5e15-488e-b48f-a3066967d205",
    ),
    "anthropic-messages-400-invalid-request": Err(
        BadRequestError, "messages.0.content: Input should be a valid list"
    ),
    "anthropic-messages-400-prompt-too-long": Err(
        ContextLengthError, "prompt is too long: 3333404 tokens > 200000 maximum"
    ),
    "anthropic-messages-401-invalid-x-api-key": Err(AuthenticationError, "invalid x-api-key"),
    "anthropic-messages-404-model-not-found": Err(ModelNotFoundError, "model: claude-sonet-4-5"),
    "anthropic-messages-429-input-tokens-retry-after": Err(
        RateLimitError,
        "This request would exceed your organization's rate limit of 450,000 input tokens",
        retry_after=41.0,
        prefix=True,
    ),
    "anthropic-messages-429-rate-limit-retry-after": Err(
        RateLimitError,
        "Number of requests has exceeded your per-minute rate limit",
        retry_after=7.0,
        request_id="req_01VRXnTtDN7bkGVjXbQNgzcL",
        prefix=True,
    ),
    "anthropic-messages-500-api-error": Err(
        ServerError, "Internal server error", request_id="req_011CVQuoGU1xeC7NMufKoeUy"
    ),
    "anthropic-messages-529-overloaded": Err(
        ServerError, "Overloaded", request_id="req_01G3LauajeH3QsoDKWHrMhaY"
    ),
    "anthropic-messages-529-overloaded-after-429": Err(ServerError, "Overloaded"),
    "deepseek-chat-400-context-length-octet-stream": Err(
        ContextLengthError, "This model's maximum context length is 1048565 tokens.", prefix=True
    ),
    "deepseek-chat-401-invalid-key": Err(
        AuthenticationError, "Authentication Fails, Your api key: ****-key is invalid"
    ),
    "deepseek-chat-422-plain-text-deserialize": Err(
        BadRequestError,
        "Failed to deserialize the JSON body into the target type: messages[0]: data did not"
        " match any variant of untagged enum ChatCompletionRequestContent at line 1 column 96",
    ),
    "gemini-generatecontent-400-invalid-key": Err(
        AuthenticationError, "API key not valid. Please pass a valid API key."
    ),
    "gemini-generatecontent-403-wire": Err(
        AuthenticationError,
        "Method doesn't allow unregistered callers (callers without established identity)."
        " Please use API Key or other form of API consumer identity to call this API.",
    ),
    "gemini-generatecontent-404-model-not-found": Err(
        ModelNotFoundError,
        "models/gemini-1.5-flash is not found for API version v1beta, or is not supported for"
        " generateContent. Call ListModels to see the list of available models and their"
        " supported methods.",
    ),
    # No Retry-After header: the delay is the body's google.rpc.RetryInfo (48s).
    "gemini-generatecontent-429-quota": Err(
        RateLimitError,
        "You exceeded your current quota, please check your plan and billing details.",
        retry_after=48.0,
        prefix=True,
    ),
    "ollama-chat-404-model-not-found": Err(
        ModelNotFoundError, "model 'nonexistent-model:latest' not found"
    ),
    "openai-chat-400-invalid-type": Err(
        BadRequestError, "Invalid type for 'messages[0].content'", prefix=True
    ),
    "openai-chat-400-unsupported-parameter-stop": Err(
        BadRequestError, "Unsupported parameter: 'stop' is not supported with this model."
    ),
    "openai-chat-401-invalid-api-key": Err(
        AuthenticationError, "Incorrect API key provided: invalid-key.", prefix=True
    ),
    "openai-chat-404-model-not-found": Err(
        ModelNotFoundError,
        "The model `gpt-4.1-nano-wrong` does not exist or you do not have access to it.",
        request_id="req_ae3c59cd7df34e978057035f370e04be",
    ),
    "openai-chat-429-rpm-retry-after": Err(
        RateLimitError,
        _OPENAI_RPM,
        retry_after=20.0,
        request_id="req_967f5451e5d64f96e3e87520ddcae8ed",
        prefix=True,
    ),
    # Larger than the tokens-per-minute limit: never fits this provider (see openai.py).
    "openai-chat-429-tpm-request-too-large": Err(
        ContextLengthError, "Request too large for gpt-5-nano", prefix=True
    ),
    "openai-chat-503-envoy-plain-text": Err(
        ServerError,
        "upstream connect error or disconnect/reset before headers. reset reason: connection"
        " termination",
    ),
    "openai-responses-400-context-length-exceeded": Err(
        ContextLengthError,
        "Your input exceeds the context window of this model. Please adjust your input and try"
        " again.",
    ),
    "openai-responses-500-server-error": Err(
        ServerError, "An error occurred while processing your request.", prefix=True
    ),
    "openai-traces-500-server-error": Err(
        ServerError,
        "The server had an error processing your request.",
        request_id="req_d1781c6246541ff51e4ac6863d214877",
        prefix=True,
    ),
    "ollama-cloud-openai-compat-400-context-length": Err(
        ContextLengthError,
        "prompt too long; exceeded max context length by 1119046 tokens",
        prefix=True,
    ),
    "ollama-cloud-openai-compat-401": Err(AuthenticationError, "Unauthorized"),
    "openrouter-chat-400-context-length": Err(
        ContextLengthError, "This endpoint's maximum context length is 200000 tokens.", prefix=True
    ),
    "openrouter-chat-401-missing-auth": Err(AuthenticationError, "Missing Authentication header"),
    # The upstream refused our region: the key is fine, so not an AuthenticationError.
    "openrouter-chat-403-upstream-provider-error": Err(
        BadRequestError,
        "Provider returned error (OpenAI: Country, region, or territory not supported)",
    ),
    "openrouter-chat-429-rate-limit": Err(
        RateLimitError,
        "Rate limit exceeded: limit_rpm/meta-llama/llama-3.2-3b-instruct",
        prefix=True,
    ),
    "perplexity-chat-401-html-openresty": Err(AuthenticationError, "401 Authorization Required"),
    # GET /models, which Perplexity does not serve: a 404 naming no model is a wrong URL.
    # (The full message names the URL requested: see the test of recorded 404s below.)
    "perplexity-models-404-empty-body": Err(
        EndpointNotFoundError, "no such endpoint: ", prefix=True
    ),
    "xai-chat-400-context-length": Err(
        ContextLengthError,
        "This model's maximum prompt length is 131072 but the request contains 625077 tokens.",
    ),
    # xAI says "bad key" with a 400.
    "xai-chat-400-invalid-api-key": Err(
        AuthenticationError, "Incorrect API key provided: in***ey.", prefix=True
    ),
    "openai-responses-401-invalid-api-key": Err(
        AuthenticationError,
        "Incorrect API key provided: invalid-key. You can find your API key at"
        " https://platform.openai.com/account/api-keys.",
    ),
    # xAI's flat {"code", "error"} envelope, a bad key said with a 400.
    "xai-responses-400-invalid-api-key": Err(
        AuthenticationError,
        "Incorrect API key provided. You can obtain an API key from https://console.x.ai.",
    ),
    "xai-chat-503-model-at-capacity": Err(
        ServerError, "Service temporarily unavailable. The model is at capacity", prefix=True
    ),
}

# 200 streams whose error event must raise the typed error.
STREAM_ERRORS: dict[str, Err] = {
    "anthropic-messages-200-sse-error-overloaded": Err(ServerError, "Overloaded"),
    "groq-chat-200-sse-midstream-error-event": Err(
        BadRequestError, "Tool call validation failed: tool call validation failed", prefix=True
    ),
}

# The listing endpoint's fixture (health checks).
MODEL_LISTS = {"ollama-tags-200-json"}

# 200 bodies whose answer (or prompt) the provider blocked: a ContentFilterError.
FILTERED: dict[str, Err] = {
    "gemini-generatecontent-200-json-safety-blocked-candidate": Err(
        ContentFilterError,
        "the provider withheld the answer (finishReason: SAFETY; safety ratings:"
        " HARM_CATEGORY_HATE_SPEECH LOW)",
    ),
    # Vertex AI's answer to a prompt Model Armor blocked: no candidate at all.
    "vertex-generatecontent-200-json-prompt-blocked-model-armor": Err(
        ContentFilterError,
        "the provider blocked the prompt (blockReason: MODEL_ARMOR: The prompt violated"
        " Prompt Injection and Jailbreak filters.)",
    ),
}


def test_every_fixture_has_an_expectation() -> None:
    """No recorded exchange is left untested, and no expectation names a missing one."""
    expected = set(SUCCESS) | set(ERRORS) | set(STREAM_ERRORS) | set(FILTERED) | MODEL_LISTS
    assert expected == {m["id"] for m in manifest()}


@pytest.mark.parametrize("fixture_id", sorted(FILTERED))
def test_blocked_answer_or_prompt_is_a_content_filter_error(fixture_id: str) -> None:
    """A 200 whose answer or prompt was blocked raises ContentFilterError naming the
    reason and the ratings that blocked, never an empty success."""
    fx = load(fixture_id)
    exp = FILTERED[fixture_id]
    with pytest.raises(ProviderError) as info:
        fx.adapter().parse_reply(MODEL, fx.body)
    _check_error(info.value, fx.provider, exp, 200)


@pytest.mark.parametrize("fixture_id", [m["id"] for m in manifest()])
def test_fixture_bytes_match_their_sidecar(fixture_id: str) -> None:
    """The copied bodies are byte-for-byte the recorded ones (sha256 in the sidecar)."""
    fx = load(fixture_id)
    assert hashlib.sha256(fx.body).hexdigest() == fx.meta["response"]["body_sha256"]


def _check_text(got: str, ok: Ok) -> None:
    if ok.prefix:
        assert got.startswith(ok.text)
        assert len(got) > len(ok.text)
    else:
        assert got == ok.text


def _check_details(details: dict[str, Any], ok: Ok) -> None:
    for key, value in ok.details.items():
        assert details[key] == value, key
    for key in ok.detail_keys:
        assert details.get(key), key


@pytest.mark.parametrize("fixture_id", sorted(i for i in SUCCESS if not load(i).streaming))
def test_success_body_parses_to_text_and_exact_usage(fixture_id: str) -> None:
    fx = load(fixture_id)
    ok = SUCCESS[fixture_id]
    reply = fx.adapter().parse_reply(MODEL, fx.body)
    _check_text(reply.text, ok)
    assert reply.finish_reason == ok.finish
    assert reply.usage == ok.usage
    assert reply.citations == list(ok.citations)
    _check_details(reply.details, ok)
    # The visible text never carries the reasoning.
    for key in ("reasoning", "thinking"):
        if key in reply.details:
            assert reply.details[key] not in reply.text


@pytest.mark.parametrize("fixture_id", sorted(i for i in SUCCESS if not load(i).streaming))
def test_success_body_is_validated_once(fixture_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorded reply is validated in one pass, usage included: the second pass
    (the usage on its own, kept so that a malformed usage costs no reply) never runs."""
    fx = load(fixture_id)
    expected = fx.adapter().parse_reply(MODEL, fx.body)
    calls: list[str] = []

    def second_pass(cls: type[BaseModel], *args: Any, **kwargs: Any) -> Any:
        calls.append(cls.__name__)
        raise AssertionError(f"{cls.__name__} validated twice")

    monkeypatch.setattr(BaseModel, "model_validate", classmethod(second_pass))
    assert fx.adapter().parse_reply(MODEL, fx.body) == expected
    assert calls == []


@pytest.mark.parametrize("fixture_id", sorted(i for i in SUCCESS if load(i).streaming))
def test_stream_events_concatenate_to_text_and_merge_to_exact_usage(fixture_id: str) -> None:
    fx = load(fixture_id)
    ok = SUCCESS[fixture_id]
    result = consume(fx.adapter(), MODEL, stream_events(fx))
    _check_text(result.text, ok)
    assert result.finish_reason == ok.finish
    assert result.usage == ok.usage
    assert result.done, "the end-of-stream marker was not seen"
    _check_details(result.details, ok)


@pytest.mark.parametrize("fixture_id", sorted(i for i in SUCCESS if load(i).streaming))
def test_stream_text_equals_the_recorded_deltas(fixture_id: str) -> None:
    """Cross-check against a naive read of the recording (plain json, no adapter)."""
    fx = load(fixture_id)
    expected = []
    for event, data in stream_events(fx):
        if not data.strip() or data.strip() == "[DONE]":
            continue
        doc = json.loads(data)
        if fx.kind == "ollama":
            expected.append(doc["message"]["content"])
        elif fx.kind == "anthropic":
            if event == "content_block_delta" and doc["delta"]["type"] == "text_delta":
                expected.append(doc["delta"]["text"])
        elif fx.kind == "openai_responses":
            if doc["type"] == "response.output_text.delta":
                expected.append(doc["delta"])
        elif fx.kind == "gemini":
            for c in doc["candidates"]:
                expected.extend(p["text"] for p in c["content"]["parts"] if not p.get("thought"))
        else:
            # (Azure sends a choice with no delta at all.)
            expected.extend((c.get("delta") or {}).get("content") or "" for c in doc["choices"])
    assert consume(fx.adapter(), MODEL, stream_events(fx)).text == "".join(expected)


def _check_error(err: ProviderError, fx_provider: str, exp: Err, status: int | None) -> None:
    assert type(err) is exp.cls
    if exp.prefix:
        assert err.detail.startswith(exp.message)
    else:
        assert err.detail == exp.message
    line = str(err)
    assert "\n" not in line
    assert line == f"{fx_provider}/{MODEL} HTTP {status}: {err.detail}"
    assert err.provider == fx_provider
    assert err.model == MODEL
    assert err.retry_after == exp.retry_after


@pytest.mark.parametrize("fixture_id", sorted(ERRORS))
def test_error_response_maps_to_type_message_and_retry_after(fixture_id: str) -> None:
    fx = load(fixture_id)
    exp = ERRORS[fixture_id]
    err = error_from_response(fx.adapter(), MODEL, fx.status, fx.headers, fx.body)
    _check_error(err, fx.provider, exp, fx.status)
    assert err.status == fx.status
    if exp.request_id is not None:
        assert err.request_id == exp.request_id


_RECORDED_404S = sorted(i for i in ERRORS if load(i).status == 404)


def test_every_recorded_404_is_covered() -> None:
    """The model-not-found bodies of OpenAI, Anthropic and Ollama, and one bare 404."""
    assert {ERRORS[i].cls for i in _RECORDED_404S} == {ModelNotFoundError, EndpointNotFoundError}
    assert len(_RECORDED_404S) >= 4


@pytest.mark.parametrize("fixture_id", _RECORDED_404S)
def test_a_recorded_404_names_its_url_only_when_it_names_no_model(fixture_id: str) -> None:
    """With what was sent (the sidecar's request), a provider's own "no such model" body
    stays ModelNotFoundError, message untouched; a 404 naming no model is
    EndpointNotFoundError naming the method, URL path and the base_url hint."""
    fx = load(fixture_id)
    adapter = fx.adapter()
    request = fx.meta["request"]
    scheme, _, rest = request["url"].partition("://")
    host, _, path = rest.partition("?")[0].partition("/")
    sent = Sent(request["method"], f"{scheme}://{host}/{path}", adapter.api_root)
    err = error_from_response(adapter, MODEL, fx.status, fx.headers, fx.body, sent=sent)
    exp = ERRORS[fixture_id]
    assert type(err) is exp.cls
    if exp.cls is ModelNotFoundError:
        assert err.detail == exp.message
        assert "base_url" not in str(err)
    else:
        assert isinstance(err, EndpointNotFoundError)
        assert err.url == "GET https://api.perplexity.ai/models"
        assert err.detail == (
            "no such endpoint: GET https://api.perplexity.ai/models [(empty body)]; check"
            " base_url: it should end at the API root, such as https://api.openai.com/v1"
        )
        assert err.kind == "endpoint_not_found" and not err.retryable


@pytest.mark.parametrize("fixture_id", sorted(STREAM_ERRORS))
def test_error_event_in_a_200_stream_raises_the_typed_error(fixture_id: str) -> None:
    fx = load(fixture_id)
    exp = STREAM_ERRORS[fixture_id]
    adapter = fx.adapter()
    events = stream_events(fx)
    for event, data in events[:-1]:  # everything before the error event parses
        adapter.parse_stream_event(MODEL, event, data)
    event, data = events[-1]
    with pytest.raises(ProviderError) as info:
        adapter.parse_stream_event(MODEL, event, data)
    # Groq states the status (400) in the event; Anthropic's event has none: the HTTP 200.
    stated = json.loads(data)["error"].get("status_code", 200)
    _check_error(info.value, fx.provider, exp, stated)


def test_groq_stream_reasoning_goes_to_details_before_the_error() -> None:
    fx = load("groq-chat-200-sse-midstream-error-event")
    events = stream_events(fx)[:-1]
    result = consume(fx.adapter(), MODEL, events)
    assert result.text == ""
    assert result.details["reasoning"].startswith("We need to call")


def test_ollama_tags_list_pulled_models_with_and_without_latest() -> None:
    fx = load("ollama-tags-200-json")
    names = fx.adapter().parse_models(fx.body)
    assert {"llama3.2", "llama3.2:latest", "deepseek-r1:8b", "gemma3:4b"} <= names
    assert "deepseek-r1:8b".removesuffix(":8b") not in names or "deepseek-r1:latest" in names
    assert "llama3.3" not in names


def test_fixture_ids_helper_partitions_the_corpus() -> None:
    ids = fixture_ids()
    assert set(fixture_ids(error=True)) | set(fixture_ids(error=False)) == set(ids)
    assert set(fixture_ids(streaming=True)) <= set(ids)
