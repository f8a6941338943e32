"""Refresh a price snapshot from the Cloud Billing Catalog API (``nox -s prices``):
``python -m infra.cost.billing_catalog [--region R] [--endpoint URL] [--dry-run]``.

Needs a network and ``CLOUD_BILLING_API_KEY`` (an API key of a project with the Cloud Billing
API enabled) or ``CLOUD_BILLING_ACCESS_TOKEN`` (``gcloud auth print-access-token``). Every entry
with a ``sku`` rule is looked up among its service's SKUs (``GET
{endpoint}/services/<id>/skus``): the one SKU whose description matches and which is sold in the
region (or globally), priced in the rule's unit, gives the price (its last tier) and the free
tier (a first tier at 0); the entry becomes verified, dated today, sourced to the SKU. Entries
that find no such SKU keep their old price, unverified, and are listed. Comments and order of
the file are kept. Estimating never calls this: it reads the file.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from infra.cost.prices import BILLING_ACCOUNT, PRICES_DIR, PROJECT, PriceError, parse, snapshot_path

API = "https://cloudbilling.googleapis.com/v1"
#: GET url (with its headers) → the decoded JSON body.
Transport = Callable[[str, Mapping[str, str]], dict[str, Any]]


def unit_price(sku: Mapping[str, Any]) -> tuple[float, float, str]:
    """(price per usage unit beyond any free tier, the free quantity, the usage unit)."""
    expression = sku["pricingInfo"][0]["pricingExpression"]
    rates = expression["tieredRates"]

    def amount(rate: Mapping[str, Any]) -> float:
        money = rate["unitPrice"]
        return int(money.get("units") or 0) + int(money.get("nanos") or 0) / 1e9

    free = 0.0
    if len(rates) > 1 and amount(rates[0]) == 0:
        free = float(rates[1].get("startUsageAmount") or 0)
    return amount(rates[-1]), free, str(expression["usageUnit"])


def find(rule: Mapping[str, Any], region: str, skus: list[dict[str, Any]]) -> dict[str, Any] | str:
    """The one SKU a rule names in ``region``, or why there is none."""
    pattern = re.compile(str(rule["description"]))
    hits = [
        s
        for s in skus
        if pattern.search(str(s.get("description", "")))
        and ({region, "global"} & set(s.get("serviceRegions") or []))
    ]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        return f"no SKU of service {rule['service']} in {region} matches {rule['description']!r}"
    ids = ", ".join(str(s.get("skuId")) for s in hits)
    return f"{len(hits)} SKUs match {rule['description']!r} ({ids}): make the rule narrower"


def _number(x: float) -> float | int:
    """Twelve significant digits, an integer when it is one (``180000``, not ``180000.0``)."""
    rounded = float(f"{x:.12g}")
    return int(rounded) if rounded.is_integer() else rounded


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def refresh(
    text: str,
    skus_by_service: Mapping[str, list[dict[str, Any]]],
    today: datetime.date,
    endpoint: str = API,
) -> tuple[str, list[str]]:
    """The snapshot's new text, and one line per entry saying what happened to it."""
    yaml = _yaml()
    data = yaml.load(text)
    region = str(data["region"])
    lines = []
    for key, entry in data["prices"].items():
        rule = entry.get("sku")
        if rule is None:
            lines.append(f"{key}: no sku rule, kept as read ({entry['read']})")
            continue
        found = find(rule, region, skus_by_service.get(str(rule["service"]), []))
        if isinstance(found, str):
            lines.append(f"{key}: {found}; kept, unverified")
            continue
        price, free, unit = unit_price(found)
        if unit != rule["unit"]:
            lines.append(
                f"{key}: SKU {found.get('skuId')} is priced per {unit!r}, the rule expects "
                f"{rule['unit']!r}; kept, unverified"
            )
            continue
        factor = float(rule.get("factor", 1))
        old, new = float(entry["price"]), _number(price * factor)
        if new != old:  # an unchanged figure keeps its spelling
            entry["price"] = new
        if free:
            if _number(free / factor) != float(entry.get("free", 0)):
                entry["free"] = _number(free / factor)
            level = found["pricingInfo"][0].get("aggregationInfo", {}).get("aggregationLevel")
            if level == "PROJECT":
                entry["freeScope"] = PROJECT
            elif "freeScope" in entry:
                entry["freeScope"] = BILLING_ACCOUNT
        entry["source"] = f"{endpoint}/services/{rule['service']}/skus ({found.get('skuId')})"
        entry["read"] = datetime.date.fromordinal(today.toordinal())  # one each: no YAML anchors
        entry["verified"] = True
        entry["note"] = f"Cloud Billing Catalog API, SKU {found.get('description')!r}"
        change = "unchanged" if new == old else f"{old:g} → {new:g}"
        lines.append(f"{key}: {change} USD per {entry['unit']}, verified")
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue(), lines


def urllib_transport(url: str, headers: Mapping[str, str]) -> dict[str, Any]:
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if host in {"127.0.0.1", "localhost"} else []
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers=dict(headers))
    with opener.open(request, timeout=60) as response:
        return dict(json.loads(response.read()))


def fetch_skus(
    service: str,
    *,
    endpoint: str = API,
    key: str = "",
    token: str = "",
    transport: Transport = urllib_transport,
) -> list[dict[str, Any]]:
    """Every SKU of a catalog service, in USD, page by page."""
    params = {"currencyCode": "USD", "pageSize": "5000"}
    if key:
        params["key"] = key
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    skus: list[dict[str, Any]] = []
    while True:
        url = f"{endpoint}/services/{service}/skus?{urllib.parse.urlencode(params)}"
        body = transport(url, headers)
        skus += list(body.get("skus") or [])
        page = body.get("nextPageToken")
        if not page:
            return skus
        params["pageToken"] = str(page)


def main(
    argv: list[str] | None = None,
    directory: Path = PRICES_DIR,
    today: datetime.date | None = None,
    environ: Mapping[str, str] = os.environ,
    transport: Transport = urllib_transport,
) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.cost.billing_catalog", description=__doc__
    )
    parser.add_argument("--region", default="europe-west1")
    parser.add_argument("--endpoint", default=API, help="the Cloud Billing API's base URL")
    parser.add_argument("--dry-run", action="store_true", help="report, write nothing")
    args = parser.parse_args(argv)
    key = environ.get("CLOUD_BILLING_API_KEY", "")
    token = environ.get("CLOUD_BILLING_ACCESS_TOKEN", "")
    if not key and not token:
        print(
            "prices: set CLOUD_BILLING_API_KEY (an API key of a project with the Cloud Billing "
            "API enabled) or CLOUD_BILLING_ACCESS_TOKEN (`gcloud auth print-access-token`)",
            file=sys.stderr,
        )
        return 1
    path = snapshot_path(args.region, directory)
    try:
        if not path.is_file():
            raise PriceError(f"{path} is missing: copy another region's snapshot first")
        text = path.read_text()
        snapshot = parse(text, str(path))
        services = sorted({p.sku.service for p in snapshot.prices.values() if p.sku is not None})
        skus = {
            s: fetch_skus(s, endpoint=args.endpoint, key=key, token=token, transport=transport)
            for s in services
        }
        new, lines = refresh(text, skus, today or datetime.date.today(), args.endpoint)
        parse(new, str(path))  # still a valid snapshot
    except (urllib.error.URLError, OSError, PriceError, ValueError) as exc:
        print(f"prices: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    verified = sum(line.endswith(", verified") for line in lines)
    print(f"{verified} of {len(lines)} prices verified against the Cloud Billing Catalog API")
    if not args.dry_run:
        path.write_text(new)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
