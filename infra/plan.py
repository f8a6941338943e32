"""An offline plan: run the program under Pulumi's unit-test mocks with a stack file's config and
list every resource it would declare: ``python -m infra.plan dev [--json PATH]``.

No Pulumi CLI, no cloud: the engine is Pulumi's own mock runtime, so what is listed is exactly
what the program asks for. Outputs only GCP computes (URLs, emails) are given plausible values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi
from ruamel.yaml import YAML

from infra.config import ConfigError, StackConfig, parse

ROOT = Path(__file__).resolve().parent.parent
#: How the engine marks a secret on the wire; the plan shows it as [secret].
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")
#: Inputs worth a reviewer's eye, per resource type (dotted paths); other types show scalars.
KEY_SETTINGS = {
    "gcp:cloudrunv2/service:Service": (
        "name",
        "template.revision",
        "template.containers.0.image",
        "template.scaling",
        "traffics",
        "deletionProtection",
    ),
    "gcp:cloudrunv2/job:Job": (
        "name",
        "template.taskCount",
        "template.parallelism",
        "template.template.containers.0.image",
        "template.template.containers.0.args",
    ),
    "gcp:sql/databaseInstance:DatabaseInstance": (
        "databaseVersion",
        "deletionProtection",
        "settings.tier",
        "settings.availabilityType",
        "settings.backupConfiguration",
        "settings.ipConfiguration.authorizedNetworks",
    ),
    "gcp:storage/bucket:Bucket": (
        "location",
        "publicAccessPrevention",
        "uniformBucketLevelAccess",
        "versioning",
        "forceDestroy",
    ),
}


class PlanMocks(pulumi.runtime.Mocks):
    """Records every resource; echoes inputs as outputs plus what GCP would compute."""

    def __init__(self, project: str = "housing-mlops-dev", region: str = "europe-west1"):
        self.project = project
        self.region = region
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        out = dict(args.inputs)
        out.setdefault("name", args.name)
        digest = hashlib.sha256(args.name.encode()).hexdigest()[:10]
        for typ, compute in COMPUTED.items():
            if args.typ == typ:
                out |= compute(self, out)
        return f"{args.name}-{digest}", out

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]


def _service_outputs(mocks: PlanMocks, out: dict[str, Any]) -> dict[str, Any]:
    host = f"{out['name']}-abc123xyz-ew.a.run.app"
    statuses = [
        {"tag": t["tag"], "uri": f"https://{t['tag']}---{host}", "percent": t.get("percent", 0)}
        for t in out.get("traffics") or []
        if t.get("tag")
    ]
    return {"uri": f"https://{host}", "trafficStatuses": statuses}


def _account_outputs(mocks: PlanMocks, out: dict[str, Any]) -> dict[str, Any]:
    email = f"{out['accountId']}@{out.get('project', mocks.project)}.iam.gserviceaccount.com"
    project = out.get("project", mocks.project)
    return {
        "email": email,
        "member": f"serviceAccount:{email}",
        "name": f"projects/{project}/serviceAccounts/{email}",
    }


COMPUTED: dict[str, Callable[[PlanMocks, dict[str, Any]], dict[str, Any]]] = {
    "gcp:storage/bucket:Bucket": lambda m, o: {"url": f"gs://{o['name']}"},
    "random:index/randomPassword:RandomPassword": lambda m, o: {"result": "x" * int(o["length"])},
    "gcp:sql/databaseInstance:DatabaseInstance": lambda m, o: {
        "connectionName": f"{o.get('project', m.project)}:{o.get('region', m.region)}:{o['name']}"
    },
    "gcp:serviceaccount/account:Account": _account_outputs,
    "gcp:cloudrunv2/service:Service": _service_outputs,
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": lambda m, o: {
        "name": f"projects/123456789/locations/global/workloadIdentityPools/"
        f"{o['workloadIdentityPoolId']}"
    },
    "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider": lambda m, o: {
        "name": f"projects/123456789/locations/global/workloadIdentityPools/"
        f"{o['workloadIdentityPoolId']}/providers/{o['workloadIdentityPoolProviderId']}"
    },
}


def stack_file(stack: str, root: Path = ROOT) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def read_stack_config(path: Path) -> StackConfig:
    """The typed config of a stack file, as ``pulumi up`` would read it."""
    if not path.is_file():
        raise ConfigError(f"{path.name} not found: create it with `pulumi stack init`")
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return config_from_text(path.read_text(), stack)


def config_from_text(text: str, stack: str) -> StackConfig:
    data = YAML(typ="safe").load(text) or {}
    return parse(data.get("config") or {}, stack)


Program = Callable[[], Mapping[str, Any] | None]


def settle(program: Program) -> dict[str, Any]:
    """Run ``program`` under the mocks already set until every resource is registered; its
    outputs, resolved. (Checking inside an ``apply`` races resources still waiting on inputs.)"""
    resolved: dict[str, Any] = {}

    def body() -> pulumi.Output[Any]:
        return pulumi.Output.all(**(program() or {})).apply(resolved.update)

    pulumi.runtime.test(body)()
    return resolved


def run(config: StackConfig, mocks: PlanMocks | None = None) -> tuple[PlanMocks, dict[str, Any]]:
    """Run the program under mocks; returns the recorder and the resolved exports."""
    from infra.program import build

    mocks = mocks or PlanMocks(config.project, config.region)
    pulumi.runtime.set_mocks(mocks, project="housing-mlops", stack=config.stack, preview=False)
    return mocks, settle(lambda: build(config))


def _public(value: Any) -> Any:
    """Inputs with secrets replaced by a marker: a plan never prints a secret."""
    if isinstance(value, Mapping):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return "[secret]"
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _at(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return None
    return value


def resources(mocks: PlanMocks) -> list[dict[str, Any]]:
    return [{"type": r.typ, "name": r.name, "inputs": _public(r.inputs)} for r in mocks.resources]


def summary(resource: dict[str, Any]) -> str:
    paths = KEY_SETTINGS.get(resource["type"])
    inputs = resource["inputs"]
    if paths is None:
        paths = tuple(k for k, v in sorted(inputs.items()) if not isinstance(v, dict | list))
    shown = {p: _at(inputs, p) for p in paths}
    return ", ".join(
        f"{p}={json.dumps(v, separators=(',', ':'))}" for p, v in shown.items() if v is not None
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.plan", description=__doc__)
    parser.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--json", type=Path, help="also write the plan as JSON to this path")
    args = parser.parse_args(argv)
    try:
        config = read_stack_config(stack_file(args.stack))
    except ConfigError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 1
    mocks, exports = run(config)
    listed = resources(mocks)
    for resource in sorted(listed, key=lambda r: (r["type"], r["name"])):
        line = summary(resource)
        print(f"+ {resource['type']}  {resource['name']}" + (f"\n    {line}" if line else ""))
    print(f"\n{len(listed)} resources for stack {config.stack} ({config.project}, {config.region})")
    for key, value in sorted(exports.items()):
        print(f"  export {key} = {json.dumps(_public(value))}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"stack": config.stack, "resources": listed, "exports": _public(exports)}
        args.json.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        print(f"plan written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
