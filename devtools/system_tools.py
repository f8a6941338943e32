"""What the test suite needs from the system, and how `nox -s tests` gets it on a fresh machine.

The suite drives a real Chromium (with its driver), starts a throwaway PostgreSQL
(``initdb``/``pg_ctl``) and counts the service's system calls with ``strace``, none of which pip
can install. On Debian and Ubuntu, as root or with
passwordless sudo, the session installs them with apt; elsewhere it stops before running
anything, with one line naming what to install. Standard library only: the noxfile imports it
before any venv exists.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Browser commands, in order of preference (Debian's, Ubuntu's, Google's).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER = "chromedriver"
POSTGRES_TOOLS = ("initdb", "pg_ctl")
STRACE = "strace"
#: Debian's packages for each need.
APT_PACKAGES = {
    "browser": ("chromium", "chromium-driver"),
    "postgres": ("postgresql",),
    "strace": ("strace",),
}


def is_snap_shim(path: str, read: Callable[[str], bytes] | None = None) -> bool:
    """Ubuntu's apt ``chromium``/``chromium-browser`` is a script that only runs the snap: it
    fails without snapd, as in containers and CI images."""
    real = os.path.realpath(path)
    if real.startswith("/snap/"):
        return True
    try:
        head = (read or (lambda p: Path(p).read_bytes()[:4096]))(real)
    except OSError:
        return False
    return not head.startswith(b"\x7fELF") and b"/snap/" in head


@dataclass
class Found:
    browser: str | None = None
    driver: str | None = None
    postgres_bin: str | None = None
    strace: str | None = None
    snap_shims: list[str] = field(default_factory=list)

    def missing(self) -> list[str]:
        needs = []
        if self.browser is None or self.driver is None:
            needs.append("browser")
        if self.postgres_bin is None:
            needs.append("postgres")
        if self.strace is None:
            needs.append("strace")
        return needs


def find(
    which: Callable[[str], str | None] = shutil.which,
    versions: Callable[[], list[str]] | None = None,
    shim: Callable[[str], bool] = is_snap_shim,
) -> Found:
    """What is installed: a working browser, its driver, the PostgreSQL server binaries (on
    PATH, or in Debian's ``/usr/lib/postgresql/<version>/bin``, which is not on PATH) and
    strace."""
    found = Found(driver=which(DRIVER), strace=which(STRACE))
    for name in BROWSERS:
        path = which(name)
        if path is None:
            continue
        if shim(path):
            found.snap_shims.append(path)
            continue
        found.browser = path
        break
    on_path = [which(tool) for tool in POSTGRES_TOOLS]
    if all(on_path):
        found.postgres_bin = str(Path(on_path[0] or "").parent)
    else:
        dirs = (versions or _debian_postgres_bins)()
        usable = [d for d in dirs if all(Path(d, t).exists() for t in POSTGRES_TOOLS)]
        found.postgres_bin = usable[-1] if usable else None
    return found


def _debian_postgres_bins() -> list[str]:
    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    return sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), key=version)


@dataclass
class Plan:
    install: tuple[str, ...] = ()
    """Debian packages to install with apt (as root, or through sudo)."""
    error: str = ""
    """Set when nothing can be installed here: the one line to print before stopping."""


def plan(found: Found, *, can_apt: bool) -> Plan:
    """What to do about what is missing: install it with apt, or say what to install."""
    missing = found.missing()
    if not missing:
        return Plan()
    packages = tuple(p for need in missing for p in APT_PACKAGES[need])
    shim_note = (
        f" ({', '.join(found.snap_shims)} only runs the snap: install snapd, or Google Chrome "
        "with a matching chromedriver)"
        if found.snap_shims and "browser" in missing
        else ""
    )
    if can_apt and not (found.snap_shims and "browser" in missing):
        return Plan(install=packages)
    what = []
    if "browser" in missing:
        what.append("a Chromium browser and chromedriver" + shim_note)
    if "postgres" in missing:
        what.append("the PostgreSQL server binaries (initdb, pg_ctl)")
    if "strace" in missing:
        what.append("strace")
    return Plan(
        error=(
            f"nox -s tests needs {' and '.join(what)}: run `sudo apt-get install "
            f"{' '.join(packages)}` (or your system's equivalent), then run it again"
        )
    )


def can_apt(which: Callable[[str], str | None] = shutil.which) -> tuple[bool, list[str]]:
    """Whether apt can be run here without a password, and the command prefix to run it."""
    if which("apt-get") is None:
        return False, []
    if os.geteuid() == 0:
        return True, []
    if which("sudo") is None:
        return False, []
    import subprocess

    ok = subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    return ok, ["sudo", "-n"] if ok else []


def environment(found: Found) -> dict[str, str]:
    """What the suite's processes need to see: the PostgreSQL binaries on PATH, and which
    browser to drive."""
    env: dict[str, str] = {}
    if found.postgres_bin:
        env["PATH"] = os.pathsep.join([found.postgres_bin, os.environ.get("PATH", "")])
    if found.browser:
        env["CHROMIUM"] = found.browser
    return env
