"""`nox -s tests` on a fresh machine: what it finds, what it installs, what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import system_tools as st


def which_of(*present: str, folder: str = "/usr/bin"):
    return lambda name: f"{folder}/{name}" if name in present else None


def test_a_complete_machine_needs_nothing():
    found = st.find(
        which_of("chromium", "chromedriver", "initdb", "pg_ctl", "strace"), shim=lambda p: False
    )
    assert found.missing() == []
    assert st.plan(found, can_apt=False) == st.Plan()
    env = st.environment(found)
    assert env["CHROMIUM"] == "/usr/bin/chromium"
    assert env["PATH"].startswith("/usr/bin")


def test_debians_postgres_binaries_off_path_are_found_and_put_on_it(tmp_path):
    for version in ("15", "16"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for tool in st.POSTGRES_TOOLS:
            (bin_dir / tool).touch()
    found = st.find(
        which_of("chromium", "chromedriver", "strace"),
        versions=lambda: [str(tmp_path / "15" / "bin"), str(tmp_path / "16" / "bin")],
        shim=lambda p: False,
    )
    assert found.postgres_bin == str(tmp_path / "16" / "bin")
    assert st.environment(found)["PATH"].split(":")[0] == str(tmp_path / "16" / "bin")


def test_as_root_on_debian_the_missing_packages_are_installed():
    found = st.find(which_of(), versions=lambda: [], shim=lambda p: False)
    assert found.missing() == ["browser", "postgres", "strace"]
    assert st.plan(found, can_apt=True).install == (
        "chromium",
        "chromium-driver",
        "postgresql",
        "strace",
    )


def test_without_root_or_sudo_it_stops_with_one_line_naming_what_to_install():
    found = st.find(
        which_of("chromium", "chromedriver", "strace"), versions=lambda: [], shim=lambda p: False
    )
    step = st.plan(found, can_apt=False)
    assert step.install == ()
    assert "\n" not in step.error
    assert "PostgreSQL server binaries (initdb, pg_ctl)" in step.error
    assert "sudo apt-get install postgresql" in step.error
    assert "Chromium" not in step.error


def test_ubuntus_snap_shim_is_not_taken_for_a_browser():
    found = st.find(
        which_of("chromium-browser", "chromedriver", "initdb", "pg_ctl", "strace"),
        shim=lambda p: p.endswith("chromium-browser"),
    )
    assert found.browser is None
    step = st.plan(found, can_apt=True)
    assert step.install == ()
    assert "/usr/bin/chromium-browser only runs the snap" in step.error


def test_google_chrome_serves_when_chromium_is_a_shim():
    found = st.find(
        which_of("chromium", "google-chrome", "chromedriver", "initdb", "pg_ctl", "strace"),
        shim=lambda p: p.endswith("/chromium"),
    )
    assert found.browser == "/usr/bin/google-chrome"
    assert found.missing() == []


@pytest.mark.parametrize(
    ("content", "shim"),
    [
        (b'#!/bin/sh\n# run the snap\nexec /snap/bin/chromium "$@"\n', True),
        (b"\x7fELF\x02\x01\x01" + b"/snap/ in a string table", False),
        (b'#!/bin/sh\nexec /usr/lib/chromium/chromium "$@"\n', False),
    ],
)
def test_a_shim_is_recognised_by_what_it_runs(tmp_path: Path, content: bytes, shim: bool):
    path = tmp_path / "chromium-browser"
    path.write_bytes(content)
    assert st.is_snap_shim(str(path)) is shim


def test_this_machine_is_ready_for_the_suite():
    """The suite runs here: the session found or installed everything (else it stops first)."""
    assert st.find().missing() == []


def test_a_missing_strace_is_installed_with_apt_or_named():
    found = st.find(which_of("chromium", "chromedriver", "initdb", "pg_ctl"), shim=lambda p: False)
    assert found.missing() == ["strace"]
    assert st.plan(found, can_apt=True).install == ("strace",)
    assert "sudo apt-get install strace`" in st.plan(found, can_apt=False).error
