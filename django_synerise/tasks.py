"""Celery tasks of the refresh pipeline; the only module of the package that imports Celery.

* :func:`refresh_expiring_tokens`: the beat entry point. Claims nothing while background
  refresh is halted (Synerise rejects the API key, see :mod:`django_synerise.services.halt`;
  the key is probed when the next probe is due). Else claims due tokens batch by batch
  (``SELECT ... FOR UPDATE SKIP LOCKED`` and a lease in database time) and, after each
  claim commits, enqueues :func:`refresh_tokens` for it with an ``expires`` shorter than the
  beat period, so a backlog never piles up: the next run recomputes due rows.
* :func:`refresh_tokens`: refreshes one batch (concurrent HTTP, bulk compare-and-swap
  writes, new tokens stored as they arrive). Transient failures retry with exponential
  backoff and jitter (the attempt count and next attempt time live on the row, so a beat
  never restarts a backoff), honouring ``Retry-After`` (capped by ``RETRY_AFTER_MAX``), never
  later than two minutes before the token expires; a rejection moves the row to
  ``needs_login`` once a probe shows the API key works, and halts refresh when it does not.
* :func:`purge_tokens`: deletes revoked and long-expired rows in batches.
* :func:`connect_users`: connects users to Synerise through this site's OAUTH identity
  provider in concurrent batches (provisioning, or with ``pending=True`` the beat entry that
  retries pending connections); :func:`connect_user` does one pending user.

Every task sets ``acks_late`` and ``reject_on_worker_lost``: a killed worker's message is
delivered again, which is safe because claims and writes are fenced by the database.
On Redis keep ``visibility_timeout`` above :data:`TIME_LIMIT` and ``RETRY_AFTER_MAX``.

The services are imported inside each task, not at the top: Celery may import this module
(task discovery, a project's ``celery.py``) before Django's app registry is ready, and the
services need the models.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError, transaction

from .conf import synerise_settings

logger = logging.getLogger(__name__)

__all__ = [
    "BATCH_EXPIRES",
    "CLAIM_BATCHES",
    "MAX_BATCHES_PER_RUN",
    "SOFT_TIME_LIMIT",
    "TIME_LIMIT",
    "batch_time_limits",
    "connect_user",
    "connect_users",
    "purge_tokens",
    "refresh_expiring_tokens",
    "refresh_tokens",
]

#: Seconds a batch message may wait in the queue before the broker discards it (less than the
#: 60 s beat period; its rows are claimed again once their lease runs out).
BATCH_EXPIRES = 50
#: Most batches one scheduler run claims (``REFRESH_BATCH_SIZE`` tokens each).
MAX_BATCHES_PER_RUN = 100
#: Batches claimed per claim transaction (one index scan serves ten batches).
CLAIM_BATCHES = 10
#: Default soft and hard time limits (seconds) of :func:`refresh_tokens`; each message also
#: carries limits computed from the live settings (:func:`batch_time_limits`).
SOFT_TIME_LIMIT = 105
TIME_LIMIT = 135
#: Base (seconds) of the exponential backoff of transient refresh failures.
BACKOFF_BASE = 2.0

_DB_ERRORS = (OperationalError, InterfaceError)


def batch_time_limits() -> tuple[float, float]:
    """Return ``(soft, hard)`` time limits for one batch from the live settings.

    A batch starts no call after its lease nears its end and each call is bounded by
    ``TOTAL_TIMEOUT``, so ``soft = LEASE_SECONDS + TOTAL_TIMEOUT + 30`` always exceeds a
    normal batch and the HTTP total deadline; ``hard = soft + 30``.
    """
    lease = synerise_settings.LEASE_SECONDS
    total = synerise_settings.TOTAL_TIMEOUT
    soft = lease + total + 30.0
    return soft, soft + 30.0


def _enqueue(ids: list[int], lease: str | None, expires: float) -> None:
    soft, hard = batch_time_limits()
    refresh_tokens.apply_async(
        args=(ids,),
        kwargs={"lease": lease},
        expires=expires,
        soft_time_limit=soft,
        time_limit=hard,
    )


@shared_task(
    bind=True,
    name="django_synerise.tasks.refresh_expiring_tokens",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=50,
    time_limit=80,
)
def refresh_expiring_tokens(
    self: Any, max_batches: int | None = None, batch_expires: float | None = None
) -> dict[str, int]:
    """Claim due tokens and enqueue one :func:`refresh_tokens` per batch (after commit).

    Each claim transaction takes up to :data:`CLAIM_BATCHES` batches at once (one index scan
    for all of them; every batch message carries the same lease). Claims at most
    ``max_batches`` (default :data:`MAX_BATCHES_PER_RUN`) batches of
    ``REFRESH_BATCH_SIZE``. Each batch message expires after ``batch_expires`` seconds
    (default :data:`BATCH_EXPIRES`).

    :returns: ``{"batches": n, "tokens": n, "halted": bool}``.
    """
    from .services.halt import refresh_allowed
    from .services.outcomes import record_run
    from .services.refresh import claim_due_tokens, split

    record_run()
    if not refresh_allowed():
        logger.info("Background refresh of Synerise tokens is halted; nothing claimed")
        return {"batches": 0, "tokens": 0, "halted": True}

    limit = MAX_BATCHES_PER_RUN if max_batches is None else int(max_batches)
    expires = BATCH_EXPIRES if batch_expires is None else float(batch_expires)
    size = max(1, synerise_settings.REFRESH_BATCH_SIZE)
    batches = tokens = 0
    while batches < limit:
        want = min(CLAIM_BATCHES, limit - batches)
        with transaction.atomic():
            claim = claim_due_tokens(limit=size * want)
            if not claim:
                break
            chunks = split(list(claim.ids), size)
            for chunk in chunks:
                transaction.on_commit(partial(_enqueue, chunk, claim.lease_iso(), expires))
        batches += len(chunks)
        tokens += len(claim)
        if len(claim) < size * want:
            break
    if tokens:
        logger.info("Claimed %s Synerise tokens in %s batches", tokens, batches)
    return {"batches": batches, "tokens": tokens, "halted": False}


# backoff_base is an option of this task (read back in its body), unknown to celery-types.
@shared_task(  # type: ignore[call-overload, untyped-decorator]
    bind=True,
    name="django_synerise.tasks.refresh_tokens",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=TIME_LIMIT,
    max_retries=None,
    autoretry_for=_DB_ERRORS,
    retry_kwargs={"max_retries": 5},
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    backoff_base=BACKOFF_BASE,
)
def refresh_tokens(self: Any, ids: list[int], lease: str | None = None) -> dict[str, int]:
    """Refresh one batch of token rows.

    With ``lease`` (sent by :func:`refresh_expiring_tokens`) the rows claimed under that
    lease are taken over; a second delivery of the same message finds none. Without it
    (retries, manual calls) the rows of ``ids`` are claimed if still due and free.

    Transient failures are retried (new message with the failed ids only) after
    ``BatchReport.retry_after`` seconds: exponential backoff with full jitter on
    ``backoff_base``, at least ``Retry-After``, never past two minutes before expiry (the rows
    move to ``needs_login`` instead). The rows stay leased until then, so the scheduler does
    not claim them earlier. Database errors retry up to five times.

    :returns: counts of ``refreshed``, ``failed_transient``, ``needs_login``, ``skipped``.
    """
    from .services.refresh import RETRY_SLACK, Claim, claim_tokens, refresh_batch

    pks = [int(pk) for pk in ids]
    batch = Claim.from_message(pks, lease) if lease else claim_tokens(pks, due_only=True)
    report = refresh_batch(
        batch,
        attempt=int(self.request.retries or 0),
        backoff=float(getattr(self, "backoff_base", BACKOFF_BASE)),
    )
    counts = report.as_counts()
    if report.failed_transient:
        countdown = (report.retry_after or 0.0) + RETRY_SLACK
        logger.info(
            "Retrying %s Synerise tokens in %.1f s", len(report.failed_transient), countdown
        )
        soft, hard = batch_time_limits()
        raise self.retry(
            args=(report.failed_transient,),
            kwargs={},
            countdown=countdown,
            max_retries=None,
            soft_time_limit=soft,
            time_limit=hard,
        )
    return counts


@shared_task(
    name="django_synerise.tasks.purge_tokens",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=600,
    time_limit=660,
)
def purge_tokens() -> int:
    """Delete revoked rows and rows expired for longer than ``PURGE_AFTER``; return the count."""
    from .services.refresh import purge_tokens as purge

    return purge()


@shared_task(
    bind=True,
    name="django_synerise.tasks.connect_user",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=None,
)
def connect_user(self: Any, user_id: int) -> dict[str, int]:
    """Connect one user whose connection is pending (``CONNECT_ON_LOGIN``, reconnection).

    Does nothing when the connection is no longer pending or is backing off. A transient
    Synerise failure retries this task after the backoff recorded on the user's subject
    (:func:`~django_synerise.services.connect.connect_users` computes it), at most 10 times;
    the beat entry takes over after that.

    :returns: the counts of :meth:`~django_synerise.services.ConnectReport.as_counts`.
    """
    from .services.connect import connect_users as connect_many

    report = connect_many(pending=True, user_ids=[int(user_id)])
    if report.retry and self.request.retries < 10:
        raise self.retry(countdown=(report.retry_after or 1.0) + 0.5)
    return report.as_counts()


@shared_task(
    name="django_synerise.tasks.connect_users",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def connect_users(
    only_missing: bool = False,
    pending: bool = False,
    batch_size: int | None = None,
    limit: int | None = None,
) -> dict[str, int]:
    """Connect active users to Synerise through OAUTH (see
    :func:`django_synerise.services.connect_users`); the beat entry passes ``pending=True``.

    Safe to deliver twice: users already connected are skipped by ``only_missing`` and
    ``pending`` and a second connection of a user only replaces the stored token.

    :returns: the counts of :meth:`~django_synerise.services.ConnectReport.as_counts`.
    """
    from .services.connect import connect_users as connect_many
    from .services.identity import identity_provider_enabled

    if not identity_provider_enabled():
        return {"selected": 0, "connected": 0, "retry": 0, "failed": 0, "skipped": 0}
    report = connect_many(
        only_missing=only_missing, pending=pending, batch_size=batch_size, limit=limit
    )
    if report.selected:
        logger.info("Synerise connections: %s", report)
    return report.as_counts()
