"""An offline plan: run the program under Pulumi's unit-test mocks with a stack file's config and
list every resource it would declare: ``python -m infra.plan dev [--json PATH]``.

No Pulumi CLI, no cloud: the engine is Pulumi's own mock runtime, so what is listed is exactly
what the program asks for. Outputs only GCP computes (URLs, emails) are given plausible values.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor
from ruamel.yaml import YAML

from infra.config import ConfigError, StackConfig, parse

ROOT = Path(__file__).resolve().parent.parent
#: Placeholder digests and a first release: every workload declared although the committed stack
#: files pin no image (see the file's header).
FULL_STACK_OVERLAY = ROOT / "infra" / "overlays" / "full-stack.yaml"
#: How the engine marks a secret on the wire; the plan shows it as [secret].
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")
#: Inputs worth a reviewer's eye, per resource type (dotted paths); other types show scalars.
KEY_SETTINGS = {
    "gcp:cloudrunv2/service:Service": (
        "name",
        "template.revision",
        "template.containers.0.image",
        "template.executionEnvironment",
        "template.scaling",
        "traffics",
        "deletionProtection",
    ),
    "gcp:cloudrunv2/job:Job": (
        "name",
        "template.taskCount",
        "template.parallelism",
        "template.template.containers.0.image",
        "template.template.containers.0.commands",
        "template.template.containers.0.args",
        "template.template.containers.0.resources.limits",
        "template.template.timeout",
        "template.template.maxRetries",
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
        "lifecycleRules",
    ),
    # A grant's IAM condition is what scopes it to a prefix: worth the reviewer's eye.
    "gcp:storage/bucketIAMMember:BucketIAMMember": ("bucket", "role", "member", "condition"),
}


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


class RecordingMonitor(MockMonitor):
    """The mock engine, also recording what each resource waits for: ``dependencies`` (its
    ``depends_on``) and ``propertyDependencies`` (the resources behind each input). Mocks
    accept any order; this is what a real ``up`` would order by."""

    def __init__(self, mocks: PlanMocks):
        super().__init__(mocks)
        self.recorder = mocks

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC's spelling)
        deps = {_name(u) for u in request.dependencies}
        by_prop = {k: {_name(u) for u in v.urns} for k, v in request.propertyDependencies.items()}
        self.recorder.dependencies[request.name] = deps
        self.recorder.property_dependencies[request.name] = by_prop
        return super().RegisterResource(request)


class PlanMocks(pulumi.runtime.Mocks):
    """Records every resource; echoes inputs as outputs plus what GCP would compute."""

    def __init__(self, project: str = "housing-mlops-dev", region: str = "europe-west1"):
        self.project = project
        self.region = region
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.dependencies: dict[str, set[str]] = {}
        self.property_dependencies: dict[str, dict[str, set[str]]] = {}

    def random_text(self, inputs: Mapping[str, Any]) -> str:
        """A stand-in for a random string: fixed, so plans are reproducible."""
        return "a1b2c3d4e5f6"[: int(inputs["length"])]

    def waits_for(self, name: str) -> set[str]:
        """Every resource ``name`` waits for, directly or through what it waits for."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            direct = set(self.dependencies.get(current, set()))
            for names in self.property_dependencies.get(current, {}).values():
                direct |= names
            for dep in direct - seen:
                seen.add(dep)
                todo.append(dep)
        return seen

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
    "random:index/randomString:RandomString": lambda m, o: {"result": m.random_text(o)},
    "gcp:sql/databaseInstance:DatabaseInstance": lambda m, o: {
        "connectionName": f"{o.get('project', m.project)}:{o.get('region', m.region)}:{o['name']}"
    },
    "gcp:serviceaccount/account:Account": _account_outputs,
    "gcp:cloudrunv2/service:Service": _service_outputs,
    "gcp:projects/iAMCustomRole:IAMCustomRole": lambda m, o: {
        "name": f"projects/{o.get('project', m.project)}/roles/{o['roleId']}"
    },
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


def read_stack_config(path: Path, *, full_stack: bool = False) -> StackConfig:
    """The typed config of a stack file, as ``pulumi up`` would read it; ``full_stack`` lays the
    placeholder overlay over it first."""
    if not path.is_file():
        raise ConfigError(f"{path.name} not found: create it with `pulumi stack init`")
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return config_from_text(path.read_text(), stack, full_stack=full_stack)


def with_overlay(values: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each key of ``overlay`` filled in where the stack leaves it unset or
    empty (one level into sections): a real digest or release in the stack file always wins."""
    merged = dict(values)
    for key, extra in overlay.items():
        mine = merged.get(key)
        if isinstance(mine, Mapping) and isinstance(extra, Mapping):
            merged[key] = {**extra, **{k: v for k, v in mine.items() if v not in ("", None)}}
        elif mine in ("", None):
            merged[key] = extra
    return merged


def config_from_text(text: str, stack: str, *, full_stack: bool = False) -> StackConfig:
    values = (YAML(typ="safe").load(text) or {}).get("config") or {}
    if full_stack:
        overlay = YAML(typ="safe").load(FULL_STACK_OVERLAY.read_text())["config"]
        values = with_overlay(values, overlay)
    return parse(values, stack)


Program = Callable[[], Mapping[str, Any] | None]


def settle(program: Program) -> dict[str, Any]:
    """Run ``program`` under the mocks already set until every resource is registered; its
    outputs, resolved. (Checking inside an ``apply`` races resources still waiting on inputs.)"""
    resolved: dict[str, Any] = {}

    def body() -> pulumi.Output[Any]:
        return pulumi.Output.all(**(program() or {})).apply(resolved.update)

    pulumi.runtime.test(body)()
    return resolved


def set_mocks(mocks: pulumi.runtime.Mocks, **options: Any) -> None:
    """``pulumi.runtime.set_mocks`` with a current event loop: Pulumi's runtime asks asyncio for
    it, and a library that ran and closed its own (an ASGI test client) leaves none behind."""
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(mocks, **options)


def run(config: StackConfig, mocks: PlanMocks | None = None) -> tuple[PlanMocks, dict[str, Any]]:
    """Run the program under mocks; returns the recorder and the resolved exports."""
    from infra.program import build

    mocks = mocks or PlanMocks(config.project, config.region)
    set_mocks(
        mocks,
        project="housing-mlops",
        stack=config.stack,
        preview=False,
        monitor=RecordingMonitor(mocks),
    )
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
    parser.add_argument(
        "--as-committed",
        action="store_true",
        help="plan the stack file alone (default: with placeholder digests and a release for "
        "what it leaves unset, so every workload is listed)",
    )
    args = parser.parse_args(argv)
    try:
        config = read_stack_config(stack_file(args.stack), full_stack=not args.as_committed)
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
