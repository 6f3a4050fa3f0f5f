"""Record what the refresh pipeline did: the one instrumentation point of refresh and login.

:func:`record_refresh_batch` is called once per batch by the refresh engine (background
batches, the cron command, admin "Refresh now" and the lazy path alike); it logs one
structured event per row (:mod:`django_synerise.events`), feeds the Prometheus metrics
(:mod:`django_synerise.metrics`, when installed) and adds the batch to the hourly outcome
counts the admin dashboard draws (:class:`~django_synerise.models.RefreshOutcomeCount`,
one upsert per batch), with what a batch did and cost (:data:`WORK`; not for the lazy
refresh of one token a request waits for). :func:`record_login` does the same for a sign-in,
:func:`record_run` for a scheduler run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Field, Max
from django.utils import timezone

from .. import events, metrics
from ..models import RefreshOutcome as CountKind
from ..models import RefreshOutcomeCount, TokenStatus
from ..relaxed_commit import relaxed_commit_column

if TYPE_CHECKING:
    from django.db.models.options import Options

    from ..models import ClientToken
    from .refresh import BatchReport

logger = logging.getLogger(__name__)

__all__ = [
    "OUTCOMES",
    "RETENTION",
    "RefreshOutcome",
    "add_outcome_counts",
    "last_run",
    "outcome_history",
    "prune_outcome_counts",
    "record_login",
    "record_refresh_batch",
    "record_run",
    "refresh_work",
]


class RefreshOutcome(str, Enum):
    """What the refresh engine did with one claimed row: the one definition of each outcome.

    The value is the name logged in ``refresh`` events, counted per hour and by
    ``synerise_refresh_outcomes_total``. Each member also says what is written to the row
    (:attr:`status`, :attr:`counts_failure`) and where the row is listed in a
    :class:`~django_synerise.services.refresh.BatchReport` (:attr:`report_field`):

    * ``REFRESHED``: a new token was stored; ``active``, failure count back to zero;
    * ``TRANSIENT``: Synerise failed transiently; ``active`` with ``retry_at`` set, the failure
      counted (``failure_count + 1``, ``last_error``);
    * ``NEEDS_LOGIN``: Synerise can no longer refresh the token; ``needs_login``, the failure
      counted;
    * ``HALTED``: rejected while Synerise rejects the workspace's API key; back to ``active``
      with nothing counted (background refresh halts);
    * ``SKIPPED``: not refreshed by this call (not attempted before the deadline, held by
      someone else or changed meanwhile); back to ``active`` when still ours, nothing counted,
      not in the hourly counts.
    """

    REFRESHED = "refreshed"
    TRANSIENT = "transient"
    NEEDS_LOGIN = "needs_login"
    HALTED = "halted"
    SKIPPED = "skipped"

    @property
    def status(self) -> TokenStatus:
        """The row's status once the outcome is written."""
        return TokenStatus.NEEDS_LOGIN if self is RefreshOutcome.NEEDS_LOGIN else TokenStatus.ACTIVE

    @property
    def counts_failure(self) -> bool:
        """Whether the write adds one to ``failure_count`` and stores ``last_error``."""
        return self in (RefreshOutcome.TRANSIENT, RefreshOutcome.NEEDS_LOGIN)

    @property
    def counted(self) -> bool:
        """Whether the outcome is counted per hour and by the outcome metric."""
        return self is not RefreshOutcome.SKIPPED

    @property
    def report_field(self) -> str:
        """The :class:`~django_synerise.services.refresh.BatchReport` list holding such rows."""
        return "failed_transient" if self is RefreshOutcome.TRANSIENT else self.value


#: Refresh outcomes counted per hour (and by ``synerise_refresh_outcomes_total``).
OUTCOMES = tuple(outcome.value for outcome in RefreshOutcome if outcome.counted)
#: Hourly counts older than this are deleted by ``purge_tokens``.
RETENTION = timedelta(hours=48)


def _column(meta: Options[Any], name: str) -> str:
    """The database column of the concrete field ``name``."""
    field = meta.get_field(name)
    assert isinstance(field, Field)
    return field.column


def _hour(now: datetime) -> datetime:
    return now.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)


