"""Provisioning existing users with ``manage.py synerise_connect_users`` (a real subprocess).

2,000 site users are connected to FakeSynerise through OAUTH (JWT mode, the live site's
JWKS); the command is killed with SIGKILL half-way and run again with ``--only-missing``:
every active user ends with exactly one Synerise profile and a stored token, only the calls
in flight at the kill are made twice, and inactive users are never sent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command

from django_synerise.models import ClientToken, IdentitySubject, SyneriseAccount, TokenStatus
from tests.child_env import ROOT, child_env

from .fixtures_identity import AUDIENCE, trust

pytest_plugins = ["tests.fixtures_api"]
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

USERS = 2000
INACTIVE = 20
BATCH = 100
LOGIN = "/sauth/v3/auth/login/client"


def _oauth(rsa_pem: str, issuer: str) -> dict[str, Any]:
    return {"OAUTH_SIGNING_KEYS": [rsa_pem], "OAUTH_ISSUER": issuer, "OAUTH_AUDIENCE": AUDIENCE}


def _make_users() -> None:
    password = make_password("not used")
    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"user{i:05d}", email=f"user{i:05d}@example.com", password=password,
              first_name="Site", last_name=f"User {i}") for i in range(USERS)]
        + [User(username=f"gone{i:03d}", password=password, is_active=False)
           for i in range(INACTIVE)],
        batch_size=1000,
    )


def _subs_sent(fake) -> Counter[str]:
    """How many times each ``sub`` was sent to Synerise in an OAUTH login."""
    sent: Counter[str] = Counter()
    for request in fake.requests:
        if request.path == LOGIN and isinstance(request.json, dict):
            token = request.json["identityProviderToken"]
            sent[jwt.decode(token, options={"verify_signature": False})["sub"]] += 1
    return sent


def test_provision_2000_users_resumable_after_a_kill(settings, fake_synerise, api_live_server,
                                                    rsa_pem, require_postgres):
    oauth = _oauth(rsa_pem, api_live_server)
    settings.SYNERISE = {**settings.SYNERISE, **oauth}
    trust(fake_synerise, api_live_server, "jwt")
    fake_synerise.oauth_jwks_ttl = 300.0
    _make_users()

    overrides = {**oauth, "REFRESH_CONCURRENCY": 8, "TIMEOUT": [3, 10], "TOTAL_TIMEOUT": 12,
                 "LEASE_SECONDS": 60}
    env = child_env(fake_synerise, SYNERISE_TEST_OVERRIDES=json.dumps(overrides))
    command = [sys.executable, "-m", "django", "synerise_connect_users", "--batch-size",
               str(BATCH)]
    dry = subprocess.run([*command, "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert f"{USERS} users would be connected" in dry.stdout
    assert fake_synerise.count(LOGIN) == 0

    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 600
        # Kill it once a few batches are stored (answers are stored as they arrive).
        while ClientToken.objects.count() < 5 * BATCH:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the command made no progress"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        lines = process.stdout.read().splitlines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    stored_at_kill = ClientToken.objects.count()
    assert 5 * BATCH <= stored_at_kill < USERS, "the kill must land half-way"
    assert any(line.startswith("progress: ") for line in lines), lines

    resumed = subprocess.run([*command, "--only-missing"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = resumed.stdout.strip().splitlines()[-1]
    missing = USERS - stored_at_kill
    assert f"connected={missing}" in final and "failed=0" in final, resumed.stdout

    active = get_user_model().objects.filter(is_active=True)
    tokens = ClientToken.objects.filter(account__user__in=active, status=TokenStatus.ACTIVE)
    assert tokens.count() == USERS
    accounts = SyneriseAccount.objects.filter(identity_provider="OAUTH")
    assert accounts.count() == USERS
    assert len(set(accounts.values_list("client_id", flat=True))) == USERS
    # Exactly one Synerise profile per user, keyed by the user's opaque subject.
    oauth_clients = [c for c in fake_synerise.clients if c.identity_provider == "OAUTH"]
    subjects = {str(s) for s in IdentitySubject.objects.filter(
        user__is_active=True).values_list("subject", flat=True)}
    assert len(oauth_clients) == USERS
    assert {c.subject for c in oauth_clients} == subjects
    # Each user was sent once, but for the calls in flight at the kill (at most a batch).
    sent = _subs_sent(fake_synerise)
    assert set(sent) == subjects
    twice = [sub for sub, n in sent.items() if n > 1]
    assert max(sent.values()) <= 2 and len(twice) <= BATCH
    # Inactive users were never selected or sent.
    assert not SyneriseAccount.objects.filter(user__is_active=False).exists()

    # A third run has nothing left to do.
    before = fake_synerise.count(LOGIN)
    call_command("synerise_connect_users", "--only-missing")
    assert fake_synerise.count(LOGIN) == before
