"""Advice on a config that loads: settings that are valid but will not work as meant.

``router validate`` prints each as a warning at its YAML line (the exit code stays
0). Every check reads the document alone; nothing is sent anywhere.

- a ``base_url`` that ends in an endpoint path (``/chat/completions``,
  ``/v1/messages``, ``/api/chat``...): the adapter appends its own path, so every
  request would go to ``.../chat/completions/chat/completions`` and come back 404;
- a ``base_url`` whose path does not fit its kind: an OpenAI-compatible API on a
  well-known host without its root path (``https://api.x.ai`` for
  ``https://api.x.ai/v1``), an anthropic or ollama base_url ending in ``/v1``;
- a request field a provider has retired: ``search_parameters`` (xAI Live Search)
  sent to ``api.x.ai``, which answers every such request with 410 Gone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from router.config import Config, ProviderConfig, default_base_url
from router.errors import ConfigProblem
from router.yamlsrc import KeyPath, YamlDoc

__all__ = ["ENDPOINT_SUFFIXES", "OPENAI_ROOTS", "config_advice"]

# Paths an adapter appends to base_url (or that name one endpoint of an API); a
# base_url ending in one was copied from an endpoint's URL. Longest first.
ENDPOINT_SUFFIXES = (
    "/chat/completions",
    "/v1/messages",
    "/api/generate",
    "/completions",
    "/embeddings",
    "/responses",
    "/api/chat",
    "/messages",
    "/models",
)

# Well-known hosts of OpenAI-compatible APIs -> the path their API root is at.
OPENAI_ROOTS: Mapping[str, str] = {
    "api.openai.com": "/v1",
    "api.x.ai": "/v1",
    "api.groq.com": "/openai/v1",
    "openrouter.ai": "/api/v1",
    "api.together.xyz": "/v1",
    "api.mistral.ai": "/v1",
    "api.fireworks.ai": "/inference/v1",
}

# The Gemini API's host: its native API is under /v1beta (or /v1).
GEMINI_HOST = "generativelanguage.googleapis.com"

# What each kind appends to base_url for a chat request, and a base_url to copy.
_CHAT_PATHS = {
    "openai": "/chat/completions",
    "openai_responses": "/responses",
    "anthropic": "/v1/messages",
    "gemini": "/models/<model>:generateContent",
    "ollama": "/api/chat",
}
# Kinds whose base_url is an OpenAI-style API root (``.../v1``).
_OPENAI_STYLE = frozenset({"openai", "openai_responses"})

# Request fields providers have retired: (host, field) -> why and what instead.
_RETIRED_FIELDS: Mapping[tuple[str, str], str] = {
    ("api.x.ai", "search_parameters"): (
        "xAI retired Live Search: every request carrying search_parameters is refused"
        " with 410 Gone. Remove it (xAI's search now lives in the server tools of its"
        " Responses API: kind openai_responses, server_tools x_search / web_search)"
    ),
}


def config_advice(config: Config, doc: YamlDoc) -> list[ConfigProblem]:
    """Every warning for ``config`` (read from ``doc``), in document order."""
    out: list[ConfigProblem] = []
    for name, provider in config.providers.items():
        where: KeyPath = ("providers", name, "base_url")
        for message in _base_url_advice(provider):
            out.append(doc.problem(where, message))
        host = _host(provider)
        for path, field in _extra_fields(name, provider, config):
            why = _RETIRED_FIELDS.get((host, field))
            if why is not None:
                out.append(doc.problem((*path, field), why, at_key=True))
    return out


def _host(provider: ProviderConfig) -> str:
    url = provider.base_url or default_base_url(provider.kind)
    return (urlsplit(url).hostname or "").lower()


def _base_url_advice(provider: ProviderConfig) -> Iterator[str]:
    # An azure_openai base_url's path is checked at load (config: an error, not advice).
    if provider.base_url is None or provider.kind in ("mock", "azure_openai"):
        return
    parts = urlsplit(provider.base_url)
    path = parts.path.rstrip("/")
    root = f"{parts.scheme}://{parts.netloc}"
    chat = _CHAT_PATHS[provider.kind]
    suffix = next((s for s in ENDPOINT_SUFFIXES if path.lower().endswith(s)), None)
    expected = OPENAI_ROOTS.get((parts.hostname or "").lower())
    if suffix is not None:
        trimmed = path[: len(path) - len(suffix)]
        suggestion = root + (expected if provider.kind in _OPENAI_STYLE and expected else trimmed)
        yield (
            f"base_url ends in the endpoint path {suffix!r}, but the {provider.kind} adapter"
            f" appends {chat!r} itself (requests would go to"
            f" {path + chat!r} and fail with 404); base_url is the API root:"
            f" {suggestion or default_base_url(provider.kind)}"
        )
        return
    if provider.kind in _OPENAI_STYLE and expected is not None and path != expected:
        yield (
            f"{parts.hostname} serves its OpenAI-compatible API under {expected!r}: set"
            f" base_url to {root}{expected} (requests would go to {path + chat!r}"
            " and fail with 404)"
        )
    elif (
        provider.kind == "gemini"
        and (parts.hostname or "").lower() == GEMINI_HOST
        and path not in ("/v1beta", "/v1")
    ):
        hint = "; its OpenAI-compatible API is kind: openai" if path.endswith("/openai") else ""
        yield (
            f"{GEMINI_HOST} serves the native Gemini API under '/v1beta' (or '/v1'): set"
            f" base_url to {root}/v1beta (requests would go to {path + chat!r} and fail"
            f" with 404){hint}"
        )
    elif provider.kind in ("anthropic", "ollama") and path.lower().endswith(("/v1", "/api")):
        tail = path[path.rfind("/") :]
        hint = (
            "; Ollama's OpenAI-compatible /v1 API is kind: openai"
            if provider.kind == "ollama" and tail.lower() == "/v1"
            else ""
        )
        yield (
            f"base_url ends in {tail!r}, but the {provider.kind} adapter appends {chat!r}"
            f" itself (requests would go to {path + chat!r} and fail with 404); base_url is"
            f" the API root: {root}{path[: len(path) - len(tail)]}{hint}"
        )


def _extra_fields(
    name: str, provider: ProviderConfig, config: Config
) -> Iterator[tuple[KeyPath, str]]:
    """(YAML path of the mapping, field name) of every body field sent to ``provider``:
    its extra, each model's extra, and the params of every step that uses it."""
    yield from _keys(("providers", name, "extra"), provider.extra)
    for model, m in provider.models.items():
        yield from _keys(("providers", name, "models", model, "extra"), m.extra)
    for route_name, route in config.routes.items():
        for i, step in enumerate(route.fallback):
            pool = config.pools.get(step.pool) if step.pool is not None else None
            uses = [m.use for m in pool.members] if pool is not None else [step.model]
            if any(use.partition("/")[0] == name for use in uses):
                path: KeyPath = ("routes", route_name, "fallback", i, "params")
                yield from _keys(path, step.params)


def _keys(path: KeyPath, mapping: Mapping[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    return ((path, key) for key in mapping)
