"""A small thread-safe, per-process circuit breaker around calls to Synerise.

States: ``closed`` (calls pass; consecutive transient failures are counted), ``open`` (calls
fail at once with :class:`~django_synerise.exceptions.CircuitOpen`, no request is sent) and
``half_open`` (after ``reset_timeout`` seconds exactly one probe call is let through; its
success closes the circuit, its failure opens it again for another ``reset_timeout``).

What counts (a deliberate choice, documented in ``docs/client.rst``):

* **failures**: :class:`~django_synerise.exceptions.SyneriseUnavailable` (5xx, timeouts,
  refused or reset connections, the total deadline) and
  :class:`~django_synerise.exceptions.BadResponse` (unparseable or oversized answers);
* **successes**: any answer Synerise gave on purpose: 2xx, 4xx
  (:class:`~django_synerise.exceptions.CredentialsRejected`,
  :class:`~django_synerise.exceptions.BadRequest`) and 429
  (:class:`~django_synerise.exceptions.RateLimited`). A wrong password or a rate limit says
  Synerise is up; the caller honours ``Retry-After`` itself;
* **slow calls** count as failures even when they answered: a call through :meth:`call`
  that took longer than ``BREAKER_SLOW_CALL_THRESHOLD`` seconds (its answer is still
  returned). A Synerise that answers in 9 s instead of timing out at 10 s holds workers just
  as long, so ``BREAKER_THRESHOLD`` consecutive slow calls open the circuit too.

The state lives in process memory: one breaker per upstream base URL per process, shared by
its threads. Each prefork worker therefore trips on its own; this is an explicit choice that
needs no shared store and keeps a broken cache from blocking logins.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import process_state
from .conf import synerise_settings
from .exceptions import BadResponse, CircuitOpen, SyneriseUnavailable, UpstreamError

logger = logging.getLogger(__name__)

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerSnapshot",
    "CircuitBreaker",
    "all_breakers",
    "get_breaker",
    "reset_breakers",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

#: Exceptions that count as a failure of the upstream.
FAILURE_EXCEPTIONS: tuple[type[BaseException], ...] = (SyneriseUnavailable, BadResponse)

T = TypeVar("T")


class _Unset:
    """Marker: a constructor argument that reads its setting live."""


_UNSET = _Unset()

_instances: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


@dataclass(frozen=True)
class BreakerSnapshot:
    """A consistent copy of a breaker's state for admin pages and status commands."""

    name: str
    state: str
    failure_count: int
    threshold: int
    reset_timeout: float
    opened_at: float | None
    retry_in: float | None
    total_failures: int
    total_opens: int
    total_slow_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as a plain dict (JSON-serialisable)."""
        return {
            "name": self.name,
            "state": self.state,
            "failure_count": self.failure_count,
            "threshold": self.threshold,
            "reset_timeout": self.reset_timeout,
            "retry_in": self.retry_in,
            "total_failures": self.total_failures,
            "total_opens": self.total_opens,
        }


class CircuitBreaker:
    """Count consecutive transient failures and stop calling a failing upstream.

    ``threshold`` and ``reset_timeout`` default to ``BREAKER_THRESHOLD`` and
    ``BREAKER_RESET_TIMEOUT``, read live on each use. ``clock`` (monotonic seconds) is
    injectable for tests. A threshold of 0 disables the breaker (it never opens).
    """

    def __init__(
        self,
        name: str = "synerise",
        *,
        threshold: int | None = None,
        reset_timeout: float | None = None,
        slow_call_threshold: float | None | _Unset = _UNSET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = threshold
        self._reset_timeout = reset_timeout
        self._slow_call_threshold = slow_call_threshold
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None
        self._total_failures = 0
        self._total_opens = 0
        self._total_slow_calls = 0
        _instances.add(self)

    # ------------------------------------------------------------------ configuration

    @property
    def threshold(self) -> int:
        """Consecutive failures that open the circuit (0 = never open)."""
        value = self._threshold
        if value is None:
            value = synerise_settings.BREAKER_THRESHOLD
        return max(0, int(value))

    @property
    def reset_timeout(self) -> float:
        """Seconds the circuit stays open before one probe call is allowed."""
        value = self._reset_timeout
        if value is None:
            value = synerise_settings.BREAKER_RESET_TIMEOUT
        return max(0.0, float(value))

    @property
    def slow_call_threshold(self) -> float | None:
        """Seconds above which an answered call counts as a failure (``None``: never)."""
        value = self._slow_call_threshold
        if isinstance(value, _Unset):
            value = synerise_settings.BREAKER_SLOW_CALL_THRESHOLD
        if value is None:
            return None
        return max(0.0, float(value))

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (an open circuit whose reset timeout
        has passed reports ``half_open``: the next call will be the probe)."""
        with self._lock:
            return self._current_state(self._clock())

    def _current_state(self, now: float) -> str:
        if (
            self._state == OPEN
            and self._opened_at is not None
            and now - self._opened_at >= self.reset_timeout
        ):
            return HALF_OPEN
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        """Return a consistent copy of the state, counters and time until the next probe."""
        with self._lock:
            now = self._clock()
            state = self._current_state(now)
            retry_in = None
            if state == OPEN and self._opened_at is not None:
                retry_in = max(0.0, self._opened_at + self.reset_timeout - now)
            return BreakerSnapshot(
                name=self.name,
                state=state,
                failure_count=self._failures,
                threshold=self.threshold,
                reset_timeout=self.reset_timeout,
                opened_at=self._opened_at,
                retry_in=retry_in,
                total_failures=self._total_failures,
                total_opens=self._total_opens,
                total_slow_calls=self._total_slow_calls,
            )

    def reset(self) -> None:
        """Close the circuit and zero every counter (tests, admin "reset" actions)."""
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._opened_at = None
            self._probe_started = None
            self._total_failures = 0
            self._total_opens = 0
            self._total_slow_calls = 0

    # ------------------------------------------------------------------ protocol

    def before_call(self) -> None:
        """Ask permission to call the upstream.

        :raises CircuitOpen: while the circuit is open, or half-open with the probe already
            in flight; ``retry_after`` is the number of seconds until the next probe.
        """
        with self._lock:
            now = self._clock()
            if self._state == CLOSED:
                return
            reset_timeout = self.reset_timeout
            if self._state == OPEN:
                assert self._opened_at is not None
                remaining = self._opened_at + reset_timeout - now
                if remaining > 0:
                    raise CircuitOpen(retry_after=remaining)
                self._state = HALF_OPEN
                self._probe_started = now
                logger.info("Circuit %s half-open: sending one probe call", self.name)
                return
            # HALF_OPEN: one probe at a time; a probe that never reported (its thread died)
            # frees the slot after another reset_timeout.
            if self._probe_started is not None and now - self._probe_started < max(
                reset_timeout, 1.0
            ):
                raise CircuitOpen(retry_after=max(1.0, reset_timeout))
            self._probe_started = now

    def record_success(self) -> None:
        """Report an answer from the upstream: closes a half-open circuit, zeroes the count."""
        with self._lock:
            if self._state != CLOSED:
                logger.info("Circuit %s closed: the probe call succeeded", self.name)
            self._state = CLOSED
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    def record_failure(self) -> None:
        """Report a transient failure: opens the circuit at the threshold or after a failed
        probe."""
        with self._lock:
            now = self._clock()
            self._failures += 1
            self._total_failures += 1
            threshold = self.threshold
            if self._state == HALF_OPEN or (
                self._state == CLOSED and threshold and self._failures >= threshold
            ):
                self._state = OPEN
                self._opened_at = now
                self._probe_started = None
                self._total_opens += 1
                logger.warning(
                    "Circuit %s open after %s consecutive failures; next probe in %.0f s",
                    self.name,
                    self._failures,
                    self.reset_timeout,
                )

    def record_answer(self, duration: float) -> None:
        """Report an answer that took ``duration`` seconds: a success, or a failure when it
        was slower than :attr:`slow_call_threshold`."""
        slow = self.slow_call_threshold
        if slow is not None and duration > slow:
            with self._lock:
                self._total_slow_calls += 1
            logger.warning(
                "Circuit %s: a Synerise call took %.1f s (slow call threshold %.1f s)",
                self.name,
                duration,
                slow,
            )
            self.record_failure()
        else:
            self.record_success()

    def release(self) -> None:
        """Give back a half-open probe slot without a verdict (an unexpected error)."""
        with self._lock:
            if self._state == HALF_OPEN:
                self._state = OPEN
                self._probe_started = None

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` under the breaker and classify its outcome.

        An answer (a result, or an upstream error carrying a status) slower than
        :attr:`slow_call_threshold` counts as a failure; the answer is still returned.

        :raises CircuitOpen: without calling ``func`` while the circuit is open.
        :returns: what ``func`` returns; its exceptions propagate unchanged.
        """
        self.before_call()
        started = self._clock()
        try:
            result = func(*args, **kwargs)
        except FAILURE_EXCEPTIONS:
            self.record_failure()
            raise
        except CircuitOpen:
            self.release()
            raise
        except Exception as exc:
            if _is_upstream_answer(exc):
                self.record_answer(self._clock() - started)
            else:
                self.release()
            raise
        self.record_answer(self._clock() - started)
        return result

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state!r})"

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def _is_upstream_answer(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.status is not None


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def get_breaker(base_url: str | None = None) -> CircuitBreaker:
    """Return this process's breaker for ``base_url`` (default: the ``BASE_URL`` setting).

    There is one breaker per upstream base URL, created on first use and named after it;
    :class:`~django_synerise.client.SyneriseClient` uses the one of its own base URL, so
    ``get_breaker()`` is the breaker of the configured Synerise host.
    """
    key = str(base_url or synerise_settings.BASE_URL).rstrip("/")
    breaker = _registry.get(key)
    if breaker is None:
        with _registry_lock:
            breaker = _registry.get(key)
            if breaker is None:
                breaker = _registry[key] = CircuitBreaker(key)
    return breaker


def all_breakers() -> list[CircuitBreaker]:
    """Every breaker this process created through :func:`get_breaker` (status pages)."""
    with _registry_lock:
        return list(_registry.values())


def reset_breakers() -> None:
    """Close every registered breaker and zero its counters (tests, operators)."""
    for breaker in all_breakers():
        breaker.reset()


def _reinit_after_fork() -> None:
    """New locks for the registry and every breaker (the counters carry over)."""
    global _registry_lock
    _registry_lock = threading.Lock()
    for breaker in list(_instances):
        breaker._after_fork()


process_state.register("breaker.registry", after_fork=_reinit_after_fork, reset=reset_breakers)
