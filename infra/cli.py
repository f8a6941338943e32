"""Operating a stack: ``python -m infra.cli <command> <stack> …`` (the nox sessions wrap it).

``preview``, ``up`` and ``destroy`` drive the Pulumi CLI through the Automation API, with the
policy pack; ``canary``, ``promote`` and ``rollback`` edit the release section of
``Pulumi.<stack>.yaml`` (a reviewable diff) and then run ``up`` unless ``--no-up``; ``pin`` points
the stack file at image digests and never calls Pulumi.

The stack ``local`` is the local platform: ``canary``, ``promote`` and ``rollback`` make the same
edits to ``$HOUSING_MLOPS_HOME/release.yaml``, which the running ``nox -s stack`` applies (so
``--no-up`` is ignored there: the edit is the deploy); a canary waits until its revision is
listed, and ``--canary-faults`` starts it with a HOUSING_FAULTS spec for a drill.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infra.config import ConfigError
from infra.plan import ROOT, config_from_text, stack_file
from infra.release import stack_edits
from infra.release.traffic import ReleaseError

POLICY_PACK = ROOT / "infra" / "policy"
INSTALL_HINT = (
    "the Pulumi CLI is not installed: install it with `curl -fsSL https://get.pulumi.com | sh` "
    "(https://www.pulumi.com/docs/install/), or use `nox -s plan` offline"
)


#: The local platform's stack name (see the module's docstring).
LOCAL = "local"


class CLIMissingError(RuntimeError):
    pass


def require_cli() -> None:
    if shutil.which("pulumi") is None:
        raise CLIMissingError(INSTALL_HINT)


def _stack(name: str) -> Any:
    require_cli()
    from pulumi import automation as auto

    return auto.select_stack(stack_name=name, work_dir=str(ROOT))


def preview(name: str) -> None:
    _stack(name).preview(policy_packs=[str(POLICY_PACK)], diff=True, on_output=print)


def up(name: str) -> None:
    result = _stack(name).up(policy_packs=[str(POLICY_PACK)], on_output=print)
    outputs = {key: output.value for key, output in result.outputs.items()}
    publish_release(name, outputs, os.environ)


def publish_release(
    stack: str, outputs: Mapping[str, Any], env: Mapping[str, str], root: Path = ROOT
) -> None:
    """After an ``up``: the release feed (what the stable revision mirrors) and the live traffic
    split (what the console shows) in the stack's artifact store, ARTIFACT_URI or the
    ``bucket`` output's ``gs://<bucket>/artifacts``. Without a release nothing is published."""
    from housing_platform import release_feed, traffic_split
    from housing_platform.artifact_store import open_store
    from infra.release.publication import from_stack

    release = config_from_text(stack_file(stack, root).read_text(), stack).release
    if release is None or not outputs.get("live_revision"):
        return
    bucket = outputs.get("bucket")
    uri = env.get("ARTIFACT_URI", "") or (f"gs://{bucket}/artifacts" if bucket else "")
    if not uri:
        print(f"note: no ARTIFACT_URI and no bucket output: {stack}'s release was not published")
        return
    feed, split = from_stack(release, outputs)
    store = open_store(uri)
    release_feed.publish(store, feed)
    traffic_split.publish(store, split)
    print(f"published the release feed and traffic split under {uri}/releases/")


def destroy(name: str) -> None:
    _stack(name).destroy(on_output=print)


ACTIONS = {"preview": preview, "up": up, "destroy": destroy}


def stack_output(name: str, key: str, given: str | None, flag: str) -> str:
    """A revision name: as given on the command line, else the stack's ``key`` output (names
    hash resolved outputs, so only the stack knows them)."""
    if given:
        return given
    try:
        outputs = _stack(name).outputs()
    except CLIMissingError:
        raise CLIMissingError(f"{INSTALL_HINT}; or name the revision with {flag}") from None
    value = outputs.get(key)
    if value is None or not value.value:
        raise ReleaseError(
            f"stack {name} has no {key} output: deploy a first release with canaryPercent 100"
            if key == "live_revision"
            else f"stack {name} has no {key} output: nothing is on trial to promote"
        )
    return str(value.value)


