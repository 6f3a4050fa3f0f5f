#!/usr/bin/env python3
"""Run the timing-sensitive tests again and again while another process keeps a core busy.

``make stress`` runs this. Each round is one pytest process running every test marked
``timing`` (selected by marker, so new timing tests are included without a list to keep);
pytest-randomly shuffles the order differently each round. Meanwhile a child process spins
``while True: pass`` so that the tests run on a loaded machine. At the end a table gives each
test's runs, failures and call durations; the exit status is 1 when any test failed (or a
round could not run), 0 otherwise.

Usage::

    scripts/stress.py [--rounds N] [--lanes N] [--marker EXPR] [--no-busy] [-- PYTEST ARGS...]

``--rounds`` defaults to ``$STRESS_ROUNDS`` or 30. ``--lanes`` (``$STRESS_LANES``, default 1)
runs that many rounds at the same time, which loads the machine further and ends sooner.
Everything after ``--`` goes to pytest (a file, ``-k ...``). The services are those of
``make test``: ``DATABASE_URL`` and ``CELERY_BROKER_URL`` from the environment.

Each lane has a test database of its own (pytest-django's ``TOX_PARALLEL_ENV`` suffix,
``_stress1``, ``_stress2``, ...), so ``make test`` can run meanwhile. Lane 1 uses the Redis
database of ``CELERY_BROKER_URL``; lanes 2, 3, ... use Redis databases 15, 14, ..., so that
one lane's Celery workers never take another lane's tasks. Ctrl-C stops after the current
test and prints the table of the rounds so far.

The outcome of each test is collected by this module loaded as a pytest plugin
(``-p stress``): one JSON line per test and phase in the file named by ``$STRESS_REPORT``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from test_lanes import with_redis_database

ROOT = Path(__file__).resolve().parent.parent
REPORT_ENV = "STRESS_REPORT"
# The pytest processes of the rounds in flight, so that Ctrl-C can reach them.
RUNNING: set[subprocess.Popen[bytes]] = set()
RUNNING_LOCK = threading.Lock()


# --------------------------------------------------------------------------- pytest plugin


def pytest_runtest_logreport(report: Any) -> None:
    """Append ``{"test", "when", "outcome", "duration"}`` for each phase of each test, and
    the end of the failure text (``detail``) for a failed phase."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    line = {
        "test": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": report.duration,
    }
    if report.failed:  # the end of the failure, to read while the round still runs
        line["detail"] = report.longreprtext[-3000:]
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


# --------------------------------------------------------------------------- runner


@dataclass
class TestStats:
    """What the rounds saw of one test."""

    runs: int = 0
    failures: int = 0
    skips: int = 0
    durations: list[float] = field(default_factory=list)
    failed_rounds: list[int] = field(default_factory=list)


def read_round(path: Path) -> dict[str, tuple[str, float]]:
    """``{test id: (outcome, call duration)}`` of one round; a failed phase fails the test."""
    tests: dict[str, tuple[str, float]] = {}
    if not path.exists():
        return tests
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        outcome, duration = tests.get(entry["test"], ("passed", 0.0))
        if entry["outcome"] == "failed":
            outcome = "failed"
        elif entry["outcome"] == "skipped" and outcome == "passed":
            outcome = "skipped"
        if entry["when"] == "call":
            duration = entry["duration"]
        tests[entry["test"]] = (outcome, duration)
    return tests


def start_busy() -> subprocess.Popen[bytes]:
    """A process that keeps one core busy until it is stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def lane_broker(lane: int) -> str:
    """The Celery broker URL of ``lane`` (1-based): lane 1 uses ``CELERY_BROKER_URL``, lane
    ``k`` > 1 the same Redis server with database ``16 - k + 1`` (15, 14, ...)."""
    url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    if lane == 1:
        return url
    return with_redis_database(url, 16 - lane + 1)


def run_round(
    number: int, marker: str, extra: list[str], workdir: Path, *, lane: int = 1, first: bool
) -> tuple[int, Path]:
    """Run round ``number`` in ``lane``; ``first``: build the lane's test database anew."""
    report = workdir / f"round-{number}.jsonl"
    env = {
        **os.environ,
        # A test database of its own per lane: test_<name>_stress<lane>.
        "TOX_PARALLEL_ENV": f"stress{lane}",
        "CELERY_BROKER_URL": lane_broker(lane),
        REPORT_ENV: str(report),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        marker,
        "-p",
        "stress",
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        # The lane's test database is built in its first round and kept for the others.
        "--create-db" if first else "--reuse-db",
        *extra,
    ]
    log = workdir / f"round-{number}.log"
    with log.open("w", encoding="utf-8") as out:
        # Its own session: Ctrl-C reaches pytest once, from here, and it cleans up its workers.
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        with RUNNING_LOCK:
            RUNNING.add(process)
        try:
            status = process.wait()
        finally:
            with RUNNING_LOCK:
                RUNNING.discard(process)
    return status, log


