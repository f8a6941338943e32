"""``python -m rollout <stack|local> --model-version N …`` (``nox -s rollout -- …``).

Exit status: 0 promoted; 1 rolled back (the reason on stderr); 2 a wrong option, setting or
release; 3 another controller holds the stack (named); 130 interrupted (the rollout resumes
when the same command runs again).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Literal

import msgspec

from housing_platform.artifact_store import ArtifactStore, StorageError, open_store
from housing_platform.settings_reader import SettingsError, read_settings
from rollout import audit, judge
from rollout.controller import Controller, Plan, RolledBackError, check_plan, progress
from rollout.evidence import EvidenceError
from rollout.lease import TTL_S, Lease, LeaseHeldError
from rollout.probe import ProbeSetError, read_probe_set
from rollout.targets import LocalTarget, StackTarget, Target, TargetError

LOCAL = "local"
ROOT = Path(__file__).resolve().parent.parent
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "ms": 0.001}


class ControllerSettings(msgspec.Struct, frozen=True, kw_only=True):
    home: str = ".housing-mlops"
    """HOUSING_MLOPS_HOME: the local platform's home (its release file, its store)."""
    artifact_uri: str = ""
    """ARTIFACT_URI: the artifact store (audit log, lease, probe sets, prediction log); empty:
    <home>/artifacts; on GCP gs://<bucket>/artifacts."""
    mlflow_tracking_uri: str = ""
    """MLFLOW_TRACKING_URI: the registry ``pipeline promote`` moves the champion alias in."""

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def store_uri(self) -> str:
        return self.artifact_uri or str(self.home_path / "artifacts")


VARIABLES = {
    "HOUSING_MLOPS_HOME": "home",
    "ARTIFACT_URI": "artifact_uri",
    "MLFLOW_TRACKING_URI": "mlflow_tracking_uri",
}


