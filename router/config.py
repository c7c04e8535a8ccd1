"""The schema of providers.yaml (pydantic v2) and ``read_config``.

Every model forbids unknown keys. Defaults here are the documented defaults
(docs/config.md is tested against this schema, so the two cannot drift).

:func:`read_config` reads the YAML with positions (:mod:`router.yamlsrc`),
interpolating ``${VAR}`` in string values from the environment (never in
template text or in the names of variables), validates it against this schema,
cross-checks what a schema cannot express (chains name declared providers and
models, budgets name declared scopes, URLs are safe, keys are present), compiles
the templates (:mod:`router.templates`), and raises one
:class:`~router.errors.ConfigError` listing every problem, each as
``providers.yaml:LINE:COL: dotted.path: message``. What the router runs from is
not this schema but the :class:`router.plan.Plan` resolved from it
(:func:`router.load_config`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from router.errors import ConfigError, ConfigProblem
from router.files import read_config_file, why_unwritable
from router.images import DEFAULT_MAX_IMAGE_BYTES
from router.logger import get_logger
from router.output import OutputSpec, output_spec
from router.proxy import Proxy, ProxyURLError, choose, is_loopback, parse_proxy
from router.redact import register_secret
from router.templates import RouteTemplates, compile_routes, parse_var_type
from router.tools import TOOL_CHOICES, Tool, schema_problems
from router.yamlsrc import (
    Interpolation,
    KeyPath,
    YamlDoc,
    did_you_mean,
    format_path,
    load_yaml,
    validation_problems,
)

__all__ = [
    "FREE",
    "Backoff",
    "BudgetConfig",
    "Config",
    "Cooldown",
    "LedgerPlan",
    "LedgerSettings",
    "Limits",
    "Loaded",
    "LogSettings",
    "MockSettings",
    "ModelConfig",
    "Price",
    "PromptCache",
    "ProviderConfig",
    "RouteConfig",
    "Settings",
    "StepConfig",
    "TemplateFile",
    "config_json_schema",
    "default_base_url",
    "read_config",
]

ProviderKind = Literal[
    "openai", "openai_responses", "anthropic", "gemini", "ollama", "mock", "azure_openai"
]
# kind azure_openai: how the key is sent (api-key header, or an Entra ID bearer token).
AzureAuth = Literal["api_key_header", "bearer"]
# An Azure api-version: a date, a dated preview, "preview" or "v1" (the version-less API).
AZURE_API_VERSION = r"^(?:v1|preview|\d{4}-\d{2}-\d{2}(?:-preview)?)$"
# An Azure deployment name: letters, digits, '.', '_' and '-' (it goes into a URL path).
AZURE_DEPLOYMENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _date_as_text(value: Any) -> Any:
    """YAML reads an unquoted 2024-10-21 as a date: take it as the text written."""
    return value.isoformat() if isinstance(value, datetime.date) else value


# (The values are not quoted in these errors: the YAML line shows them, and a value
# pasted into the wrong key may be a credential.)
def _azure_api_version(value: str) -> str:
    if re.fullmatch(AZURE_API_VERSION, value) is None:
        raise ValueError(
            "not an Azure API version: write a date (2024-10-21), a dated preview"
            " (2025-04-01-preview), preview, or v1 (the version-less v1 API)"
        )
    return value


def _azure_deployment(value: str) -> str:
    if re.fullmatch(AZURE_DEPLOYMENT, value) is None:
        raise ValueError(
            "not an Azure deployment name: 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


AzureApiVersion = Annotated[
    str,
    BeforeValidator(_date_as_text),
    AfterValidator(_azure_api_version),
    Field(json_schema_extra={"pattern": AZURE_API_VERSION}),
]
AzureDeployment = Annotated[
    str, AfterValidator(_azure_deployment), Field(json_schema_extra={"pattern": AZURE_DEPLOYMENT})
]
OutputMode = Literal["json_schema", "json_object", "tool", "none"]
ErrorKind = Literal[
    "rate_limit",
    "server",
    "timeout",
    "connection",
    "auth",
    "model_not_found",
    "endpoint_not_found",
    "bad_request",
    "context_length",
    "content_filter",
    "gone",
    "invalid_response",
    "invalid_output",
    "empty_response",
]

# Most hidden prompt tokens a provider may be declared to add per request.
MAX_INPUT_OVERHEAD_TOKENS = 100_000
# Hidden prompt tokens billed per request, by API host, when a provider declares none.
# xAI's grok-4 models bill a provider-side prompt: "What's 2 + 2?" (12-16 tokens at
# other providers) was billed 137 prompt tokens, and each of the three recorded grok-4.3
# replies (tests/fixtures/xai) has 128 of its prompt tokens cached, a preamble no
# request text accounts for; 160 is that 128 with the estimate's 1.25x margin.
DEFAULT_INPUT_OVERHEAD_TOKENS: Mapping[str, int] = MappingProxyType({"api.x.ai": 160})

# Upper bounds of the numbers in providers.yaml (each documented in docs/config.md beside
# its key). Each is far above any real setting and low enough that every product, sum
# and display of the values stays finite and exact in Decimal's default 28 digits.
MAX_SECONDS = 86_400.0  # any duration: one day
MAX_TOKENS = 100_000_000  # a token count (context window, output cap)
MAX_PER_MINUTE = 1_000_000_000  # a requests or tokens per minute limit
MAX_CONCURRENCY = 100_000  # requests in flight at once
MAX_USD = Decimal(1_000_000_000)  # an amount of money (budget, per-call cap)
MAX_USD_PER_MTOK = Decimal(1_000_000)  # a price, USD per million tokens ($1 a token)
USD_PLACES = 12  # decimal places of any USD figure

PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
PerMinute = Annotated[int, Field(ge=1, le=MAX_PER_MINUTE)]


def _usd_exponent(value: Decimal) -> Decimal:
    """Store a USD figure with at most USD_PLACES digits after the point: '5.000…0'
    (any number of zeros) is 5.000000000000, never a figure that prints as a page."""
    if value.is_zero():
        return Decimal(0)  # also turns -0 into 0
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -USD_PLACES:
        return value.quantize(Decimal(1).scaleb(-USD_PLACES))
    return value


Usd = Annotated[
    Decimal,
    Field(ge=0, le=MAX_USD, decimal_places=USD_PLACES),
    AfterValidator(_usd_exponent),
]
UsdPerMtok = Annotated[
    Decimal,
    Field(ge=0, le=MAX_USD_PER_MTOK, decimal_places=USD_PLACES),
    AfterValidator(_usd_exponent),
]
HttpStatus = Annotated[int, Field(ge=100, le=599)]


# An env var name: what api_key_env must hold.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Prefixes of real provider keys (OpenAI, Anthropic, xAI, Groq, Google, HF, GitHub...).
_KEY_PREFIXES = ("sk-", "sk_", "xai-", "gsk_", "pk-", "rk-", "AIza", "hf_", "ghp_", "Bearer ")


def _looks_like_key(value: str) -> bool:
    """Whether a string is more likely a credential than an env var name."""
    if value.startswith(_KEY_PREFIXES):
        return True
    if not _ENV_NAME.fullmatch(value):
        return len(value) >= 16
    # A long run of mixed-case letters and digits is a token; env names are words.
    digits = sum(c.isdigit() for c in value)
    return (
        len(value) >= 20
        and digits > 0
        and any(c.islower() for c in value)
        and ("_" not in value or digits >= 6)
    )


def _env_name(value: str) -> str:
    if "${" in value:
        raise ValueError(
            "write the NAME of the environment variable itself (e.g. OPENAI_API_KEY), not a"
            " ${...} reference: this field is never interpolated"
        )
    if _looks_like_key(value):
        # Scrub it from every later message, whatever else happens to it.
        register_secret(value)
        raise ValueError(
            "this looks like an API key, not an environment variable name: put the key in an "
            "environment variable and write the variable's NAME here (e.g. OPENAI_API_KEY)"
        )
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable "
            "(letters, digits and '_', not starting with a digit)"
        )
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]


class _Strict(BaseModel):
    # Unknown keys are errors; inf/nan are refused; inputs never appear in error text
    # (an input may be a pasted key).
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, hide_input_in_errors=True
    )


class Backoff(_Strict):
    """Jittered exponential backoff between retries of one step (full jitter)."""

    initial_s: Annotated[Seconds, Field(description="First backoff ceiling, seconds.")] = 0.2
    max_s: Annotated[Seconds, Field(description="Largest backoff ceiling, seconds.")] = 2.0
    multiplier: Annotated[float, Field(ge=1, le=10, description="Ceiling growth per retry.")] = 2.0


class Cooldown(_Strict):
    """When a provider is taken out of rotation, and for how long."""

    failures: Annotated[
        int,
        Field(
            ge=1, le=1_000_000, description="Consecutive retryable failures that start a cooldown."
        ),
    ] = 3
    seconds: Annotated[Seconds, Field(description="Length of a cooldown, seconds.")] = 30.0


class LedgerSettings(_Strict):
    """Where settled spend is kept. Only a config with budgets keeps a ledger."""

    backend: Annotated[
        Literal["sqlite", "memory"],
        Field(description="sqlite persists across restarts; memory forgets on exit."),
    ] = "sqlite"
    path: Annotated[
        str,
        Field(description="SQLite file; a relative path is taken from the YAML file's folder."),
    ] = "spend.sqlite3"
    path_env: Annotated[
        EnvName | None,
        Field(
            description="NAME of an env var holding the SQLite file's path; when it is set"
            " (non-empty) it replaces path (relative: from the YAML file's folder)."
        ),
    ] = None


class StateSettings(_Strict):
    """Where budgets, rate limits, concurrency caps and cooldowns live: this process
    (``local``, the default) or a Redis server that several processes share."""

    backend: Annotated[
        Literal["local", "redis"],
        Field(
            description="local: in this process (and the ledger file); redis: shared by every"
            " process that points at the same Redis and key_prefix."
        ),
    ] = "local"
    url_env: Annotated[
        EnvName,
        Field(
            description="NAME of the env var holding the Redis URL (redis://, rediss:// or"
            " unix://; it may carry a password, redacted everywhere like a key)."
        ),
    ] = "REDIS_URL"
    key_prefix: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
            description="Prefix of every key the router writes; processes share state only"
            " when they use the same one.",
        ),
    ] = "router"
    timeout_ms: Annotated[
        int,
        Field(
            ge=1,
            le=60_000,
            description="Longest wait for one Redis operation, milliseconds (never past the"
            " call's deadline).",
        ),
    ] = 250
    on_unavailable: Annotated[
        Literal["closed", "local"],
        Field(
            description="Redis down or slow: closed refuses paid steps (StateUnavailableError)"
            " and runs free ones; local falls back to per-process limits and reconciles spend"
            " when Redis returns.",
        ),
    ] = "closed"
    lease_s: Annotated[
        float,
        Field(
            ge=1,
            le=3600,
            allow_inf_nan=False,
            description="Lease of a reservation, concurrency slot or probe, seconds; renewed"
            " while the call runs, so a killed process frees what it held within it.",
        ),
    ] = 15.0


class LogSettings(_Strict):
    """How the CLI, and apps that call ``router.logging.configure(plan.settings.log)``,
    show the router's log lines (the library alone prints nothing)."""

    format: Annotated[
        Literal["console", "json"],
        Field(description="console: one readable line per event; json: one JSON object per line."),
    ] = "console"
    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Field(
            description=(
                "Minimum level shown: info shows every attempt and call; warning keeps "
                "failed attempts, failed calls, cooldowns and money warnings."
            )
        ),
    ] = "info"


