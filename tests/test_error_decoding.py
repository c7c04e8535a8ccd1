"""Error bodies are decoded once for every adapter: JSON, HTML, text, empty, broken bytes."""

from __future__ import annotations

import pytest

from router.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    EndpointNotFoundError,
    GoneError,
    InvalidResponseError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    ServerError,
    status_error,
)
from router.providers import build_adapter
from router.providers.error_body import (
    ERROR_MESSAGE_LIMIT,
    ERROR_TEXT_LIMIT,
    ErrorBody,
    Sent,
    decode_error_body,
    error_from_response,
    parse_retry_after,
    stated_status,
)
from router.redact import register_secret

CLOUDFLARE_502 = b"""<!DOCTYPE html>
<html><head>
<title>api.openai.com | 502: Bad gateway</title>
<style>body{color:red}</style>
</head><body><h1>Bad gateway</h1><p>Error code 502</p>
<script>var x = 1;</script></body></html>"""


@pytest.mark.parametrize(
    ("body", "message", "code", "err_type"),
    [
        (b'{"error":{"message":"m","type":"t","code":"c"}}', "m", "c", "t"),
        (b'{"error":{"message":"m","type":"t","code":null}}', "m", "t", "t"),
        (
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            "Overloaded",
            "overloaded_error",
            "overloaded_error",
        ),
        (b'{"error":"model \'x\' not found"}', "model 'x' not found", None, None),
        (
            b'{"code":"Client specified an invalid argument","error":"bad"}',
            "bad",
            "Client specified an invalid argument",
            None,
        ),
        (b'{"error":{"message":"limited","code":429}}', "limited", "429", None),
        (b'{"detail":"Not Found"}', "Not Found", None, None),
        (b'{"message":"plain"}', "plain", None, None),
        (
            b'[{"error":{"code":400,"message":"gemini","status":"INVALID_ARGUMENT"}}]',
            "gemini",
            "400",
            None,
        ),
        (b'{"error":{"message":"two\\nlines\\n\\n  here"}}', "two lines here", None, None),
    ],
)
def test_json_error_shapes(
    body: bytes, message: str, code: str | None, err_type: str | None
) -> None:
    decoded = decode_error_body(body)
    assert (decoded.message, decoded.code, decoded.type) == (message, code, err_type)
    assert decoded.data is not None


def test_json_without_a_message_falls_back_to_the_text() -> None:
    assert decode_error_body(b'{"status": "down"}').message == '{"status": "down"}'


def test_html_proxy_page_is_reduced_to_its_title() -> None:
    decoded = decode_error_body(CLOUDFLARE_502)
    assert decoded == ErrorBody(message="api.openai.com | 502: Bad gateway")


def test_html_without_title_keeps_visible_text_only() -> None:
    body = b"<html><body><script>alert(1)</script><h1>Service</h1> <p>Unavailable</p></body></html>"
    assert decode_error_body(body).message == "Service Unavailable"


@pytest.mark.parametrize("body", [b"", b"   \n\t ", b"\r\n"])
def test_empty_body_is_named_as_such(body: bytes) -> None:
    assert decode_error_body(body) == ErrorBody(message="(empty body)")


def test_truncated_json_is_kept_as_text() -> None:
    decoded = decode_error_body(b'{"error":{"message":"cut he')
    assert decoded.message == '{"error":{"message":"cut he'
    assert decoded.data is None


def test_invalid_utf8_is_replaced_not_raised() -> None:
    decoded = decode_error_body(b"bad \xff\xfe bytes")
    assert decoded.message == "bad \ufffd\ufffd bytes"


def test_long_text_is_cut_to_one_line() -> None:
    decoded = decode_error_body(b"x" * 10_000 + b"\n" + b"y" * 10)
    assert len(decoded.message) == ERROR_TEXT_LIMIT + 3
    assert decoded.message.endswith("...")


def test_long_json_message_is_cut() -> None:
    decoded = decode_error_body(b'{"error":{"message":"' + b"z" * 5000 + b'"}}')
    assert len(decoded.message) == ERROR_MESSAGE_LIMIT + 3


def test_deeply_nested_json_does_not_blow_the_stack() -> None:
    decoded = decode_error_body(b"[" * 100_000)
    assert decoded.message.startswith("[[[")


def test_openrouter_upstream_error_is_named() -> None:
    body = (
        b'{"error":{"message":"Provider returned error","code":502,"metadata":{"raw":'
        b'"{\\"error\\":{\\"message\\":\\"upstream timed out\\"}}","provider_name":"Fireworks"}}}'
    )
    assert (
        decode_error_body(body).message == "Provider returned error (Fireworks: upstream timed out)"
    )


def test_openrouter_raw_that_is_not_json_is_quoted_as_is() -> None:
    body = b'{"error":{"message":"Provider returned error","metadata":{"raw":"gateway timeout"}}}'
    assert decode_error_body(body).message == "Provider returned error (gateway timeout)"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"error": {"status_code": 400}}, 400),
        ({"error": {"code": 502}}, 502),
        ({"error": {"code": "502"}}, None),
        ({"error": {"code": True}}, None),
        ({"error": "x", "status_code": 503}, 503),
        ({"error": {"code": 200}}, None),
        ([1], None),
    ],
)
def test_stated_status(data: object, status: int | None) -> None:
    assert stated_status(data) == status


