"""Process-global state of the package: one owner for its registration and its reset.

Some modules keep state for the life of a process: the pooled HTTP sessions and the default
client (:mod:`~django_synerise.client`), the circuit breakers
(:mod:`~django_synerise.breaker`), the interactive bulkhead, the refresh thread pool
(:mod:`~django_synerise.services.refresh`), the fetched public keys
(:mod:`~django_synerise.verification`), the parsed encryption keys
(:mod:`~django_synerise.crypto`) and the times of the last cache warnings
(:mod:`~django_synerise.ratelimit`, :mod:`~django_synerise.throttle`). None of it may cross a
``fork`` as is: a lock held by another thread at the fork stays held forever in the child,
and sockets or threads belong to the parent. Each such module registers its state here, at
import, with :func:`register`:

* ``after_fork`` runs in the child right after the fork and makes the state usable there
  (new locks, no inherited pool). It must not do I/O, and must not close what the parent
  still uses (closing a TLS connection in the child would end the parent's);
* ``reset`` forgets the state, as if the process had just started (tests call
  :func:`reset`, which runs every registered ``reset``).

A fork is noticed twice over: ``os.register_at_fork`` runs the ``after_fork`` handlers in
every child forked by Python (``multiprocessing``, Celery's prefork pool, gunicorn), and
:func:`generation` compares the process id on each call, for servers that fork without
telling Python (uWSGI without ``py-call-osafterfork``). State rebuilt lazily (per-thread
sessions, the thread pool) records the :func:`generation` it was built in and is rebuilt
when it changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["WarningGate", "generation", "register", "registered", "reset"]


@dataclass(frozen=True)
class _Entry:
    after_fork: Callable[[], None] | None
    reset: Callable[[], None] | None


_entries: dict[str, _Entry] = {}
_lock = threading.RLock()
_pid = os.getpid()
_generation = 0


def register(
    name: str,
    *,
    after_fork: Callable[[], None] | None = None,
    reset: Callable[[], None] | None = None,
) -> None:
    """Register the process-global state called ``name`` (a dotted name by convention).

    ``after_fork`` runs in a forked child, before anything there uses the state; ``reset``
    runs from :func:`reset`. Registering a name again replaces its handlers (a module
    reloaded in tests). Handlers run in registration order.
    """
    with _lock:
        _entries[name] = _Entry(after_fork=after_fork, reset=reset)


def registered() -> list[str]:
    """The names of the registered state, in registration order."""
    with _lock:
        return list(_entries)


def reset(*names: str) -> None:
    """Run the ``reset`` handler of every registered state (only ``names`` when given).

    For tests and operators; never while the state is in use (calls in flight, a batch
    running). An unknown name raises ``KeyError``.
    """
    with _lock:
        entries = [_entries[name] for name in names] if names else list(_entries.values())
    for entry in entries:
        if entry.reset is not None:
            entry.reset()


def generation() -> int:
    """A number that changes in every new process: lazily built state compares it.

    Costs one ``os.getpid()``. When the process id changed without the fork hook having run,
    the ``after_fork`` handlers run first.
    """
    if os.getpid() != _pid:
        with _lock:
            if os.getpid() != _pid:
                _run_after_fork()
    return _generation


class WarningGate:
    """Lets one warning through at most once every ``every`` seconds in this process.

    For warnings about a failing dependency that would otherwise be logged on every call
    (a cache that is down). Registered here as ``name``: :func:`reset` forgets the last
    warning, and a forked child gets a new lock.
    """

    def __init__(self, name: str, *, every: float) -> None:
        self.every = every
        self.warned_at = 0.0
        self._lock = threading.Lock()
        register(name, after_fork=self._new_lock, reset=self.forget)

    def allow(self) -> bool:
        """True when no warning went through in the last ``every`` seconds (and record now)."""
        with self._lock:
            now = time.monotonic()
            if self.warned_at and now - self.warned_at < self.every:
                return False
            self.warned_at = now
            return True

    def forget(self) -> None:
        """Let the next warning through."""
        self.warned_at = 0.0

    def _new_lock(self) -> None:
        self._lock = threading.Lock()


def _run_after_fork() -> None:
    global _pid, _generation
    _pid = os.getpid()
    _generation += 1
    for name, entry in list(_entries.items()):
        if entry.after_fork is None:
            continue
        try:
            entry.after_fork()
        except Exception:  # one broken handler must not leave the others undone
            logger.exception("Resetting %s after fork failed", name)


def _after_fork_in_child() -> None:
    """The ``os.register_at_fork`` hook: the child has one thread, so no lock is taken
    (the parent's thread that held ``_lock`` does not exist here)."""
    global _lock
    _lock = threading.RLock()
    _run_after_fork()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
