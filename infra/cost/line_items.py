"""What an estimate is made of: a line per billed resource, each a sum of charges."""

from __future__ import annotations

import msgspec


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    """``quantity`` units of one price (``key`` in the snapshot) for a month."""

    key: str
    quantity: float
    unit: str
    unit_price: float

    @property
    def amount(self) -> float:
        return self.quantity * self.unit_price


class LineItem(msgspec.Struct, frozen=True, kw_only=True):
    resource: str
    """What is billed, as a reader names it: ``Cloud Run service housing-api``."""
    usage: str
    """The usage it assumed, in one line."""
    charges: tuple[Charge, ...] = ()

    @property
    def monthly(self) -> float:
        return sum(c.amount for c in self.charges)


def total(items: list[LineItem] | tuple[LineItem, ...]) -> float:
    return sum(item.monthly for item in items)
