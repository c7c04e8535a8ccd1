"""A trading-signal app on yaml-llm-router: one BUY/SELL/HOLD signal per ticker.

Offline by default (the paid providers are disabled and the mock desk answers):

    python examples/trading_signal/app.py             # every ticker of SAMPLE_PRICES
    python examples/trading_signal/app.py ACME         # one ticker

With real providers (keys from the environment; costs real money, within the budgets
of providers.yaml):

    ANTHROPIC_API_KEY=... OPENAI_API_KEY=... python examples/trading_signal/app.py --live

stdout: one line per ticker, then the spend per budget. stderr: the router's
structured log (one JSON object per line: llm_attempt, llm_call, and this app's
own ``signal`` events), keys redacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import structlog

from router import Completion, Router, RouterError
from router.logging import configure

CONFIG = Path(__file__).with_name("providers.yaml")
ROUTE = "signal"
HORIZON_DAYS = 5
# Closing prices, oldest first. A real app reads them from its market-data feed.
SAMPLE_PRICES: dict[str, list[float]] = {
    "ACME": [101.2, 102.8, 101.9, 104.4, 105.0],
    "GLOBEX": [48.1, 47.6, 47.9, 46.2, 45.8],
    "INITECH": [12.40, 12.41, 12.39, 12.40, 12.42],
}
_SIGNAL = re.compile(r"Signal:\s*(BUY|SELL|HOLD)\s*,\s*confidence\s*(\d{1,3})", re.I)

log = structlog.get_logger("trading_signal")


@dataclass(frozen=True, slots=True)
class Signal:
    ticker: str
    action: str  # BUY | SELL | HOLD | NONE (no usable answer: do nothing)
    confidence: int
    source: str  # provider/model that answered, or why there is no answer
    cost_usd: Decimal
    tries: int


def parse_signal(ticker: str, result: Completion) -> Signal:
    """The signal in the model's last "Signal: ..." line; NONE when there is none."""
    matches = _SIGNAL.findall(result.text)
    action, confidence = matches[-1] if matches else ("NONE", "0")
    return Signal(
        ticker=ticker,
        action=action.upper(),
        confidence=min(int(confidence), 100),
        source=f"{result.provider}/{result.model}",
        cost_usd=result.cost_usd,
        tries=len(result.attempts),
    )


async def signal_for(router: Router, ticker: str, prices: list[float]) -> Signal:
    """One routed call. Any router failure is a NONE signal: a trading app does nothing
    rather than act on a late, unaffordable or missing answer."""
    try:
        result = await router.complete(
            ROUTE, {"ticker": ticker, "prices": prices, "horizon_days": HORIZON_DAYS}
        )
    except RouterError as e:  # DeadlineExceededError, BudgetExceededError, AllProvidersFailed...
        log.warning("no_signal", ticker=ticker, error_type=type(e).__name__, error=str(e))
        tries = len(getattr(e, "attempts", ()))
        return Signal(ticker, "NONE", 0, type(e).__name__, Decimal(0), tries)
    signal = parse_signal(ticker, result)
    log.info(
        "signal",
        ticker=ticker,
        action=signal.action,
        confidence=signal.confidence,
        source=signal.source,
        cost_usd=str(signal.cost_usd),
    )
    return signal


async def run(tickers: list[str], live: bool, config: Path) -> int:
    # Offline: no key variables at all, so every keyed provider is disabled (not an
    # error), whatever the shell exports. Live: keys from os.environ, all required.
    env = os.environ if live else {}
    async with Router.from_yaml(config, env=env, require_env=live) as router:
        signals = await asyncio.gather(*(signal_for(router, t, SAMPLE_PRICES[t]) for t in tickers))
        for s in signals:
            print(
                f"{s.ticker:<8} {s.action:<4} confidence {s.confidence:>3}  "
                f"via {s.source}  ${s.cost_usd:.6f}  tries {s.tries}"
            )
        for b in router.spend():
            print(
                f"budget {b.name}: spent ${b.spent_usd} of ${b.limit_usd:.2f} "
                f"({b.period}), ${b.remaining_usd} left"  # exact decimals
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tickers", nargs="*", help=f"default: {', '.join(SAMPLE_PRICES)}")
    p.add_argument("--live", action="store_true", help="use the paid providers (keys from env)")
    p.add_argument("--config", type=Path, default=CONFIG, help="default: %(default)s")
    args = p.parse_args(argv)
    unknown = [t for t in args.tickers if t not in SAMPLE_PRICES]
    if unknown:
        p.error(f"no prices for {', '.join(unknown)} (known: {', '.join(SAMPLE_PRICES)})")
    # Structured logs: JSON lines on stderr, keys redacted by the router's processor.
    configure(format="json", level="info", stream=sys.stderr)
    try:
        return asyncio.run(run(args.tickers or list(SAMPLE_PRICES), args.live, args.config))
    except RouterError as e:  # the config does not load (a missing key with --live, ...)
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
