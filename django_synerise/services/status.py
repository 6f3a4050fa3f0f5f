"""Operational status: token counts per status and circuit breaker states (no HTTP unless asked)."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import Now

from ..breaker import all_breakers, get_breaker
from ..exceptions import SyneriseError

logger = logging.getLogger(__name__)

__all__ = ["breaker_states", "probe_upstream", "token_status_counts"]


def token_status_counts() -> dict[str, int]:
    """Return how many stored tokens are in each status, plus two health figures.

    Keys: every :class:`~django_synerise.models.TokenStatus` value (``active``,
    ``refreshing``, ``needs_login``, ``revoked``; 0 when none), ``total``, ``due`` (rows the
    refresh pipeline would claim now, see :func:`~django_synerise.services.due_tokens`) and
    ``expired_active`` (rows still ``active``/``refreshing`` whose ``expires_at`` has passed
    in database time: the pipeline missed them and their owners must log in again). Two
    queries; claims and locks nothing.
    """
    from ..models import ClientToken, TokenStatus
    from .refresh import count_due_tokens

    live = [TokenStatus.ACTIVE, TokenStatus.REFRESHING]
    aggregates: dict[str, Any] = {
        value: Count("pk", filter=Q(status=value)) for value in TokenStatus.values
    }
    aggregates["total"] = Count("pk")
    aggregates["expired_active"] = Count("pk", filter=Q(status__in=live, expires_at__lte=Now()))
    counts = ClientToken.objects.aggregate(**aggregates)
    result = {key: int(value or 0) for key, value in counts.items()}
    result["due"] = count_due_tokens()
    return result


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
    from ..adapter import get_adapter

    try:
        get_adapter().get_client().public_key()
    except SyneriseError as exc:
        logger.info("Synerise probe failed: %s", type(exc).__name__)
        return {"ok": False, "error": exc.code, "status": getattr(exc, "status", None)}
    return {"ok": True, "error": None, "status": 200}
