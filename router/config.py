"""The schema of providers.yaml (pydantic v2) and ``load_config``.

Every model forbids unknown keys. Defaults here are the documented defaults
(docs/config.md is tested against this schema, so the two cannot drift).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

ProviderKind = Literal["openai", "anthropic", "ollama", "mock"]
ErrorKind = Literal[
    "rate_limit",
    "server",
    "timeout",
    "connection",
    "auth",
    "model_not_found",
    "bad_request",
    "context_length",
    "content_filter",
    "invalid_response",
]

PositiveSeconds = Annotated[float, Field(gt=0)]
Usd = Annotated[Decimal, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backoff(_Strict):
    """Jittered exponential backoff between retries of one step (full jitter)."""

    initial_s: Annotated[float, Field(ge=0, description="First backoff ceiling, seconds.")] = 0.2
    max_s: Annotated[float, Field(ge=0, description="Largest backoff ceiling, seconds.")] = 2.0
    multiplier: Annotated[float, Field(ge=1, description="Ceiling growth per retry.")] = 2.0


class Cooldown(_Strict):
    """When a provider is taken out of rotation, and for how long."""

    failures: Annotated[
        int, Field(ge=1, description="Consecutive retryable failures that start a cooldown.")
    ] = 3
    seconds: Annotated[float, Field(ge=0, description="Length of a cooldown, seconds.")] = 30.0


class LedgerSettings(_Strict):
    """Where settled spend is kept."""

    backend: Annotated[
        Literal["sqlite", "memory"],
        Field(description="sqlite persists across restarts; memory forgets on exit."),
    ] = "sqlite"
    path: Annotated[
        str, Field(description="SQLite file, relative to the YAML file's folder.")
    ] = "spend.sqlite3"


class LogSettings(_Strict):
    """How the CLI (and apps that call router.logging.configure()) log."""

    format: Annotated[Literal["console", "json"], Field(description="Log renderer.")] = "console"
    level: Annotated[
        Literal["debug", "info", "warning", "error"], Field(description="Minimum level.")
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
        float,
        Field(
            ge=0,
            description=(
                "Least time an attempt is given when the deadline is shared among the "
                "remaining steps (see docs/routing.md)."
            ),
        ),
    ] = 1.0
    max_tokens: Annotated[
        int, Field(ge=1, description="Output token cap when a route sets none.")
    ] = 1024
    backoff: Backoff = Backoff()
    cooldown: Cooldown = Cooldown()
    fallback_on: Annotated[
        list[ErrorKind] | None,
        Field(description="Error kinds that move to the next step; null means all."),
    ] = None
    templates_dir: Annotated[
        str, Field(description="Template folder, relative to the YAML file's folder.")
    ] = "templates"
    max_response_bytes: Annotated[
        int, Field(ge=1024, description="Largest response body read, bytes.")
    ] = 8 * 1024 * 1024
    health_ttl_s: Annotated[
        float, Field(ge=0, description="How long a health result is cached, seconds.")
    ] = 60.0
    ledger: LedgerSettings = LedgerSettings()
    log: LogSettings = LogSettings()


class Limits(_Strict):
    """Per-provider admission limits; null means unlimited."""

    requests_per_minute: Annotated[int | None, Field(ge=1)] = None
    tokens_per_minute: Annotated[int | None, Field(ge=1)] = None
    max_concurrency: Annotated[int | None, Field(ge=1)] = None


class Price(_Strict):
    """USD per million tokens. Cached input and cache writes default to the input price."""

    input_per_mtok: Usd
    output_per_mtok: Usd
    cached_input_per_mtok: Usd | None = None
    cache_write_per_mtok: Usd | None = None


FREE = Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0))


class ModelConfig(_Strict):
    """One model a provider serves."""

    price: Annotated[
        Price | None,
        Field(description="Required for openai/anthropic kinds; free (0) for ollama and mock."),
    ] = None
    context_window: Annotated[int | None, Field(ge=1)] = None
    max_output_tokens: Annotated[int | None, Field(ge=1)] = None
    extra: Annotated[
        dict[str, Any], Field(description="Body fields sent with every request to this model.")
    ] = {}


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
    latency_s: Annotated[float, Field(ge=0, description="Delay before each answer.")] = 0.0
    failures: Annotated[
        list[int],
        Field(
            description=(
                "HTTP statuses returned by the first requests, in order, before answers succeed."
            )
        ),
    ] = []


class ProviderConfig(_Strict):
    """One provider endpoint."""

    kind: ProviderKind
    base_url: Annotated[
        str | None, Field(description="API root; defaults per kind (see docs/config.md).")
    ] = None
    api_key_env: Annotated[
        str | None, Field(description="NAME of the env var holding the key (never the key).")
    ] = None
    optional: Annotated[
        bool, Field(description="If the key is missing: true disables the provider, false fails.")
    ] = False
    allow_http: Annotated[
        bool, Field(description="Allow plain http:// to a non-loopback host.")
    ] = False
    timeout_s: Annotated[PositiveSeconds, Field(description="Cap on one attempt.")] = 60.0
    connect_timeout_s: Annotated[PositiveSeconds, Field(description="TCP+TLS connect cap.")] = 5.0
    headers: Annotated[dict[str, str], Field(description="Extra non-secret headers.")] = {}
    limits: Limits = Limits()
    extra: Annotated[
        dict[str, Any], Field(description="Body fields sent with every request.")
    ] = {}
    models: Annotated[dict[str, ModelConfig], Field(min_length=1)]
    mock: Annotated[
        MockSettings | None, Field(description="Only for kind: mock.")
    ] = None


class BudgetConfig(_Strict):
    """A spending limit over a UTC period, optionally scoped to a provider or route."""

    limit_usd: Usd
    period: Literal["day", "month", "total"] = "day"
    provider: str | None = None
    route: str | None = None


class TemplateFile(_Strict):
    """A template kept in a file under settings.templates_dir."""

    file: str


TemplateSource = str | TemplateFile


class StepConfig(_Strict):
    """One step of a fallback chain: ``provider/model`` plus overrides."""

    model: Annotated[str, Field(description="provider/model; split at the first '/'.")]
    retries: Annotated[int | None, Field(ge=0, le=10)] = None
    timeout_s: Annotated[
        PositiveSeconds | None, Field(description="Cap on each attempt of this step.")
    ] = None
    params: Annotated[
        dict[str, Any], Field(description="Body fields for this step only.")
    ] = {}

    @field_validator("model")
    @classmethod
    def _has_slash(cls, v: str) -> str:
        provider, sep, model = v.partition("/")
        if not sep or not provider or not model:
            raise ValueError(f"{v!r} must be 'provider/model'")
        return v

    @property
    def provider_name(self) -> str:
        return self.model.partition("/")[0]

    @property
    def model_name(self) -> str:
        return self.model.partition("/")[2]


VarType = str  # "str" | "int" | "float" | "bool" | "dict" | "list" | "list[T]"


class RouteConfig(_Strict):
    """A named route: templates, call parameters and the fallback chain."""

    system: TemplateSource | None = None
    prompt: TemplateSource
    vars: Annotated[
        dict[str, VarType] | None,
        Field(description="Declared variables and types; null means undeclared (not checked)."),
    ] = None
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    deadline_s: PositiveSeconds | None = None
    retries: Annotated[int | None, Field(ge=0, le=10)] = None
    max_cost_usd: Usd | None = None
    fallback_on: list[ErrorKind] | None = None
    fallback: Annotated[list[StepConfig], Field(min_length=1)]

    @field_validator("fallback", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"model": s} if isinstance(s, str) else s for s in v]
        return v


class Config(_Strict):
    """A loaded providers.yaml. Build it with :func:`load_config`."""

    version: Literal[1]
    settings: Settings = Settings()
    providers: dict[str, ProviderConfig]
    budgets: dict[str, BudgetConfig] = {}
    routes: dict[str, RouteConfig]

    # Set by load_config, not read from YAML:
    # the file it came from (None when built in code),
    _source: Path | None = PrivateAttr(default=None)
    # each enabled provider's key, by provider name (absent for keyless providers),
    _keys: dict[str, SecretStr] = PrivateAttr(default_factory=dict)
    # providers dropped because optional and their key is missing.
    _disabled: set[str] = PrivateAttr(default_factory=set)
