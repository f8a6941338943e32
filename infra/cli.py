"""Operating a stack: ``python -m infra.cli <command> <stack> …`` (the nox sessions wrap it).

``preview``, ``up`` and ``destroy`` drive the Pulumi CLI through the Automation API, with the
policy pack; ``canary``, ``promote`` and ``rollback`` edit the release section of
``Pulumi.<stack>.yaml`` (a reviewable diff) and then run ``up`` unless ``--no-up``; ``pin`` points
the stack file at image digests and never calls Pulumi.
"""

from __future__ import annotations

import argparse
import shutil
import sys
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
    _stack(name).up(policy_packs=[str(POLICY_PACK)], on_output=print)


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
    promote = sub.add_parser("promote", help="the canary takes all traffic and becomes stable")
    promote.add_argument("stack")
    promote.add_argument("--revision", help="default: the stack's canary_revision output")
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
        print(f"{args.command}: {exc}", file=sys.stderr)
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
