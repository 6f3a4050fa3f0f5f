"""Leases and hourly counts commit without waiting for the disk (PostgreSQL).

Three writes of the refresh engine are statements of their own, each its own transaction:
the **claim** of rows to refresh, a Celery worker's **take-over** of a batch
(:mod:`django_synerise.services.take`) and the **hourly outcome counts**
(:func:`django_synerise.services.outcomes.add_outcome_counts`). Losing one of them in a crash
of the database server costs no customer anything:

* a lost lease leaves its rows as they were before the claim, claimable again (as its expiry
  would); the token write that follows a claim waits for the disk, and PostgreSQL flushes its
  write-ahead log in order, so a stored token never outlives a lost claim;
* lost counts leave the dashboard's hourly figures a few refreshes short.

So these statements commit with ``synchronous_commit = off`` for their own transaction
(PostgreSQL's documented per-transaction setting): the commit returns without waiting for the
write-ahead log to reach the disk, which is most of a small write's time. A server crash loses
at most the last ``3 × wal_writer_delay`` (600 ms by default) of them, and never leaves the
database inconsistent. Token writes, revocations and every other write wait for the disk as
before.

Only a statement that is its own transaction is relaxed. Inside an open transaction (a
``transaction.atomic`` block, ``ATOMIC_REQUESTS``) the setting would last to the end of the
enclosing transaction and relax the site's own writes, so nothing is added there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["RELAXED_COMMIT", "relaxed_commit_column"]

#: A ``RETURNING`` column that makes the transaction of the statement that returns it commit
#: without waiting for the disk (``set_config(..., is_local => true)``, as ``SET LOCAL``:
#: the session's own setting is untouched). Evaluated once per written row, before the commit;
#: a statement that writes nothing commits nothing.
RELAXED_COMMIT = "set_config('synchronous_commit', 'off', true)"


def relaxed_commit_column(connection: BaseDatabaseWrapper) -> str | None:
    """The ``RETURNING`` column (:data:`RELAXED_COMMIT`) to add to a lease or count statement
    about to run on ``connection``, or ``None`` when it must not be added: not PostgreSQL, or
    not in autocommit (inside ``transaction.atomic``, whose other writes it would relax)."""
    if connection.vendor != "postgresql" or not connection.get_autocommit():
        return None
    return RELAXED_COMMIT