class Settings(_Strict):
    """Defaults for every route and provider."""

    deadline_s: Annotated[
        PositiveSeconds, Field(description="Whole-call deadline when a route sets none.")
    ] = 30.0
    retries: Annotated[
        int, Field(ge=0, le=10, description="Extra tries of one step on a retryable error.")
    ] = 1
    attempt_floor_s: Annotated[
        Seconds,
        Field(
            description=(
                "A step is retried only if, after the pause, at least this much is left "
                "for it and for each later step (see docs/routing.md)."
            ),
        ),
    ] = 0.5
    first_token_timeout_s: Annotated[
        PositiveSeconds,
        Field(description="Streams: longest wait for the first text delta (within the deadline)."),
    ] = 15.0
    idle_timeout_s: Annotated[
        PositiveSeconds,
        Field(description="Streams: longest wait between two chunks (within the deadline)."),
    ] = 10.0
    max_tokens: Annotated[Tokens, Field(description="Output token cap when a route sets none.")] = (
        1024
    )
    backoff: Backoff = Backoff()
    cooldown: Cooldown = Cooldown()
    retry_after_max_s: Annotated[
        PositiveSeconds,
        Field(
            description=(
                "Longest Retry-After wait honoured, seconds; a longer one (or a far-off date)"
                " counts as this long."
            ),
        ),
    ] = 600.0
    fallback_on: Annotated[
        list[ErrorKind] | None,
        Field(description="Error kinds that move to the next step; null means all."),
    ] = None
    templates_dir: Annotated[
        str, Field(description="Template folder, relative to the YAML file's folder.")
    ] = "templates"
    max_response_bytes: Annotated[
        int, Field(ge=1024, le=2**30, description="Largest response body read, bytes.")
    ] = 8 * 1024 * 1024
    max_image_bytes: Annotated[
        int,
        Field(
            ge=1024,
            le=100_000_000,
            description=(
                "Largest image sent, bytes: an image variable's file or bytes, or an"
                " Image(data=...) in a history; checked before any traffic."
            ),
        ),
    ] = DEFAULT_MAX_IMAGE_BYTES
    health_ttl_s: Annotated[
        Seconds, Field(description="How long a health result is cached, seconds.")
    ] = 60.0
    trust_env_proxies: Annotated[
        bool,
        Field(
            description="Send providers through the proxy HTTPS_PROXY/HTTP_PROXY name (NO_PROXY"
            " and loopback hosts excepted) unless a provider sets proxy or proxy_url_env."
        ),
    ] = True
    ledger: LedgerSettings = LedgerSettings()
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()


class Limits(_Strict):
    """Per-provider admission limits; null means unlimited."""

    requests_per_minute: Annotated[
        PerMinute | None, Field(description="Requests admitted per minute; null: no limit.")
    ] = None
    tokens_per_minute: Annotated[
        PerMinute | None,
        Field(description="Tokens (input + output) per minute; null: no limit."),
    ] = None
    max_concurrency: Annotated[
        int | None,
        Field(ge=1, le=MAX_CONCURRENCY, description="Requests in flight at once; null: no limit."),
    ] = None


# Server-side tools (kind openai_responses): the provider runs them itself.
ServerToolName = Literal["web_search", "x_search"]


class Price(_Strict):
    """USD per million tokens. Cached input and cache writes default to the input price."""

    input_per_mtok: Annotated[UsdPerMtok, Field(description="USD per million input tokens.")]
    output_per_mtok: Annotated[
        UsdPerMtok, Field(description="USD per million output tokens (reasoning included).")
    ]
    cached_input_per_mtok: Annotated[
        UsdPerMtok | None,
        Field(description="USD per million cache-read input tokens; null: input price."),
    ] = None
    cache_write_per_mtok: Annotated[
        UsdPerMtok | None,
        Field(description="USD per million cache-write input tokens; null: input price."),
    ] = None
    per_call: Annotated[
        dict[ServerToolName, Usd],
        Field(
            description="USD per server-side tool call, by tool (web_search, x_search);"
            " required for every server tool the model is given."
        ),
    ] = {}


FREE = Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))


class ModelConfig(_Strict):
    """One model a provider serves."""

    price: Annotated[
        Price | None,
        Field(
            description="USD per million tokens. Required, except: free (0) for ollama and mock,"
            " and for openai on a loopback base_url (localhost, 127.0.0.0/8, ::1)."
        ),
    ] = None
    context_window: Annotated[
        Tokens | None,
        Field(
            description="Largest prompt + output in tokens: a step whose estimated input plus"
            " max_tokens exceeds it is skipped before sending; null: unknown, not checked."
        ),
    ] = None
    max_output_tokens: Annotated[
        Tokens | None, Field(description="Largest output the model allows; null: unknown.")
    ] = None
    extra: Annotated[
        dict[str, Any], Field(description="Body fields sent with every request to this model.")
    ] = {}
    tools: Annotated[
        bool,
        Field(
            description="Whether the model takes tools; false: a call with tools skips its"
            " steps (skip kind tools_unsupported)."
        ),
    ] = True

    deployment: Annotated[
        AzureDeployment | None,
        Field(
            description="kind azure_openai only: the deployment that serves this model;"
            " null: the model's name.",
        ),
    ] = None

    structured_output: Annotated[
        OutputMode | None,
        Field(
            description="How structured output is asked of this model: json_schema (the"
            " provider constrains the answer to the schema), json_object (JSON only, the schema"
            " in the system prompt), tool (a forced tool whose input is the answer), none (the"
            " schema in the system prompt only). null: the kind's default (openai, azure_openai,"
            " gemini, ollama, mock: json_schema; anthropic: tool)."
        ),
    ] = None
    image_tokens: Annotated[
        Tokens | None,
        Field(
            description="Input tokens each image is estimated at on this model (budget"
            " reservation, tokens_per_minute, context_window), instead of its provider kind's"
            " formula; for models that bill images differently (gpt-4o-mini: up to 48,169;"
            " OpenAI's 32-px patch models). null: the kind's formula (docs/conversations.md)."
        ),
    ] = None
    server_tools: Annotated[
        list[ServerTool] | None,
        Field(
            description="Tools the provider runs itself (kind openai_responses): web_search,"
            " x_search; null: the provider's. Each needs price.per_call."
        ),
    ] = None
    max_tool_calls: Annotated[
        MaxToolCalls | None,
        Field(
            description="Most server-tool calls one response may make (sent as max_tool_calls;"
            " reserved in full before sending); null: the provider's, else"
            f" {DEFAULT_MAX_TOOL_CALLS}."
        ),
    ] = None


class ToolConfig(_Strict):
    """A tool the route's model may call."""

    name: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_-]{1,64}$",
            description="The tool's name: 1-64 letters, digits, '_' or '-'.",
        ),
    ]
    description: Annotated[str, Field(description="What the tool does (the model reads it).")] = ""
    parameters: Annotated[
        dict[str, Any],
        Field(
            description="JSON Schema (Draft 2020-12) of the arguments, an object; or"
            " {file: name.json} (JSON or YAML) under templates_dir."
        ),
    ] = {"type": "object"}


