"""A per-process bulkhead for interactive Synerise calls (a request is waiting for them).

Sign-ins, ``auth/refresh/`` and the refresh inside ``get_valid_token`` call Synerise while a
user's request waits. When Synerise becomes slow, each such call holds a worker thread for up
to ``TOTAL_TIMEOUT`` seconds; without a limit, a burst of sign-ins would take every thread and
pages that never touch Synerise would queue behind them. The bulkhead lets at most
``INTERACTIVE_CONCURRENCY`` interactive calls be in flight in one process and refuses the
next one at once with :class:`~django_synerise.exceptions.SyneriseBusy` (503
``synerise_unavailable`` with ``Retry-After`` through the API), without sending anything.

The count lives in process memory, like the circuit breaker's state: each process (each
prefork worker) has its own bulkhead, shared by its threads. The background refresh does not
use it; it has ``REFRESH_CONCURRENCY``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from . import process_state
from .conf import synerise_settings
from .exceptions import SyneriseBusy

logger = logging.getLogger(__name__)

__all__ = [
    "BUSY_RETRY_AFTER",
    "Bulkhead",
    "BulkheadSnapshot",
    "get_interactive_bulkhead",
    "interactive_call",
]

#: ``Retry-After`` (seconds) of a call refused because the bulkhead is full.
BUSY_RETRY_AFTER = 5


@dataclass(frozen=True)
class BulkheadSnapshot:
    """A consistent copy of a bulkhead's counters (status pages, tests)."""

    name: str
    in_flight: int
    limit: int
    total_rejected: int


class Bulkhead:
    """Allow at most ``limit`` concurrent calls; refuse the others at once (never queue).

    ``limit`` defaults to ``INTERACTIVE_CONCURRENCY``, read live on each acquisition, so
    ``override_settings`` works and lowering it takes effect for the next call.
    """

    def __init__(self, name: str = "interactive", *, limit: int | None = None) -> None:
        self.name = name
        self._limit = limit
        self._lock = threading.Lock()
        self._in_flight = 0
        self._rejected = 0

    @property
    def limit(self) -> int:
        """Calls allowed in flight at once (at least 1)."""
        value = self._limit
        if value is None:
            value = synerise_settings.INTERACTIVE_CONCURRENCY
        return max(1, int(value))

    def try_acquire(self) -> bool:
        """Take a slot if one is free; ``False`` (and nothing taken) when the bulkhead is full."""
        limit = self.limit
        with self._lock:
            if self._in_flight >= limit:
                self._rejected += 1
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Give back a slot taken by :meth:`try_acquire`."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the duration of the block.

        :raises SyneriseBusy: at once, without running the block, when every slot is taken.
        """
        if not self.try_acquire():
            logger.warning(
                "Bulkhead %s full (%s calls in flight): refusing a Synerise call",
                self.name,
                self.limit,
            )
            raise SyneriseBusy(retry_after=BUSY_RETRY_AFTER)
        try:
            yield
        finally:
            self.release()

    def snapshot(self) -> BulkheadSnapshot:
        """Return the current counters."""
        with self._lock:
            return BulkheadSnapshot(
                name=self.name,
                in_flight=self._in_flight,
                limit=self.limit,
                total_rejected=self._rejected,
            )

    def reset(self) -> None:
        """Zero the counters (tests; never while calls are in flight)."""
        with self._lock:
            self._in_flight = 0
            self._rejected = 0

    def _after_fork(self) -> None:
        # Calls in flight belong to the parent; the child starts empty.
        self._lock = threading.Lock()
        self._in_flight = 0

    def __repr__(self) -> str:
        return f"Bulkhead(name={self.name!r}, limit={self.limit})"


_interactive = Bulkhead("interactive")


def get_interactive_bulkhead() -> Bulkhead:
    """The process's bulkhead for interactive Synerise calls."""
    return _interactive


def interactive_call() -> AbstractContextManager[None]:
    """Context manager holding a slot of the interactive bulkhead (see :meth:`Bulkhead.slot`).

    :raises SyneriseBusy: at once when ``INTERACTIVE_CONCURRENCY`` calls are in flight.
    """
    return _interactive.slot()


process_state.register("bulkhead.interactive", after_fork=_interactive._after_fork)
