"""``python -m infra.cost <stack> [--json PATH] [--against REF] [--markdown] [--bench PATH]``, or
``--all``: what a stack costs a month, from the offline plan (as ``nox -s plan``, on the
full-stack overlay, so every workload is priced) and the committed price snapshot of its region.

``--against REF`` prices the program and stack file as they were at REF too and prints the
difference per resource; ``cost.monthlyBudget`` makes it exit 1 when the total is over;
``cost.load`` sizes a service from the throughput ``nox -s bench`` stored. ``--all`` prices
every stack and takes the free tiers off their total once.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import msgspec
from ruamel.yaml import YAML

from infra.config import NAMESPACE, ConfigError, CostConfig, StackConfig, parse
from infra.cost import capacity, estimate, free_tier, report
from infra.cost.diff import changes
from infra.cost.prices import PriceError, PriceSnapshot, load, stale_warning
from infra.cost.worktree import RefError, checkout, plan
from infra.plan import ROOT, read_stack_config, resources, run, stack_file

#: Where ``nox -s bench`` stores the service's measured throughput (under HOUSING_MLOPS_HOME).
BENCH_RESULTS = Path(".housing-mlops") / "bench" / "service.json"
#: The stack-config section holding each service's scaling.
SCALING_SECTION = {"housing-api": "service", "housing-mlflow": "tracking", "housing-ui": "ui"}


def cost_section(text: str, stack: str) -> tuple[CostConfig, str]:
    """A stack file's ``cost`` section and region, read alone (a file at an older ref may not
    pass today's other checks)."""
    values = (YAML(typ="safe").load(text) or {}).get("config") or {}
    region = str(values.get("gcp:region") or "")
    only = {"gcp:project": "p", "gcp:region": region or "r"}
    if (raw := values.get(f"{NAMESPACE}:cost")) is not None:
        only[f"{NAMESPACE}:cost"] = raw
    return parse(only, stack).cost, region


class Priced(msgspec.Struct, frozen=True, kw_only=True):
    config: StackConfig
    estimate: estimate.Estimate
    resources: list[dict[str, Any]]
    prices: PriceSnapshot
    seconds: float


def price(stack: str, root: Path) -> Priced:
    began = time.perf_counter()
    config = read_stack_config(stack_file(stack, root), full_stack=True)
    prices = load(config.region, root / "infra" / "prices")
    mocks, _ = run(config)
    listed = resources(mocks)
    found = estimate.estimate(listed, config.cost, prices, stack=config.stack, region=config.region)
    return Priced(
        config=config,
        estimate=found,
        resources=listed,
        prices=prices,
        seconds=time.perf_counter() - began,
    )


def capacity_lines(
    priced: Priced, cost: CostConfig, bench_path: Path
) -> tuple[list[str], list[str]]:
    """(lines for the report, warnings)."""
    load_target = cost.load
    if not load_target.peak_rps:
        return [], []
    service = next(
        (
            r
            for r in priced.resources
            if r["type"] == estimate.SERVICE and r["inputs"].get("name") == load_target.service
        ),
        None,
    )
    if service is None:
        raise ConfigError(
            f"{NAMESPACE}:cost.load.service {load_target.service!r} is no Cloud Run service of "
            "the plan"
        )
    bench = capacity.read_bench(bench_path)
    if bench is None:
        return [
            f"capacity: no bench results at {shown(bench_path)} (`nox -s bench -- service` "
            "stores them): sizing skipped"
        ], []
    sized = capacity.size(load_target, bench, estimate.service_shape(service), priced.prices)
    if isinstance(sized, str):
        return [f"capacity: {sized}"], []
    key = f"{NAMESPACE}:{SCALING_SECTION.get(sized.service, 'service')}.maxInstances"
    line = (
        f"capacity: {sized.service} needs {sized.instances} instance(s) for "
        f"{sized.peak_rps:g} req/s at peak ({sized.per_instance_rps:.0f} req/s each, from "
        f"{sized.measured}); held all month they cost {report.money(sized.monthly_if_held)} "
        f"USD; {key} is {sized.max_instances}"
    )
    warnings = []
    if not sized.fits:
        warnings.append(
            f"warning: {key} is {sized.max_instances}, but {sized.peak_rps:g} req/s at peak "
            f"needs {sized.instances} instances of {sized.service}: raise it"
        )
    return [line], warnings


