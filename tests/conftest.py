"""Shared fixtures of the django-synerise test suite."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["django_synerise.testing.plugin", "tests.fixtures_identity"]


@pytest.fixture(autouse=True)
def _fresh_process_state() -> None:
    """Every test starts with fresh process-global state: closed circuit breakers, no cached
    keys, sessions or thread pool (see ``django_synerise.process_state``)."""
    from django_synerise import process_state

    process_state.reset()


@pytest.fixture(autouse=True)
def _fresh_login_throttle() -> None:
    """Every test starts with empty login-throttle counters (they live in the cache, which
    outlives a test)."""
    from django.core.cache import caches

    caches["default"].clear()


@pytest.fixture
def require_postgres() -> None:
    """Fail (never skip) a test that needs PostgreSQL when ``DATABASE_URL`` is unset."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.fail(
            "This test needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test "
            "(.ci/run does)."
        )


@pytest.fixture
def broker_url() -> str:
    """The real broker URL for Celery tests; fails when ``CELERY_BROKER_URL`` is unset."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url or url.startswith("memory"):
        pytest.fail("This test needs a real broker: set CELERY_BROKER_URL=redis://127.0.0.1:6379/0")
    return url


@pytest.fixture
def keys(settings):
    """A setter for ``SYNERISE["TOKEN_ENCRYPTION_KEYS"]`` (read live by the package)."""

    def _set(*values: str) -> None:
        settings.SYNERISE = {**settings.SYNERISE, "TOKEN_ENCRYPTION_KEYS": list(values)}

    return _set