# Most server-tool calls one response may make (max_tool_calls).
MAX_TOOL_CALLS = 1_000
# The max_tool_calls sent (and reserved for) when a step with server tools sets none.
DEFAULT_MAX_TOOL_CALLS = 5
# Most domains or X handles in one filter (xAI's limit is 5 domains and 10 handles;
# the provider refuses a longer list with a 400, checked here at load instead).
MAX_DOMAINS = 100
MAX_HANDLES = 10


def _handle(value: str) -> str:
    handle = value.removeprefix("@")
    if not re.fullmatch(r"[A-Za-z0-9_]{1,15}", handle):
        raise ValueError(f"{value!r} is not an X handle (1-15 letters, digits or '_')")
    return handle


def _domain(value: str) -> str:
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", value):
        raise ValueError(f"{value!r} is not a domain name (e.g. reuters.com; no scheme, no path)")
    return value.lower()


XHandle = Annotated[str, AfterValidator(_handle)]
Domain = Annotated[str, AfterValidator(_domain)]


class UserLocation(_Strict):
    """Where the user is, to localise web search results (OpenAI)."""

    country: Annotated[
        str | None, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 two-letter code.")
    ] = None
    city: Annotated[str | None, Field(description="City name, free text.")] = None
    region: Annotated[str | None, Field(description="Region or state, free text.")] = None
    timezone: Annotated[str | None, Field(description="IANA time zone, e.g. America/New_York.")] = (
        None
    )


class WebSearchTool(_Strict):
    """The provider's own web search (OpenAI and xAI ``web_search``)."""

    type: Literal["web_search"]
    allowed_domains: Annotated[
        list[Domain] | None,
        Field(max_length=MAX_DOMAINS, description="Search only these domains; null: any."),
    ] = None
    excluded_domains: Annotated[
        list[Domain] | None,
        Field(max_length=MAX_DOMAINS, description="Never these domains (xAI); null: none."),
    ] = None
    search_context_size: Annotated[
        Literal["low", "medium", "high"] | None,
        Field(description="How much search context the model reads (OpenAI); null: medium."),
    ] = None
    user_location: Annotated[
        UserLocation | None, Field(description="Localise results (OpenAI); null: none.")
    ] = None
    enable_image_understanding: Annotated[
        bool | None, Field(description="Let the model look at images it finds (xAI).")
    ] = None

    @model_validator(mode="after")
    def _one_filter(self) -> WebSearchTool:
        if self.allowed_domains and self.excluded_domains:
            raise ValueError("set allowed_domains or excluded_domains, not both")
        return self

    def wire(self) -> dict[str, Any]:
        """The ``tools`` entry sent."""
        out: dict[str, Any] = {"type": "web_search"}
        filters = {
            k: v
            for k, v in (
                ("allowed_domains", self.allowed_domains),
                ("excluded_domains", self.excluded_domains),
            )
            if v
        }
        if filters:
            out["filters"] = filters
        if self.search_context_size is not None:
            out["search_context_size"] = self.search_context_size
        if self.user_location is not None:
            where = self.user_location.model_dump(exclude_none=True)
            out["user_location"] = {"type": "approximate", **where}
        if self.enable_image_understanding is not None:
            out["enable_image_understanding"] = self.enable_image_understanding
        return out


class XSearchTool(_Strict):
    """xAI's search of X posts (``x_search``)."""

    type: Literal["x_search"]
    allowed_x_handles: Annotated[
        list[XHandle] | None,
        Field(max_length=MAX_HANDLES, description="Only posts by these handles; null: any."),
    ] = None
    excluded_x_handles: Annotated[
        list[XHandle] | None,
        Field(max_length=MAX_HANDLES, description="Never posts by these handles; null: none."),
    ] = None
    from_date: Annotated[
        date | None, Field(description="Only posts from this day on (YYYY-MM-DD); null: any.")
    ] = None
    to_date: Annotated[
        date | None, Field(description="Only posts up to this day (YYYY-MM-DD); null: any.")
    ] = None
    enable_image_understanding: Annotated[
        bool | None, Field(description="Let the model look at images in posts.")
    ] = None
    enable_video_understanding: Annotated[
        bool | None, Field(description="Let the model watch videos in posts.")
    ] = None

    @model_validator(mode="after")
    def _consistent(self) -> XSearchTool:
        if self.allowed_x_handles and self.excluded_x_handles:
            raise ValueError("set allowed_x_handles or excluded_x_handles, not both")
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ValueError(f"from_date {self.from_date} is after to_date {self.to_date}")
        return self

    def wire(self) -> dict[str, Any]:
        """The ``tools`` entry sent."""
        out: dict[str, Any] = {"type": "x_search"}
        for key in (
            "allowed_x_handles",
            "excluded_x_handles",
            "enable_image_understanding",
            "enable_video_understanding",
        ):
            value = getattr(self, key)
            if value is not None and value != []:
                out[key] = value
        for key in ("from_date", "to_date"):
            day = getattr(self, key)
            if day is not None:
                out[key] = day.isoformat()
        return out


ServerTool = Annotated[WebSearchTool | XSearchTool, Field(discriminator="type")]
MaxToolCalls = Annotated[int, Field(ge=1, le=MAX_TOOL_CALLS)]


class MockToolCall(_Strict):
    """A tool call the mock provider answers with."""

    name: Annotated[str, Field(description="The tool's name.")]
    arguments: Annotated[dict[str, Any], Field(description="The call's arguments.")] = {}


class MockSettings(_Strict):
    """Behaviour of a ``kind: mock`` provider (offline, deterministic)."""

    reply: Annotated[
        str,
        Field(
            description=(
                "Answer text; {model} and {prompt} (the last user message) are substituted."
            )
        ),
    ] = "mock answer from {model}"
    latency_s: Annotated[Seconds, Field(description="Delay before each answer.")] = 0.0
    failures: Annotated[
        list[HttpStatus],
        Field(
            description=(
                "HTTP statuses returned by the first requests, in order, before answers succeed."
            )
        ),
    ] = []
    tool_calls: Annotated[
        list[MockToolCall],
        Field(
            description="Tool calls to answer with when a request offers tools and does not"
            " end with tool results (then reply is the answer); empty: always reply."
        ),
    ] = []
    output: Annotated[
        Any,
        Field(
            description="The JSON answer to a request for structured output (sent as it is,"
            " even if it breaks the schema); null: a minimal valid instance of the schema."
        ),
    ] = None


# Headers that carry credentials: keys come from api_key_env, never from YAML.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "x-goog-api-key"}
)


def _bad_key_character(value: str) -> str | None:
    """What is wrong with a key's characters, or None: printable ASCII, one line."""
    if "\r" in value or "\n" in value:
        return "a line break (CR or LF)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "a control character"
    if not value.isascii():
        return "a non-ASCII character"
    return None


def _header_name(value: str) -> str:
    if value.lower() in _SECRET_HEADERS:
        raise ValueError(
            f"header {value!r} carries a credential; keys come from api_key_env, never YAML"
        )
    return value


def _header_value(value: str) -> str:
    # Only known key shapes: ids and versions in headers are long and token-like too.
    if value.strip().startswith(_KEY_PREFIXES):
        register_secret(value)
        raise ValueError("this header value looks like a credential; headers must be non-secret")
    if "\r" in value or "\n" in value:
        raise ValueError("a header value cannot contain a line break")
    return value


def _provider_name(value: str) -> str:
    if not value or "/" in value or value != value.strip():
        raise ValueError(
            "a provider name must be non-empty, without '/' or surrounding spaces "
            "(steps are written provider/model)"
        )
    return value


