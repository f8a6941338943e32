"""The difference between two estimates, resource by resource."""

from __future__ import annotations

import msgspec

from infra.cost.line_items import LineItem

#: Changes under half a cent a month are rounding, not changes.
EPSILON = 0.005


class Change(msgspec.Struct, frozen=True, kw_only=True):
    resource: str
    before: float | None
    """None: the resource is new."""
    after: float | None
    """None: the resource is gone."""
    what: str = ""
    """The usage that changed, ``old → new``."""

    @property
    def delta(self) -> float:
        return (self.after or 0.0) - (self.before or 0.0)


def usage_change(before: str, after: str) -> str:
    """The parts of two usage lines that differ: ``db-f1-micro enterprise → db-g1-small …``."""
    old, new = before.split(", "), after.split(", ")
    if len(old) != len(new):
        return f"{before} → {after}"
    return "; ".join(f"{a} → {b}" for a, b in zip(old, new, strict=True) if a != b)


def changes(before: tuple[LineItem, ...], after: tuple[LineItem, ...]) -> list[Change]:
    """Every resource whose monthly figure or assumed usage differs, new or gone ones included,
    in the order of ``after`` (then the gone ones)."""
    old = {item.resource: item for item in before}
    new = {item.resource: item for item in after}
    found = []
    for name in [*new, *(n for n in old if n not in new)]:
        a, b = old.get(name), new.get(name)
        if a is not None and b is not None:
            if abs(a.monthly - b.monthly) < EPSILON and a.usage == b.usage:
                continue
            what = usage_change(a.usage, b.usage)
        else:
            what = "new" if a is None else "removed"
        found.append(
            Change(
                resource=name,
                before=None if a is None else a.monthly,
                after=None if b is None else b.monthly,
                what=what,
            )
        )
    return found