def add_outcome_counts(counts: dict[str, int], *, now: datetime | None = None) -> None:
    """Add ``counts`` (outcome -> number) to the current hour's rows (one statement on
    PostgreSQL and SQLite: ``INSERT ... ON CONFLICT DO UPDATE SET count = count + ...``).

    Zero counts are left out, except those of :data:`WORK` (a batch that refreshed no token
    says so). Best effort: a database error is logged, never raised (it must not fail a
    refresh). Run on its own (autocommit) on PostgreSQL, the upsert commits without waiting
    for the disk (:mod:`django_synerise.relaxed_commit`).
    """
    items = [(outcome, int(n)) for outcome, n in counts.items() if n or outcome in WORK]
    if not items:
        return
    now = now or timezone.now()
    hour = _hour(now)
    alias = router.db_for_write(RefreshOutcomeCount)
    connection = connections[alias]
    try:
        if connection.vendor in ("postgresql", "sqlite"):
            meta = RefreshOutcomeCount._meta
            quote = connection.ops.quote_name
            table = quote(meta.db_table)
            cols = [quote(_column(meta, n)) for n in ("hour", "outcome", "count")]
            updated = quote(_column(meta, "updated_at"))
            rows, params = [], []
            for outcome, n in items:
                rows.append("(%s, %s, %s, %s)")
                params.extend(
                    [
                        meta.get_field("hour").get_db_prep_save(hour, connection),
                        outcome,
                        n,
                        meta.get_field("updated_at").get_db_prep_save(now, connection),
                    ]
                )
            sql = (
                # Only quoted names are interpolated; every value is a parameter.
                f"INSERT INTO {table} ({', '.join(cols)}, {updated}) "  # nosec B608 # noqa: S608
                f"VALUES {', '.join(rows)} ON CONFLICT ({cols[0]}, {cols[1]}) DO UPDATE SET "
                f"{cols[2]} = {table}.{cols[2]} + EXCLUDED.{cols[2]}, "
                f"{updated} = EXCLUDED.{updated}"
            )
            relaxed = relaxed_commit_column(connection)
            if relaxed is not None:
                sql = f"{sql} RETURNING {relaxed}"
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
            return
        for outcome, n in items:  # other databases: update, else create
            manager = RefreshOutcomeCount.objects.using(alias)
            same = manager.filter(hour=hour, outcome=outcome)
            if same.update(count=F("count") + n, updated_at=now):
                continue
            try:
                with transaction.atomic(using=alias):
                    manager.create(hour=hour, outcome=outcome, count=n, updated_at=now)
            except IntegrityError:
                manager.filter(hour=hour, outcome=outcome).update(
                    count=F("count") + n, updated_at=now
                )
    except Exception:  # counting must never fail a refresh
        logger.warning("Could not count Synerise refresh outcomes", exc_info=True)


#: What the batches of an hour did and cost, counted beside their outcomes (see
#: :func:`refresh_work`): batches, tokens they refreshed, wall-clock and CPU microseconds.
WORK = (
    CountKind.BATCH.value,
    CountKind.BATCH_REFRESHED.value,
    CountKind.BUSY_US.value,
    CountKind.CPU_US.value,
)


def _work_counts(report: BatchReport) -> dict[str, int]:
    return {
        CountKind.BATCH.value: 1,
        CountKind.BATCH_REFRESHED.value: len(report.refreshed),
        CountKind.BUSY_US.value: round(report.busy_seconds * 1_000_000),
        CountKind.CPU_US.value: round(report.cpu_seconds * 1_000_000),
    }


def refresh_work(*, now: datetime | None = None) -> dict[str, Any] | None:
    """What the refresh batches of the latest hour that ran any cost (one query).

    :returns: ``None`` when no batch ran within :data:`RETENTION`, else ``{"hour": start
        (UTC), "batches", "refreshed" (tokens the batches refreshed), "busy_seconds",
        "cpu_seconds", "tokens_per_second" (tokens refreshed per second of batch time: per
        worker process while it refreshes), "cpu_ms_per_token" (CPU milliseconds per
        refreshed token)}``; a rate is ``None`` when nothing was refreshed. Tokens refreshed
        for a request waiting for them are not batches and not counted here (the
        dashboard's hourly ``refreshed`` counts them). For an hour written before the
        batches counted their own tokens (no ``batch_refreshed`` row, not even a zero),
        ``refreshed`` is that hour's outcome count.
    """
    since = _hour(now or timezone.now()) - RETENTION
    rows = RefreshOutcomeCount.objects.filter(
        hour__gte=since, outcome__in=(*WORK, RefreshOutcome.REFRESHED.value)
    ).values_list("hour", "outcome", "count")
    hours: dict[datetime, dict[str, int]] = {}
    for hour, outcome, count in rows:
        hours.setdefault(hour, {})[outcome] = int(count)
    ran = [hour for hour, counts in hours.items() if counts.get(CountKind.BATCH.value)]
    if not ran:
        return None
    latest = max(ran)
    counts = hours[latest]
    refreshed = counts.get(
        CountKind.BATCH_REFRESHED.value, counts.get(RefreshOutcome.REFRESHED.value, 0)
    )
    busy = counts.get(CountKind.BUSY_US.value, 0) / 1_000_000
    cpu = counts.get(CountKind.CPU_US.value, 0) / 1_000_000
    return {
        "hour": latest,
        "batches": counts[CountKind.BATCH.value],
        "refreshed": refreshed,
        "busy_seconds": busy,
        "cpu_seconds": cpu,
        "tokens_per_second": refreshed / busy if refreshed and busy > 0 else None,
        "cpu_ms_per_token": cpu * 1000 / refreshed if refreshed else None,
    }