def _model_name(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError("a model name must be non-empty, without surrounding spaces")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
ProviderName = Annotated[str, AfterValidator(_provider_name)]
ModelName = Annotated[str, AfterValidator(_model_name)]


class HedgeConfig(_Strict):
    """Hedged requests: start the next attempt in parallel when the current one is slow."""

    after_s: Annotated[
        PositiveSeconds | None,
        Field(description="Start a hedge after this many seconds without an answer."),
    ] = None
    after: Annotated[
        str | None,
        Field(
            pattern=r"^p([1-9]|[1-9][0-9])$",
            description="Start a hedge after the provider's observed latency percentile"
            " (p50..p99, streams: time to first token) over its recent attempts.",
        ),
    ] = None
    min_s: Annotated[
        PositiveSeconds, Field(description="Floor of the delay chosen by after: pNN.")
    ] = 0.05
    max_s: Annotated[
        PositiveSeconds,
        Field(
            description="Cap of the delay chosen by after: pNN (and the delay until it has data)."
        ),
    ] = 2.0
    max_hedges: Annotated[
        int, Field(ge=1, le=4, description="Most hedges per call (parallel attempts - 1).")
    ] = 1

    @model_validator(mode="after")
    def _one_delay(self) -> HedgeConfig:
        if (self.after_s is None) == (self.after is None):
            raise ValueError("set exactly one of after_s (seconds) and after (a percentile: p90)")
        if self.min_s > self.max_s:
            raise ValueError(f"min_s ({self.min_s:g}) is more than max_s ({self.max_s:g})")
        return self

    @property
    def quantile(self) -> float | None:
        """The percentile of ``after`` as a fraction (p90: 0.9); None with ``after_s``."""
        return None if self.after is None else int(self.after[1:]) / 100


class HedgeBudget(_Strict):
    """How many hedges a slow provider may trigger: a share of its attempts over a window."""

    ratio: Annotated[
        float,
        Field(ge=0, le=1, description="Hedges per attempt sent to this provider (0.1: 10%)."),
    ] = 0.1
    window_s: Annotated[
        PositiveSeconds, Field(description="The sliding window the ratio is counted over.")
    ] = 30.0
    min_hedges: Annotated[
        int, Field(ge=0, le=1_000_000, description="Hedges always allowed per window.")
    ] = 5


class ProviderConfig(_Strict):
    """One provider endpoint."""

    kind: Annotated[
        ProviderKind,
        Field(
            description="Wire protocol: openai (Chat Completions, and compatibles),"
            " openai_responses (the Responses API: OpenAI, xAI), anthropic, gemini (Google's"
            " native Gemini API), ollama, mock, azure_openai."
        ),
    ]
    base_url: Annotated[
        str | None, Field(description="API root; defaults per kind (see docs/config.md).")
    ] = None
    api_key_env: Annotated[
        EnvName | None,
        Field(description="NAME of the env var holding the key (never the key)."),
    ] = None
    api_version: Annotated[
        AzureApiVersion | None,
        Field(
            description="kind azure_openai only: the api-version query parameter"
            " (YYYY-MM-DD or YYYY-MM-DD-preview), or v1 for Azure's version-less v1 API;"
            " null: 2024-10-21.",
        ),
    ] = None
    auth: Annotated[
        AzureAuth | None,
        Field(
            description="kind azure_openai only: api_key_header sends the key as the api-key"
            " header; bearer sends it as Authorization: Bearer (an Entra ID token);"
            " null: api_key_header."
        ),
    ] = None
    optional: Annotated[
        bool, Field(description="If the key is missing: true disables the provider, false fails.")
    ] = False
    allow_http: Annotated[
        bool, Field(description="Allow plain http:// to a non-loopback host.")
    ] = False
    proxy: Annotated[
        Literal["env", "none"] | None,
        Field(
            description="env: the HTTPS_PROXY/HTTP_PROXY/NO_PROXY variables; none: connect"
            " directly; null: settings.trust_env_proxies decides."
        ),
    ] = None
    proxy_url_env: Annotated[
        EnvName | None,
        Field(
            description="NAME of the env var holding this provider's proxy URL"
            " (http://[user:password@]host:port); NO_PROXY does not apply."
        ),
    ] = None
    timeout_s: Annotated[PositiveSeconds, Field(description="Cap on one attempt.")] = 60.0
    connect_timeout_s: Annotated[PositiveSeconds, Field(description="TCP+TLS connect cap.")] = 5.0
    first_token_timeout_s: Annotated[
        PositiveSeconds | None,
        Field(description="Streams: first-delta wait; null: settings.first_token_timeout_s."),
    ] = None
    idle_timeout_s: Annotated[
        PositiveSeconds | None,
        Field(description="Streams: wait between chunks; null: settings.idle_timeout_s."),
    ] = None
    headers: Annotated[
        dict[HeaderName, HeaderValue], Field(description="Extra non-secret headers.")
    ] = {}
    limits: Limits = Limits()
    input_overhead_tokens: Annotated[
        int | None,
        Field(
            ge=0,
            le=MAX_INPUT_OVERHEAD_TOKENS,
            description="Hidden prompt tokens the provider bills per request, added to the"
            " input estimate; null: 160 on api.x.ai, else 0.",
        ),
    ] = None
    extra: Annotated[dict[str, Any], Field(description="Body fields sent with every request.")] = {}
    models: Annotated[
        dict[ModelName, ModelConfig],
        Field(min_length=1, description="The models this provider serves, by API model name."),
    ]
    server_tools: Annotated[
        list[ServerTool] | None,
        Field(
            description="Tools the provider runs itself (kind openai_responses): web_search,"
            " x_search; null: none. Each needs price.per_call."
        ),
    ] = None
    max_tool_calls: Annotated[
        MaxToolCalls | None,
        Field(
            description="Most server-tool calls one response may make (sent as max_tool_calls;"
            f" reserved in full before sending); null: {DEFAULT_MAX_TOOL_CALLS}."
        ),
    ] = None
    mock: Annotated[MockSettings | None, Field(description="Only for kind: mock.")] = None
    hedge_budget: Annotated[
        HedgeBudget,
        Field(description="How many hedges a slow attempt on this provider may start."),
    ] = HedgeBudget()


# What may hold server_tools and max_tool_calls.
ServerToolsAt = ProviderConfig | ModelConfig


class BudgetConfig(_Strict):
    """A spending limit over a UTC period, optionally scoped to a provider or route."""

    limit_usd: Annotated[Usd, Field(description="Most that may be spent in one period, USD.")]
    period: Annotated[
        Literal["day", "month", "total"],
        Field(description="UTC calendar day, UTC calendar month, or all time."),
    ] = "day"
    provider: Annotated[
        str | None, Field(description="Count only this provider's spend; null: all providers.")
    ] = None
    route: Annotated[
        str | None, Field(description="Count only this route's spend; null: all routes.")
    ] = None


class TemplateFile(_Strict):
    """A template kept in a file under settings.templates_dir."""

    file: Annotated[str, Field(description="File name relative to settings.templates_dir.")]


def _template_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "inline-template"
    if isinstance(value, dict | TemplateFile):
        return "template-file"
    return None


# A string is inline template text; a mapping {file: name} names a file (one rule, no guessing).
TemplateSource = Annotated[
    Annotated[str, Tag("inline-template")] | Annotated[TemplateFile, Tag("template-file")],
    Discriminator(
        _template_kind,
        custom_error_type="template_source",
        custom_error_message="must be inline template text or a mapping {file: name.j2}",
    ),
]


class PromptCache(_Strict):
    """Which parts of a route's prompt are marked for the provider's prompt cache.

    Anthropic caches a prompt prefix only where a request marks it (``cache_control``);
    OpenAI and compatible APIs cache on their own and Ollama does not, so their
    adapters ignore these flags. Cache reads and writes are billed at the model's
    ``cached_input_per_mtok`` and ``cache_write_per_mtok`` prices.
    """

    system: Annotated[
        bool,
        Field(
            description=(
                "Mark the system message as a cache breakpoint (Anthropic: cache_control"
                " ephemeral, Anthropic's default lifetime of 5 minutes); other kinds ignore it."
            )
        ),
    ] = False


POOL_PREFIX = "pool:"
PoolStrategy = Literal["least_latency", "weighted", "round_robin", "least_busy"]


class PoolMember(_Strict):
    """One deployment of a pool: a provider/model and its weight."""

    use: Annotated[str, Field(description="provider/model; split at the first '/'.")]
    weight: Annotated[
        int, Field(ge=1, le=1000, description="Share of calls under strategy weighted.")
    ] = 1

    @field_validator("use")
    @classmethod
    def _has_slash(cls, v: str) -> str:
        provider, sep, model = v.partition("/")
        if not sep or not provider or not model:
            raise ValueError(f"{v!r} must be 'provider/model'")
        return v


class PoolConfig(_Strict):
    """Deployments of one model that share a chain step's load (``pool:NAME``)."""

    strategy: Annotated[
        PoolStrategy,
        Field(
            description="How a call picks its first member: least_latency, weighted,"
            " round_robin or least_busy."
        ),
    ] = "least_latency"
    members: Annotated[list[PoolMember], Field(min_length=1, description="The deployments.")]


class StepConfig(_Strict):
    """One step of a fallback chain: ``provider/model`` plus overrides."""

    model: Annotated[str, Field(description="provider/model; split at the first '/'.")]
    retries: Annotated[
        int | None,
        Field(ge=0, le=10, description="Extra tries of this step; null: the route's retries."),
    ] = None
    timeout_s: Annotated[
        PositiveSeconds | None, Field(description="Cap on each attempt of this step.")
    ] = None
    params: Annotated[dict[str, Any], Field(description="Body fields for this step only.")] = {}
    hedge: Annotated[
        HedgeConfig | None, Field(description="Hedging for this step; null: the route's.")
    ] = None

    @field_validator("model")
    @classmethod
    def _has_slash(cls, v: str) -> str:
        if v.startswith(POOL_PREFIX):
            if not v[len(POOL_PREFIX) :]:
                raise ValueError(f"{v!r} must be 'pool:NAME'")
            return v
        provider, sep, model = v.partition("/")
        if not sep or not provider or not model:
            raise ValueError(f"{v!r} must be 'provider/model'")
        return v

    @property
    def pool(self) -> str | None:
        """The pool a ``pool:NAME`` step names; None for a ``provider/model`` step."""
        return self.model[len(POOL_PREFIX) :] if self.model.startswith(POOL_PREFIX) else None

    @property
    def provider_name(self) -> str:
        """The provider part of ``model`` (before the first '/')."""
        return self.model.partition("/")[0]

    @property
    def model_name(self) -> str:
        """The model part of ``model`` (after the first '/'; may itself contain '/')."""
        return self.model.partition("/")[2]


def _var_type(spec: str) -> str:
    parse_var_type(spec)  # raises ValueError with a did-you-mean
    return spec


def _var_name(name: str) -> str:
    if not name.isidentifier():
        raise ValueError("a template variable name must be a Python-style identifier")
    return name


_VAR_TYPE_PATTERN = r"^\s*(str|int|float|bool|dict|image|list(\[.+\])?)\s*$"
VarType = Annotated[
    str,
    AfterValidator(_var_type),
    WithJsonSchema({"type": "string", "pattern": _VAR_TYPE_PATTERN}),
]
VarName = Annotated[str, AfterValidator(_var_name)]


class RouteConfig(_Strict):
    """A named route: templates, call parameters and the fallback chain."""

    system: Annotated[
        TemplateSource | None,
        Field(description="System message template: inline text or {file: name.j2}."),
    ] = None
    prompt: Annotated[
        TemplateSource | None,
        Field(
            description="User message template: inline text or {file: name.j2}; sent as the"
            " last user turn, after a call's messages= history. null: the route has no prompt"
            " and every call passes messages= ending with its user (or tool) turn."
        ),
    ] = None
    vars: Annotated[
        dict[VarName, VarType] | None,
        Field(description="Declared variables and types; null means undeclared (not checked)."),
    ] = None
    max_tokens: Annotated[
        Tokens | None, Field(description="Output token cap; null: settings.max_tokens.")
    ] = None
    temperature: Annotated[
        float | None, Field(ge=0, le=2, description="Sampling temperature; null: provider default.")
    ] = None
    deadline_s: Annotated[
        PositiveSeconds | None,
        Field(description="Whole-call deadline; null: settings.deadline_s."),
    ] = None
    first_token_timeout_s: Annotated[
        PositiveSeconds | None,
        Field(description="Streams: first-delta wait; null: the provider's, else the settings'."),
    ] = None
    idle_timeout_s: Annotated[
        PositiveSeconds | None,
        Field(
            description="Streams: wait between chunks; null: the provider's, else the settings'."
        ),
    ] = None
    retries: Annotated[
        int | None,
        Field(ge=0, le=10, description="Extra tries per step; null: settings.retries."),
    ] = None
    max_cost_usd: Annotated[
        Usd | None, Field(description="Most one call may cost (worst case reserved); null: no cap.")
    ] = None
    fallback_on: Annotated[
        list[ErrorKind] | None,
        Field(description="Error kinds that move to the next step; null: settings.fallback_on."),
    ] = None
    prompt_cache: Annotated[
        PromptCache,
        Field(description="Parts of the prompt marked for the provider's prompt cache."),
    ] = PromptCache()
    tools: Annotated[
        list[ToolConfig] | None,
        Field(description="Tools the model may call (docs/conversations.md); null: none."),
    ] = None
    tool_choice: Annotated[
        str | None,
        Field(
            description="auto (the model decides), none, required (some tool) or a tool's"
            " name; null: auto. A call's tool_choice= overrides it."
        ),
    ] = None
    output: Annotated[
        dict[str, Any] | None,
        Field(
            description="The answer's JSON Schema: inline, or {file: name.json} (JSON or YAML)"
            " under settings.templates_dir. The answer is checked against it"
            " (Completion.output); null: plain text."
        ),
    ] = None
    accept_truncated: Annotated[
        bool,
        Field(
            description="Return an empty answer, or one cut off at max_tokens when output is"
            " requested, as a success instead of an error (empty_response, invalid_output)."
        ),
    ] = False
    server_tools: Annotated[
        list[ServerTool] | None,
        Field(
            description="Tools the provider runs itself (kind openai_responses): web_search,"
            " x_search; null: each step's model's (or provider's). Each needs price.per_call."
        ),
    ] = None
    max_tool_calls: Annotated[
        MaxToolCalls | None,
        Field(
            description="Most server-tool calls one response may make (sent as max_tool_calls;"
            " reserved in full before sending); null: the model's, the provider's, else"
            f" {DEFAULT_MAX_TOOL_CALLS}."
        ),
    ] = None
    hedge: Annotated[
        HedgeConfig | None,
        Field(description="Hedged requests for every step (a step's own wins); null: none."),
    ] = None
    fallback: Annotated[
        list[StepConfig],
        Field(
            min_length=1,
            description="Ordered steps: 'provider/model', 'pool:NAME' or a step mapping.",
        ),
    ]

    @field_validator("fallback", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"model": s} if isinstance(s, str) else s for s in v]
        return v


