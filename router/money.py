"""How money is written down: one home for every place a cost, price, limit or spend
is turned into text (the CLI, log lines, ``stats()``, JSON).

Amounts are :class:`~decimal.Decimal` and are written exactly, in positional
notation: never ``9.8E-7`` (what ``str(Decimal)`` gives for small amounts) and never
``9.8e-07`` (what ``json`` gives for a float). In JSON an amount is a string of
those digits (``"0.00000098"``), so that no reader turns it into a rounded float.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["dollars", "usd"]

_CENTS = Decimal("0.01")


def usd(amount: Decimal) -> str:
    """The exact amount in positional notation, no sign of currency: ``'0.00000098'``,
    ``'20.0'``. What logs, ``stats()`` and JSON carry."""
    return format(amount, "f")


def dollars(amount: Decimal) -> str:
    """The exact amount for a human, with at least cents: ``'$0.00000098'``, ``'$5.00'``."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(_CENTS)
    return f"${amount:f}"