def edit(args: argparse.Namespace, before: str) -> str:
    """The stack file's new text for an editing command."""
    if args.command == "canary":
        first = stack_edits.read_release(before) is None
        stable = (
            ""
            if first
            else stack_output(
                args.stack, "live_revision", args.stable_revision, "--stable-revision"
            )
        )
        return stack_edits.canary(before, args.model_version, args.percent, stable, args.image)
    if args.command == "promote":
        revision = stack_output(args.stack, "canary_revision", args.revision, "--revision")
        return stack_edits.promote(before, revision)
    if args.command == "pin":
        return stack_edits.pin(before, dict(args.image))
    return stack_edits.rollback(before)


def refuse_while_rolling_out(stack: str, env: Mapping[str, str]) -> None:
    """A hand-run canary, promote or rollback while ``nox -s rollout`` drives the stack would
    shift traffic under the controller: refused, naming the lease's holder. The lease is in the
    artifact store (ARTIFACT_URI; locally ``<home>/artifacts``); on GCP without ARTIFACT_URI
    there is nothing to read it from, and that is said."""
    from housing_platform.artifact_store import open_store
    from local_platform.local_settings import from_env
    from rollout.lease import LeaseHeldError, check_free

    uri = env.get("ARTIFACT_URI", "")
    if not uri and stack == LOCAL:
        uri = str(from_env(env).home_path / "artifacts")
    if not uri:
        print(
            f"note: ARTIFACT_URI is not set, so no rollout's lease on {stack} was checked "
            "(set it to gs://<bucket>/artifacts)"
        )
        return
    try:
        check_free(open_store(uri), stack)
    except LeaseHeldError as exc:
        raise ReleaseError(str(exc)) from None