# -- Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "now", "expected"),
    [
        ({"retry-after": "20", "retry-after-ms": "20000"}, None, 20.0),
        ({"retry-after-ms": "1500"}, None, 1.5),
        ({"retry-after": "7"}, None, 7.0),
        ({"retry-after": "0.5"}, None, 0.5),
        ({"retry-after": "-3"}, None, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1445412470.0, 10.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1445412490.0, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, None),
        ({"retry-after": "soon"}, 0.0, None),
        ({"retry-after-ms": "x", "retry-after": "3"}, None, 3.0),
        ({"retry-after": "NaN"}, None, None),
        ({"retry-after": "inf"}, None, None),
        ({"retry-after-ms": "-inf", "retry-after": "2"}, None, 2.0),
        ({}, None, None),
    ],
)
def test_retry_after(headers: dict[str, str], now: float | None, expected: float | None) -> None:
    assert parse_retry_after(headers, now) == expected


# -- status defaults and whole responses ------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, EndpointNotFoundError),
        (410, GoneError),
        (413, ContextLengthError),
        (418, BadRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (529, ServerError),
    ],
)
def test_status_defaults(status: int, cls: type[ProviderError]) -> None:
    assert status_error(status) is cls


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama", "mock"])
def test_html_502_from_a_proxy_is_a_server_error_named_by_its_title(kind: str) -> None:
    adapter = build_adapter(kind, "p", None, None)
    headers = {"content-type": "text/html", "cf-ray": "8abc-FRA"}
    err = error_from_response(adapter, "m", 502, headers, CLOUDFLARE_502)
    assert type(err) is ServerError
    assert err.retryable
    assert str(err) == "p/m HTTP 502: api.openai.com | 502: Bad gateway"
    assert err.request_id == "8abc-FRA"


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama", "mock"])
def test_empty_500_is_a_server_error_saying_empty_body(kind: str) -> None:
    err = error_from_response(build_adapter(kind, "p", None, None), "m", 500, {}, b"")
    assert type(err) is ServerError
    assert str(err) == "p/m HTTP 500: (empty body)"
    assert err.retry_after is None
    assert err.request_id is None


def test_invalid_utf8_error_body_still_gives_a_typed_error() -> None:
    adapter = build_adapter("openai", "p", None, None)
    err = error_from_response(adapter, "m", 400, {}, b"\xc3\x28 broken")
    assert type(err) is BadRequestError
    assert "broken" in err.detail


def test_a_key_echoed_in_an_error_body_never_reaches_the_message() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"
    adapter = build_adapter("openai", "p", key, None)
    body = (
        b'{"error":{"message":"Incorrect API key provided: '
        + key.encode()
        + b'","code":"invalid_api_key"}}'
    )
    err = error_from_response(adapter, "m", 401, {}, body)
    assert type(err) is AuthenticationError
    for text in (str(err), repr(err), err.detail):
        assert key not in text


def test_a_registered_secret_of_any_shape_is_scrubbed() -> None:
    secret = "plainsecretvalue-4242"
    register_secret(secret)
    adapter = build_adapter("ollama", "p", secret, None)
    err = error_from_response(adapter, "m", 401, {}, f'{{"error":"bad token {secret}"}}'.encode())
    assert secret not in str(err)
    assert secret not in repr(adapter)


def test_invalid_response_error_is_one_line_and_retryable_once() -> None:
    adapter = build_adapter("openai", "p", None, None)
    with pytest.raises(InvalidResponseError) as info:
        adapter.parse_reply("m", b"<html>oops</html>")
    assert "\n" not in str(info.value)
    assert info.value.retryable


# -- a 404 is a missing model only when the body says so ----------------------------------

# What each server answers for a path it does not serve (a base_url without /v1, or
# with /chat/completions pasted in): OpenAI's own words, Anthropic's typed error, Go's
# default 404 page (Ollama), FastAPI's default (vLLM and most Python servers), nothing.
WRONG_PATH_404S = [
    (
        "openai",
        b'{"error":{"message":"Invalid URL (POST /v1/chat/completions/chat/completions)",'
        b'"type":"invalid_request_error","param":null,"code":null}}',
        "Invalid URL (POST /v1/chat/completions/chat/completions)",
    ),
    (
        "anthropic",
        b'{"type":"error","error":{"type":"not_found_error","message":"Not Found"}}',
        "Not Found",
    ),
    ("ollama", b"404 page not found", "404 page not found"),
    ("openai", b'{"detail":"Not Found"}', "Not Found"),
    ("openai", b"", "(empty body)"),
    ("openai", b"<html><head><title>404 Not Found</title></head></html>", "404 Not Found"),
]


