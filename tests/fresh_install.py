"""Helpers of the tests that install the package as a new user would: fresh venvs, a copy of
the checkout, child processes with an environment that does not point at this checkout, and
long-running servers (fake Synerise, runserver, Celery worker) stopped with their children."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Environment variables that would point a child process at this checkout or its test run.
HOST_VARIABLES = frozenset(
    {
        "DJANGO_SETTINGS_MODULE",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "DATABASE_URL",
        "SYNERISE_API_KEY",
        "SYNERISE_BASE_URL",
        "SYNERISE_TOKEN_KEYS",
    }
)

#: Files of the source tree never copied (used when the tree is not a git checkout).
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".tox",
    "__pycache__",
    "*.py[cod]",
    "*.egg-info",
    "build",
    "dist",
    "_build",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "var",
    "*.sqlite3",
)


def run(
    args: list[str | Path] | str,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> str:
    """Run a command (a string runs through bash); fail the test with its output unless it
    exits 0. Returns stdout + stderr."""
    shell = isinstance(args, str)
    command: list[str] | str = args if shell else [str(a) for a in args]
    proc = subprocess.run(
        ["bash", "-c", command] if shell else command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{output}"
    return output


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without :data:`HOST_VARIABLES`, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in HOST_VARIABLES}
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def with_venv(env: dict[str, str], venv: Path) -> dict[str, str]:
    """``env`` as ``. venv/bin/activate`` leaves it."""
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}


def copy_source(dest: Path) -> Path:
    """Copy the project as a fresh clone would have it (tracked + new, not ignored files)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
        return dest
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """A long-running command (in its own process group), its output in ``log``."""

    def __init__(self, command: list[str] | str, *, cwd: Path, env: dict[str, str], log: Path):
        self.command = command
        self.log = log
        self._log_file = log.open("w")
        shell = isinstance(command, str)
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"] if shell else command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        """What the command printed so far."""
        return self.log.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail with the log if the command exits or
        ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.command} exited {self.process.returncode} before {what}:\n"
                    f"{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.command}: no {what} in {timeout} s:\n{self.output()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Ctrl-C the process group, then kill it if it lingers."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGINT)
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        # Children that outlived the leader (e.g. a prefork pool) go with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log_file.close()