def _kinds(rows: Iterable[ClientToken], report: BatchReport) -> dict[int, str]:
    pks = {row.pk for row in rows}
    kinds: dict[int, str] = {}
    for outcome in RefreshOutcome:
        for pk in report.pks(outcome):
            if pk in pks:
                kinds.setdefault(pk, outcome.value)
    return kinds


def record_refresh_batch(
    rows: list[ClientToken], report: BatchReport, *, work: bool = True
) -> None:
    """Record the outcome of every row of one refreshed batch (called once per batch).

    Per row: one ``refresh`` event (token id, client id, outcome, upstream status, call
    duration, error code) and its claim lag (database time when the row was taken minus its
    ``refresh_at``; only rows that were due). Per batch: the outcome counters and one
    upsert of the hourly counts, with what the batch did and cost (:data:`WORK`) unless
    ``work`` is false (the lazy refresh of one token a request waits for: not a batch, and
    its wait for Synerise would drag down the batches' rate). Never raises.
    """
    try:
        kinds = _kinds(rows, report)
        counts = dict.fromkeys(OUTCOMES, 0)
        lags: list[float] = []
        for row in rows:
            kind = kinds.get(row.pk, RefreshOutcome.SKIPPED.value)
            if kind in counts:
                counts[kind] += 1
            seconds = getattr(row, "call_seconds", None)
            events.log_refresh(
                outcome=kind,
                token_id=row.pk,
                client_id=row.account.client_id,
                upstream_status=getattr(row, "call_status", None),
                duration_ms=None if seconds is None else seconds * 1000,
                error=row.last_error if RefreshOutcome(kind).counts_failure else None,
            )
            taken = getattr(row, "db_now", None)
            target = getattr(row, "claimed_refresh_at", None)
            if taken is not None and target is not None and kind != RefreshOutcome.SKIPPED:
                lag = (taken - target).total_seconds()
                if lag >= 0:
                    lags.append(lag)
        metrics.observe_refresh_outcomes(counts)
        metrics.observe_claim_lag(lags)
        add_outcome_counts({**counts, **(_work_counts(report) if work else {})})
    except Exception:
        logger.warning("Could not record a Synerise refresh batch", exc_info=True)


def record_run() -> None:
    """Record one scheduler run (beat task or cron command): the dashboard's "last run"."""
    add_outcome_counts({"run": 1})


def record_login(
    *,
    provider: str,
    outcome: str,
    client_id: str | None = None,
    token_id: int | None = None,
    upstream_status: int | None = None,
    duration: float | None = None,
) -> None:
    """Record one sign-in: a ``login`` event and ``synerise_login_outcomes_total``."""
    try:
        events.log_login(
            outcome=outcome,
            provider=provider,
            client_id=client_id,
            token_id=token_id,
            upstream_status=upstream_status,
            duration_ms=None if duration is None else duration * 1000,
        )
        metrics.observe_login(outcome)
    except Exception:
        logger.warning("Could not record a Synerise login", exc_info=True)


def outcome_history(*, hours: int = 24, now: datetime | None = None) -> dict[str, Any]:
    """Hourly refresh outcomes of the last ``hours`` hours (the current one included), in
    one query.

    :returns: ``{"hours": [datetime, ...] (UTC, oldest first), "series": {outcome: [count
        per hour]}, "totals": {outcome: n}, "runs": [count per hour]}``.
    """
    now = now or timezone.now()
    current = _hour(now)
    starts = [current - timedelta(hours=h) for h in range(hours - 1, -1, -1)]
    index = {start: i for i, start in enumerate(starts)}
    series = {outcome: [0] * hours for outcome in (*OUTCOMES, "run")}
    rows = RefreshOutcomeCount.objects.filter(hour__gte=starts[0]).values_list(
        "hour", "outcome", "count"
    )
    for hour, outcome, count in rows:
        position = index.get(_hour(hour))
        if position is not None and outcome in series:
            series[outcome][position] += int(count)
    runs = series.pop("run")
    return {
        "hours": starts,
        "series": series,
        "totals": {outcome: sum(values) for outcome, values in series.items()},
        "runs": runs,
    }


def last_run() -> datetime | None:
    """When a scheduler run (beat task or cron command) last started, or ``None`` (one
    query)."""
    last: datetime | None = RefreshOutcomeCount.objects.filter(outcome="run").aggregate(
        last=Max("updated_at")
    )["last"]
    return last


def prune_outcome_counts(*, now: datetime | None = None) -> int:
    """Delete hourly counts older than :data:`RETENTION`; return how many rows went."""
    cutoff = _hour(now or timezone.now()) - RETENTION
    deleted, _ = RefreshOutcomeCount.objects.filter(hour__lt=cutoff).delete()
    return deleted
