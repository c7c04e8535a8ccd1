"""A declarative LLM router: one providers.yaml decides providers, keys, prices,
budgets and fallback chains; apps call ``await router.complete(route, vars)``.

``load_config(path)`` reads, validates and resolves the file into a frozen ``Plan``;
``Router(plan)`` (or ``Router.from_yaml(path)``) runs from it.

Everything importable from here is the public API; other modules are internal.
"""

from __future__ import annotations

from router.budget import BudgetStatus, LedgerStatus, Refusal
from router.config import (
    Backoff,
    BudgetConfig,
    Config,
    Cooldown,
    LedgerSettings,
    Limits,
    MockSettings,
    Price,
    PromptCache,
    RouteConfig,
    Settings,
)
from router.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigError,
    ConfigProblem,
    ContentFilterError,
    ContextLengthError,
    DeadlineExceededError,
    EndpointNotFoundError,
    GoneError,
    InvalidResponseError,
    LedgerError,
    ModelNotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    RouterClosedError,
    RouterError,
    ServerError,
    StreamInterruptedError,
    TemplateError,
)
from router.observe import CallRecord, Observer
from router.plan import ChainStep, ModelPlan, Plan, ProviderPlan, RoutePlan, StepPlan, load_config
from router.router import ReloadReport, Router
from router.state import LocalState, ProviderHandle, State, Ticket
from router.streaming import RouteStream
from router.templates import RouteTemplates
from router.types import (
    Attempt,
    Completion,
    HealthReport,
    Message,
    ProviderState,
    Skip,
    SkipKind,
    StreamEvent,
    Usage,
)

__all__ = [
    "AllProvidersFailedError",
    "Attempt",
    "AuthenticationError",
    "Backoff",
    "BadRequestError",
    "BudgetConfig",
    "BudgetExceededError",
    "BudgetStatus",
    "CallRecord",
    "ChainStep",
    "Completion",
    # The schema of providers.yaml, under its one meaning: not an alias of Plan (what
    # load_config returns), so that isinstance() checks and type hints cannot lie.
    "Config",
    "ConfigError",
    "ConfigProblem",
    "ContentFilterError",
    "ContextLengthError",
    "Cooldown",
    "DeadlineExceededError",
    "EndpointNotFoundError",
    "GoneError",
    "HealthReport",
    "InvalidResponseError",
    "LedgerError",
    "LedgerSettings",
    "LedgerStatus",
    "Limits",
    "LocalState",
    "Message",
    "MockSettings",
    "ModelNotFoundError",
    "ModelPlan",
    "Observer",
    "Plan",
    "Price",
    "PromptCache",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHandle",
    "ProviderPlan",
    "ProviderState",
    "ProviderTimeoutError",
    "RateLimitError",
    "Refusal",
    "ReloadReport",
    "RouteConfig",
    "RoutePlan",
    "RouteStream",
    "RouteTemplates",
    "Router",
    "RouterClosedError",
    "RouterError",
    "ServerError",
    "Settings",
    "Skip",
    "SkipKind",
    "State",
    "StepPlan",
    "StreamEvent",
    "StreamInterruptedError",
    "TemplateError",
    "Ticket",
    "Usage",
    "load_config",
]