@pytest.mark.parametrize(("kind", "body", "said"), WRONG_PATH_404S)
def test_a_404_naming_no_model_is_a_wrong_url_with_the_path_and_a_base_url_hint(
    kind: str, body: bytes, said: str
) -> None:
    adapter = build_adapter(kind, "p", None, None)
    sent = Sent("POST", "https://api.example.com/chat/completions", adapter.api_root)
    err = error_from_response(adapter, "m", 404, {}, body, sent=sent)
    assert type(err) is EndpointNotFoundError
    assert err.kind == "endpoint_not_found"
    assert not err.retryable
    assert err.url == "POST https://api.example.com/chat/completions"
    assert err.detail == (
        f"no such endpoint: POST https://api.example.com/chat/completions [{said}]; check"
        f" base_url: it should end at the API root, such as {adapter.api_root}"
    )


def test_each_adapter_names_its_own_api_root_in_the_hint() -> None:
    roots = {k: build_adapter(k, "p", None, None).api_root for k in ("openai", "anthropic")}
    assert roots == {
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
    }
    assert build_adapter("ollama", "p", None, None).api_root == "http://localhost:11434"


# "No such model" as servers say it: each names the model, so it stays ModelNotFoundError.
MODEL_404S = [
    ("anthropic", b'{"type":"error","error":{"type":"not_found_error","message":"model: x-1"}}'),
    ("openai", b'{"object":"error","message":"The model `x-1` does not exist.","code":404}'),
    (
        "openai",
        b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this'
        b' resource does not exist."}}',
    ),
    (
        "openai",
        b'{"error":{"message":"Unable to access model x-1.","type":"invalid_request_error",'
        b'"param":null,"code":"model_not_available"}}',
    ),
    ("ollama", b'{"error":"model \'x-1\' not found"}'),
]


@pytest.mark.parametrize(("kind", "body"), MODEL_404S)
def test_a_404_that_names_the_model_stays_model_not_found(kind: str, body: bytes) -> None:
    adapter = build_adapter(kind, "p", None, None)
    sent = Sent("POST", "https://api.example.com/v1/chat/completions", adapter.api_root)
    err = error_from_response(adapter, "m", 404, {}, body, sent=sent)
    assert type(err) is ModelNotFoundError
    assert "base_url" not in err.detail


def test_the_url_of_a_404_never_carries_a_registered_key() -> None:
    key = "sk-proj-urlkey0123456789abcdefghijklmnop"
    register_secret(key)
    adapter = build_adapter("openai", "p", None, None)
    sent = Sent("POST", f"https://gw.example.com/{key}/chat/completions", adapter.api_root)
    err = error_from_response(adapter, "m", 404, {}, b"", sent=sent)
    assert isinstance(err, EndpointNotFoundError)
    for text in (str(err), repr(err), err.detail, err.url or ""):
        assert key not in text


# -- 410 Gone -------------------------------------------------------------------------------

# xAI's answer to any chat request carrying search_parameters since it retired Live
# Search (its {code, error} envelope; the text as xAI sends it).
XAI_LIVE_SEARCH_410 = (
    b'{"code":"Client specified an invalid argument","error":"Live search is deprecated.'
    b' Please switch to the Agent Tools API: https://docs.x.ai/docs/guides/tools/overview"}'
)


def test_a_410_is_gone_naming_the_extra_fields_sent() -> None:
    adapter = build_adapter("openai", "xai", None, None)
    sent = Sent(
        "POST", "https://api.x.ai/v1/chat/completions", adapter.api_root, ("search_parameters",)
    )
    err = error_from_response(adapter, "grok-4.3", 410, {}, XAI_LIVE_SEARCH_410, sent=sent)
    assert type(err) is GoneError
    assert isinstance(err, BadRequestError)
    assert err.kind == "gone"
    assert not err.retryable
    assert err.detail.startswith("Live search is deprecated. Please switch to the Agent Tools API")
    assert "(extra body fields sent: search_parameters)" in err.detail
    assert "`extra`" in err.detail
    assert str(err).startswith("xai/grok-4.3 HTTP 410: Live search is deprecated.")


def test_a_410_names_the_param_its_body_names() -> None:
    body = (
        b'{"error":{"message":"This feature has been retired.","type":"invalid_request_error",'
        b'"param":"search_parameters","code":"gone"}}'
    )
    err = error_from_response(build_adapter("openai", "p", None, None), "m", 410, {}, body)
    assert type(err) is GoneError
    assert err.detail.startswith("This feature has been retired. (param: search_parameters);")


def test_a_param_the_message_already_quotes_is_not_repeated() -> None:
    body = (
        b'{"error":{"message":"Unsupported parameter: \'stop\'.","type":"invalid_request_error",'
        b'"param":"stop","code":"unsupported_parameter"}}'
    )
    err = error_from_response(build_adapter("openai", "p", None, None), "m", 400, {}, body)
    assert err.detail == "Unsupported parameter: 'stop'."
    decoded = decode_error_body(body)
    assert decoded.param == "stop"
