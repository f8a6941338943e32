"""The service keeps the contract its own OpenAPI document states, under every schemathesis check.

schemathesis (the ``st`` command of the test group) reads ``/docs/openapi.json`` from the real
server (a trained champion loaded) and runs its examples, coverage and fuzzing phases with
``--checks all``: no 5xx, answers and content types as documented, every schema-valid request
accepted and every invalid one rejected, 405 with ``Allow`` for an undocumented method. The seed
is fixed, so a failure replays.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

SEED = 1
#: Per operation. The four GETs take no input (a case or two each reaches them); the predict
#: body gets the rest. 100 gives ~280 cases in ~25 s on 2 cores.
MAX_EXAMPLES = 100
PHASES = ("examples", "coverage", "fuzzing")


def test_the_service_keeps_its_openapi_contract_under_every_check(service, tmp_path: Path):
    report = tmp_path / "schemathesis.json"
    st = Path(sys.executable).parent / "st"
    run = subprocess.run(
        [
            str(st),
            "run",
            f"{service.url}/docs/openapi.json",
            "--checks",
            "all",
            "--phases",
            ",".join(PHASES),
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        cwd=tmp_path,  # anything schemathesis writes stays out of the repository
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert report.is_file(), run.stdout[-4000:] + run.stderr[-4000:]
    summary = json.loads(report.read_text())
    cases = summary["test_cases"]
    print(
        f"schemathesis {summary['schemathesis_version']}: {cases['generated']} cases, "
        f"{cases['with_failures']} with failures, {len(summary['errors'])} errors, "
        f"{summary['running_time']:.1f} s (seed {SEED}, {MAX_EXAMPLES} examples per operation)"
    )
    assert run.returncode == 0, run.stdout[-8000:]
    assert (summary["failures"], summary["errors"]) == ([], [])
    assert cases["with_failures"] == cases["errored"] == 0
    assert {name: summary["phases"][name]["status"] for name in PHASES} == dict.fromkeys(
        PHASES, "success"
    )
    # Every operation of the document was exercised, and schemathesis understood all of it
    # (the category pattern included: no unsupported regex, no unusable schema).
    spec = httpx.get(f"{service.url}/docs/openapi.json").json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert summary["operations"]["tested"] == summary["operations"]["total"] == operations
    assert {kind: found for kind, found in summary["warnings"].items() if found} == {}
    # Schema-valid houses reached the model and were priced, not only rejected.
    assert summary["valid_rates"]["POST /api/v1/predict"]["fuzzing"]["accepted"] > 0
