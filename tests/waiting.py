"""Waiting on a condition in tests: poll with a generous bound instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float = 60.0,
    what: str = "the condition",
    detail: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> None:
    """Return as soon as ``predicate()`` holds; fail the test after ``timeout`` seconds.

    The failure names ``what`` and appends ``detail()`` (a worker's log, say) when given.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


def log_tail(path: Path, chars: int = 4000) -> Callable[[], str]:
    """A ``detail`` for :func:`wait_for`: the end of the log file at ``path`` (a worker's)."""
    return lambda: path.read_text(errors="replace")[-chars:]
