"""Fixtures of the ``tests/test_api_*.py`` modules (loaded with ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from django_synerise.testing import FakeSynerise

from .api_helpers import SignedIn, sign_in


@pytest.fixture
def api_clean_state() -> Iterator[None]:
    """Throttle counters live in the cache and the circuit breaker is per process: start
    (and leave) a test with both cleared. Every ``test_api_*`` module uses it."""
    from django_synerise.breaker import get_breaker

    cache.clear()
    get_breaker().reset()
    yield
    get_breaker().reset()

@pytest.fixture
def api() -> APIClient:
    return APIClient()

@pytest.fixture
def csrf_api() -> APIClient:
    """A client that enforces CSRF like a browser-facing deployment."""
    return APIClient(enforce_csrf_checks=True)

@pytest.fixture
def signed_in(fake_synerise: FakeSynerise, db: None) -> SignedIn:
    """alice@example.com signed in through the API; the fake's request log is cleared."""
    result = sign_in(fake_synerise)
    fake_synerise.clear_requests()
    return result

@pytest.fixture
def api_live_server(transactional_db: None) -> Iterator[str]:
    """A threaded live server of the test project; yields its base URL.

    Django's ``LiveServerThread`` (as pytest-django's ``live_server`` uses) without the
    static-files wrapper, which needs ``STATIC_URL`` (unset in tests/settings.py). An
    in-memory SQLite database is shared with the server thread, as Django does.
    """
    from django.db import connections
    from django.test.testcases import LiveServerThread

    overrides = {}
    for conn in connections.all():
        if conn.vendor == "sqlite" and conn.is_in_memory_db():
            overrides[conn.alias] = conn
            conn.inc_thread_sharing()
    thread = LiveServerThread("127.0.0.1", static_handler=lambda app: app,
                              connections_override=overrides, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()
        for conn in overrides.values():
            conn.dec_thread_sharing()
