"""Wire-protocol adapters: pure translation between the router's types and each API.

One adapter per wire protocol, keyed by the ``kind`` a provider declares in
providers.yaml; many providers share one (DeepSeek, xAI, Groq... are ``openai``; OpenAI's and
xAI's Responses API is ``openai_responses``).
"""

from __future__ import annotations

from collections.abc import Mapping

from router.providers.anthropic import AnthropicAdapter
from router.providers.azure_openai import AzureOpenAIAdapter, AzureSettings
from router.providers.base import Adapter
from router.providers.gemini import GeminiAdapter
from router.providers.mock import MockAdapter
from router.providers.ollama import OllamaAdapter
from router.providers.openai import OpenAIAdapter
from router.providers.openai_responses import OpenAIResponsesAdapter

__all__ = ["ADAPTERS", "Adapter", "build_adapter"]

# Adapter class by provider kind (config.ProviderKind).
ADAPTERS: dict[str, type[Adapter]] = {
    "anthropic": AnthropicAdapter,
    "azure_openai": AzureOpenAIAdapter,
    "gemini": GeminiAdapter,
    "mock": MockAdapter,
    "ollama": OllamaAdapter,
    "openai": OpenAIAdapter,
    "openai_responses": OpenAIResponsesAdapter,
}


def build_adapter(
    kind: str,
    provider: str,
    api_key: str | None,
    headers: Mapping[str, str] | None = None,
    azure: AzureSettings | None = None,
) -> Adapter:
    """The adapter for a provider of ``kind`` (a key of :data:`ADAPTERS`); ``azure``
    holds a ``kind: azure_openai`` provider's settings (its defaults when None)."""
    if kind == "azure_openai":
        return AzureOpenAIAdapter(provider, api_key, headers, azure)
    try:
        cls = ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown provider kind {kind!r}; known: {sorted(ADAPTERS)}") from None
    return cls(provider, api_key, headers)
