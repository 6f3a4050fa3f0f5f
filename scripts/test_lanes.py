#!/usr/bin/env python3
"""Run the whole test suite as two pytest processes at once; ``make test`` runs this.

Much of the suite's time goes to a few files: pip building virtualenvs and installing the
wheel (``test_quickstart.py``, ``test_packaging.py``), PostgreSQL sessions racing each other
(``test_reliability_concurrency.py``), child interpreters importing every module
(``test_import_order.py``), every endpoint fed thousands of nested bodies
(``test_security_nesting.py``) and real Celery workers waiting out outages and kills
(``test_reliability_systemic.py``, ``test_tasks_celery.py``). Lane 2 runs those files while
lane 1 runs every other test, so a run takes about as long as its longer lane instead of the
sum of both. Every test still runs exactly once.

The lanes share nothing but the servers. Lane 2 has a test database of its own
(pytest-django's ``TOX_PARALLEL_ENV`` suffix: ``test_<name>_lane2``) and the Redis database
:data:`LANE_2_REDIS_DB` of ``CELERY_BROKER_URL``'s server, so one lane's Celery worker never
takes the other's tasks (``make stress`` lanes use databases 15, 14, ...). Lane 1 runs in this
terminal; lane 2's output follows it. The exit status is 0 when both lanes passed, else the
first non-zero status of lane 1, then lane 2.

Usage::

    scripts/test_lanes.py [PYTEST ARGS...]     # the arguments go to both lanes

Run ``pytest`` itself to run a file or a selection in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

#: The files lane 2 runs (every other test runs in lane 1).
LANE_2 = (
    "tests/test_quickstart.py",
    "tests/test_packaging.py",
    "tests/test_reliability_concurrency.py",
    "tests/test_import_order.py",
    "tests/test_security_nesting.py",
    "tests/test_reliability_systemic.py",
    "tests/test_tasks_celery.py",
)

#: The Redis database lane 2's Celery tests use, on the server of ``CELERY_BROKER_URL``.
LANE_2_REDIS_DB = 11


def with_redis_database(url: str, database: int) -> str:
    """``url`` with its Redis database number (the path) replaced by ``database``; its
    credentials and query (``?ssl_cert_reqs=...``) are kept. Another broker's URL is returned
    unchanged: its tests then share the broker. ``make stress`` lanes use it too."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        return url
    return urlunsplit(parts._replace(path=f"/{database}"))


def lane_2_broker(url: str) -> str:
    """``url`` on :data:`LANE_2_REDIS_DB` (see :func:`with_redis_database`)."""
    return with_redis_database(url, LANE_2_REDIS_DB)


def main(argv: list[str]) -> int:
    """Start both lanes, wait for both, print lane 2's output; return the exit status."""
    pytest = [sys.executable, "-m", "pytest", *argv]
    lane_2_env = {
        **os.environ,
        "TOX_PARALLEL_ENV": "lane2",
        "CELERY_BROKER_URL": lane_2_broker(
            os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
        ),
    }
    ignore = [f"--ignore={path}" for path in LANE_2]
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as lane_2_log:
        # Same process group as lane 1: Ctrl-C stops both.
        lane_2 = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [*pytest, *LANE_2],
            cwd=ROOT,
            env=lane_2_env,
            stdout=lane_2_log,
            stderr=subprocess.STDOUT,
        )
        try:
            lane_1_status = subprocess.call([*pytest, *ignore], cwd=ROOT)  # noqa: S603
        finally:
            lane_2_status = lane_2.wait()
        lane_2_log.seek(0)
        print(f"\n{'=' * 30} lane 2: {' '.join(LANE_2)} {'=' * 30}", flush=True)
        sys.stdout.write(lane_2_log.read())
    print(f"lane 1 exit status {lane_1_status}, lane 2 exit status {lane_2_status}", flush=True)
    return lane_1_status or lane_2_status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
