"""Reliability on PostgreSQL: connection killed during the compare-and-swap (X18), a row lock
held elsewhere (X19), 10,000 tokens due after an outage (X21), a user deactivated while the
pipeline refreshes them (X28)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import Count
from django.utils import timezone

from django_synerise import services
from django_synerise.crypto import encrypt_token
from django_synerise.models import ClientToken, SyneriseAccount, TokenStatus
from django_synerise.services.refresh import (
    claim_due_tokens,
    refresh_batch,
    refresh_due_tokens,
)
from tests.fixtures_refresh import calls_per_token, refresh_calls, seed_token
from tests.fixtures_services import fresh_breaker, synerise_settings  # noqa: F401

User = get_user_model()

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fake(fake_synerise: Any, settings: Any, require_postgres: None) -> Any:
    synerise_settings(
        settings,
        TIMEOUT=(1, 3),
        TOTAL_TIMEOUT=4,
        REFRESH_CONCURRENCY=8,
        BREAKER_THRESHOLD=1000,
        LEASE_SECONDS=10,
        SINGLE_FLIGHT_WAIT=1.0,
        REFRESH_BATCH_SIZE=200,
    )
    return fake_synerise


def _reload(row: ClientToken) -> ClientToken:
    return ClientToken.objects.select_related("account").get(pk=row.pk)


class RowLocker(threading.Thread):
    """Hold ``SELECT ... FOR UPDATE`` on one token row in another connection until released
    (or ``hold`` seconds); optionally kill a backend that starts waiting on that lock."""

    def __init__(self, pk: int, *, hold: float, kill_waiter_pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pk, self.hold, self.kill_waiter_pid = pk, hold, kill_waiter_pid
        self.locked = threading.Event()
        self.release = threading.Event()
        self.killed = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                list(ClientToken.objects.select_for_update().filter(pk=self.pk))
                self.locked.set()
                deadline = time.monotonic() + self.hold
                while time.monotonic() < deadline and not self.release.is_set():
                    if self.kill_waiter_pid and not self.killed and self._waiting():
                        with connection.cursor() as cursor:
                            cursor.execute(
                                "SELECT pg_terminate_backend(%s)", [self.kill_waiter_pid]
                            )
                        self.killed = True
                    time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            connection.close()

    def _waiting(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                [self.kill_waiter_pid],
            )
            row = cursor.fetchone()
        return bool(row and row[0] == "Lock")


# --------------------------------------------------------------------------- X18


@pytest.mark.timing
def test_x18_connection_killed_during_the_cas_commit_leaves_no_half_written_row(
    fake: Any, settings: Any
) -> None:
    synerise_settings(settings, LEASE_SECONDS=4)  # the call starts well within half of it
    row = seed_token(fake)
    before = ClientToken.objects.get(pk=row.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        my_pid = cursor.fetchone()[0]
    claim = claim_due_tokens()
    # The row lock makes the compare-and-swap UPDATE wait; the backend is killed mid-wait.
    locker = RowLocker(row.pk, hold=10, kill_waiter_pid=my_pid)
    locker.start()
    assert locker.locked.wait(30)

    with pytest.raises((OperationalError, InterfaceError)):  # tasks autoretry these
        refresh_batch(claim)
    locker.release.set()
    locker.join(10)
    assert locker.killed and locker.error is None
    connection.close()

    stored = _reload(row)
    assert stored.version == before.version
    assert stored.encrypted_token == before.encrypted_token
    assert stored.get_token() == row.plaintext
    assert stored.status == TokenStatus.REFRESHING
    assert stored.lease_until == claim.lease_until
    assert len(refresh_calls(fake)) == 1
    assert not claim_due_tokens(), "the lease still holds"

    time.sleep(max(0.0, (claim.lease_until - timezone.now()).total_seconds()) + 0.2)
    retry = refresh_batch(claim_due_tokens())  # the lease ran out: the next run takes it
    assert retry.refreshed == [row.pk]
    stored = _reload(row)
    assert stored.version == before.version + 1, "exactly one increment"
    assert stored.status == TokenStatus.ACTIVE and stored.lease_until is None
    assert fake.token_info(stored.get_token())["valid"]


# --------------------------------------------------------------------------- X19


@pytest.mark.timing
def test_x19_beat_skips_a_row_locked_elsewhere(fake: Any) -> None:
    locked, free = seed_token(fake), seed_token(fake)
    locker = RowLocker(locked.pk, hold=10)
    locker.start()
    assert locker.locked.wait(30)
    try:
        started = time.monotonic()
        claim = claim_due_tokens()
        # Waiting would take the 10 s the lock is held.
        assert time.monotonic() - started < 5.0, "skip_locked never waits"
        assert list(claim.ids) == [free.pk]
        assert refresh_batch(claim).refreshed == [free.pk]
    finally:
        locker.release.set()
        locker.join(10)
    assert locker.error is None
    assert list(claim_due_tokens().ids) == [locked.pk]


@pytest.mark.timing
def test_x19_get_valid_token_waits_at_most_its_bound_for_a_locked_row(fake: Any) -> None:
    row = seed_token(fake, lifetime=600)  # inside the margin: wants a refresh
    locker = RowLocker(row.pk, hold=10)  # released as soon as get_valid_token returns
    locker.start()
    assert locker.locked.wait(30)
    try:
        started = time.monotonic()
        token = services.get_valid_token(row.account.user)
        elapsed = time.monotonic() - started
    finally:
        locker.release.set()
        locker.join(10)
    assert token == row.plaintext or fake.token_info(token)["valid"]
    # 1 s SINGLE_FLIGHT_WAIT plus slack for a loaded machine, well short of the 10 s hold.
    assert elapsed < 1.0 + 3.0, f"waited {elapsed:.1f} s for a 1 s SINGLE_FLIGHT_WAIT"


# --------------------------------------------------------------------------- X21


@pytest.mark.timing
@pytest.mark.slow
def test_x21_ten_thousand_tokens_due_after_an_outage(fake: Any, settings: Any) -> None:
    """10,000 rows due at once (9,500 refreshable, 500 whose client Synerise revoked): two
    schedulers (beat + cron) drain them; each token costs exactly one upstream call, every row
    ends refreshed or needs_login, and the next wave is spread by the jitter."""
    # A lease far longer than a batch takes even on a loaded machine: a lease that runs out
    # mid-call lets the other scheduler claim the row again, by design, and call twice. So
    # are the timeouts: on a loaded machine the in-process fake can take seconds to answer,
    # and a call that timed out is retried by design, which is a second call. What this test
    # checks is that the two schedulers never claim the same row.
    synerise_settings(
        settings, REFRESH_BATCH_SIZE=250, LEASE_SECONDS=600, TIMEOUT=(30, 60), TOTAL_TIMEOUT=90
    )
    n, revoked_n = 10_000, 500
    now = timezone.now()
    clients = [fake.add_client(email=f"bulk{i}@example.com", password="x") for i in range(n)]
    tokens = [fake.issue_token(c.client_id) for c in clients]
    for client in clients[:revoked_n]:
        fake.revoke_client(client.client_id)
    users = User.objects.bulk_create(
        [User(username=f"bulk{i}", password="!") for i in range(n)], batch_size=2000
    )
    accounts = SyneriseAccount.objects.bulk_create(
        [
            SyneriseAccount(user=u, client_id=c.client_id)
            for u, c in zip(users, clients, strict=True)
        ],
        batch_size=2000,
    )
    ClientToken.objects.bulk_create(
        [
            ClientToken(
                account=a,
                expires_at=now + timedelta(minutes=50),
                refresh_at=now - timedelta(minutes=10),
                issued_at=now - timedelta(minutes=10),
                last_used_at=now,
                encrypted_token=encrypt_token(t, account_id=a.pk, client_id=a.client_id),
            )
            for a, t in zip(accounts, tokens, strict=True)
        ],
        batch_size=2000,
    )
    fake.clear_requests()

    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            refresh_due_tokens()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    started = time.monotonic()
    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.monotonic() - started
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)

    per_token = calls_per_token(fake)
    assert len(per_token) == n and set(per_token.values()) == {1}, "one call per token"
    statuses = dict(ClientToken.objects.values_list("status").annotate(count=Count("pk")))
    assert statuses == {TokenStatus.ACTIVE: n - revoked_n, TokenStatus.NEEDS_LOGIN: revoked_n}
    assert not ClientToken.objects.filter(status=TokenStatus.ACTIVE, version=1).exists()
    assert not ClientToken.objects.filter(lease_until__isnull=False).exists()
    spread = ClientToken.objects.filter(status=TokenStatus.ACTIVE).values_list(
        "refresh_at", flat=True
    )
    window = (max(spread) - min(spread)).total_seconds()
    assert window > 200, "the next wave is jittered over REFRESH_JITTER"
    rate = n / elapsed
    print(f"\nX21: {n} tokens in {elapsed:.1f} s ({rate:.0f} upstream calls/s)")
    # Generous for a loaded machine: the bound only has to stay well inside REFRESH_MARGIN
    # (900 s), the time tokens due at once have before they expire.
    assert elapsed < 300


# --------------------------------------------------------------------------- X28


def test_x28_user_deactivated_while_the_pipeline_refreshes_them(fake: Any) -> None:
    """``is_active`` flipped from inside the fake's handler: the CAS does not bring the
    token back; the row ends revoked and no signal says it was refreshed."""
    row = seed_token(fake)
    other = seed_token(fake)

    def deactivate(request: Any) -> None:
        if "refresh" in request.path and request.bearer == row.plaintext:
            user = User.objects.get(pk=row.account.user_id)
            user.is_active = False
            user.save()  # the receiver revokes the stored token
            connection.close()

    fake.on_request = deactivate
    report = refresh_batch(claim_due_tokens())
    fake.on_request = None

    assert report.refreshed == [other.pk]
    assert report.skipped == [row.pk]
    stored = _reload(row)
    assert stored.status == TokenStatus.REVOKED
    assert stored.encrypted_token == ""
    assert stored.version == row.version
    assert not claim_due_tokens()