def shown(path: Path) -> str:
    """A path relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _prices_line(prices: PriceSnapshot) -> str:
    unverified = prices.unverified()
    state = (
        f"{len(unverified)} of {len(prices.prices)} unverified (read from pricing pages, not "
        "the Cloud Billing API: `nox -s prices` refreshes them)"
        if unverified
        else "all verified against the Cloud Billing API"
    )
    return f"prices: {prices.path}, read {prices.read()}; {state}"


def _gate(found: estimate.Estimate, err: TextIO) -> bool:
    """True when the stack is over its budget (one line says so)."""
    if found.budget and found.total > found.budget:
        print(
            f"cost: stack {found.stack} is estimated at {report.money(found.total)} USD a month, "
            f"over {NAMESPACE}:cost.monthlyBudget ({report.money(found.budget)}): shrink the "
            "stack or raise the budget",
            file=err,
        )
        return True
    return False


def _one(
    args: argparse.Namespace, root: Path, today: datetime.date, out: TextIO, err: TextIO
) -> int:
    priced = price(args.stack, root)
    found = priced.estimate
    warning = stale_warning(priced.prices, today)
    if warning:
        print(warning, file=err)
    print(report.estimate_table(found, markdown=args.markdown), file=out)
    notes = [
        f"free: {found.free_resources} more resources cost nothing (IAM grants, accounts, APIs, "
        "databases and users inside the instance)",
        *(f"not priced: {u}" for u in found.unpriced),
        _prices_line(priced.prices),
    ]
    lines, warnings = capacity_lines(priced, priced.config.cost, args.bench)
    notes += lines
    if found.budget:
        notes.append(f"budget: {report.money(found.budget)} ({NAMESPACE}:cost.monthlyBudget)")
    listed = "\n".join(("- " + n) if args.markdown else n for n in notes)
    print(f"\n{listed}\n" if args.markdown else listed, file=out)
    out.flush()  # the table before the warnings, on one terminal
    for w in warnings:
        print(w, file=err)
    print(f"priced stack {found.stack} in {priced.seconds:.1f} s", file=err)
    if args.against:
        with checkout(args.against, root) as tree:
            before_resources = plan(tree, args.stack)
            text = stack_file(args.stack, tree).read_text()
        before_cost, before_region = cost_section(text, args.stack)
        before = estimate.estimate(
            before_resources,
            before_cost,
            load(before_region or found.region, root / "infra" / "prices"),
            stack=args.stack,
            region=before_region,
        )
        table = report.diff_table(
            args.against,
            changes(before.items, found.items),
            before.total,
            found.total,
            markdown=args.markdown,
        )
        print(f"\n{table}", file=out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "stack": found.stack,
            "region": found.region,
            "prices": {"path": priced.prices.path, "read": str(priced.prices.read())},
            "items": [
                {
                    "resource": item.resource,
                    "usage": item.usage,
                    "monthly": item.monthly,
                    "charges": [
                        msgspec.to_builtins(c) | {"amount": c.amount} for c in item.charges
                    ],
                }
                for item in found.items
            ],
            "total": found.total,
            "budget": found.budget,
        }
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(payload)) + b"\n")
        print(f"estimate written to {args.json}", file=err)
    return 1 if _gate(found, err) else 0


def stacks(root: Path) -> list[str]:
    return sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml")
    )


def _all(
    args: argparse.Namespace, root: Path, today: datetime.date, out: TextIO, err: TextIO
) -> int:
    priced = [price(stack, root) for stack in stacks(root)]
    for p in priced:
        if warning := stale_warning(p.prices, today):
            print(warning, file=err)
        print(report.estimate_table(p.estimate, markdown=args.markdown) + "\n", file=out)
        print(f"priced stack {p.estimate.stack} in {p.seconds:.1f} s", file=err)
    credits = free_tier.credits([p.estimate.items for p in priced], priced[0].prices)
    estimates = [p.estimate for p in priced]
    print(report.totals_table(estimates, credits, markdown=args.markdown), file=out)
    over = [_gate(e, err) for e in estimates]
    return 1 if any(over) else 0


def main(
    argv: list[str] | None = None,
    root: Path = ROOT,
    today: datetime.date | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m infra.cost", description=__doc__)
    parser.add_argument("stack", nargs="?", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--all", action="store_true", help="every stack, free tiers once")
    parser.add_argument("--json", type=Path, help="also write the estimate as JSON here")
    parser.add_argument("--against", metavar="REF", help="and the difference from a git ref")
    parser.add_argument("--markdown", action="store_true", help="tables as Markdown")
    parser.add_argument(
        "--bench", type=Path, default=root / BENCH_RESULTS, help="the service bench's results"
    )
    args = parser.parse_args(argv)
    if bool(args.stack) == args.all or (args.all and (args.against or args.json)):
        parser.error("name one stack (with --json/--against if you like), or --all alone")
    try:
        run_it = _all if args.all else _one
        return run_it(args, root, today or datetime.date.today(), out, err)
    except (ConfigError, PriceError, RefError, ValueError) as exc:
        print(f"cost: {exc}", file=err)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