def local(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """``canary``/``promote``/``rollback`` against the local platform's release file."""
    from local_platform import release_state, revisions, stack
    from local_platform.local_settings import from_env
    from service.faults import FaultSpecError, parse

    if args.command == "pin" or getattr(args, "image", None):
        raise ReleaseError(
            f"{'pin' if args.command == 'pin' else '--image'} has no meaning on the local stack: "
            "every local revision runs this checkout"
        )
    if args.no_up:
        print(f"{args.command}: --no-up is ignored on the local stack (the edit is the deploy)")
    if getattr(args, "canary_faults", None):
        try:
            parse(args.canary_faults)
        except FaultSpecError as exc:
            raise ReleaseError(f"--canary-faults: {exc}") from None
    home = from_env(env).home_path
    found = stack.running(home)
    if found is None:
        raise ReleaseError(
            f"no local stack runs on {home}: start it with `nox -s stack` (it applies "
            f"{release_state.FILE_NAME}), or set HOUSING_MLOPS_HOME to its home"
        )
    path = release_state.path_in(home)
    state = release_state.read(path)
    if state.pending:
        raise ReleaseError(
            f"the last change (model version {state.release.model_version}) is still being "
            f"applied: wait for it, or see {home / 'logs'}"
        )
    if args.command == "canary":
        faults = args.canary_faults
        if faults is None:  # moving a canary's percent keeps its revision, and its faults
            same = args.model_version == state.release.model_version
            faults = state.revision_faults if same else ""
        faults = faults.strip()
        live = args.stable_revision or state.live

        def change(text: str) -> str:
            edited = stack_edits.canary(text, args.model_version, args.percent, live)
            return release_state.with_faults(edited, faults)

        offsets = revisions.log_sizes(home, [revisions.name_of(args.model_version, faults)])
        before, after = _edit_local(path, change)
        try:
            name = revisions.wait_listed(
                home,
                args.model_version,
                faults,
                timeout_s=args.timeout,
                stack_pid=found.pid,
                log_offset=offsets,
            )
        except revisions.RevisionError as exc:
            # Traffic never moved (the splitter kept the last release it could apply): put the
            # file back as it was, unless something changed it since.
            release_state.edit(path, lambda text: before if text == after else text)
            raise ReleaseError(f"{exc}; {path.name} is back as it was") from None
        print(f"canary: {name} serves model version {args.model_version} at {args.percent}%")
        print(f"canary: tag URLs {found.api}/tags/canary/ and {found.api}/tags/stable/")
        return
    if args.command == "promote":
        revision = args.revision or state.newest
        _edit_local(path, lambda text: stack_edits.promote(text, revision))
    else:
        _edit_local(path, stack_edits.rollback)


def _edit_local(path: Path, change: Callable[[str], str]) -> tuple[str, str]:
    """Edits the local release file under its lock; prints and returns (before, after)."""
    from local_platform import release_state

    seen: list[str] = []

    def recorded(text: str) -> str:
        seen[:] = [text, change(text)]
        return seen[1]

    release_state.edit(path, recorded)
    _print_diff(seen[0], seen[1], path)
    return seen[0], seen[1]


def _image(value: str) -> tuple[str, str]:
    part, sep, ref = value.partition("=")
    if not sep or not ref:
        raise argparse.ArgumentTypeError(f"{value!r} is not PART=REF (e.g. service=…@sha256:…)")
    return part, ref


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("preview", "up", "destroy"):
        sub.add_parser(command).add_argument("stack")
    canary = sub.add_parser("canary", help="send --percent of traffic to a new model version")
    canary.add_argument("stack")
    canary.add_argument("--model-version", type=int, required=True)
    canary.add_argument("--percent", type=int, required=True)
    canary.add_argument("--image", help="new service image (default: keep the current one)")
    canary.add_argument("--stable-revision", help="default: the stack's live_revision output")
    canary.add_argument(
        "--canary-faults",
        metavar="SPEC",
        help="local stack only: HOUSING_FAULTS of the new revision, e.g. error_rate=0.05",
    )
    canary.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="local stack only: seconds to wait for the new revision (default 300)",
    )
    promote = sub.add_parser("promote", help="the canary takes all traffic and becomes stable")
    promote.add_argument("stack")
    promote.add_argument(
        "--revision",
        help="default: the stack's canary_revision output (local: the newest listed revision)",
    )
    sub.add_parser("rollback", help="the stable revision takes all traffic back").add_argument(
        "stack"
    )
    pin = sub.add_parser("pin", help="point the stack file at images (by digest)")
    pin.add_argument("stack")
    pin.add_argument(
        "--image", type=_image, action="append", required=True, metavar="PART=REF",
        help=f"PART is one of {', '.join(stack_edits.IMAGE_PARTS)}; repeatable",
    )  # fmt: skip
    for command in ("canary", "promote", "rollback"):
        sub.choices[command].add_argument(
            "--no-up", action="store_true", help="only edit the stack file"
        )
    args = parser.parse_args(argv)
    try:
        if args.command in {"canary", "promote", "rollback"}:
            refuse_while_rolling_out(args.stack, os.environ)
        if getattr(args, "stack", "") == LOCAL and args.command in ACTIONS:
            raise ReleaseError(
                f"the local stack has no Pulumi program to {args.command}: run `nox -s stack`"
            )
        if getattr(args, "stack", "") == LOCAL:
            local(args, os.environ)
            return 0
        if getattr(args, "canary_faults", None) is not None:
            raise ReleaseError(
                "--canary-faults is for the local stack; on GCP a drill sets `service.faults` "
                "in the stack file"
            )
        if args.command in {"canary", "promote", "rollback", "pin"}:
            path = stack_file(args.stack, root)
            if not path.is_file():
                raise ConfigError(f"{path.name} not found: create it with `pulumi stack init`")
            before = path.read_text()
            after = edit(args, before)
            config_from_text(after, args.stack)  # the whole stack still valid, before writing
            path.write_text(after)
            _print_diff(before, after, path)
            if args.command == "pin" or args.no_up:
                return 0
            up(args.stack)
        else:
            ACTIONS[args.command](args.stack)
    except (CLIMissingError, ConfigError, ReleaseError) as exc:
        print(f"{args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1

    return 0


def _print_diff(before: str, after: str, path: Path) -> None:
    import difflib

    diff = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), str(path), str(path)
    )
    sys.stdout.writelines(diff)


if __name__ == "__main__":
    raise SystemExit(main())
