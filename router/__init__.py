"""A declarative LLM router: one providers.yaml decides providers, keys, prices,
budgets and fallback chains; apps call ``await router.complete(route, vars)``.

Everything importable from here is the public API; other modules are internal.
"""

from __future__ import annotations

from router.budget import BudgetStatus, LedgerStatus
from router.config import Config, Price, load_config
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
from router.router import ReloadReport, Router
from router.streaming import RouteStream
from router.types import (
    Attempt,
    Completion,
    HealthReport,
    Message,
    ProviderState,
    SkipKind,
    StreamEvent,
    Usage,
)

__all__ = [
    "AllProvidersFailedError",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "BudgetStatus",
    "CallRecord",
    "Completion",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "ContentFilterError",
    "ContextLengthError",
    "DeadlineExceededError",
    "HealthReport",
    "InvalidResponseError",
    "LedgerError",
    "LedgerStatus",
    "Message",
    "ModelNotFoundError",
    "Observer",
    "Price",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderState",
    "ProviderTimeoutError",
    "RateLimitError",
    "ReloadReport",
    "RouteStream",
    "Router",
    "RouterClosedError",
    "RouterError",
    "ServerError",
    "SkipKind",
    "StreamEvent",
    "StreamInterruptedError",
    "TemplateError",
    "Usage",
    "load_config",
]
