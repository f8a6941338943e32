"""The price snapshot: unit prices of one region, committed and dated, read from a file only.

Prices never come from the network while estimating; ``nox -s prices`` rewrites the file from
the Cloud Billing Catalog API where a network exists (``infra/cost/billing_catalog.py``).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import msgspec
from ruamel.yaml import YAML

PRICES_DIR = Path(__file__).resolve().parent.parent / "prices"
#: A snapshot read longer ago than this prints a warning.
STALE_AFTER_DAYS = 120
BILLING_ACCOUNT = "billingAccount"
PROJECT = "project"


class PriceError(ValueError):
    """The snapshot is missing, malformed or lacks a price; the message names the file."""


class SkuRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which Cloud Billing Catalog SKU holds an entry's price."""

    service: str
    """The catalog's service id (``services/<id>/skus``)."""
    description: str
    """A regular expression the SKU's description matches."""
    unit: str
    """The SKU's ``usageUnit``; a refresh refuses a SKU priced in another unit."""
    factor: float = 1.0
    """The entry's unit in the SKU's units (a price per 1,000 operations: 1000)."""


class Price(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    what: str
    price: float
    unit: str
    source: str
    """The page (or API) the price was read from."""
    read: datetime.date
    verified: bool = False
    """True once read from the Billing Catalog API; a page read by hand stays unverified."""
    free: float = 0.0
    """Free usage a month, in ``unit``s (``nox -s cost -- --all`` applies it)."""
    free_scope: str = BILLING_ACCOUNT
    note: str = ""
    sku: SkuRule | None = None


class PriceSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    region: str
    currency: str
    prices: dict[str, Price]
    path: str = ""
    """Where it was read from (set by ``load``; not in the file)."""

    def __getitem__(self, key: str) -> float:
        return self.entry(key).price

    def entry(self, key: str) -> Price:
        try:
            return self.prices[key]
        except KeyError:
            raise PriceError(f"{self.path or 'the price snapshot'} has no price {key!r}") from None

    def read(self) -> datetime.date:
        """When its oldest price was read."""
        return min(p.read for p in self.prices.values())

    def unverified(self) -> list[str]:
        return sorted(k for k, p in self.prices.items() if not p.verified)


def stale_warning(snapshot: PriceSnapshot, today: datetime.date) -> str | None:
    """One line when the snapshot is older than STALE_AFTER_DAYS, else None."""
    age = (today - snapshot.read()).days
    if age <= STALE_AFTER_DAYS:
        return None
    return (
        f"warning: prices in {snapshot.path} were read {snapshot.read()}, {age} days ago "
        f"(over {STALE_AFTER_DAYS}): refresh them with `nox -s prices`"
    )


def snapshot_path(region: str, directory: Path = PRICES_DIR) -> Path:
    return directory / f"{region}.yaml"


def parse(text: str, path: str) -> PriceSnapshot:
    data = YAML(typ="safe").load(text) or {}
    try:
        snapshot = msgspec.convert(data, PriceSnapshot)
    except msgspec.ValidationError as exc:
        raise PriceError(f"{path}: {exc}") from None
    return msgspec.structs.replace(snapshot, path=path)


def load(region: str, directory: Path = PRICES_DIR) -> PriceSnapshot:
    """The committed snapshot of ``region``."""
    path = snapshot_path(region, directory)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml"))) or "none"
        raise PriceError(
            f"no price snapshot for region {region}: {path} is missing (have: {known}); copy "
            "one, then refresh it with `nox -s prices -- --region " + region + "`"
        )
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return parse(path.read_text(), shown)
