"""CONNECT_ON_LOGIN and reconnection through a real Celery worker on Redis.

The site login (Django's own LoginView, ModelBackend) never waits on Synerise: it records a
pending connection and enqueues ``connect_user``; the worker connects the user through OAUTH
once Synerise answers. A connected user whose token ends ``needs_login`` is connected again
without signing in. The worker is a subprocess (``tests.celery_app``) on this run's
PostgreSQL test database; FakeSynerise validates the site's tokens against the live
server's JWKS.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from django_synerise import services
from django_synerise.models import IdentitySubject, SyneriseAccount, TokenStatus
from django_synerise.testing import FakeSynerise
from tests.celery_worker import celery_worker
from tests.child_env import child_env
from tests.waiting import log_tail, wait_for

from .fixtures_identity import PASSWORD, make_site_user, pem, trust

pytest_plugins = ["tests.fixtures_api"]
pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

ISSUER = "https://site.example"
AUDIENCE = "synerise-test-workspace"
LOGIN = "/sauth/v3/auth/login/client"


@pytest.fixture(scope="module")
def signing_pem() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    return pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def worker_fake() -> Iterator[FakeSynerise]:
    with FakeSynerise() as fake:
        yield fake


def _oauth_settings(signing_pem: str) -> dict[str, Any]:
    return {
        "OAUTH_SIGNING_KEYS": [signing_pem],
        "OAUTH_ISSUER": ISSUER,
        "OAUTH_AUDIENCE": AUDIENCE,
        "CONNECT_ON_LOGIN": True,
    }


def _purge(app: Any, queue: str) -> None:
    with app.connection_for_write() as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_purge(queue)


@pytest.fixture(scope="module")
def worker(django_db_setup: Any, django_db_blocker: Any, worker_fake: FakeSynerise,
           signing_pem: str) -> Iterator[Path]:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("redis://", "amqp://")):
        pytest.fail("These tests need CELERY_BROKER_URL=redis://127.0.0.1:6379/5")
    if connection.vendor != "postgresql":
        pytest.fail("These tests need DATABASE_URL=postgres://postgres@127.0.0.1:5432/test")
    from tests.celery_app import app

    queue = f"synerise-connect-tests-{os.getpid()}"
    app.conf.task_default_queue = queue
    _purge(app, queue)
    env = child_env(worker_fake, SYNERISE_TEST_QUEUE=queue,
                    SYNERISE_TEST_OVERRIDES=json.dumps(_oauth_settings(signing_pem)))
    log = Path(tempfile.mkstemp(prefix="synerise-connect-worker-", suffix=".log")[1])
    try:
        with celery_worker(app, queue=queue, name=f"synerise-connect-{os.getpid()}", env=env,
                           log=log, concurrency=2):
            yield log
    finally:
        _purge(app, queue)
        app.conf.task_default_queue = "celery"
        log.unlink(missing_ok=True)


@pytest.fixture
def fake(worker: Path, worker_fake: FakeSynerise, settings: Any, signing_pem: str,
         api_live_server: str, require_postgres: None) -> Iterator[FakeSynerise]:
    """The worker's fake pointed at this test's live site (JWT mode), settings to match."""
    from django_synerise.testing.plugin import point_settings_at

    point_settings_at(settings, worker_fake)
    settings.SYNERISE = {**settings.SYNERISE, **_oauth_settings(signing_pem)}
    worker_fake.reset_faults()
    worker_fake.clear_requests()
    trust(worker_fake, api_live_server, "jwt")
    worker_fake.oauth_issuer = ISSUER
    yield worker_fake
    worker_fake.reset_faults()


def logins(fake: FakeSynerise) -> int:
    """Client logins the fake received (the anonymous key probe not counted)."""
    return sum(1 for r in fake.requests if r.path == LOGIN)


def _token_status(user: Any) -> str | None:
    row = services.get_token_for(user)
    return None if row is None else row.status


@pytest.mark.timing
def test_site_login_succeeds_at_once_while_synerise_is_down(fake, worker):
    """Synerise slow, then down: the login answers at once; the token is stored after
    recovery."""
    fake.inject(fault="latency", delay=15, times=1, path=LOGIN)  # the first call hangs
    fake.inject(503, times=None, path=LOGIN)  # then Synerise is down
    user = make_site_user("lena")
    browser = Client()
    started = time.monotonic()
    response = browser.post("/accounts/login/", {"username": "lena", "password": PASSWORD})
    elapsed = time.monotonic() - started
    assert response.status_code == 302, response.content[:500]
    assert browser.session["_auth_user_id"] == str(user.pk)
    assert elapsed < 10  # a Synerise call would hang 15 s: the login never waits on one
    assert IdentitySubject.objects.get(user=user).connect_requested_at is not None

    # The worker tries (Synerise answers 503) and keeps the connection pending.
    wait_for(lambda: logins(fake) >= 1, what="a connection attempt", timeout=90,
             detail=log_tail(worker))
    wait_for(lambda: IdentitySubject.objects.get(user=user).connect_failures >= 1,
             what="the failure to be recorded", timeout=90, detail=log_tail(worker))
    assert _token_status(user) is None

    fake.reset_faults()  # Synerise is back
    wait_for(lambda: _token_status(user) == TokenStatus.ACTIVE, what="the token", timeout=90,
             detail=log_tail(worker))
    # The pending flag is cleared just after the token is stored.
    wait_for(lambda: IdentitySubject.objects.get(user=user).connect_requested_at is None,
             what="the pending connection to end", timeout=90, detail=log_tail(worker))
    account = SyneriseAccount.objects.get(user=user)
    assert account.identity_provider == "OAUTH"
    subject = IdentitySubject.objects.get(user=user)
    assert subject.connected_at is not None
    assert fake.get_client(account.client_id).subject == str(subject.subject)


def test_login_of_a_user_with_a_live_token_connects_nothing(fake, worker):
    user = make_site_user("mia")
    services.connect(user)
    before = logins(fake)
    response = Client().post("/accounts/login/", {"username": "mia", "password": PASSWORD})
    assert response.status_code == 302
    assert IdentitySubject.objects.get(user=user).connect_requested_at is None
    time.sleep(1.0)  # give a wrongly enqueued task time to show up; none must
    assert logins(fake) == before


def test_a_connected_user_whose_token_needs_login_is_connected_again(fake, worker):
    user = make_site_user("nora")
    services.connect(user)
    row = services.get_token_for(user)
    old = row.get_token()
    client_id = row.account.client_id
    fake.revoke_client(client_id)  # Synerise rejects every token issued so far

    report = services.refresh_now([row.pk])
    assert report.needs_login == 1
    # No sign-in: the worker connects the user again through OAUTH.
    wait_for(lambda: _token_status(user) == TokenStatus.ACTIVE, what="reconnection", timeout=90,
             detail=log_tail(worker))
    row.refresh_from_db()
    assert row.get_token() != old
    assert row.account.client_id == client_id  # the same Synerise profile
    assert fake.token_info(row.get_token())["valid"]


def test_an_inactive_user_is_not_reconnected(fake, worker):
    user = make_site_user("olga")
    services.connect(user)
    row = services.get_token_for(user)
    fake.revoke_client(row.account.client_id)
    before = logins(fake)
    type(user).objects.filter(pk=user.pk).update(is_active=False)  # no signal: token kept
    services.refresh_now([row.pk])
    row.refresh_from_db()
    assert row.status == TokenStatus.NEEDS_LOGIN
    assert IdentitySubject.objects.get(user=user).connect_requested_at is None
    time.sleep(1.0)
    assert logins(fake) == before
