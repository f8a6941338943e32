"""Operating a stack: ``python -m infra.cli <command> <stack> …`` (the nox sessions wrap it).

``preview``, ``up`` and ``destroy`` drive the Pulumi CLI through the Automation API, with the
policy pack; ``canary``, ``promote`` and ``rollback`` edit the release section of
``Pulumi.<stack>.yaml`` (a reviewable diff) and then run ``up`` unless ``--no-up``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from infra import stackfile
from infra.config import ConfigError
from infra.plan import ROOT, config_from_text, stack_file
from infra.traffic import ReleaseError

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
EDITS = {"promote": stackfile.promote, "rollback": stackfile.rollback}


def live_revision(name: str, given: str | None) -> str:
    """The revision serving users now: as given, else from the stack's outputs."""
    if given:
        return given
    try:
        outputs = _stack(name).outputs()
    except CLIMissingError:
        raise CLIMissingError(
            f"{INSTALL_HINT}; or name the live revision with --stable-revision"
        ) from None
    live = outputs.get("live_revision")
    if live is None or not live.value:
        raise ReleaseError(
            f"stack {name} has no live_revision output yet: deploy a first release with "
            "canaryPercent 100"
        )
    return str(live.value)


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
    for command, help_text in (
        ("promote", "the canary takes all traffic"),
        ("rollback", "the stable revision takes all traffic back"),
    ):
        sub.add_parser(command, help=help_text).add_argument("stack")
    for command in ("canary", "promote", "rollback"):
        sub.choices[command].add_argument(
            "--no-up", action="store_true", help="only edit the stack file"
        )
    args = parser.parse_args(argv)
    try:
        if args.command in {"canary", "promote", "rollback"}:
            path = stack_file(args.stack, root)
            if not path.is_file():
                raise ConfigError(f"{path.name} not found: create it with `pulumi stack init`")
            before = path.read_text()
            if args.command == "canary":
                stable = live_revision(args.stack, args.stable_revision)
                after = stackfile.canary(
                    before, args.model_version, args.percent, stable, args.image
                )
            else:
                after = EDITS[args.command](before)
            config_from_text(after, args.stack)  # the whole stack still valid, before writing
            path.write_text(after)
            _print_diff(before, after, path)
            if args.no_up:
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
