"""A blocked 200 answer is billed: the provider charged for the prompt (and for
what it generated before withholding it), so the router charges the ledger and
budgets the same. With counts reported they are billed exactly; without, the
prompt's estimate. The failure is a ``content_filter`` attempt carrying its cost.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from router import AllProvidersFailedError, ContentFilterError, Router, Usage
from tests.routerkit import write_config
from tests.upstream import Upstream, reply

CHAT = "/v1/chat/completions"


def blocked(usage: dict[str, int] | None) -> dict[str, Any]:
    """An OpenAI chat.completion whose answer the content filter withheld."""
    body: dict[str, Any] = {
        "id": "chatcmpl-blocked",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "finish_reason": "content_filter",
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def yaml(url: str) -> str:
    return (
        "providers:\n"
        f"  p:\n    kind: openai\n    base_url: {url}/v1\n"
        "    models: {m: {price: {input_per_mtok: 2, output_per_mtok: 8}}}\n"
        "settings: {retries: 0}\n"
        "budgets:\n  all: {limit_usd: 10}\n"
        "routes:\n  r:\n    prompt: 'Say {{ word }}'\n    max_tokens: 100\n"
        "    fallback: [p/m]\n"
    )


@pytest.mark.parametrize("reported", [True, False])
async def test_a_blocked_answer_is_billed_to_the_ledger(
    tmp_path: Path, upstream: Upstream, reported: bool
) -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
    upstream.route(CHAT, reply(200, json.dumps(blocked(usage if reported else None)).encode()))
    async with Router.from_yaml(write_config(tmp_path, yaml(upstream.url))) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            await router.complete("r", {"word": "hi"}, deadline_s=5)
        (budget,) = router.spend()
    (attempt,) = info.value.attempts
    assert isinstance(attempt.error, ContentFilterError)
    assert attempt.usage is not None
    if reported:
        assert attempt.usage == Usage(30, 5)
        assert attempt.cost_usd == Decimal("0.000100")  # 30 x $2 + 5 x $8 per million
    else:  # the prompt's estimate, marked as such; nothing for the withheld answer
        assert attempt.usage.estimated and attempt.usage.input_tokens > 0
        assert attempt.usage.output_tokens == 0
        assert attempt.cost_usd == attempt.usage.input_tokens * Decimal(2) / 1_000_000
    assert budget.spent_usd == attempt.cost_usd and budget.reserved_usd == 0
