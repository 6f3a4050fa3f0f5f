"""Start and stop a real ``celery worker`` subprocess for the task tests.

One definition of how a test worker is launched on its own queue, waited for (a loaded
machine starts one slowly) and stopped with its pool children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.child_env import ROOT

#: How long a worker may take to answer its first ping on a loaded 2-core machine.
START_TIMEOUT = 120


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (the prefork pool of a worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def celery_worker(
    app: Any, *, queue: str, name: str, env: dict[str, str], log: Path, concurrency: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celery -A tests.celery_app worker`` consuming ``queue``; yield it once it answers
    a ping (the test fails with the worker's log if it does not within ``START_TIMEOUT``).

    On exit the worker gets SIGTERM (SIGKILL after 15 s) and any pool child left is killed.
    """
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker", "-P", "prefork",
             "-c", str(concurrency), "-Q", queue, "-l", "INFO", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not app.control.ping(timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"The Celery worker did not start:\n{log.read_text(errors='replace')[-4000:]}"
                )
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        for child in children(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
