"""Which Cloud SQL machine tiers each edition accepts.

PostgreSQL 16+ instances default to the ENTERPRISE_PLUS edition, which refuses shared-core
(``db-f1-micro``, ``db-g1-small``) and custom (``db-custom-*``) tiers: the instance fails at
create time with "Invalid Tier … for (ENTERPRISE_PLUS) Edition" (pulumi-gcp's docstring of
``DatabaseInstanceSettings.edition``). Pure, so the stack config check and the policy pack
share it.
"""

from __future__ import annotations

import re

ENTERPRISE = "ENTERPRISE"
ENTERPRISE_PLUS = "ENTERPRISE_PLUS"
EDITIONS = (ENTERPRISE, ENTERPRISE_PLUS)
_SHARED_CORE = re.compile(r"^db-(f1-micro|g1-small)$")
_CUSTOM = re.compile(r"^db-custom-\d+-\d+$")
_LEGACY = re.compile(r"^db-n1-(standard|highmem)-\d+$")
_PERF_OPTIMIZED = re.compile(r"^db-perf-optimized-n-\d+$", re.IGNORECASE)


def tier_problem(tier: str, edition: str | None) -> str | None:
    """Why ``tier`` can't run under ``edition`` (None: it can). An unset edition is refused:
    on PostgreSQL 16+ the API picks ENTERPRISE_PLUS, so the choice must be explicit."""
    if edition not in EDITIONS:
        return (
            f"edition {edition!r} is not one of {', '.join(EDITIONS)}: set it explicitly "
            "(PostgreSQL 16+ defaults to ENTERPRISE_PLUS, which refuses shared-core and "
            "custom tiers)"
        )
    if edition == ENTERPRISE and _PERF_OPTIMIZED.match(tier):
        return f"tier {tier!r} is an ENTERPRISE_PLUS tier: set edition ENTERPRISE_PLUS"
    if edition == ENTERPRISE_PLUS and not _PERF_OPTIMIZED.match(tier):
        kind = (
            "shared-core"
            if _SHARED_CORE.match(tier)
            else "custom"
            if _CUSTOM.match(tier)
            else "not a db-perf-optimized-N-* tier"
        )
        return (
            f"tier {tier!r} ({kind}) is refused by ENTERPRISE_PLUS: use edition ENTERPRISE, "
            "or a db-perf-optimized-N-<cpus> tier"
        )
    if edition == ENTERPRISE and not any(p.match(tier) for p in (_SHARED_CORE, _CUSTOM, _LEGACY)):
        return (
            f"tier {tier!r} is not an ENTERPRISE tier (db-f1-micro, db-g1-small, "
            "db-custom-<cpus>-<MB>, db-n1-standard-<cpus>)"
        )
    return None
