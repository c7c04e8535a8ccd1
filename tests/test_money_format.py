"""Money is written exactly and never in exponent form: the helpers in router/money.py,
and what uses them (log lines, ``stats()``, budget messages)."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
import structlog

from router.logging import configure
from router.money import dollars, usd
from router.router import Router
from tests.routerkit import make_config

EXPONENT = re.compile(r"\d[eE][+-]?\d")


@pytest.mark.parametrize(
    ("amount", "plain", "human"),
    [
        (Decimal("9.8E-7"), "0.00000098", "$0.00000098"),
        (Decimal("0.0000780"), "0.0000780", "$0.0000780"),
        (Decimal("1E+1"), "10", "$10.00"),
        (Decimal("20.0"), "20.0", "$20.00"),
        (Decimal("5.25"), "5.25", "$5.25"),
        (Decimal(0), "0", "$0.00"),
        (Decimal("1E-12"), "0.000000000001", "$0.000000000001"),
    ],
)
def test_amounts_are_exact_and_positional(amount: Decimal, plain: str, human: str) -> None:
    assert str(amount) != plain or "E" not in str(amount)  # str() is what went wrong
    assert usd(amount) == plain
    assert dollars(amount) == human
    assert Decimal(usd(amount)) == amount


TINY = """\
providers:
  m:
    kind: mock
    mock: {reply: "ok", latency_s: 0}
    models: {m1: {price: {input_per_mtok: 0.01, output_per_mtok: 0}}}
budgets:
  tiny: {limit_usd: 0.0000005, period: day, route: other}
  all: {limit_usd: 1, period: day}
routes:
  r: {prompt: "hello there", fallback: [m/m1]}
  other: {prompt: hi, fallback: [m/m1]}
"""


async def test_stats_and_log_lines_carry_small_amounts_without_exponent(tmp_path: Path) -> None:
    """A call costing under a millionth of a dollar: its llm_call log line, stats()
    (routes, providers, budgets) and spend() text show every digit."""
    stream = io.StringIO()
    configure(format="json", level="info", stream=stream)
    try:
        async with Router(make_config(tmp_path, TINY)) as router:
            result = await router.complete("r")
            snap = router.stats()
    finally:
        structlog.reset_defaults()
    assert result.cost_usd < Decimal("0.000001")
    assert "E" in str(result.cost_usd)  # the case that used to print 3E-8
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    (call,) = [e for e in events if e["event"] == "llm_call"]
    assert call["cost_usd"] == usd(result.cost_usd)
    assert not EXPONENT.search(call["cost_usd"])
    text = json.dumps(snap)
    assert not EXPONENT.search(text), text
    assert snap["routes"]["r"]["cost_usd"] == format(result.cost_usd, "f")
    assert snap["budgets"]["tiny"]["limit_usd"] == "0.0000005"


def test_a_capped_bill_states_its_amounts_without_exponent() -> None:
    """A provider reporting far more than the reservation allows is billed the cap; the
    usage's ``suspect`` note (logged and kept on the completion) shows every digit."""
    from router.billing import bill
    from router.config import Price
    from router.types import Usage

    price = Price(input_per_mtok=Decimal("0.01"), output_per_mtok=Decimal("0.01"))
    usage, cost = bill(
        Usage(input_tokens=10, output_tokens=5),
        est_in=1,
        text="x",
        details={},
        max_tokens=5,
        reserved=Decimal("1E-8"),
        price=price,
        provider="p",
        model="m",
    )
    assert cost == Decimal("2E-8")
    assert usage.suspect is not None
    assert "billed $0.00000002" in usage.suspect
    assert not EXPONENT.search(usage.suspect), usage.suspect