def duration(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h``, ``500ms`` → seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 2m or 1h")
    return float(found[1]) * _UNITS[found[2]]


def percents(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not percents such as 5,25,50,100") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rollout",
        description="Move a release through shadow and canary steps, judging each; roll back "
        "on a failed step, promote after the last.",
    )
    p.add_argument("stack", help="`local` (the running `nox -s stack`) or a Pulumi stack")
    p.add_argument("--model-version", type=int, required=True)
    p.add_argument("--shadow", type=duration, default=0.0, metavar="DURATION")
    p.add_argument("--shadow-percent", type=int, default=100)
    p.add_argument("--steps", type=percents, default=(5, 25, 50, 100))
    p.add_argument(
        "--interval", type=duration, default=60.0, metavar="DURATION",
        help="how long each step lasts at least before it may pass (default 60s)",
    )  # fmt: skip
    p.add_argument(
        "--deadline", type=duration, default=None, metavar="DURATION",
        help="a step still inconclusive this long after it started is rolled back (default "
        "5m; on a stack waiting for Cloud Monitoring, the step's least time + 10m)",
    )  # fmt: skip
    p.add_argument(
        "--monitoring", choices=("wait", "check", "off"), default="wait",
        help="a stack's cross-check by Cloud Monitoring's per-revision request counts: wait "
        "(they can fail a step, which passes only once they cover its window; default), "
        "check (they can only fail it) or off; the local platform has none",
    )  # fmt: skip
    p.add_argument("--check-every", type=duration, default=2.0, metavar="DURATION")
    p.add_argument(
        "--probe-rps", type=float, default=20.0,
        help="probe requests a second to each side's tag URL (default 20)",
    )  # fmt: skip
    p.add_argument("--canary-faults", default="", metavar="SPEC", help="local drills only")
    p.add_argument("--api-url", help="local: the splitter (default: the running stack's)")
    p.add_argument("--config", help="TOML file with a [judge] table of limits")
    p.add_argument("--lease-ttl", type=duration, default=TTL_S, metavar="DURATION")
    return p


def plan_of(args: argparse.Namespace) -> Plan:
    monitoring: Literal["wait", "check", "off"] = "off" if args.stack == LOCAL else args.monitoring
    plan = Plan(
        model_version=args.model_version,
        steps=args.steps,
        shadow_s=args.shadow,
        shadow_percent=args.shadow_percent,
        interval_s=args.interval,
        deadline_s=300.0 if args.deadline is None else args.deadline,
        check_s=args.check_every,
        probe_rps=args.probe_rps,
        faults=args.canary_faults.strip(),
        monitoring=monitoring,
    )
    if args.deadline is None and monitoring == "wait":
        # Room for Cloud Monitoring's counts to cover the longest phase.
        plan = msgspec.structs.replace(plan, deadline_s=max(300.0, plan.least_s + 600.0))
    return plan


def target_of(args: argparse.Namespace, settings: ControllerSettings) -> Target:
    if args.stack != LOCAL:
        return StackTarget(args.stack, ROOT)
    api = args.api_url
    if not api:
        from local_platform.stack import running

        stack = running(settings.home_path)
        if stack is None:
            raise TargetError(
                f"no local stack runs on {settings.home_path}: start it with `nox -s stack` "
                "(or give --api-url)"
            )
        api = stack.api
    return LocalTarget(settings.home_path, api)


def pipeline_promote(settings: ControllerSettings, env: Mapping[str, str]) -> Callable[[int], None]:
    """``python -m pipeline promote --version N``: the champion alias and its export."""

    def promote(version: int) -> None:
        child = dict(env) | {"HOUSING_MLOPS_HOME": str(settings.home_path)}
        if settings.mlflow_tracking_uri:
            child["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "promote", "--version", str(version)],
            cwd=ROOT,
            env=child,
            check=False,
        )
        if done.returncode != 0:
            raise TargetError(f"`python -m pipeline promote --version {version}` failed")

    return promote


def open_log(
    store: ArtifactStore, stack: str, plan: Plan, holder: str
) -> tuple[audit.AuditLog, bool]:
    """The stack's unfinished rollout of the same plan (resumed), or a new one."""
    last = audit.latest(store, stack)
    if last is not None:
        p = progress(last.records())
        if p.done is None and p.plan is not None:
            if p.plan.model_version != plan.model_version:
                raise TargetError(
                    f"rollout {last.rollout_id} of model version {p.plan.model_version} on "
                    f"{stack} is unfinished: run it again with --model-version "
                    f"{p.plan.model_version} to finish it (it resumes where it stopped)"
                )
            return last, True
    log = audit.AuditLog(store, stack, audit.new_rollout_id())
    log.append("start", holder, plan=msgspec.to_builtins(plan))
    return log, False


def main(argv: list[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = parser().parse_args(argv)
    say = lambda line: print(f"rollout: {line}", flush=True)  # noqa: E731
    try:
        settings = read_settings(ControllerSettings, env, VARIABLES)
        limits = judge.read_limits(env, args.config)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    plan = plan_of(args)
    problems = check_plan(plan)
    if plan.faults and args.stack != LOCAL:
        problems.append("--canary-faults: for the local platform only (drills)")
    if plan.faults:
        from service.faults import FaultSpecError, parse

        try:
            parse(plan.faults)
        except FaultSpecError as exc:
            problems.append(f"--canary-faults: {exc}")
    if problems:
        for problem in problems:
            print(f"rollout: {problem}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    store = open_store(settings.store_uri)
    lease = Lease(store, args.stack, ttl_s=args.lease_ttl)
    try:
        lease.acquire()
    except LeaseHeldError as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 3
    try:
        target = target_of(args, settings)
        log, resumed = open_log(store, args.stack, plan, lease.holder)
        lease.rollout_id = log.rollout_id
        lease.renew()
        if resumed:
            log.append("resumed", lease.holder, records=len(log.records()))
            say(f"resuming rollout {log.rollout_id} ({len(log.records())} records)")
            plan = progress(log.records()).plan or plan
        else:
            say(f"rollout {log.rollout_id}: model {plan.model_version} on {args.stack}")
        say(f"audit log {store.uri}/{log.prefix}")
        probe_set = read_probe_set(store, plan.model_name, plan.model_version)
        controller = Controller(
            target=target,
            store=store,
            log=log,
            lease=lease,
            probe_set=probe_set,
            limits=limits,
            promote_model=pipeline_promote(settings, env),
            say=say,
            stopping=stopping,
            cross_check=(
                target.request_counts()
                if isinstance(target, StackTarget) and plan.monitoring != "off"
                else None
            ),
        )
        try:
            controller.run()
        except KeyboardInterrupt:
            log.append("interrupted", lease.holder)
            say("interrupted: run the same command again to resume")
            return 130
        return 0
    except RolledBackError as exc:
        print(f"rollout: rolled back: {exc}", file=sys.stderr)
        return 1
    except (TargetError, ProbeSetError, EvidenceError, StorageError, LeaseHeldError) as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 2
    finally:
        lease.release()


if __name__ == "__main__":
    raise SystemExit(main())