def interrupt_running() -> None:
    """Ctrl-C every round in flight once (each stops after its current test)."""
    with RUNNING_LOCK:
        for process in RUNNING:
            process.send_signal(signal.SIGINT)


def print_table(stats: dict[str, TestStats], rounds: int) -> None:
    name_width = max([len("test"), *(len(name) for name in stats)])
    header = (
        f"{'test':<{name_width}}  {'runs':>4}  {'failed':>6}  {'skipped':>7}  "
        f"{'median s':>8}  {'max s':>6}"
    )
    print(header)
    print("-" * len(header))
    for name in sorted(stats):
        s = stats[name]
        median = statistics.median(s.durations) if s.durations else 0.0
        longest = max(s.durations, default=0.0)
        print(
            f"{name:<{name_width}}  {s.runs:>4}  {s.failures:>6}  {s.skips:>7}  "
            f"{median:>8.2f}  {longest:>6.2f}"
        )
    print("-" * len(header))
    failed = sum(s.failures for s in stats.values())
    print(f"{len(stats)} timing tests, {rounds} rounds, {failed} failures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=int(os.environ.get("STRESS_ROUNDS", "30")), help="rounds"
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=int(os.environ.get("STRESS_LANES", "1")),
        help="rounds run at the same time",
    )
    parser.add_argument("--marker", default="timing", help="pytest -m expression")
    parser.add_argument(
        "--no-busy", dest="busy", action="store_false", help="no process keeping a core busy"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not 1 <= args.lanes <= 8:
        parser.error("--lanes must be between 1 and 8")
    # A shell without job control starts background jobs with SIGINT ignored, and children
    # inherit that; tests stop the servers they start with SIGINT, and Ctrl-C must work here.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    stats: dict[str, TestStats] = defaultdict(TestStats)
    broken_rounds: list[int] = []
    workdir = Path(tempfile.mkdtemp(prefix="stress-"))
    busy = start_busy() if args.busy else None
    started = time.monotonic()
    print(
        f"make stress: {args.rounds} rounds of pytest -m {args.marker!r}"
        f"{f' in {args.lanes} lanes' if args.lanes > 1 else ''}"
        f"{' while a process keeps one core busy' if busy else ''}; logs in {workdir}",
        flush=True,
    )
    lock = threading.Lock()
    pending = list(range(args.rounds, 0, -1))  # popped from the end: round 1 first
    finished: list[int] = []
    interrupted = threading.Event()

    def record(number: int, status: int, log: Path, round_started: float) -> None:
        outcomes = read_round(workdir / f"round-{number}.jsonl")
        failed = sorted(name for name, (outcome, _) in outcomes.items() if outcome == "failed")
        for name, (outcome, duration) in outcomes.items():
            entry = stats[name]
            entry.runs += 1
            if outcome == "failed":
                entry.failures += 1
                entry.failed_rounds.append(number)
            elif outcome == "skipped":
                entry.skips += 1
            else:
                entry.durations.append(duration)
        if not outcomes or (status != 0 and not failed):
            broken_rounds.append(number)  # collection error, no test selected, crash
        summary = f"{len(outcomes) - len(failed)} passed, {len(failed)} failed"
        print(
            f"round {number:>3}/{args.rounds}: {summary} "
            f"in {time.monotonic() - round_started:.1f} s (pytest exit {status})",
            flush=True,
        )
        for name in failed:
            print(f"    FAILED {name} (see {log})", flush=True)
        finished.append(number)

    def lane_loop(lane: int) -> None:
        first = True
        while not interrupted.is_set():
            with lock:
                if not pending:
                    return
                number = pending.pop()
            round_started = time.monotonic()
            status, log = run_round(
                number, args.marker, args.pytest_args, workdir, lane=lane, first=first
            )
            first = False
            if interrupted.is_set():
                return  # a round cut short by Ctrl-C is not counted
            with lock:
                record(number, status, log, round_started)

    lanes = [
        threading.Thread(target=lane_loop, args=(lane,), name=f"lane-{lane}")
        for lane in range(1, min(args.lanes, args.rounds) + 1)
    ]
    try:
        for thread in lanes:
            thread.start()
        for thread in lanes:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except KeyboardInterrupt:
        interrupted.set()
        interrupt_running()
        for thread in lanes:
            thread.join()
        print(f"\ninterrupted: {len(finished)} complete rounds", flush=True)
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()
    completed = len(finished)

    print()
    print_table(stats, completed)
    print(f"total {time.monotonic() - started:.0f} s")
    for number in broken_rounds:
        print(f"round {number} did not run its tests: see {workdir / f'round-{number}.log'}")
    if any(s.failures for s in stats.values()) or broken_rounds or completed < args.rounds:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