class Config(_Strict):
    """The schema of a providers.yaml document, as validated; nothing more.

    Reading a file (:func:`read_config`) validates and cross-checks it; what the
    router runs from is the resolved :class:`router.plan.Plan` that
    :func:`router.load_config` builds from it.
    """

    version: Annotated[Literal[1], Field(description="Schema version; always 1.")]
    settings: Settings = Settings()
    providers: Annotated[
        dict[ProviderName, ProviderConfig],
        Field(min_length=1, description="Providers by name; steps refer to them."),
    ]
    budgets: Annotated[dict[str, BudgetConfig], Field(description="Spending limits by name.")] = {}
    pools: Annotated[
        dict[str, PoolConfig], Field(description="Pools of deployments by name (pool:NAME).")
    ] = {}
    routes: Annotated[dict[str, RouteConfig], Field(min_length=1, description="Routes by name.")]


# ---------------------------------------------------------------------------
# Loading

_DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "openai_responses": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "ollama": "http://localhost:11434",
    "mock": "mock://local",
    # No default: each Azure resource has its own endpoint (base_url is required).
    "azure_openai": "https://YOUR-RESOURCE.openai.azure.com",
}
_M = TypeVar("_M", bound=BaseModel)
# Kinds whose models cost nothing, so a model may omit its price.
_FREE_KINDS = frozenset({"ollama", "mock"})
# Kinds whose models are free when base_url is this machine (a local OpenAI-compatible
# server: vLLM, llama.cpp, LM Studio), so a model there may omit its price.
_FREE_WHEN_LOCAL = frozenset({"openai", "openai_responses"})
# Kinds that always authenticate when talking to a remote host.
_KEYED_KINDS = frozenset({"openai", "openai_responses", "anthropic", "gemini", "azure_openai"})


def default_base_url(kind: str) -> str:
    """The base_url used for a provider of ``kind`` that sets none."""
    return _DEFAULT_BASE_URLS[kind]


# Settings that existed once: naming one is an error that says why it went.
_REMOVED_SETTINGS: dict[str, str] = {
    "transport": (
        "settings.transport was removed: aiohttp's connection pool (under the httpx client"
        " API) is now the only one. httpcore's pool (transport: httpx) overran deadlines by"
        " seconds with many calls queued on a hung upstream, and stranded a pooled"
        " connection when a call was cancelled while connecting. Delete this line."
    ),
}


@dataclass(frozen=True, slots=True)
class LedgerPlan:
    """The spend ledger a config keeps, resolved. Only a config with budgets has one."""

    backend: Literal["sqlite", "memory"]
    # The SQLite file: absolute, ``~`` expanded, from path_env's variable when set,
    # else from path; a relative one is taken from the YAML file's folder. None: memory.
    path: Path | None


