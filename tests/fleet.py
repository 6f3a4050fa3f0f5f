"""Seed many token rows fast (bulk inserts), for the dashboard and metrics cost tests.

Rows get a ciphertext-sized ``encrypted_token`` that is not real ciphertext (nothing here
decrypts it). ``seed_fleet_sql`` writes with ``generate_series`` on PostgreSQL (100,000 rows
in seconds); ``seed_fleet`` uses ``bulk_create`` and works on any database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from django_synerise.models import ClientToken, SyneriseAccount, TokenStatus

#: Share of rows per status (of every 20 rows): 14 active, 1 refreshing, 3 needing login,
#: 2 revoked.
PATTERN = (
    [TokenStatus.ACTIVE] * 14
    + [TokenStatus.REFRESHING]
    + [TokenStatus.NEEDS_LOGIN] * 3
    + [TokenStatus.REVOKED] * 2
)
CIPHERTEXT = "x" * 700


def status_of(i: int) -> str:
    return PATTERN[i % len(PATTERN)]


def expected_counts(n: int) -> dict[str, int]:
    """How many of ``n`` seeded rows have each status."""
    counts: dict[str, int] = {}
    for i in range(n):
        counts[status_of(i)] = counts.get(status_of(i), 0) + 1
    return counts


def seed_fleet(n: int, *, prefix: str = "fleet") -> None:
    """Create ``n`` users, accounts and tokens with ``bulk_create``; expiry spread over the
    next hour (``expires_at = now + (i % 3600) s``), refresh due for none."""
    now = timezone.now()
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        [user_model(username=f"{prefix}{i}") for i in range(n)], batch_size=2000
    )
    accounts = SyneriseAccount.objects.bulk_create(
        [SyneriseAccount(user=u, client_id=f"{prefix}{i}") for i, u in enumerate(users)],
        batch_size=2000,
    )
    ClientToken.objects.bulk_create(
        [
            ClientToken(
                account=account,
                encrypted_token=CIPHERTEXT,
                status=status_of(i),
                expires_at=now + timedelta(seconds=60 + i % 3600),
                refresh_at=now + timedelta(seconds=3600),
                last_used_at=now,
            )
            for i, account in enumerate(accounts)
        ],
        batch_size=2000,
    )


def seed_fleet_sql(n: int, *, due: int = 0) -> Any:
    """PostgreSQL only: ``n`` users, accounts and tokens in three ``INSERT ... SELECT``
    statements; the first ``due`` active rows are due for refresh. Then ``VACUUM ANALYZE``
    (the planner sees the table as a live server would after autovacuum)."""
    users = get_user_model()._meta.db_table
    accounts = SyneriseAccount._meta.db_table
    tokens = ClientToken._meta.db_table
    cases = " ".join(
        f"WHEN {i} THEN '{status}'" for i, status in enumerate(PATTERN)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {users} (username, password, is_superuser, first_name, last_name, "
            "email, is_staff, is_active, date_joined) "
            "SELECT 'bulk' || g, '', false, '', '', '', false, true, now() "
            "FROM generate_series(1, %s) g",
            [int(n)],
        )
        cursor.execute(
            f"INSERT INTO {accounts} (user_id, client_id, email, custom_id, uuid, "
            "identity_provider, business_profile_id, created_at, updated_at) "
            "SELECT id, 'bulk' || id, '', '', '', 'SYNERISE', '', now(), now() "
            f"FROM {users} WHERE username LIKE %s",
            ["bulk%"],
        )
        cursor.execute(
            f"INSERT INTO {tokens} (account_id, encrypted_token, fingerprint, "
            "previous_fingerprint, expires_at, refresh_at, status, version, failure_count, "
            "last_error, last_used_at, origin, created_at, updated_at) "
            "SELECT id, repeat('x', 700), '', '', now() + (rn %% 3600 + 60) * interval '1 s', "
            "CASE WHEN (rn - 1) %% 20 = 0 AND rn <= %s * 20 THEN now() - interval '1 minute' "
            "ELSE now() + interval '1 hour' END, "
            f"CASE (rn - 1) %% {len(PATTERN)} {cases} END, "
            "1, 0, '', now(), '', now(), now() "
            f"FROM (SELECT a.id, row_number() OVER (ORDER BY a.id) AS rn FROM {accounts} a "
            "WHERE a.client_id LIKE %s) numbered",
            [int(due), "bulk%"],
        )
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {tokens}")
        cursor.execute(f"VACUUM ANALYZE {accounts}")
        cursor.execute(f"VACUUM ANALYZE {users}")
