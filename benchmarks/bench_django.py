"""Django settings shared by the benchmarks: PostgreSQL from ``DATABASE_URL``, the package
and what it needs, nothing else."""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import unquote, urlsplit


def configure_django(
    db_name: str | None = None,
    synerise: dict[str, Any] | None = None,
    *,
    test_suffix: str,
) -> None:
    """Configure minimal settings from ``DATABASE_URL`` (``db_name`` overrides the name; the
    benchmark's own database is the name plus ``test_suffix``) and set Django up."""
    import django
    from django.conf import settings

    url = os.environ.get("DATABASE_URL", "")
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        sys.exit("Set DATABASE_URL=postgres://user@host:port/name (PostgreSQL is required).")
    name = unquote(parts.path.lstrip("/")) or "postgres"
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        SECRET_KEY="benchmark-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "rest_framework",
            "django_synerise",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db_name or name,
                "USER": unquote(parts.username or "postgres"),
                "PASSWORD": unquote(parts.password or ""),
                "HOST": parts.hostname or "127.0.0.1",
                "PORT": str(parts.port or 5432),
                "TEST": {"NAME": name + test_suffix},
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        SYNERISE={
            "API_KEY": "fake-api-key",
            "TOKEN_ENCRYPTION_KEYS": ["yM9vYSrVqH5-6cA3n0r3dWhQ3Xb5Oj2iY8FhX1zT0aA="],
            **(synerise or {}),
        },
        LOGGING_CONFIG=None,
    )
    django.setup()


def machine_line(connection: Any) -> str:
    """``machine: <cores> cores, <system>, Python x.y.z, <database>, load average``: what the
    figures ran on (the PostgreSQL server's version, or the database's vendor)."""
    import platform

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            database = "PostgreSQL " + cursor.fetchone()[0].split()[0]
    else:
        database = connection.vendor
    return (
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, {database}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def site_logging() -> None:
    """Log the package at ``INFO``, as a site does at most.

    ``tests.settings`` (used by the benchmarks that measure the request path) logs
    ``django_synerise`` at ``DEBUG`` for the tests' log assertions, so every Synerise call and
    every refresh would build a debug record that no site builds.
    """
    import logging

    logging.getLogger("django_synerise").setLevel(logging.INFO)


def seed_accounts(count: int, *, batch: int = 5000) -> None:
    """Store ``count`` users ``seed<i>`` (e-mail ``seed<i>@example.com``), each linked to a
    Synerise account with that e-mail, as a site has them, then ``ANALYZE`` on PostgreSQL: a
    lookup that reads a whole table (no index) costs in proportion to them. Django must be set
    up, with its test database in place."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from django_synerise.models import SyneriseAccount

    user_model = get_user_model()
    for start in range(0, count, batch):
        stop = min(count, start + batch)
        users = user_model._default_manager.bulk_create(
            [
                user_model(username=f"seed{i}", email=f"seed{i}@example.com")
                for i in range(start, stop)
            ]
        )
        SyneriseAccount.objects.bulk_create(
            [
                SyneriseAccount(
                    user=user,
                    client_id=f"seed-{i}",
                    email=f"seed{i}@example.com",
                    uuid=f"00000000-0000-4000-8000-{i:012d}",
                )
                for i, user in zip(range(start, stop), users, strict=True)
            ]
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
