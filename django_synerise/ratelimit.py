"""A ceiling on background refresh calls to Synerise shared by every worker process.

Celery's ``rate_limit`` is per worker, so it cannot cap what a fleet sends upstream. With
``SYNERISE["REFRESH_RATE_LIMIT"]`` set (calls per second), each background refresh call first
takes a place in a short time slot counted in a Django cache that every worker shares
(``REFRESH_RATE_LIMIT_CACHE``, Redis or Memcached: their increments are atomic).

The contract is strict, as Synerise sees it: no one-second window, wherever it starts, sees
more than ``REFRESH_RATE_LIMIT`` calls arrive. A second is cut into ``slots`` equal slots of
``quota`` calls each, with ``(slots + 2) * quota <= REFRESH_RATE_LIMIT``: a window can touch
``slots + 1`` slots, and one more slot of headroom absorbs the network's jitter between a
call's start and its arrival (up to a slot, about 50 ms). The sustained rate,
``slots * quota``, is therefore a little lower than the limit: at least 85 % of it from a
limit of 20 up (90 % for whole multiples of 20), 8 at 10, 1 at 3.

A call that finds its slot full sleeps until the next one; a call that cannot start before
its batch's start deadline is not made (the row is released and claimed again later). Slots
follow the wall clock, so workers on several hosts need synchronised clocks (NTP), as for
any time-based limit.

A cache that fails never stops refreshes: the call goes ahead and a warning is logged (at
most once a minute per process). Interactive calls (login, the ``/refresh`` endpoint,
``get_valid_token``) are never delayed; the login throttles bound those.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import caches

from .conf import synerise_settings

__all__ = ["RateLimiter", "refresh_rate_limiter"]

logger = logging.getLogger(__name__)

#: Prefix of the slot counters in the shared cache.
KEY_PREFIX = "django_synerise:refresh-rate"

#: Slots a second is cut into (fewer for limits under 40 calls per second).
SLOTS_PER_SECOND = 20

#: Seconds a slot counter lives in the cache (its slot is at most one second long).
KEY_TTL = 3

#: Seconds between two warnings about a failing cache (per process).
WARN_EVERY = 60.0

_warned_at = 0.0
_warn_lock = threading.Lock()


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
        """Slots per second, so that ``(slots + 2) * quota <= rate``."""
        return max(1, math.floor(self.rate / self.quota) - 2)

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a place in a slot; return True when the call may start now.

        :param deadline: a :func:`time.monotonic` time; when the next free slot starts after
            it, return False at once without waiting (the caller skips the call).
        """
        slots, quota = self.slots, self.quota
        width = 1 / slots
        cache = caches[self.cache_alias]
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
                return True
            wait = (slot + 1) / slots - now + random.uniform(0, width / 10)  # nosec B311
            if deadline is not None and time.monotonic() + wait > deadline:
                return False
            self.sleep(wait)


def refresh_rate_limiter() -> RateLimiter | None:
    """Return the limiter of the background refresh, or None when no limit is set."""
    rate = synerise_settings.REFRESH_RATE_LIMIT
    if rate is None:
        return None
    return RateLimiter(float(rate), str(synerise_settings.REFRESH_RATE_LIMIT_CACHE))


def _warn_cache_failure(alias: str, exc: BaseException) -> None:
    global _warned_at
    with _warn_lock:
        now = time.monotonic()
        if _warned_at and now - _warned_at < WARN_EVERY:
            return
        _warned_at = now
    logger.warning(
        "REFRESH_RATE_LIMIT: cache %r failed (%s); refresh calls are not rate limited",
        alias,
        type(exc).__name__,
    )
