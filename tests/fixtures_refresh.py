"""Helpers shared by the refresh pipeline tests (seed token rows the fake will refresh)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from django.utils import timezone

from django_synerise.models import ClientToken
from tests.factories import make_account, make_token, make_user

_seq = itertools.count(1)


def seed_token(
    fake: Any,
    *,
    lifetime: int = 3600,
    due: bool = True,
    idle: bool = False,
    active_user: bool = True,
    **extra: Any,
) -> ClientToken:
    """Create a user, an account the fake knows, and a stored token the fake accepts.

    ``due`` puts ``refresh_at`` in the past (else 30 minutes ahead); ``idle`` puts the last
    activity 15 days back (beyond the default ``KEEPALIVE_IDLE``). The plaintext token is
    kept on the instance as ``plaintext``.
    """
    n = next(_seq)
    client = fake.add_client(email=f"refresh{n}@example.com", password="pw-not-used")
    user = make_user(is_active=active_user)
    account = make_account(user, client_id=client.client_id)
    jwt = fake.issue_token(client.client_id, lifetime=lifetime)
    now = timezone.now()
    refresh_at = now - timedelta(seconds=5) if due else now + timedelta(minutes=30)
    last_used = now - timedelta(days=15) if idle else now
    return make_token(account, token=jwt, expires_in=lifetime, refresh_at=refresh_at,
                      last_used_at=last_used, now=now, **extra)


def refresh_calls(fake: Any) -> list[Any]:
    """Recorded refresh requests of ``fake`` (oldest first)."""
    return [r for r in fake.requests if "refresh" in r.path]


def calls_per_token(fake: Any) -> dict[str, int]:
    """How many refresh requests each Bearer token got."""
    counts: dict[str, int] = {}
    for request in refresh_calls(fake):
        counts[request.bearer or ""] = counts.get(request.bearer or "", 0) + 1
    return counts
