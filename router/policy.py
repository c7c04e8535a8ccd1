"""What each outcome of an attempt does: the outcome table (docs/routing.md), as data.

The router consults :data:`POLICY` by error kind; no provider names appear
here or in the router. YAML settings supply the numbers (retries, backoff,
cooldown) and may narrow which kinds fall back (``fallback_on``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    """How the router reacts to one kind of provider error."""

    # Try the same step again (within its retry count and the deadline).
    retry: bool
    # Cap on retries for this kind regardless of the configured count (None: no cap).
    max_retries: int | None
    # Put the provider in cooldown at once (its key is bad).
    cooldown_now: bool
    # Count towards the consecutive-failure cooldown threshold.
    counts_failure: bool
    # Wait (Retry-After, else the jittered backoff) before the retry. False: retry at
    # once, for a failure that says nothing about the provider's load.
    backoff: bool = True


POLICY: dict[str, Rule] = {
    # 429: retry after Retry-After (or backoff) if it fits the deadline, then next provider.
    "rate_limit": Rule(retry=True, max_retries=None, cooldown_now=False, counts_failure=True),
    # 5xx, 529 overloaded, connection errors, timeouts: jittered backoff, then next provider.
    "server": Rule(retry=True, max_retries=None, cooldown_now=False, counts_failure=True),
    "timeout": Rule(retry=True, max_retries=None, cooldown_now=False, counts_failure=True),
    "connection": Rule(retry=True, max_retries=None, cooldown_now=False, counts_failure=True),
    # A malformed body: once more, then next provider.
    "invalid_response": Rule(retry=True, max_retries=1, cooldown_now=False, counts_failure=True),
    # The answer did not parse or did not match the requested schema: once more on
    # the same step, then the next step. The model's lapse says nothing about the
    # provider's health: no cooldown, and no backoff before the retry.
    "invalid_output": Rule(
        retry=True, max_retries=1, cooldown_now=False, counts_failure=False, backoff=False
    ),
    # No text, no tool call, no output (billed): the next step, no retry, no blame.
    "empty_response": Rule(retry=False, max_retries=0, cooldown_now=False, counts_failure=False),
    # A bad key: never retried; the provider cools down at once.
    "auth": Rule(retry=False, max_retries=0, cooldown_now=True, counts_failure=False),
    # The request itself is wrong for this model: next provider, no retry, no blame.
    "model_not_found": Rule(retry=False, max_retries=0, cooldown_now=False, counts_failure=False),
    "context_length": Rule(retry=False, max_retries=0, cooldown_now=False, counts_failure=False),
    "bad_request": Rule(retry=False, max_retries=0, cooldown_now=False, counts_failure=False),
    "content_filter": Rule(retry=False, max_retries=0, cooldown_now=False, counts_failure=False),
    # HTTP 410: the provider retired a parameter, model or endpoint the request uses.
    "gone": Rule(retry=False, max_retries=0, cooldown_now=False, counts_failure=False),
    # A 404 that names no model: base_url is wrong. Every request to the provider goes
    # to the same wrong URL, so it counts towards a cooldown (but one stray 404 does
    # not sideline the provider at once, as a bad key does).
    "endpoint_not_found": Rule(retry=False, max_retries=0, cooldown_now=False, counts_failure=True),
}

# Anything unexpected is treated like a server error.
DEFAULT_RULE = POLICY["server"]


def rule_for(kind: str) -> Rule:
    """The rule for an error kind (see router.errors.ProviderError.kind)."""
    return POLICY.get(kind, DEFAULT_RULE)
