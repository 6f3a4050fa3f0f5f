"""Operational status: token counts per status and circuit breaker states (no HTTP unless asked)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.core.cache import cache
from django.db import connections, router
from django.db.models import CharField, Count, Q, Value
from django.db.models.functions import ExtractMinute, Now, TruncHour
from django.utils import timezone

from ..adapter_loader import get_adapter
from ..breaker import all_breakers, get_breaker
from ..exceptions import SyneriseError
from ..models import ClientToken, RefreshHalt, TokenStatus
from .halt import current_halt

logger = logging.getLogger(__name__)

__all__ = [
    "EXPIRY_SLOT_MINUTES",
    "breaker_states",
    "expiry_histogram",
    "fleet_counts",
    "fleet_counts_sql",
    "probe_upstream",
    "refresh_halt_state",
    "record_refusal",
    "refusal_counts",
    "token_status_counts",
]


def refresh_halt_state() -> dict[str, Any] | None:
    """Return the background refresh halt in force, or ``None`` while refresh runs.

    A dict with ``reason`` (code of the rejection), ``detail`` (status and code of the last
    API key probe), ``since`` and ``probe_at`` (ISO 8601) and ``probes`` (rejected probes so
    far); see :mod:`django_synerise.services.halt`. One query, shared by every process.
    """
    halt = current_halt()
    return halt.as_dict() if halt is not None else None


def token_status_counts() -> dict[str, int]:
    """Return how many stored tokens are in each status, plus two health figures.

    Keys: every :class:`~django_synerise.models.TokenStatus` value (``active``,
    ``refreshing``, ``needs_login``, ``revoked``; 0 when none), ``total``, ``due`` (rows the
    refresh pipeline would claim now, see :func:`~django_synerise.services.due_tokens`) and
    ``expired_active`` (rows still ``active``/``refreshing`` whose ``expires_at`` has passed
    in database time: the pipeline missed them and their owners must log in again). Two
    queries; claims and locks nothing.
    """
    live = [TokenStatus.ACTIVE, TokenStatus.REFRESHING]
    aggregates: dict[str, Any] = {
        value: Count("pk", filter=Q(status=value)) for value in TokenStatus.values
    }
    aggregates["total"] = Count("pk")
    aggregates["expired_active"] = Count("pk", filter=Q(status__in=live, expires_at__lte=Now()))
    counts = ClientToken.objects.aggregate(**aggregates)
    result = {key: int(value or 0) for key, value in counts.items()}
    result["due"] = ClientToken.objects.due().count()
    return result


def fleet_counts_sql() -> tuple[str, str, list[Any]]:
    """The statement of :func:`fleet_counts`: ``(database alias, sql, params)``.

    Built from the ORM (the backlog part is :func:`~django_synerise.services.due_tokens`
    itself), so the metric and the pipeline agree on what "due" means.
    """
    alias = router.db_for_read(ClientToken)
    parts = [
        # COUNT(*), not COUNT(id): the status index alone answers it (index-only scan).
        ClientToken.objects.using(alias).order_by().values("status").annotate(n=Count("*")),
        ClientToken.objects.due()
        .using(alias)
        .order_by()
        .annotate(label=Value("due", output_field=CharField()))
        .values("label")
        .annotate(n=Count("pk")),
        RefreshHalt.objects.using(alias)
        .filter(pk="refresh")
        .annotate(label=Value("halted", output_field=CharField()))
        .values("label")
        .annotate(n=Count("pk")),
    ]
    first, *rest = parts
    sql, params = first.union(*rest, all=True).query.get_compiler(alias).as_sql()
    return alias, sql, list(params)


def fleet_counts() -> dict[str, int]:
    """Return the fleet gauges in **one** query: tokens per status, ``due`` and ``halted``.

    Keys: every :class:`~django_synerise.models.TokenStatus` value (0 when none), ``due``
    (what :func:`~django_synerise.services.due_tokens` would claim now: the backlog) and
    ``halted`` (1 while background refresh is halted, else 0). One ``UNION ALL`` statement
    whose parts each use an index: the per-status counts an index-only scan of a
    ``status`` index, the backlog a range scan of ``refresh_at`` (only the due rows are
    read), the halt its primary key; never a scan of the token table (the test suite checks
    the plan on PostgreSQL with 100,000 rows). Used by the metrics scrape and the admin dashboard.
    """
    alias, sql, params = fleet_counts_sql()
    connection = connections[alias]
    result = dict.fromkeys(TokenStatus.values, 0)
    result.update(due=0, halted=0)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for label, count in cursor.fetchall():
            result[str(label)] = result.get(str(label), 0) + int(count or 0)
    result["halted"] = min(1, result["halted"])
    return result


#: Width of one bar of :func:`expiry_histogram`.
EXPIRY_SLOT_MINUTES = 5


def expiry_histogram(*, now: datetime | None = None, slots: int = 12) -> list[dict[str, Any]]:
    """Live tokens (``active``/``refreshing``) by time to expiry over the next hour (one query).

    ``slots`` bars of :data:`EXPIRY_SLOT_MINUTES` minutes aligned to the clock (UTC), the
    first one holding ``now``; only tokens not yet expired count. Grouped by hour and minute
    in the database (a range of the ``expires_at`` index), so the cost does not depend on
    how many tokens expire.

    :returns: ``[{"start": datetime, "end": datetime, "count": int}, ...]``, oldest first.
    """
    now = now or timezone.now()
    step = timedelta(minutes=EXPIRY_SLOT_MINUTES)
    first = now.astimezone(dt_timezone.utc).replace(second=0, microsecond=0)
    first -= timedelta(minutes=first.minute % EXPIRY_SLOT_MINUTES)
    end = first + step * slots
    counts = [0] * slots
    rows = (
        ClientToken.objects.filter(
            status__in=[TokenStatus.ACTIVE, TokenStatus.REFRESHING],
            expires_at__gt=now,
            expires_at__lt=end,
        )
        .annotate(
            hour=TruncHour("expires_at", tzinfo=dt_timezone.utc),
            minute=ExtractMinute("expires_at", tzinfo=dt_timezone.utc),
        )
        .order_by()
        .values("hour", "minute")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        start = row["hour"].astimezone(dt_timezone.utc) + timedelta(minutes=row["minute"])
        index = int((start - first) // step)
        if 0 <= index < slots:
            counts[index] += int(row["n"])
    return [
        {"start": first + step * i, "end": first + step * (i + 1), "count": counts[i]}
        for i in range(slots)
    ]


def breaker_states() -> list[dict[str, Any]]:
    """Return the state of every circuit breaker of **this process**, the one of the
    configured ``BASE_URL`` first.

    Each item is :meth:`~django_synerise.breaker.BreakerSnapshot.as_dict`: ``name`` (the
    upstream base URL), ``state`` (``closed``, ``open`` or ``half_open``),
    ``failure_count`` (consecutive failures), ``threshold``, ``reset_timeout``,
    ``retry_in`` (seconds until the next probe while open), ``total_failures`` and
    ``total_opens``. Breakers live in process memory (one per upstream per process), so
    another process (a web worker, a Celery child) may see a different state.
    """
    primary = get_breaker()
    others = sorted((b for b in all_breakers() if b is not primary), key=lambda b: b.name)
    return [breaker.snapshot().as_dict() for breaker in [primary, *others]]


def probe_upstream() -> dict[str, Any]:
    """Make one cheap call (``GET /v4/public.pem``) through the default client and its
    breaker, so the breaker of this process reflects Synerise's health right now.

    Never raises for upstream errors.

    :returns: ``{"ok": bool, "error": code or None, "status": HTTP status or None}``.
    """
    try:
        get_adapter().get_client().public_key()
    except SyneriseError as exc:
        logger.info("Synerise probe failed: %s", type(exc).__name__)
        return {"ok": False, "error": exc.code, "status": getattr(exc, "status", None)}
    return {"ok": True, "error": None, "status": 200}


#: Refusal reasons counted by :func:`record_refusal` (shown by ``synerise_status``).
REFUSAL_REASONS = ("lifetime",)
_REFUSAL_KEY = "django_synerise:refused:{reason}"


def record_refusal(reason: str) -> None:
    """Count one token refused for ``reason`` (e.g. ``lifetime``) in the default cache.

    Shared by every process when the cache is (Redis, Memcached); best effort: a cache
    failure is logged, never raised.
    """
    key = _REFUSAL_KEY.format(reason=reason)
    try:
        if not cache.add(key, 1, timeout=None):
            cache.incr(key)
    except Exception:  # a broken cache must not fail a login
        logger.warning("Could not count a refused Synerise token (%s)", reason, exc_info=True)


def refusal_counts() -> dict[str, int]:
    """Return how many tokens were refused per reason since the cache was last cleared:
    ``{"lifetime": n}`` (tokens living longer than ``MAX_TOKEN_LIFETIME``)."""
    counts: dict[str, int] = {}
    for reason in REFUSAL_REASONS:
        try:
            counts[reason] = int(cache.get(_REFUSAL_KEY.format(reason=reason)) or 0)
        except Exception:
            counts[reason] = 0
    return counts
