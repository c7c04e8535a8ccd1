"""Wire-protocol adapters: pure translation between the router's types and each API.

One adapter per wire protocol, keyed by the ``kind`` a provider declares in
providers.yaml; many providers share one (DeepSeek, xAI, Groq... are ``openai``).
"""

from __future__ import annotations

from collections.abc import Mapping

from router.providers.anthropic import AnthropicAdapter
from router.providers.base import Adapter
from router.providers.gemini import GeminiAdapter
from router.providers.mock import MockAdapter
from router.providers.ollama import OllamaAdapter
from router.providers.openai import OpenAIAdapter

__all__ = ["ADAPTERS", "Adapter", "build_adapter"]

# Adapter class by provider kind (config.ProviderKind).
ADAPTERS: dict[str, type[Adapter]] = {
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "mock": MockAdapter,
    "ollama": OllamaAdapter,
    "openai": OpenAIAdapter,
}


def build_adapter(
    kind: str, provider: str, api_key: str | None, headers: Mapping[str, str] | None = None
) -> Adapter:
    """The adapter for a provider of ``kind`` (a key of :data:`ADAPTERS`)."""
    try:
        cls = ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown provider kind {kind!r}; known: {sorted(ADAPTERS)}") from None
    return cls(provider, api_key, headers)
