"""F4: concurrent refreshes through the HTTP API cost one Synerise call (PostgreSQL)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from django_synerise.models import ClientToken

from .api_helpers import PASSWORD

pytest_plugins = ["tests.fixtures_api"]
pytestmark = pytest.mark.usefixtures("api_clean_state")

@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_f4_twenty_concurrent_refreshes_one_upstream_call(require_postgres, fake_synerise,
                                                          api_live_server) -> None:
    fake_synerise.add_client(email="f4@example.com", password=PASSWORD)
    login = requests.post(f"{api_live_server}/synerise/auth/login/",
                          json={"email": "f4@example.com", "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    old_token = login.json()["token"]
    past = timezone.now() - timedelta(minutes=5)
    ClientToken.objects.update(issued_at=past, refreshed_at=past)
    fake_synerise.clear_requests()
    # Hold the one refresh open long enough for every request to arrive while it is in flight,
    # even on a loaded machine (the others wait up to SINGLE_FLIGHT_WAIT, 5 s).
    fake_synerise.inject(fault="latency", delay=2.0, path="refresh", times=None)

    barrier = threading.Barrier(20)

    def refresh(_: int) -> tuple[int, str]:
        with requests.Session() as session:
            barrier.wait(timeout=10)
            response = session.post(f"{api_live_server}/synerise/auth/refresh/",
                                    headers={"Authorization": f"Bearer {old_token}"},
                                    timeout=30)
            return response.status_code, response.json().get("token", "")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(refresh, range(20)))

    assert [status for status, _ in results] == [200] * 20
    tokens = {token for _, token in results}
    assert len(tokens) == 1
    assert tokens != {old_token}
    assert fake_synerise.count(path_contains="refresh") == 1
    assert ClientToken.objects.get().get_token() == tokens.pop()
