"""``make test`` on a machine without Chromium and without root: the browser tests become one
failure that says how to install it, and everything else still runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fresh_install import ROOT

INSTALL_HINT = "sudo apt-get install chromium"


@pytest.mark.parametrize("ci", ["", "1"], ids=["developer", "ci"])
def test_missing_chromium_is_one_failure_with_the_fix_and_the_rest_runs(ci, tmp_path):
    """The suite run as ``make test`` runs it, with Chromium absent from the paths the browser
    conftest checks (``CHROMIUM_PATH`` pointing nowhere): the browser tests give one failing
    item with the install line (in CI too), the other selected tests pass."""
    env = {
        **os.environ,
        "CHROMIUM_PATH": str(tmp_path / "no-chromium"),
        "CI": ci,
        "COLUMNS": "300",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "tests/browser",
            "tests/test_troubleshooting.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    hint_lines = [line for line in output.splitlines() if INSTALL_HINT in line]
    assert len(hint_lines) == 2, output  # the failure itself and its short summary line
    assert hint_lines[0].startswith(f"Chromium not found at {tmp_path / 'no-chromium'}: ")
    # The stand-in takes the place of the first browser test collected (pytest-django runs
    # the database-using ones first).
    assert re.match(r"FAILED tests/browser/test_\w+\.py::chromium - ", hint_lines[1])
    summary = output.strip().splitlines()[-1]
    assert summary.startswith("=") and " 1 failed, " in summary and " passed" in summary, summary
    assert "error" not in summary and "skipped" not in summary, summary
    assert "DEMO READY" not in output  # the example site was never started


def test_ensure_chromium_without_root_lets_the_test_run_go_on():
    """scripts/ensure-chromium as an unprivileged user with no chromium on PATH: exits 0 and
    prints nothing, so ``make test`` goes on to the test run (which reports the browser)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the unprivileged user must reach its PATH
        _run_ensure_chromium_unprivileged(Path(tmp))


def _run_ensure_chromium_unprivileged(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("id",):  # what the script runs besides shell builtins; no chromium, no apt-get
        (bindir / tool).symlink_to(shutil.which(tool))
    script = (ROOT / "scripts" / "ensure-chromium").read_text()
    command = ["/bin/sh", "-s"]
    if os.geteuid() == 0:  # drop to nobody, as a developer without root runs it
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to run this test as root"
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {"PATH": str(bindir), "HOME": str(tmp_path)}
    proc = subprocess.run(
        command,
        input=script,
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert not Path(bindir / "chromium").exists()
