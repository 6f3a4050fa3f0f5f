"""When each background refresh call starts, logged for tests/test_ratelimit.py.

The rate limit's statement depends on how much the delays from a worker starting a call to
Synerise receiving it differ. The tests measure that spread call by call: this client notes
the wall-clock time it is asked to refresh (right after the rate limiter let the call go),
and the fake notes when the request arrived; both are paired by a digest of the token.

Child processes pick it up with ``SYNERISE["ADAPTER"] = "tests.call_log.CallLogAdapter"``
(``tests/celery_settings.py`` does so when ``SYNERISE_TEST_CALL_LOG`` names a file).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from django_synerise.adapter import DefaultSyneriseAdapter
from django_synerise.client import AuthResult, SyneriseClient

#: Environment variable naming the file the lines are appended to.
ENV = "SYNERISE_TEST_CALL_LOG"


def digest(token: str) -> str:
    """A short digest that names a token in the log without writing the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def read_starts(path: str) -> dict[str, float]:
    """``{token digest: start time}`` from a log file (one process or several)."""
    starts: dict[str, float] = {}
    with open(path, encoding="ascii") as log:
        for line in log:
            at, name = line.split()
            starts[name] = float(at)
    return starts


class CallLogClient(SyneriseClient):
    """A client that appends ``<time.time()> <token digest>`` to ``$SYNERISE_TEST_CALL_LOG``
    for each refresh; the line is written after the call, so the file write never delays it."""

    def refresh(self, token: str) -> AuthResult:
        started = time.time()
        try:
            return super().refresh(token)
        finally:
            line = f"{started!r} {digest(token)}\n"
            with open(os.environ[ENV], "a", encoding="ascii") as log:  # O_APPEND: whole lines
                log.write(line)


class CallLogAdapter(DefaultSyneriseAdapter):
    """The default adapter with one shared :class:`CallLogClient` per process."""

    _client: CallLogClient | None = None
    _lock = threading.Lock()

    def get_client(self) -> SyneriseClient:
        with CallLogAdapter._lock:
            if CallLogAdapter._client is None:
                CallLogAdapter._client = CallLogClient()
            return CallLogAdapter._client