@dataclass(frozen=True, slots=True)
class Loaded:
    """A providers.yaml read and checked: the validated document and what reading
    it found outside the document (keys, disabled providers, compiled templates).
    :func:`router.plan.resolve` turns it into the Plan the router runs from."""

    config: Config
    # The file it came from (absolute); relative paths are resolved against its folder.
    source: Path
    # Each enabled provider's key, by provider name (absent for keyless providers).
    keys: Mapping[str, SecretStr]
    # Providers dropped because their key is missing (optional, or require_env=False).
    disabled: frozenset[str]
    # Each route's compiled templates, by route name.
    templates: Mapping[str, RouteTemplates]
    # Each enabled provider's proxy (router.proxy), None for a direct connection.
    proxies: Mapping[str, Proxy | None]
    # Why each disabled provider is: the environment variable that is not set.
    disabled_because: Mapping[str, str]
    # The spend ledger to keep; None when there are no budgets (nothing is opened).
    ledger: LedgerPlan | None = None
    # Each route's checked output schema (routes with ``output:`` only).
    outputs: Mapping[str, OutputSpec] = field(default_factory=lambda: MappingProxyType({}))
    # Not problems, but worth saying: a ${VAR} without a default whose variable is
    # unset (require_env=False; its value was not checked), a declared template
    # variable that no template uses.
    warnings: tuple[ConfigProblem, ...] = ()
    # Each route's tools (parameters read from their files and checked), by route name.
    tools: Mapping[str, tuple[Tool, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # settings.state.backend redis: the URL read from settings.state.url_env (registered
    # for redaction); None for the local backend, or when the variable is unset and
    # require_env=False.
    state_url: SecretStr | None = None


# Largest output schema file read, bytes.
MAX_SCHEMA_FILE_BYTES = 1024 * 1024


def _schema_file(folder: Path, name: str) -> Any:
    """A route's output schema file under the templates folder: JSON (``.json``) or YAML."""
    base = folder.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise ValueError("the file must be inside settings.templates_dir")
    if path.stat().st_size > MAX_SCHEMA_FILE_BYTES:
        raise ValueError(f"larger than {MAX_SCHEMA_FILE_BYTES} bytes")
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    require_env: bool = True,
    check_paths: bool = False,
) -> Loaded:
    """Read, validate and cross-check a providers.yaml; load its keys; compile its templates.

    The arguments are those of :func:`router.load_config`, which resolves the result,
    and ``check_paths`` (``router validate``): also report a spend ledger file that
    cannot be created or written where the config puts it.

    Returns:
        The validated document with its keys (as ``SecretStr``, registered for
        redaction), disabled providers and compiled templates.

    Raises:
        ConfigError: listing every problem found, each with its file, line and path.
    """
    source = Path(path)
    environ = os.environ if env is None else env
    doc = load_yaml(source, os.fspath(path), Interpolation(environ, _kept_as_written, require_env))
    loader = _Loader(doc, source, environ, require_env)
    loader.check_paths = check_paths
    return loader.run()


def _kept_as_written(path: KeyPath) -> bool:
    """Values never interpolated: template text (Jinja2 text such as ``${{ price }}``
    is the prompt's own) and the names of environment variables."""
    if len(path) == 3 and path[0] == "routes" and path[2] in ("system", "prompt"):
        return True
    if len(path) >= 4 and path[0] == "routes" and path[2] == "tools":
        return True  # a tool's description and JSON Schema, as written
    return bool(path) and path[-1] in ("api_key_env", "path_env", "url_env")


class _Loader:
    """One load: validate, cross-check, resolve keys, compile; collect every problem."""

    def __init__(
        self, doc: YamlDoc, source: Path, env: Mapping[str, str], require_env: bool
    ) -> None:
        self.doc = doc
        self.source = source
        self.env = env
        self.require_env = require_env
        self.problems: list[ConfigProblem] = list(doc.problems)
        # The parts that validated on their own, for cross-checks even when others failed.
        self.settings = Settings()
        self.settings_ok = True
        self.providers: dict[str, ProviderConfig] = {}
        self.routes: dict[str, RouteConfig] = {}
        self.budgets: dict[str, BudgetConfig] = {}
        self.pools: dict[str, PoolConfig] = {}
        # Every name declared, valid or not: a bad provider is not also an unknown one.
        self.provider_names: set[str] = set()
        self.route_names: set[str] = set()
        # Each provider's proxy (None: direct), and why a disabled one is disabled.
        self.proxies: dict[str, Proxy | None] = {}
        self.disabled_because: dict[str, str] = {}
        # Also check that the ledger file can be written (router validate).
        self.check_paths = False

    def run(self) -> Loaded:
        config = self._validate()
        self._check_providers()
        keys, disabled, dropped = self._resolve_env()
        self._check_routes(dropped)
        self._check_budgets()
        templates: dict[str, RouteTemplates] = {}
        outputs: dict[str, OutputSpec] = {}
        template_warnings: list[ConfigProblem] = []
        if self.settings_ok:
            tdir = Path(self.settings.templates_dir)
            label = os.fspath(self.source.parent / tdir) if not tdir.is_absolute() else str(tdir)
            templates, problems, template_warnings = compile_routes(
                self.routes,
                self.source.parent / tdir,
                label,
                self.doc,
                self.settings.max_image_bytes,
            )
            self.problems += problems
            outputs = self._outputs(self.source.parent / tdir)
        tools = self._tools()
        ledger = None if config is None else self._ledger(config.settings.ledger, config.budgets)
        state_url = None if config is None else self._state_url(config.settings.state)
        self._register_header_values()
        problems = self._known(config is not None)
        warnings = [*self.doc.warnings, *template_warnings]
        if warnings:
            _log_warnings(warnings)
        if problems or config is None:
            main = self.doc.file
            problems.sort(key=lambda p: (p.file != main, p.file, p.line or 0, p.col or 0))
            raise ConfigError([self._scrub(p) for p in problems], warnings)
        return Loaded(
            config=config,
            source=self.source.resolve(),
            keys=MappingProxyType(keys),
            disabled=frozenset(disabled),
            templates=MappingProxyType(templates),
            proxies=MappingProxyType(self.proxies),
            disabled_because=MappingProxyType(self.disabled_because),
            ledger=ledger,
            warnings=tuple(warnings),
            tools=MappingProxyType(tools),
            outputs=MappingProxyType(outputs),
            state_url=state_url,
        )

    def _outputs(self, tdir: Path) -> dict[str, OutputSpec]:
        """Each route's ``output`` schema, read (a ``{file: ...}`` under the templates
        folder) and checked as a JSON Schema; a problem names the route's key."""
        out: dict[str, OutputSpec] = {}
        for name, route in self.routes.items():
            raw = route.output
            if raw is None:
                continue
            where: tuple[Any, ...] = ("routes", name, "output")
            file = raw.get("file") if len(raw) == 1 else None
            if isinstance(file, str):
                where = (*where, "file")
                try:
                    raw = _schema_file(tdir, file)
                except (OSError, ValueError, yaml.YAMLError) as exc:
                    self._add(where, f"cannot read output schema {file!r}: {_one_line(exc)}")
                    continue
            try:
                out[name] = output_spec(raw, name)
            except ValueError as exc:
                self._add(where, f"output: {exc}")
        return out

    def _known(self, valid: bool) -> list[ConfigProblem]:
        """The problems, less those about values left unknown by an unset variable
        (require_env=False: each has its warning); all of them when the document did
        not validate, since nothing can be built from it then."""
        unknown = [format_path(p) for p in self.doc.unknown]
        if not unknown or not valid:
            return self.problems
        return [
            p
            for p in self.problems
            if not any(p.path == u or p.path.startswith((u + ".", u + "[")) for u in unknown)
        ]

    def _scrub(self, problem: ConfigProblem) -> ConfigProblem:
        """``problem`` with every value an environment variable supplied replaced by its
        ``${NAME}``: an error never shows an interpolated value."""
        message = problem.message
        values = sorted(self.doc.env_values.items(), key=lambda kv: len(kv[1]), reverse=True)
        for name, value in values:
            if len(value) >= 2:
                message = message.replace(value, f"${{{name}}}")
        return problem if message == problem.message else replace(problem, message=message)

    def _register_header_values(self) -> None:
        """A header value taken from the environment may be a credential of a scheme the
        router does not know: it is redacted like a key from every output."""
        for path in self.doc.interpolated:
            if len(path) == 4 and path[0] == "providers" and path[2] == "headers":
                value: Any = self.doc.data
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                if isinstance(value, str):
                    register_secret(value)

    def _state_url(self, s: StateSettings) -> SecretStr | None:
        """The shared state's URL (backend redis), read from its variable and registered
        for redaction; an unset variable or a URL that is not Redis's is a problem."""
        if s.backend != "redis":
            return None
        where: tuple[str, ...] = ("settings", "state", "url_env")
        if self.doc.value_mark(where) is None:
            where = ("settings", "state")
        value = (self.env.get(s.url_env) or "").strip()
        if not value:
            if self.require_env:
                self._add(
                    where,
                    f"environment variable {s.url_env} is not set (settings.state.backend is"
                    f" redis: set {s.url_env} to the Redis URL, e.g. redis://host:6379/0, or"
                    " remove settings.state to keep state in this process)",
                )
            return None
        parts = urlsplit(value)
        if parts.password or parts.username:
            # Credentials: the URL and its password are redacted like a key everywhere.
            register_secret(value)
            register_secret(parts.password or parts.username or "")
        if parts.scheme not in ("redis", "rediss", "unix"):
            self._add(
                where,
                f"environment variable {s.url_env} must hold a redis://, rediss:// or unix://"
                f" URL, not one with scheme {parts.scheme or '(none)'!r}",
            )
            return None
        return SecretStr(value)

    def _ledger(self, s: LedgerSettings, budgets: Mapping[str, BudgetConfig]) -> LedgerPlan | None:
        """The ledger to keep (None without budgets); with check_paths, report a file
        that cannot be written there, at the line its path came from."""
        if not budgets:
            return None
        if s.backend == "memory":
            return LedgerPlan("memory", None)
        where: tuple[Any, ...] = ("settings", "ledger", "path")
        raw, origin = s.path, ""
        from_env = (self.env.get(s.path_env) or "") if s.path_env is not None else ""
        if from_env.strip():
            where, raw = ("settings", "ledger", "path_env"), from_env
            origin = f" (from environment variable {s.path_env})"
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.source.resolve().parent / path
        plan = LedgerPlan("sqlite", path)
        why = why_unwritable(path) if self.check_paths else None
        if why is None:
            return plan
        at_key = False
        if self.doc.value_mark(where) is None:  # the default path: not written anywhere
            where = ("settings", "ledger") if self.doc.key_mark(("settings", "ledger")) else ()
            where = where or ("budgets",)
            at_key = True
        self._add(
            where,
            f"the spend ledger {path}{origin} cannot be written: {why}. Budgets keep their"
            " spend there: point settings.ledger.path (or path_env) at a writable place"
            " (a relative path is taken from the YAML file's folder), or use backend: memory",
            at_key=at_key,
        )
        return plan

    def _validate(self) -> Config | None:
        data = self._without_removed_settings(self.doc.data)
        errors: list[ConfigProblem] = []
        try:
            config = Config.model_validate(data)
        except ValidationError as exc:
            errors = validation_problems(exc, self.doc, Config)
            config = None
        # Problems are added outside the except block so that no ValidationError
        # (which holds the inputs) is chained to the ConfigError.
        self.problems += errors
        raw_providers = data.get("providers")
        raw_routes = data.get("routes")
        if isinstance(raw_providers, dict):
            self.provider_names = {k for k in raw_providers if isinstance(k, str)}
        if isinstance(raw_routes, dict):
            self.route_names = {k for k in raw_routes if isinstance(k, str)}
        if config is not None:
            self.settings = config.settings
            self.providers = dict(config.providers)
            self.routes = dict(config.routes)
            self.budgets = dict(config.budgets)
            self.pools = dict(config.pools)
            return config
        settings = _part(Settings, data.get("settings") or {})
        self.settings_ok = settings is not None
        if settings is not None:
            self.settings = settings
        self.providers = _parts(ProviderConfig, raw_providers)
        self.routes = _parts(RouteConfig, raw_routes)
        self.budgets = _parts(BudgetConfig, data.get("budgets"))
        self.pools = _parts(PoolConfig, data.get("pools"))
        return None

    def _tools(self) -> dict[str, tuple[Tool, ...]]:
        """Every route's tools: parameters read from their files, each a JSON Schema
        (Draft 2020-12) of an object; names unique; tool_choice one of them (or auto,
        none, required). Problems are reported at the YAML path of the value."""
        tdir = Path(self.settings.templates_dir)
        base = tdir if tdir.is_absolute() else self.source.parent / tdir
        out: dict[str, tuple[Tool, ...]] = {}
        for name, route in self.routes.items():
            where = ("routes", name)
            tools: list[Tool] = []
            seen: set[str] = set()
            for i, t in enumerate(route.tools or ()):
                at = (*where, "tools", i)
                if t.name in seen:
                    self._add((*at, "name"), f"tool {t.name!r} is declared more than once")
                seen.add(t.name)
                schema = self._tool_schema(t.parameters, base, (*at, "parameters"))
                if schema is None:
                    continue
                problems = schema_problems(schema)
                for problem in problems:
                    self._add((*at, "parameters"), f"tool {t.name!r}: {problem}")
                if not problems:
                    tools.append(Tool(t.name, t.description, schema))
            choice = route.tool_choice
            names = [t.name for t in route.tools or ()]
            if choice is not None and choice not in TOOL_CHOICES and choice not in names:
                hint = did_you_mean(choice, [*TOOL_CHOICES, *names])
                self._add(
                    (*where, "tool_choice"),
                    f"tool_choice {choice!r} is not auto, none, required or one of the"
                    f" route's tools ({', '.join(names) or 'it declares none'}){hint}",
                )
            out[name] = tuple(tools)
        return out

    def _tool_schema(
        self, parameters: dict[str, Any], base: Path, at: tuple[Any, ...]
    ) -> dict[str, Any] | None:
        """A tool's parameters: as written, or read from ``{file: ...}`` under ``base``
        (JSON, or YAML for .yaml/.yml). None after reporting a file that cannot be read."""
        if set(parameters) != {"file"}:
            return parameters
        file = parameters["file"]
        if not isinstance(file, str) or not file:
            self._add((*at, "file"), "file must be a file name under templates_dir")
            return None
        path = (base / file).resolve()
        if not path.is_relative_to(base.resolve()):
            self._add((*at, "file"), f"{file!r} is outside templates_dir {os.fspath(base)}")
            return None
        try:
            text = read_config_file(os.fspath(path)).decode("utf-8")
            yaml_file = path.suffix in (".yaml", ".yml")
            loaded = yaml.safe_load(text) if yaml_file else json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            what = type(exc).__name__ if not isinstance(exc, OSError) else exc.strerror
            self._add((*at, "file"), f"cannot read the tool's schema {os.fspath(path)}: {what}")
            return None
        if not isinstance(loaded, dict):
            self._add((*at, "file"), f"{os.fspath(path)} must hold a JSON Schema object")
            return None
        return loaded

    def _add(self, path: tuple[Any, ...], message: str, *, at_key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, at_key=at_key))

    def _without_removed_settings(self, data: dict[str, Any]) -> dict[str, Any]:
        """Report each removed setting (why it went) and validate the rest without it."""
        settings = data.get("settings")
        if not isinstance(settings, dict) or not _REMOVED_SETTINGS.keys() & settings.keys():
            return data
        for key in _REMOVED_SETTINGS.keys() & settings.keys():
            self._add(("settings", key), _REMOVED_SETTINGS[key], at_key=True)
        kept = {k: v for k, v in settings.items() if k not in _REMOVED_SETTINGS}
        return {**data, "settings": kept}

    def _check_providers(self) -> None:
        for name, p in self.providers.items():
            where = ("providers", name)
            host = self._check_url(name, p)
            local = host is not None and is_loopback(host)
            if p.kind in _KEYED_KINDS and not local and p.api_key_env is None:
                self._add(
                    where,
                    f"kind {p.kind} on a non-local host needs api_key_env "
                    "(the NAME of the env var holding the key)",
                    at_key=True,
                )
            if p.mock is not None and p.kind != "mock":
                self._add((*where, "mock"), "a mock: section is only for kind: mock", at_key=True)
            self._check_azure_keys(name, p)
            if p.proxy is not None and p.proxy_url_env is not None:
                self._add(
                    (*where, "proxy"),
                    "set proxy or proxy_url_env, not both (proxy_url_env names the proxy;"
                    " proxy: env or none chooses the standard variables or none)",
                    at_key=True,
                )
            if p.kind == "mock" and (p.proxy is not None or p.proxy_url_env is not None):
                self._add(
                    (*where, "proxy" if p.proxy is not None else "proxy_url_env"),
                    "a mock provider never uses the network: it has no proxy",
                    at_key=True,
                )
            self._check_server_tools(name, p)
            if p.kind in _FREE_KINDS or (local and p.kind in _FREE_WHEN_LOCAL):
                continue
            for model, m in p.models.items():
                if m.price is None:
                    on = f"on non-loopback host {host!r} " if host is not None else ""
                    self._add(
                        (*where, "models", model),
                        f"price is required for kind {p.kind} {on}(free without a price: "
                        "ollama and mock models, and openai models on a loopback base_url)",
                        at_key=True,
                    )

    def _check_server_tools(self, name: str, p: ProviderConfig) -> None:
        """Server tools only on kind openai_responses, each with a per-call price."""
        where = ("providers", name)
        places: list[tuple[tuple[Any, ...], ServerToolsAt]] = [(where, p)]
        places += [((*where, "models", model), m) for model, m in p.models.items()]
        if p.kind != "openai_responses":
            for at, holder in places:
                for key in ("server_tools", "max_tool_calls"):
                    if getattr(holder, key) is not None:
                        self._add(
                            (*at, key),
                            f"{key} is only for kind openai_responses (the Responses API);"
                            f" provider {name!r} is kind {p.kind}",
                            at_key=True,
                        )
            return
        for model, m in p.models.items():
            tools = m.server_tools if m.server_tools is not None else p.server_tools
            self._check_per_call(name, model, m, tools or [], "")

    def _check_per_call(
        self, provider: str, model: str, m: ModelConfig, tools: list[Any], via: str
    ) -> None:
        """A model given server tools has a per-call price for each (when it has a price)."""
        if m.price is None:
            return  # free (a loopback server); an unpriced remote model is reported already
        for tool in tools:
            if tool.type not in m.price.per_call:
                self._add(
                    ("providers", provider, "models", model, "price"),
                    f"price.per_call.{tool.type} is required: the model is given the server"
                    f" tool {tool.type}{via}, which the provider bills per call (USD per call,"
                    f' e.g. per_call: {{{tool.type}: "0.01"}})',
                    at_key=True,
                )

    def _check_azure_keys(self, name: str, p: ProviderConfig) -> None:
        """api_version, auth and models' deployment: only for kind azure_openai."""
        if p.kind == "azure_openai":
            return
        where = ("providers", name)
        for key in ("api_version", "auth"):
            if getattr(p, key) is not None:
                self._add((*where, key), f"{key} is only for kind: azure_openai", at_key=True)
        for model, m in p.models.items():
            if m.deployment is not None:
                self._add(
                    (*where, "models", model, "deployment"),
                    "deployment is only for kind: azure_openai",
                    at_key=True,
                )

    def _check_url(self, name: str, p: ProviderConfig) -> str | None:
        """Check base_url; return its host (None when it is not usable)."""
        where = ("providers", name, "base_url")
        if p.kind == "azure_openai" and p.base_url is None:
            self._add(
                ("providers", name),
                "kind azure_openai needs base_url: the resource endpoint,"
                " e.g. https://YOUR-RESOURCE.openai.azure.com",
                at_key=True,
            )
            return None
        url = p.base_url or default_base_url(p.kind)
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError as exc:
            self._add(where, f"invalid URL: {exc}")
            return None
        if p.kind == "mock":
            if parts.scheme != "mock":
                self._add(where, "a mock provider never uses the network; use mock://... or omit")
            return "localhost"
        if parts.scheme not in ("http", "https") or not host:
            self._add(where, "must be an http(s) URL with a host, e.g. https://api.example.com/v1")
            return None
        if parts.username or parts.password:
            self._add(where, "must not contain credentials; keys come from api_key_env")
        if parts.query or parts.fragment:
            self._add(where, "must not contain a query or fragment")
        if p.kind == "azure_openai":
            self._check_azure_path(where, parts.path)
        if parts.scheme == "http" and not is_loopback(host) and not p.allow_http:
            self._add(
                where,
                f"plain http:// to non-local host {host!r} is refused: use https://, "
                "or set allow_http: true on this provider",
            )
        return host

    def _check_azure_path(self, where: tuple[str, ...], path: str) -> None:
        """An Azure base_url is the resource endpoint: the adapter appends /openai/..."""
        lowered = path.lower().rstrip("/") + "/"
        if "/openai/" in lowered:
            root = path[: lowered.find("/openai/")]
            self._add(
                where,
                f"base_url has an Azure API path ({path!r}), but the azure_openai adapter"
                " appends /openai/deployments/<deployment>/chat/completions (or /openai/v1/...)"
                f" itself; base_url is the resource endpoint{' with path ' + root if root else ''},"
                " e.g. https://YOUR-RESOURCE.openai.azure.com",
            )

    def _resolve_env(self) -> tuple[dict[str, SecretStr], set[str], set[str]]:
        """Read keys and proxies. Returns (keys, disabled providers, providers that
        production drops too); each provider's proxy goes to ``self.proxies``."""
        log = get_logger("router.config")
        keys: dict[str, SecretStr] = {}
        disabled: set[str] = set()
        dropped: set[str] = set()
        for name, p in self.providers.items():
            missing: list[tuple[str, str]] = []  # (field, variable) of each unset variable
            key: SecretStr | None = None
            var = p.api_key_env
            if var is not None:
                value = (self.env.get(var) or "").strip()
                if value:
                    register_secret(value)
                    bad = _bad_key_character(value)
                    if bad is not None:  # never quote the value: it is the key
                        self._add(
                            ("providers", name, "api_key_env"),
                            f"environment variable {var} holds {bad}, which an API key never"
                            f" has (provider {name!r}): set it to the key alone, on one line",
                        )
                        continue
                    key = SecretStr(value)
                else:
                    missing.append(("api_key_env", var))
            proxy_value = None
            if p.proxy_url_env is not None:
                proxy_value = (self.env.get(p.proxy_url_env) or "").strip() or None
                if proxy_value is None:
                    missing.append(("proxy_url_env", p.proxy_url_env))
            if missing:
                if p.optional or not self.require_env:
                    disabled.add(name)
                    self.disabled_because[name] = missing[0][1]
                    if p.optional:
                        dropped.add(name)
                    log.warning(
                        "provider_disabled",
                        provider=name,
                        env_var=missing[0][1],
                        reason="key not set" if missing[0][0] == "api_key_env" else "proxy not set",
                    )
                else:
                    for field, unset in missing:
                        self._missing_env(name, field, unset)
                continue
            if key is not None:
                keys[name] = key
            self.proxies[name] = self._proxy(name, p, proxy_value)
        if self.require_env:
            self._missing_keys_of_invalid_providers()
        return keys, disabled, dropped

    def _proxy(self, name: str, p: ProviderConfig, url: str | None) -> Proxy | None:
        """The provider's proxy (router.proxy has the rules); a bad one is a problem."""
        if p.kind == "mock" or p.proxy == "none":
            return None
        try:
            if url is not None:
                assert p.proxy_url_env is not None  # url was read from it
                return parse_proxy(url, p.proxy_url_env)
            if p.proxy == "env" or self.settings.trust_env_proxies:
                return choose(p.base_url or default_base_url(p.kind), self.env)
        except ProxyURLError as exc:
            if url is not None:
                self._add(("providers", name, "proxy_url_env"), f"{exc} (provider {name!r})")
            else:
                self._add(
                    ("providers", name),
                    f"{exc} (provider {name!r}): fix the variable, or set proxy: none on this"
                    " provider (settings.trust_env_proxies: false for every provider)",
                    at_key=True,
                )
        return None

    def _missing_env(self, provider: str, field: str, var: str) -> None:
        self._add(
            ("providers", provider, field),
            f"environment variable {var} is not set (provider {provider!r} needs it; "
            "set it, or mark the provider optional: true)",
        )

    def _missing_keys_of_invalid_providers(self) -> None:
        """Report unset key variables of providers with other problems too (all at once)."""
        raw = self.doc.data.get("providers")
        if not isinstance(raw, dict):
            return
        for name, body in raw.items():
            if name in self.providers or not isinstance(name, str) or not isinstance(body, dict):
                continue
            var = body.get("api_key_env")
            if (
                isinstance(var, str)
                and _ENV_NAME.fullmatch(var)
                and not _looks_like_key(var)
                and body.get("optional") is not True
                and not (self.env.get(var) or "").strip()
            ):
                self._missing_env(name, "api_key_env", var)

    def _check_target(self, where: tuple[Any, ...], prov: str, model: str) -> bool:
        """Report a ``provider/model`` naming an unknown provider or model; True when known."""
        if prov not in self.provider_names:
            self._add(where, f"unknown provider {prov!r}" + did_you_mean(prov, self.provider_names))
            return False
        p = self.providers.get(prov)
        if p is None:  # declared but invalid: reported already
            return False
        if model not in p.models:
            self._add(
                where,
                f"model {model!r} is not declared under "
                f"{format_path(('providers', prov, 'models'))}" + did_you_mean(model, p.models),
            )
            return False
        return True

    def _check_pools(self, dropped: set[str]) -> dict[str, bool | None]:
        """Every pool member names a declared provider and model, at most once. Per
        pool: None when a member is wrong, else whether some member's provider is enabled."""
        usable: dict[str, bool | None] = {}
        for pname, pool in self.pools.items():
            seen: set[str] = set()
            ok = True
            for i, member in enumerate(pool.members):
                where = ("pools", pname, "members", i, "use")
                if member.use in seen:
                    self._add(where, f"{member.use!r} is already a member of pool {pname!r}")
                seen.add(member.use)
                prov, _, model = member.use.partition("/")
                ok = self._check_target(where, prov, model) and ok
            enabled = any(m.use.partition("/")[0] not in dropped for m in pool.members)
            usable[pname] = enabled if ok else None
        return usable

    def _check_routes(self, dropped: set[str]) -> None:
        pools = self._check_pools(dropped)
        for rname, route in self.routes.items():
            raw = self.doc.data["routes"][rname]["fallback"]
            usable = False
            bad = False  # some step names an unknown provider or model (reported below)
            for i, step in enumerate(route.fallback):
                where: tuple[Any, ...] = ("routes", rname, "fallback", i)
                if isinstance(raw[i], dict):
                    where = (*where, "model")
                pool = step.pool
                if pool is not None:
                    known = pools.get(pool)
                    if known is None:
                        bad = True
                        if pool not in self.pools:
                            self._add(
                                where, f"unknown pool {pool!r}" + did_you_mean(pool, self.pools)
                            )
                    usable = usable or bool(known)
                    continue
                prov = step.provider_name
                if not self._check_target(where, prov, step.model_name):
                    bad = True
                    continue
                if route.server_tools is not None or route.max_tool_calls is not None:
                    self._check_route_step_tools(rname, route, where, self.providers[prov], step)
                if prov not in dropped:
                    usable = True
            if route.prompt_cache.system and route.system is None:
                self._add(
                    ("routes", rname, "prompt_cache", "system"),
                    "prompt_cache.system is true but the route has no system template to cache",
                )
            if not usable and not bad:
                names = ", ".join(
                    f"{s.provider_name} ({self.disabled_because[s.provider_name]} not set)"
                    if s.pool is None
                    else f"pool {s.pool} (every member's provider)"
                    for s in route.fallback
                    if s.pool is not None or s.provider_name in dropped
                )
                self._add(
                    ("routes", rname, "fallback"),
                    f"no usable step: every provider in the chain is disabled: {names}",
                    at_key=True,
                )

    def _check_route_step_tools(
        self,
        rname: str,
        route: RouteConfig,
        where: tuple[Any, ...],
        p: ProviderConfig,
        step: StepConfig,
    ) -> None:
        """A route's server tools reach every step: each must speak the Responses API
        and price the tools' calls."""
        if p.kind != "openai_responses":
            key = "server_tools" if route.server_tools is not None else "max_tool_calls"
            self._add(
                where,
                f"route {rname!r} sets {key}, but step {step.model!r} is kind {p.kind}, which"
                " has no server tools (only openai_responses has); give the tools to that"
                " model under providers instead",
            )
            return
        self._check_per_call(
            step.provider_name,
            step.model_name,
            p.models[step.model_name],
            route.server_tools or [],
            f" by route {rname!r}",
        )

    def _check_budgets(self) -> None:
        for bname, b in self.budgets.items():
            where = ("budgets", bname)
            if b.provider is not None and b.route is not None:
                self._add(where, "scope a budget to a provider or a route, not both", at_key=True)
            if b.provider is not None and b.provider not in self.provider_names:
                self._add(
                    (*where, "provider"),
                    f"unknown provider {b.provider!r}"
                    + did_you_mean(b.provider, self.provider_names),
                )
            if b.route is not None and b.route not in self.route_names:
                self._add(
                    (*where, "route"),
                    f"unknown route {b.route!r}" + did_you_mean(b.route, self.route_names),
                )


def _log_warnings(warnings: list[ConfigProblem]) -> None:
    log = get_logger("router.config")
    for w in warnings:
        log.warning("config_warning", problem=str(w))


def _part(model: type[_M], raw: Any) -> _M | None:
    """``raw`` validated as ``model``, or None (its errors were reported by the full pass)."""
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _parts(model: type[_M], raw: Any) -> dict[str, _M]:
    """Validate each entry of a mapping on its own; keep those that pass."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, _M] = {}
    for name, value in raw.items():
        if isinstance(name, str):
            part = _part(model, value)
            if part is not None:
                out[name] = part
    return out


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of providers.yaml (committed as docs/providers.schema.json)."""
    schema = Config.model_json_schema()
    # Steps may also be written as bare "provider/model" strings (converted on load).
    fallback = schema["$defs"]["RouteConfig"]["properties"]["fallback"]
    fallback["items"] = {
        "anyOf": [
            {"type": "string", "pattern": "^[^/]+/.+$", "description": "provider/model"},
            {"$ref": "#/$defs/StepConfig"},
        ]
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "providers.yaml",
        "description": "Configuration of the LLM router (see docs/config.md).",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
