"""A ceiling on background refresh calls to Synerise shared by every worker process.

Celery's ``rate_limit`` is per worker, so it cannot cap what a fleet sends upstream. With
``SYNERISE["REFRESH_RATE_LIMIT"]`` set (``rate`` calls per second), each background refresh
call first takes a place in a short time slot counted in a Django cache that every worker
shares (``REFRESH_RATE_LIMIT_CACHE``, Redis or Memcached: their increments are atomic).

The contract, with ``J`` the spread of the delays between a worker starting a call and
Synerise receiving it (network, scheduling, connection set-up):

* **At the workers** (exact): a call starts inside the slot that counted it, and a slot
  counts at most ``quota`` calls. A place that comes back from the cache after its slot
  ended is not used; the call takes a place in the current slot instead.
* **At Synerise**: no one-second window, wherever it starts, receives more than ``rate``
  calls while ``J <= JITTER_BUDGET`` (0.1 s); beyond that budget, at most
  ``rate * (1 + J)``.

A second is cut into ``slots`` slots of ``quota`` calls. Calls arriving in a one-second window
started in a window of ``1 + J`` seconds, which touches at most ``ceil((1 + J) * slots) + 1``
slots, so ``slots`` is the largest with ``(ceil((1 + JITTER_BUDGET) * slots) + 1) * quota <=
rate``. The sustained rate, ``slots * quota``, is therefore lower than the limit: at least
80 % of it from a limit of 20 up (85 % for whole multiples of 20), 8 at 10, 1 at 3.

A call that finds its slot full sleeps until the next one; a call that cannot start before
its batch's start deadline is not made (the row is released and claimed again later). Slots
follow the wall clock, so workers on several hosts need synchronised clocks (NTP), as for
any time-based limit.

A cache that fails never stops refreshes: the call goes ahead and a warning is logged (at
most once a minute per process). So does a cache too slow for the slots: when
``LATE_PLACES`` of one call's places come back after their slot ended, the call goes ahead
with the last one. Interactive calls (login, the ``/refresh`` endpoint, ``get_valid_token``) are
never delayed; the login throttles bound those.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import caches

from . import process_state
from .conf import synerise_settings

__all__ = ["RateLimiter", "refresh_rate_limiter"]

logger = logging.getLogger(__name__)

#: Prefix of the slot counters in the shared cache.
KEY_PREFIX = "django_synerise:refresh-rate"

#: A slot admits about ``rate / SLOTS_PER_SECOND`` calls (at least 1).
SLOTS_PER_SECOND = 20

#: Seconds of spread in the delays from worker to Synerise that the slots leave headroom for.
JITTER_BUDGET = 0.1

#: Places of one call that may come back from the cache after their slot ended before the
#: call goes ahead anyway (a cache slower than a slot must not stop refreshes). A round trip
#: that straddles a slot boundary now and then never gets near it; a cache slower than a
#: slot reaches it at once.
LATE_PLACES = 10

#: Seconds a slot counter lives in the cache (its slot is at most one second long).
KEY_TTL = 3

#: Seconds between two warnings about a failing cache (per process).
WARN_EVERY = 60.0

_warnings = process_state.WarningGate("ratelimit.warnings", every=WARN_EVERY)


@dataclass(frozen=True)
class RateLimiter:
    """``rate`` calls per second across every process that shares the cache ``cache_alias``.

    Cheap to build (no I/O); :meth:`acquire` is thread-safe.
    """

    rate: float
    cache_alias: str = "default"
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    @property
    def quota(self) -> int:
        """Calls admitted per slot: about a twentieth of the limit, at least 1."""
        return max(1, math.floor(self.rate / SLOTS_PER_SECOND))

    @property
    def slots(self) -> int:
        """Slots per second: the most with ``(ceil((1 + JITTER_BUDGET) * slots) + 1) * quota
        <= rate``, at least 1."""
        quota = self.quota
        slots = max(1, math.floor(self.rate / quota))
        while slots > 1 and (window_slots(slots, 1 + JITTER_BUDGET) + 1) * quota > self.rate:
            slots -= 1
        return slots

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a place in a slot; return True when the call may start now.

        True means the clock, read after the cache counted the place, is still inside the
        place's slot.

        :param deadline: a :func:`time.monotonic` time; when the next free slot starts after
            it, return False at once without waiting (the caller skips the call).
        """
        slots, quota = self.slots, self.quota
        width = 1 / slots
        cache = caches[self.cache_alias]
        late = 0
        while True:
            now = self.clock()
            slot = math.floor(now * slots)
            key = f"{KEY_PREFIX}:{slots}x{quota}:{slot}"
            try:
                cache.add(key, 0, timeout=KEY_TTL)
                count = cache.incr(key)
            except ValueError:
                continue  # the counter expired between add() and incr(): count again
            except Exception as exc:  # noqa: BLE001 - a broken cache never stops refreshes
                _warn_cache_failure(self.cache_alias, exc)
                return True
            if count <= quota:
                if math.floor(self.clock() * slots) == slot:
                    return True
                late += 1  # the place came back after its slot ended: useless now
                if late >= LATE_PLACES:
                    _warn_slow_cache(self.cache_alias, slots)
                    return True
                continue
            wait = (slot + 1) / slots - now + random.uniform(0, width / 10)  # nosec B311
            if deadline is not None and time.monotonic() + wait > deadline:
                return False
            self.sleep(wait)


def window_slots(slots: int, seconds: float) -> int:
    """``ceil(seconds * slots)``: with one more, the most slots a window of ``seconds`` touches.

    Rounded to 9 decimals first, so that ``1.1 * 10`` counts 11 slots, not 12.
    """
    return math.ceil(round(seconds * slots, 9))


def refresh_rate_limiter() -> RateLimiter | None:
    """Return the limiter of the background refresh, or None when no limit is set."""
    rate = synerise_settings.REFRESH_RATE_LIMIT
    if rate is None:
        return None
    return RateLimiter(rate, synerise_settings.REFRESH_RATE_LIMIT_CACHE)


def _warn_cache_failure(alias: str, exc: BaseException) -> None:
    if _warnings.allow():
        logger.warning(
            "REFRESH_RATE_LIMIT: cache %r failed (%s); refresh calls are not rate limited",
            alias,
            type(exc).__name__,
        )


def _warn_slow_cache(alias: str, slots: int) -> None:
    if _warnings.allow():
        logger.warning(
            "REFRESH_RATE_LIMIT: cache %r answers slower than a slot (%.0f ms); refresh calls "
            "may exceed the limit",
            alias,
            1000 / slots,
        )
