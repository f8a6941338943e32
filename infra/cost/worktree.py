"""The program and a stack file as they were at a git ref: a throwaway ``git worktree`` (removed
afterwards), planned by that tree's own ``python -m infra.plan`` in a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class RefError(RuntimeError):
    """The ref can't be checked out or planned; the message says why."""


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=120
    )


@contextmanager
def checkout(ref: str, root: Path) -> Iterator[Path]:
    """A detached worktree of ``ref`` in a temporary folder, removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="housing-mlops-cost-"))
    tree = folder / "tree"
    added = _git(root, "worktree", "add", "--detach", "--quiet", str(tree), ref)
    if added.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RefError(
            f"git cannot check out {ref!r}: {added.stderr.strip().splitlines()[-1:] or ['?']}"
            "; fetch it first (CI checks out with fetch-depth: 0)"
        )
    try:
        yield tree
    finally:
        _git(root, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)
        _git(root, "worktree", "prune")


def plan(tree: Path, stack: str, python: str = sys.executable) -> list[dict[str, Any]]:
    """The resources ``tree``'s program declares for ``stack`` (its ``infra.plan --json``)."""
    out = tree.parent / "plan.json"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [python, "-m", "infra.plan", stack, "--json", str(out)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0 or not out.is_file():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RefError(f"the plan of {stack} at that ref failed: {last[0]}")
    return list(json.loads(out.read_text())["resources"])
