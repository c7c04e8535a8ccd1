"""What an attempt is billed: the provider's usage, checked against what was asked.

The adapters report usage as the provider wrote it (or mark it ``suspect`` when
it could not be read). Before a cost is settled, :func:`bill` holds it against
what the request allowed and what was reserved for it:

- no usage at all: the router's estimate (input estimate, output from the text,
  reasoning and tool-call arguments received), marked ``estimated``;
- malformed or impossible usage (a count that is not a count, cache parts above
  the input): the same estimate, never $0 — the provider most likely billed it;
- output above ``max_tokens`` plus :func:`output_allowance`'s slack: capped at
  the allowance;
- a cost above :data:`COST_CAP_MULTIPLE` times the attempt's reservation:
  capped at that multiple.

Each of the last three marks the usage ``estimated`` with a one-line
``suspect`` reason, and is logged at warning as ``usage_suspect``. The bound
these caps put on a budget's overshoot is in docs/money.md, section 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from router.budget import cost_usd
from router.config import Price
from router.estimate import estimate_text_tokens
from router.logger import get_logger
from router.money import dollars, usd
from router.types import Usage

__all__ = [
    "COST_CAP_MULTIPLE",
    "OUTPUT_SLACK_DIVISOR",
    "OUTPUT_SLACK_TOKENS",
    "bill",
    "estimated_output",
    "final_usage",
    "max_counts",
    "output_allowance",
    "server_calls_seen",
]

log = get_logger("router.money")

# Output a provider may report above the ``max_tokens`` it was sent before the count
# is taken as absurd: 5% plus 16 tokens. Recorded replies never exceed max_tokens
# (OpenAI's reasoning-length reply stops at exactly 100 of 100); the slack is for
# servers that count an end-of-sequence or framing token or two beyond the cap.
OUTPUT_SLACK_DIVISOR = 20
OUTPUT_SLACK_TOKENS = 16
# Most an attempt is billed, as a multiple of its worst-case reservation. The
# reservation already holds the input estimate (1.28x-2.6x the real count on
# typical text) plus max_tokens of output, so a real bill at twice it means the
# report, not the request, is wrong.
COST_CAP_MULTIPLE = 2

# Vendor deltas (in ``details``) that are billed as output but are not the text.
_REASONING_KEYS = ("reasoning", "thinking")


def output_allowance(max_tokens: int) -> int:
    """The most output tokens billed for a request sent with ``max_tokens``:
    ``max_tokens + max_tokens // 20 + 16``."""
    return max_tokens + max_tokens // OUTPUT_SLACK_DIVISOR + OUTPUT_SLACK_TOKENS


def estimated_output(text: str, details: Mapping[str, Any]) -> tuple[int, int]:
    """Estimated (output, reasoning) tokens of what arrived: the text, the reasoning
    or thinking text, and tool-call arguments."""
    reasoning = sum(
        estimate_text_tokens(v) for k in _REASONING_KEYS if isinstance(v := details.get(k), str)
    )
    calls = details.get("tool_calls")
    arguments = 0
    if isinstance(calls, list):
        for call in calls:
            if isinstance(call, dict) and isinstance(args := call.get("arguments"), str):
                arguments += estimate_text_tokens(args)
    return estimate_text_tokens(text) + reasoning + arguments, reasoning


def server_calls_seen(details: Mapping[str, Any]) -> dict[str, int]:
    """Server-side tool calls by tool, from the call items a stream has delivered
    (``details["server_tool_calls"]``, kind openai_responses)."""
    counts: dict[str, int] = {}
    items = details.get("server_tool_calls")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(name := item.get("type"), str):
                counts[name] = counts.get(name, 0) + 1
    return counts


def max_counts(known: Mapping[str, int], new: Mapping[str, int]) -> dict[str, int]:
    """Per-tool call counts merged with max() (cumulative counts, like tokens)."""
    if not new:
        return dict(known)
    if not known:
        return dict(new)
    return {k: max(known.get(k, 0), new.get(k, 0)) for k in known.keys() | new.keys()}


def final_usage(usage: Usage | None, est_in: int, text: str) -> Usage:
    """The provider's usage, or an estimate (marked) when it reported none."""
    if usage is not None and not usage.estimated and (usage.input_tokens or usage.output_tokens):
        return usage
    if usage is not None and usage.suspect is not None:
        return usage
    return Usage(
        input_tokens=(usage.input_tokens if usage else 0) or est_in,
        output_tokens=(usage.output_tokens if usage else 0) or estimate_text_tokens(text),
        estimated=True,
    )


def _impossible(usage: Usage) -> str | None:
    """Why ``usage`` cannot be priced as it stands (None when it can)."""
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )
    if min(counts) < 0:
        return "impossible usage: a negative count"
    parts = usage.cached_input_tokens + usage.cache_write_tokens
    if parts > usage.input_tokens:
        return (
            f"impossible usage: cached {usage.cached_input_tokens} + cache writes"
            f" {usage.cache_write_tokens} above input_tokens {usage.input_tokens}"
        )
    return None


def bill(
    usage: Usage,
    *,
    est_in: int,
    text: str,
    details: Mapping[str, Any],
    max_tokens: int,
    reserved: Decimal,
    price: Price,
    provider: str,
    model: str,
) -> tuple[Usage, Decimal]:
    """The usage and cost to settle for one attempt (see the module docstring).

    Args:
        usage: what the attempt's usage came to (:func:`final_usage`, or a cut
            stream's estimate); a ``suspect`` one is replaced by the estimate.
        est_in: the input estimate the attempt was reserved for (overhead included).
        text, details: what arrived, for the output estimate.
        max_tokens: the output cap the request was sent with.
        reserved: the attempt's worst-case reservation.
        price: the model's price.
        provider, model: for the warning.

    Returns:
        (usage, cost): the usage billed (``estimated`` and ``suspect`` when it is
        not the provider's report) and its cost, never above the cap.
    """
    reported = usage
    problem = usage.suspect or _impossible(usage)
    if problem is not None:
        output, reasoning = estimated_output(text, details)
        usage = Usage(
            input_tokens=est_in,
            output_tokens=output,
            reasoning_tokens=reasoning,
            estimated=True,
            suspect=problem,
            # Calls the provider reported are billed even when its token counts are not.
            server_tool_calls=usage.server_tool_calls,
        )
    allowed = output_allowance(max_tokens)
    if usage.output_tokens > allowed:
        if not usage.estimated:  # the router's own guess is capped silently
            problem = (
                f"output_tokens {usage.output_tokens} above max_tokens {max_tokens}"
                f" (+ slack: {allowed}); billed {allowed}"
            )
        usage = replace(
            usage,
            output_tokens=allowed,
            reasoning_tokens=min(usage.reasoning_tokens, allowed),
            estimated=True,
            suspect=problem,
        )
    cost = cost_usd(usage, price)
    # Within the reservation (nearly always: it is the worst case) is within the cap.
    if cost > reserved and cost > (cap := reserved * COST_CAP_MULTIPLE):
        capped = (
            f"cost {dollars(cost)} above {COST_CAP_MULTIPLE}x the reservation"
            f" {dollars(reserved)}; billed {dollars(cap)}"
        )
        problem = capped if problem is None else f"{problem}; {capped}"
        usage = replace(usage, estimated=True, suspect=problem)
        cost = cap
    if problem is not None:
        log.warning(
            "usage_suspect",
            provider=provider,
            model=model,
            reason=problem,
            reported=_counts(reported),
            billed=_counts(usage),
            billed_usd=usd(cost),
            reserved_usd=usd(reserved),
        )
    return usage, cost


def _counts(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }
