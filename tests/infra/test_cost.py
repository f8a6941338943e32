"""What a stack costs (infra/cost/): golden cases computed by hand from literal unit prices, both
committed stacks priced from their offline plans, the difference from a git ref, the budget gate,
config errors that name the key, the stale-snapshot warning, free tiers once, capacity from a
stored bench result, and the Billing Catalog refresh on a recorded response from a loopback
server. Nothing here reaches a network."""

from __future__ import annotations

import datetime
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import msgspec
import pytest
from ruamel.yaml import YAML

from infra.config import ConfigError, CostConfig, parse
from infra.cost import billing_catalog, capacity, cli, estimate, free_tier, pricing
from infra.cost.prices import PriceSnapshot, load, stale_warning
from infra.cost.prices import parse as parse_prices
from tests.helpers import serve_http
from tests.infra.conftest import ROOT, STACKS

HOURS = 730
SECONDS = 730 * 3600  # 2,628,000: a month as the pricing pages count it
READ = datetime.date(2026, 11, 30)
#: The committed snapshot's unit prices (infra/prices/europe-west1.yaml, read 2026-11-30),
#: written out: the golden figures below are computed from these by hand, not by the code.
UNIT_PRICES = {
    "run.request.cpu": (0.000024, 180_000),
    "run.request.memory": (0.0000025, 360_000),
    "run.request.requests": (0.0000004, 2_000_000),
    "run.request.idle_cpu": (0.0000025, 0),
    "run.request.idle_memory": (0.0000025, 0),
    "run.instance.cpu": (0.000018, 240_000),
    "run.instance.memory": (0.000002, 450_000),
    "sql.micro.zonal": (0.0105, 0),
    "sql.ssd.zonal": (0.17, 0),
    "gcs.standard": (0.020, 0),
    "gcs.class_a": (0.000005, 0),
    "gcs.class_b": (0.0000004, 0),
    "scheduler.jobs": (0.10, 3),
    "logging.storage": (0.50, 50),
}


def snapshot(prices: dict[str, tuple[float, float]] = UNIT_PRICES) -> PriceSnapshot:
    return msgspec.convert(
        {
            "region": "europe-west1",
            "currency": "USD",
            "prices": {
                key: {
                    "what": key,
                    "price": price,
                    "unit": "unit",
                    "free": free,
                    "freeScope": "project" if key.startswith("logging") else "billingAccount",
                    "source": "test",
                    "read": READ,
                }
                for key, (price, free) in prices.items()
            },
        },
        PriceSnapshot,
    )


def service(name: str, *, cpu_idle: bool, concurrency: int = 80, minimum: int = 0) -> dict:
    """A Cloud Run service as the plan records it: 1 vCPU, 512 MiB."""
    return {
        "type": estimate.SERVICE,
        "name": f"{name}-service",
        "inputs": {
            "name": name,
            "template": {
                "containers": [
                    {"resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "cpuIdle": cpu_idle}}
                ],
                "maxInstanceRequestConcurrency": concurrency,
                "scaling": {"minInstanceCount": minimum, "maxInstanceCount": 4},
            },
        },
    }


def cost_config(**cost: Any) -> CostConfig:
    return parse(
        {"gcp:project": "p", "gcp:region": "europe-west1", "housing-mlops:cost": cost}, "t"
    ).cost


def priced(resources: list[dict], **cost: Any) -> estimate.Estimate:
    return estimate.estimate(
        resources, cost_config(**cost), snapshot(), stack="t", region="europe-west1"
    )


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=0.01)


# Golden cases, by hand.


@pytest.mark.parametrize("requests", [1_000_000, 10_000_000])
def test_a_request_based_service_costs_its_busy_time_and_requests(requests):
    """1 vCPU, 0.5 GiB, 200 ms a request, concurrency 80. Requests arriving at random overlap:
    the mean number in flight is L = requests x 0.2 s / 2,628,000 s, and an instance is busy a
    share 1 - e^-L of the month (80 at once never happens at these loads).
    1M: L = 0.0761, busy 192,580 s: 192,580 x (0.000024 + 0.5 x 0.0000025) + 1M x 0.0000004
        = 4.86 + 0.40 = 5.26.
    10M: L = 0.761, busy 1,400,230 s: 35.36 + 4.00 = 39.36."""
    busy = SECONDS * (1 - math.exp(-requests * 0.2 / SECONDS))
    expected = busy * (1 * 0.000024 + 0.5 * 0.0000025) + requests * 0.0000004
    found = priced(
        [service("api", cpu_idle=True)],
        services={"api": {"requestsPerMonth": requests, "meanLatencyMs": 200}},
    )
    (item,) = [i for i in found.items if i.resource == "Cloud Run service api"]
    assert close(item.monthly, expected), (item.monthly, expected)
    assert close(item.monthly, {1_000_000: 5.26, 10_000_000: 39.36}[requests])
    assert "request-based" in item.usage


@pytest.mark.parametrize("requests", [1_000_000, 10_000_000])
def test_an_instance_based_service_costs_an_instance_all_month(requests):
    """cpuIdle false: the instance lives while requests keep coming (one every 2.6 s or less,
    far inside the 15 minutes an idle one may be kept): 2,628,000 s x (1 x 0.000018 + 0.5 x
    0.000002) = 49.93, whatever the count, and no request fee."""
    expected = SECONDS * (1 * 0.000018 + 0.5 * 0.000002)
    found = priced(
        [service("api", cpu_idle=False)],
        services={"api": {"requestsPerMonth": requests, "meanLatencyMs": 200}},
    )
    (item,) = [i for i in found.items if i.resource == "Cloud Run service api"]
    assert close(item.monthly, expected)
    assert close(item.monthly, 49.93)
    assert "instance-based" in item.usage
    assert {c.key for c in item.charges} == {"run.instance.cpu", "run.instance.memory"}


def test_an_idle_minimum_instance_is_billed_at_the_idle_rate():
    """Request-based, min 1, no traffic: 2,628,000 s x (0.0000025 + 0.5 x 0.0000025) = 9.86."""
    found = priced([service("api", cpu_idle=True, minimum=1)])
    (item,) = [i for i in found.items if i.resource == "Cloud Run service api"]
    assert close(item.monthly, SECONDS * (0.0000025 + 0.5 * 0.0000025))
    assert "no traffic" in item.usage


def test_the_dev_database_tier_for_730_hours():
    """db-f1-micro, one zone: 730 h x 0.0105 = 7.665; its 10 GB SSD 10 x 0.17 = 1.70."""
    dev = cli.price("dev", ROOT).estimate  # the committed dev stack's own instance
    (item,) = [i for i in dev.items if i.resource.startswith("Cloud SQL")]
    by_key = {c.key: c for c in item.charges}
    prices = load("europe-west1")
    assert prices["sql.micro.zonal"] == 0.0105, "the snapshot changed: redo the golden figures"
    assert close(by_key["sql.micro.zonal"].amount, HOURS * 0.0105)
    assert close(by_key["sql.micro.zonal"].amount, 7.665)
    assert close(by_key["sql.ssd.zonal"].amount, 10 * 0.17)


def test_fifty_gigabytes_in_cloud_storage():
    """50 GB standard in europe-west1: 50 x 0.020 = 1.00."""
    bucket = {
        "type": estimate.BUCKET,
        "name": "data-bucket",
        "inputs": {"location": "europe-west1"},
    }
    found = priced([bucket], storage={"storedGb": 50})
    (item,) = [i for i in found.items if i.resource.startswith("Cloud Storage")]
    assert close(item.monthly, 1.00)


