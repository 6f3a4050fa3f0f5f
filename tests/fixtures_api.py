"""Fixtures of the ``tests/test_api_*.py`` modules (loaded with ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from django_synerise.testing import FakeSynerise

from .api_helpers import SignedIn, live_server_thread, sign_in


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
    """A threaded live server of the test project; yields its base URL."""
    with live_server_thread() as url:
        yield url
