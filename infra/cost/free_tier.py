"""Free tiers, applied once: they belong to the billing account (Cloud Logging's to each
project), so a per-stack estimate leaves them out and ``nox -s cost -- --all`` takes them off the
stacks' total together."""

from __future__ import annotations

from collections.abc import Iterable

from infra.cost.line_items import Charge, LineItem
from infra.cost.prices import PROJECT, PriceSnapshot


def credits(stacks: Iterable[tuple[LineItem, ...]], prices: PriceSnapshot) -> list[Charge]:
    """One negative charge per price with a free tier: the free quantity used (at most what the
    stacks use together, or each stack, one project each, for a per-project tier) at its price."""
    stacks = list(stacks)
    used: dict[str, list[float]] = {}
    for items in stacks:
        per_stack: dict[str, float] = {}
        for item in items:
            for c in item.charges:
                per_stack[c.key] = per_stack.get(c.key, 0.0) + c.quantity
        for key, quantity in per_stack.items():
            used.setdefault(key, []).append(quantity)
    found = []
    for key, quantities in sorted(used.items()):
        entry = prices.prices.get(key)
        if entry is None or not entry.free:
            continue
        if entry.free_scope == PROJECT:
            free = sum(min(q, entry.free) for q in quantities)
        else:
            free = min(sum(quantities), entry.free)
        if free > 0:
            found.append(Charge(key=key, quantity=-free, unit=entry.unit, unit_price=entry.price))
    return found
