"""Load recorded provider exchanges from tests/fixtures (see its INDEX.md).

Test-only helpers: a fixture's status, lower-cased headers and body bytes; the
adapter kind that speaks its wire format; and splitting a streamed body into
events with httpx-sse's own decoder (the parser the transport uses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from router.providers import build_adapter
from router.providers.base import Adapter
from router.types import Usage

FIXTURES = Path(__file__).parent / "fixtures"

# Adapter kind by fixture family; every other family speaks OpenAI's format.
_KIND_BY_FAMILY = {
    "anthropic": "anthropic",
    "gemini": "gemini",
    "ollama": "ollama",
    "openai-responses": "openai_responses",
    "xai-responses": "openai_responses",
    "azure-openai": "azure_openai",
}


@dataclass(frozen=True, slots=True)
class Fixture:
    """One recorded exchange."""

    id: str
    family: str
    provider: str
    status: int
    headers: dict[str, str]  # lower-cased names, first value of each
    body: bytes
    streaming: bool
    meta: dict[str, Any]

    @property
    def kind(self) -> str:
        """The adapter kind that speaks this fixture's wire format."""
        return _KIND_BY_FAMILY.get(self.family, "openai")

    def adapter(self, api_key: str | None = "test-key") -> Adapter:
        return build_adapter(self.kind, self.provider, api_key, None)


@cache
def manifest() -> tuple[dict[str, Any], ...]:
    """Every exchange in tests/fixtures/manifest.json."""
    return tuple(json.loads((FIXTURES / "manifest.json").read_text()))


def fixture_ids(*, streaming: bool | None = None, error: bool | None = None) -> list[str]:
    """Fixture ids, optionally only (non-)streaming or (non-)error ones (status >= 400)."""
    return [
        m["id"]
        for m in manifest()
        if (streaming is None or m["streaming"] == streaming)
        and (error is None or (m["status"] >= 400) == error)
    ]


@cache
def load(fixture_id: str) -> Fixture:
    """The exchange with this id: status, lower-cased headers, body bytes, sidecar."""
    entry = next(m for m in manifest() if m["id"] == fixture_id)
    meta = json.loads((FIXTURES / entry["meta"]).read_text())
    response = meta["response"]
    headers = {name.lower(): values[0] for name, values in response["headers"].items() if values}
    return Fixture(
        id=fixture_id,
        family=entry["family"],
        provider=entry["provider"],
        status=response["status"],
        headers=headers,
        body=(FIXTURES / entry["body"]).read_bytes(),
        streaming=entry["streaming"],
        meta=meta,
    )


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """Split an SSE body into (event, data) pairs as httpx-sse would deliver them."""
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    events = []
    text = body.decode("utf-8")
    for line in [*lines.decode(text), *lines.flush(), ""]:
        sse = decoder.decode(line)
        if sse is not None:
            events.append((sse.event, sse.data))
    return events


def stream_events(fx: Fixture) -> list[tuple[str, str]]:
    """A streamed fixture's events: SSE pairs, or NDJSON lines with an empty event name."""
    if fx.kind == "ollama":
        return [("", line) for line in fx.body.decode("utf-8").splitlines()]
    return sse_events(fx.body)


@dataclass(slots=True)
class StreamResult:
    """What a consumer makes of a stream's events (as the router merges them)."""

    text: str
    usage: Usage | None
    finish_reason: str | None
    done: bool
    response_id: str | None
    details: dict[str, Any]  # text fragments concatenated, lists extended
    events: int


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def merge_usage(total: Usage | None, new: Usage) -> Usage:
    """Field-wise max of two usages: the contract every adapter's stream events keep."""
    if total is None:
        return Usage(**{f: getattr(new, f) for f in _USAGE_FIELDS}, estimated=new.estimated)
    for f in _USAGE_FIELDS:
        setattr(total, f, max(getattr(total, f), getattr(new, f)))
    total.estimated = total.estimated and new.estimated
    return total


def consume(adapter: Adapter, model: str, events: list[tuple[str, str]]) -> StreamResult:
    """Feed every event to ``adapter.parse_stream_event`` and merge what comes out."""
    text: list[str] = []
    usage: Usage | None = None
    finish = None
    done = False
    response_id = None
    details: dict[str, Any] = {}
    count = 0
    for event, data in events:
        ev = adapter.parse_stream_event(model, event, data)
        if ev is None:
            continue
        count += 1
        text.append(ev.text)
        if ev.usage is not None:
            usage = merge_usage(usage, ev.usage)
        finish = ev.finish_reason or finish
        done = done or ev.done
        response_id = response_id or ev.response_id
        for key, value in (ev.details or {}).items():
            if isinstance(value, str) and key != "finish_reason":
                details[key] = details.get(key, "") + value
            elif isinstance(value, list):
                details.setdefault(key, []).extend(value)
            else:
                details[key] = value
    return StreamResult("".join(text), usage, finish, done, response_id, details, count)