def test_a_job_of_ten_tasks_of_five_minutes_a_day():
    """10 tasks x 300 s x 30.42 runs (730 h / 24) = 91,250 task-seconds of 1 vCPU and 2 GiB:
    91,250 x (0.000018 + 2 x 0.000002) = 2.01."""
    job = {
        "type": estimate.JOB,
        "name": "jobs-batch",
        "inputs": {
            "name": "housing-batch",
            "template": {
                "taskCount": 10,
                "template": {
                    "containers": [{"resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}]
                },
            },
        },
    }
    found = priced([job], jobs={"housing-batch": {"runsPerMonth": 730 / 24, "taskMinutes": 5}})
    (item,) = [i for i in found.items if i.resource == "Cloud Run job housing-batch"]
    assert close(item.monthly, 10 * 300 * (730 / 24) * (0.000018 + 2 * 0.000002))
    assert close(item.monthly, 2.01)


def test_requests_rarely_overlapping_cost_their_latency_and_crowded_ones_share_instances():
    """The busy-time model at its two ends."""
    sparse = pricing.busy_instance_seconds(1000, 0.2, 80)
    assert close(sparse, 1000 * 0.2)
    crowded = pricing.busy_instance_seconds(1e11, 0.2, 80)  # 7,610 in flight on average
    assert close(crowded, 1e11 * 0.2 / 80)
    assert pricing.busy_instance_seconds(1000, 0.01, 80) == pytest.approx(1000 * 0.1, rel=0.01), (
        "a short lone request is billed 100 ms"
    )


# Both committed stacks, priced from their plans.


@pytest.mark.parametrize("stack", STACKS)
def test_each_committed_stack_is_priced_in_under_ten_seconds_within_its_budget(stack, capsys):
    began = time.perf_counter()
    result = cli.price(stack, ROOT)
    seconds = time.perf_counter() - began
    found = result.estimate
    with capsys.disabled():
        print(f"\n{stack}: {found.total:.2f} USD/month, priced in {seconds:.1f} s")
        for item in found.items:
            print(f"  {item.resource:<34} {item.monthly:>8.2f}  {item.usage}")
    assert seconds < 10
    kinds = {item.resource.rsplit(" ", 1)[0] for item in found.items}
    assert {"Cloud Run service", "Cloud Run job", "Cloud SQL", "Cloud Storage bucket"} <= kinds
    services = {r["inputs"]["name"] for r in result.resources if r["type"] == estimate.SERVICE}
    assert {f"Cloud Run service {s}" for s in services} <= {i.resource for i in found.items}
    assert found.unpriced == (), "every resource type is priced or known to be free"
    assert 0 < found.total <= found.budget, "the committed stack passes its own gate"


def run_cli(argv: list[str], root: Path = ROOT, **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, root=root, out=out, err=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


def stack_root(tmp_path: Path, **edits: Any) -> Path:
    """A folder with the dev stack file (``edits`` merged into its sections) and the prices."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    data = yaml.load((ROOT / "Pulumi.dev.yaml").read_text())
    for section, values in edits.items():
        data["config"][f"housing-mlops:{section}"].update(values)
    with (tmp_path / "Pulumi.dev.yaml").open("w") as f:
        yaml.dump(data, f)
    shutil.copytree(ROOT / "infra" / "prices", tmp_path / "infra" / "prices")
    return tmp_path


def test_over_budget_exits_non_zero_with_one_line_naming_the_key(tmp_path):
    root = stack_root(tmp_path, cost={"monthlyBudget": 5})
    code, out, err = run_cli(["dev"], root)
    assert code == 1
    (line,) = [x for x in err.splitlines() if "monthlyBudget" in x]
    assert line.startswith("cost: stack dev is estimated at ")
    assert "over housing-mlops:cost.monthlyBudget (5.00)" in line
    assert "total" in out, "the table is still printed"
    assert run_cli(["dev"], stack_root(tmp_path / "ok", cost={"monthlyBudget": 500}))[0] == 0


def test_the_estimate_is_written_as_json(tmp_path):
    code, _, _ = run_cli(["dev", "--json", str(tmp_path / "dev.json")])
    assert code == 0
    written = json.loads((tmp_path / "dev.json").read_text())
    assert written["stack"] == "dev"
    assert math.isclose(written["total"], sum(i["monthly"] for i in written["items"]))
    assert all(i["charges"] and "usage" in i for i in written["items"])


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        (
            {"storage": {"storedGB": 5}},
            "housing-mlops:cost.storage: Object contains unknown field `storedGB`",
        ),
        ({"budget": 5}, "housing-mlops:cost: Object contains unknown field `budget`"),
        (
            {"services": {"housing-api": {"meanLatencyMs": -5}}},
            "housing-mlops:cost.services.housing-api.meanLatencyMs: Expected `float` >= 0.0",
        ),
        (
            {"jobs": {"housing-tune": {"runsPerWeek": 1, "runsPerMonth": 4, "taskMinutes": 3}}},
            "housing-mlops:cost.jobs.housing-tune: give runsPerMonth or runsPerWeek",
        ),
        (
            {"jobs": {"housing-tune": {"runsPerWeek": 1, "trialsPerRun": 40}}},
            "housing-mlops:cost.jobs.housing-tune: give runsPerMonth or runsPerWeek",
        ),
        ({"load": {"targetCpuUtilization": 1.5}}, "housing-mlops:cost.load.targetCpuUtilization"),
        ({"monthlyBudget": "lots"}, "housing-mlops:cost.monthlyBudget: Expected `float`"),
    ],
)
def test_a_wrong_cost_setting_is_named(cost, message):
    with pytest.raises(ConfigError) as caught:
        cost_config(**cost)
    assert str(caught.value).startswith(message)


def test_usage_for_a_service_the_plan_lacks_is_named(tmp_path):
    root = stack_root(tmp_path)
    path = root / "Pulumi.dev.yaml"
    path.write_text(path.read_text().replace("housing-api: {", "housing-apii: {"))
    code, _, err = run_cli(["dev"], root)
    assert code == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "cost: housing-mlops:cost.services.housing-apii names no Cloud Run service of the plan"
        )
    )


def test_a_snapshot_older_than_120_days_prints_a_warning():
    prices = load("europe-west1")
    read = prices.read()
    assert stale_warning(prices, read + datetime.timedelta(days=120)) is None
    warning = stale_warning(prices, read + datetime.timedelta(days=121))
    assert warning is not None
    assert warning.startswith(f"warning: prices in {prices.path} were read {read}, 121 days ago")
    assert "nox -s prices" in warning
    code, _, err = run_cli(["dev"], today=read + datetime.timedelta(days=200))
    assert code == 0
    assert "200 days ago (over 120)" in err


def test_the_committed_snapshot_prices_every_key_the_stacks_use_and_says_where_it_read_them():
    prices = load("europe-west1")
    assert prices.region == "europe-west1"
    for entry in prices.prices.values():
        assert entry.source.startswith("https://")
        assert entry.read == READ
        assert entry.sku is not None
    assert prices.unverified() == sorted(prices.prices), "read from pages: unverified"


# Free tiers, once across stacks.


def test_free_tiers_are_taken_off_once_across_stacks():
    """Scheduler: 3 free jobs per billing account, 2 stacks with 2 jobs each: 3 free, not 4.
    Logging: 50 GiB free per project: 40 and 70 GiB → 40 + 50 free."""
    prices = snapshot()

    def stack(jobs: int, gib: float) -> tuple:
        return (
            pricing.scheduler(jobs=jobs, prices=prices),
            pricing.logging(gib=gib, usage="", prices=prices),
        )

    credits = {c.key: c for c in free_tier.credits([stack(2, 40), stack(2, 70)], prices)}
    assert credits["scheduler.jobs"].quantity == -3
    assert credits["logging.storage"].quantity == -90
    assert close(credits["logging.storage"].amount, -45.0)


def test_all_stacks_show_the_free_tiers_on_their_own_line():
    code, out, _ = run_cli(["--all"])
    assert code == 0
    (free,) = [line for line in out.splitlines() if line.startswith("free tiers ")]
    assert free.split()[-1].startswith("-")
    totals = [line for line in out.splitlines() if line.startswith("stack ")]
    assert [t.split()[1] for t in totals] == list(STACKS)
    assert out.splitlines().count("free tier run.request.cpu: 180k vCPU-second (-4.32)") == 1


# Capacity, from the bench's stored result.


def bench_file(tmp_path: Path, rps: float) -> Path:
    result = {
        "date": "2026-11-30",
        "cores": 2,
        "cpu_model": "test CPU",
        "workers": 1,
        "single_row": [
            {"concurrency": 1, "rps": rps / 2, "p50_ms": 2.0, "p99_ms": 4.0},
            {"concurrency": 8, "rps": rps, "p50_ms": 9.0, "p99_ms": 30.0},
            {"concurrency": 32, "rps": rps * 1.1, "p50_ms": 40.0, "p99_ms": 400.0},
        ],
        "throughput_per_core_rps": rps * 1.1,
        "p99_ms": 400.0,
    }
    path = tmp_path / "service.json"
    path.write_text(json.dumps(result))
    return path


def test_the_service_is_sized_from_the_best_row_within_the_p99_budget(tmp_path):
    """prod: 30 req/s at peak, p99 within 250 ms: concurrency 32 (p99 400 ms) is out, so 200
    req/s a core x 1 vCPU x 0.6 = 120 a instance: 1 instance, within service.maxInstances."""
    code, out, err = run_cli(["prod", "--bench", str(bench_file(tmp_path, 200))])
    assert code == 0
    (line,) = [x for x in out.splitlines() if x.startswith("capacity:")]
    assert line.startswith("capacity: housing-api needs 1 instance(s) for 30 req/s at peak (120")
    assert "200 req/s per core at concurrency 8" in line
    assert "housing-mlops:service.maxInstances is 10" in line
    assert "warning" not in err


def test_a_max_instance_count_that_cannot_carry_the_target_is_warned(tmp_path):
    """4 req/s a core: 2.4 an instance, 30 req/s needs 13 > 10."""
    bench = capacity.read_bench(bench_file(tmp_path, 4))
    assert bench is not None
    shape = estimate.service_shape(service("housing-api", cpu_idle=True, concurrency=40))
    shape = msgspec.structs.replace(shape, memory_gib=1.0, max_instances=10)
    load_target = cost_config(load={"peakRps": 30, "p99BudgetMs": 250}).load
    sized = capacity.size(load_target, bench, shape, snapshot())
    assert isinstance(sized, capacity.Sizing)
    assert (sized.instances, sized.fits) == (13, False)
    assert close(sized.monthly_if_held, 13 * SECONDS * (0.000024 + 0.0000025))
    code, _, err = run_cli(["prod", "--bench", str(bench_file(tmp_path, 4))])
    assert code == 0
    assert (
        "warning: housing-mlops:service.maxInstances is 10, but 30 req/s at peak needs 13 "
        "instances of housing-api: raise it"
    ) in err


def test_without_a_bench_result_sizing_is_skipped_in_one_line(tmp_path):
    code, out, _ = run_cli(["prod", "--bench", str(tmp_path / "none.json")])
    assert code == 0
    (line,) = [x for x in out.splitlines() if x.startswith("capacity:")]
    assert "no bench results at" in line
    assert line.endswith("sizing skipped")


def test_the_bench_stores_what_the_estimate_reads(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "service_bench", ROOT / "tests" / "bench" / "service_bench.py"
    )
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [
        (n, c, {"rps": 100.0 * c / n, "p50": 1.0 * c, "p99": 3.0 * c}, {})
        for n in (1, 100)
        for c in (1, 8, 32)
    ]
    bench.store(rows, tmp_path / "bench" / "service.json")
    stored = capacity.read_bench(tmp_path / "bench" / "service.json")
    assert stored is not None
    assert [r.concurrency for r in stored.single_row] == [1, 8, 32]
    assert (stored.throughput_per_core_rps, stored.p99_ms) == (3200.0, 96.0)
    assert stored.cores == os.cpu_count()


# The difference from a git ref, in a temporary repository.


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)},
    )  # fmt: skip
    return done.stdout


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """The program and the dev stack file, committed in a repository of their own."""
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(
        [*listed, "infra", "Pulumi.dev.yaml"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    repo = tmp_path / "repo"
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    stack = repo / "Pulumi.dev.yaml"  # a budget the changes below stay within
    stack.write_text(stack.read_text().replace("monthlyBudget: 30", "monthlyBudget: 1000"))
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "base")
    return repo


@pytest.mark.parametrize(
    ("section", "key", "value", "resource", "what"),
    [
        ("database", "tier", "db-g1-small", "Cloud SQL db-instance",
         "db-f1-micro enterprise → db-g1-small enterprise"),
        ("service", "minInstances", 1, "Cloud Run service housing-api", "min 0 → min 1"),
    ],
)  # fmt: skip
def test_a_change_shows_against_the_ref_it_was_made_on(
    repository, section, key, value, resource, what
):
    path = repository / "Pulumi.dev.yaml"
    yaml = YAML()
    data = yaml.load(path.read_text())
    data["config"][f"housing-mlops:{section}"][key] = value
    with path.open("w") as f:
        yaml.dump(data, f)
    git(repository, "commit", "--quiet", "-am", f"{section}.{key}")
    code, out, err = run_cli(["dev", "--against", "HEAD~1"], repository)
    assert code == 0, err
    diff = out.split("Difference from HEAD~1", 1)[1].splitlines()
    (row,) = [line for line in diff if line.startswith(resource)]
    assert what in row
    before, after, change = (float(x.replace(",", "")) for x in row.split()[-3:])
    assert after > before
    assert math.isclose(change, after - before, abs_tol=0.011)
    (total,) = [line for line in diff if line.startswith("total")]
    assert float(total.split()[-1]) == pytest.approx(change, abs=0.011)
    assert git(repository, "worktree", "list").count("\n") == 1, "the worktree is removed"


def test_an_unknown_ref_is_one_line(repository):
    code, _, err = run_cli(["dev", "--against", "no-such-ref"], repository)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("cost: git cannot check out 'no-such-ref'")


# The Billing Catalog refresh, on a recorded response served from loopback.

RECORDED = Path(__file__).parent / "recorded" / "cloud_billing_skus.json"


@pytest.fixture
def catalog() -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering GET /v1/services/<id>/skus from the recorded pages; the
    base URL and the request URLs it saw."""
    pages = json.loads(RECORDED.read_text())["pages"]
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            parts = url.path.split("/")  # '', 'v1', 'services', <id>, 'skus'
            if query.get("key") != ["test-key"] or parts[4:] != ["skus"] or parts[3] not in pages:
                self.send_error(403 if query.get("key") != ["test-key"] else 404)
                return
            body = json.dumps(pages[parts[3]][1 if "pageToken" in query else 0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serve_http(Handler) as (_, url):
        yield f"{url}/v1", seen


def test_prices_refresh_from_the_billing_catalog_and_become_verified(tmp_path, catalog, capsys):
    endpoint, seen = catalog
    shutil.copy(ROOT / "infra" / "prices" / "europe-west1.yaml", tmp_path)
    today = datetime.date(2027, 1, 15)
    code = billing_catalog.main(
        ["--endpoint", endpoint], directory=tmp_path, today=today,
        environ={"CLOUD_BILLING_API_KEY": "test-key"},
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "26 of 26 prices verified against the Cloud Billing Catalog API" in out
    assert "sql.micro.zonal: 0.0105 → 0.0115 USD per instance-hour, verified" in out
    text = (tmp_path / "europe-west1.yaml").read_text()
    refreshed = parse_prices(text, "refreshed")
    assert refreshed.unverified() == []
    micro = refreshed.entry("sql.micro.zonal")
    assert (micro.price, micro.read, micro.verified) == (0.0115, today, True)
    assert micro.source.startswith(f"{endpoint}/services/9662-B51E-5089/skus (")
    assert refreshed.entry("run.request.cpu").free == 180000
    assert refreshed.entry("logging.storage").free_scope == "project"
    assert text.startswith("# What the stack's billed parts cost in europe-west1"), "comments kept"
    assert "0.000024" in text, "an unchanged price keeps its spelling"
    services = {urllib.parse.urlsplit(u).path.split("/")[3] for u in seen}
    assert len(services) == 7
    assert len(seen) == 8, "Cloud Run's SKUs come in two pages"
    assert all("currencyCode=USD" in u for u in seen)
    assert stale_warning(refreshed, today) is None


def test_a_sku_in_another_unit_keeps_the_old_price_unverified():
    text = (ROOT / "infra" / "prices" / "europe-west1.yaml").read_text()
    pages = json.loads(RECORDED.read_text())["pages"]
    skus = {service: [s for page in p for s in page["skus"]] for service, p in pages.items()}
    for sku in skus["5AF5-2C11-D467"]:
        sku["pricingInfo"][0]["pricingExpression"]["usageUnit"] = "h"
    new, lines = billing_catalog.refresh(text, skus, datetime.date(2027, 1, 15))
    (line,) = [x for x in lines if x.startswith("scheduler.jobs")]
    assert "is priced per 'h', the rule expects 'mo'; kept, unverified" in line
    assert parse_prices(new, "x").unverified() == ["scheduler.jobs"]


def test_prices_without_credentials_say_what_to_set(tmp_path, capsys):
    assert billing_catalog.main([], directory=tmp_path, environ={}) == 1
    assert "CLOUD_BILLING_API_KEY" in capsys.readouterr().err


def test_estimating_never_opens_a_socket(monkeypatch, tmp_path):
    """Prices come from the file; the plan runs under mocks."""
    import socket

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the estimate tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    code, _, _ = run_cli(["dev", "--bench", str(tmp_path / "none.json")])
    assert code == 0


def test_the_database_disk_is_declared_from_config_and_priced(tmp_path):
    """database.diskSizeGb reaches the instance (Cloud SQL would bill 10 GB by default anyway,
    undeclared) and its SSD line: 50 x 0.17 = 8.50."""
    result = cli.price("dev", stack_root(tmp_path, database={"diskSizeGb": 50}))
    (instance,) = [r for r in result.resources if r["type"] == estimate.SQL]
    assert instance["inputs"]["settings"]["diskSize"] == 50
    assert instance["inputs"]["settings"]["diskType"] == "PD_SSD"
    (item,) = [i for i in result.estimate.items if i.resource.startswith("Cloud SQL")]
    assert "50 GB SSD" in item.usage
    assert close({c.key: c for c in item.charges}["sql.ssd.zonal"].amount, 8.50)
    with pytest.raises(
        ConfigError, match=r"^housing-mlops:database.diskSizeGb: Expected `int` >= 10"
    ):
        parse(
            {"gcp:project": "p", "gcp:region": "r", "housing-mlops:database": {"diskSizeGb": 5}},
            "t",
        )
