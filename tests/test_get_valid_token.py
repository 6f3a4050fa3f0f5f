"""Tests of get_valid_token / refresh_user_token: margin, single flight, fail-closed paths."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from django_synerise import services, signals
from django_synerise.client import SyneriseClient
from django_synerise.exceptions import LoginRequired
from django_synerise.models import ClientToken, TokenStatus
from tests.factories import make_token, make_user
from tests.fixtures_services import capture, fresh_breaker, login_email  # noqa: F401

User = get_user_model()


def _row(result) -> ClientToken:
    return ClientToken.objects.select_related("account").get(account=result.account)


def _due_login(fake):
    """Sign in with a token inside REFRESH_MARGIN (600 s < 900 s); later tokens live 1 h."""
    fake.token_lifetime = 600
    result = login_email(fake)
    fake.token_lifetime = 3600
    fake.clear_requests()
    return result


# --------------------------------------------------------------------------- no upstream


@pytest.mark.django_db
def test_fresh_token_is_returned_without_upstream_call(fake_synerise):
    result = login_email(fake_synerise)
    fake_synerise.clear_requests()
    assert services.get_valid_token(result.user) == result.token
    assert fake_synerise.count() == 0
    assert _row(result).version == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "reason"),
    [(TokenStatus.NEEDS_LOGIN, "needs_login"), (TokenStatus.REVOKED, "revoked")],
)
def test_unusable_status_raises_without_upstream_call(fake_synerise, status, reason):
    result = _due_login(fake_synerise)
    ClientToken.objects.filter(account=result.account).update(status=status)
    for call in (services.get_valid_token, services.refresh_user_token):
        with pytest.raises(LoginRequired) as info:
            call(result.user)
        assert info.value.reason == reason
    assert fake_synerise.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", ["garbage", "truncate", "swap"])
def test_decryption_failure_fails_closed(fake_synerise, tamper):
    result = _due_login(fake_synerise)
    row = _row(result)
    if tamper == "garbage":
        ciphertext = "not-a-fernet-token"
    elif tamper == "truncate":
        ciphertext = row.encrypted_token[:-10]
    else:
        other = make_token()
        ciphertext = other.encrypted_token
    ClientToken.objects.filter(pk=row.pk).update(encrypted_token=ciphertext)
    with capture(signals.token_expired) as expired, pytest.raises(LoginRequired) as info:
        services.get_valid_token(result.user)
    assert info.value.reason == "decryption_failed"
    assert fake_synerise.requests == []  # nothing went upstream, garbage or not
    row.refresh_from_db()
    assert row.status == TokenStatus.NEEDS_LOGIN
    assert [c["reason"] for c in expired] == ["decryption_failed"]


@pytest.mark.django_db
def test_no_token_and_inactive_user(fake_synerise):
    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(make_user())
    assert info.value.reason == "no_token"
    result = login_email(fake_synerise)
    result.user.is_active = False
    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(result.user)
    assert info.value.reason == "inactive"


@pytest.mark.django_db
def test_expired_row_goes_to_needs_login_without_upstream_call(fake_synerise):
    result = _due_login(fake_synerise)
    ClientToken.objects.filter(account=result.account).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(result.user)
    assert info.value.reason == "expired"
    assert fake_synerise.count() == 0
    assert _row(result).status == TokenStatus.NEEDS_LOGIN


# --------------------------------------------------------------------------- refresh


@pytest.mark.django_db
def test_due_token_is_refreshed_once(fake_synerise):
    result = _due_login(fake_synerise)
    with capture(signals.token_refreshed) as refreshed:
        token = services.get_valid_token(result.user)
    assert token != result.token
    assert fake_synerise.count("refresh") == 1
    row = _row(result)
    assert row.get_token() == token
    assert (row.version, row.status, row.lease_until, row.failure_count) == (
        2, TokenStatus.ACTIVE, None, 0)
    assert row.refreshed_at is not None
    assert row.expires_at > timezone.now() + timedelta(minutes=50)
    assert len(refreshed) == 1 and refreshed[0]["token"].pk == row.pk
    # Now fresh: no second refresh.
    assert services.get_valid_token(result.user) == token
    assert fake_synerise.count("refresh") == 1


@pytest.mark.django_db
def test_rejected_refresh_moves_row_to_needs_login(fake_synerise):
    result = _due_login(fake_synerise)
    fake_synerise.revoke_client(result.account.client_id)
    with capture(signals.token_expired) as expired, pytest.raises(LoginRequired) as info:
        services.get_valid_token(result.user)
    assert info.value.reason == "rejected"
    assert fake_synerise.count("refresh") == 1
    row = _row(result)
    assert row.status == TokenStatus.NEEDS_LOGIN
    assert row.lease_until is None
    assert [c["reason"] for c in expired] == ["rejected"]
    # Later calls fail fast, without another upstream call.
    with pytest.raises(LoginRequired):
        services.get_valid_token(result.user)
    assert fake_synerise.count("refresh") == 1


@pytest.mark.django_db
def test_transient_failure_keeps_current_token(fake_synerise):
    result = _due_login(fake_synerise)
    fake_synerise.inject(status=503, times=10, path="refresh")
    with capture(signals.token_refresh_failed) as failed:
        token = services.get_valid_token(result.user)
    assert token == result.token
    row = _row(result)
    assert (row.status, row.lease_until, row.version) == (TokenStatus.ACTIVE, None, 1)
    assert row.failure_count == 1
    assert row.last_error == "synerise_unavailable"
    assert len(failed) == 1 and failed[0]["will_retry"] is True


@pytest.mark.django_db
def test_bad_response_on_refresh_keeps_current_token(fake_synerise):
    result = _due_login(fake_synerise)
    fake_synerise.inject(fault="garbage", times=10, path="refresh")
    assert services.get_valid_token(result.user) == result.token
    row = _row(result)
    assert row.failure_count == 1 and row.status == TokenStatus.ACTIVE


@pytest.mark.django_db
def test_held_lease_is_respected_by_a_waiting_caller(fake_synerise, settings):
    """A lease held elsewhere (a worker) means no second refresh: wait, then serve current."""
    settings.SYNERISE = {**settings.SYNERISE, "SINGLE_FLIGHT_WAIT": 0.3}
    result = _due_login(fake_synerise)
    ClientToken.objects.filter(account=result.account).update(
        status=TokenStatus.REFRESHING, lease_until=timezone.now() + timedelta(seconds=60)
    )
    assert services.get_valid_token(result.user) == result.token
    assert fake_synerise.count("refresh") == 0


@pytest.mark.django_db
def test_stale_lease_is_taken_over(fake_synerise):
    result = _due_login(fake_synerise)
    ClientToken.objects.filter(account=result.account).update(
        status=TokenStatus.REFRESHING, lease_until=timezone.now() - timedelta(seconds=5)
    )
    token = services.get_valid_token(result.user)
    assert token != result.token
    assert fake_synerise.count("refresh") == 1


@pytest.mark.django_db
def test_deactivation_during_refresh_is_not_undone(fake_synerise):
    """R-CONC-5: the compare-and-swap must not bring a revoked token back."""
    result = _due_login(fake_synerise)
    user = result.user

    class DeactivatingClient(SyneriseClient):
        def refresh(self, token):
            answer = super().refresh(token)
            victim = User.objects.get(pk=user.pk)
            victim.is_active = False
            victim.save()  # the receiver revokes the token mid-refresh
            return answer

    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(user, client=DeactivatingClient())
    assert info.value.reason == "revoked"
    row = _row(result)
    assert row.status == TokenStatus.REVOKED
    assert row.encrypted_token == ""
    assert fake_synerise.count("refresh") == 1


@pytest.mark.django_db
def test_user_deleted_during_refresh(fake_synerise):
    result = _due_login(fake_synerise)
    user = result.user

    class DeletingClient(SyneriseClient):
        def refresh(self, token):
            answer = super().refresh(token)
            User.objects.filter(pk=user.pk).delete()
            return answer

    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(user, client=DeletingClient())
    assert info.value.reason == "no_token"
    assert not ClientToken.objects.exists()


@pytest.mark.django_db
def test_refresh_user_token_forces_unless_recent(fake_synerise):
    result = login_email(fake_synerise)
    fake_synerise.clear_requests()
    row = services.refresh_user_token(result.user)
    assert row.get_token() == result.token  # just signed in: no upstream call
    assert fake_synerise.count("refresh") == 0
    ClientToken.objects.filter(pk=row.pk).update(
        issued_at=timezone.now() - timedelta(minutes=2)
    )
    row = services.refresh_user_token(result.user)
    assert row.get_token() != result.token
    assert row.version == 2
    assert fake_synerise.count("refresh") == 1
    again = services.refresh_user_token(result.user)
    assert again.version == 2
    assert fake_synerise.count("refresh") == 1


@pytest.mark.django_db
def test_loaded_row_is_used_only_for_its_own_user(fake_synerise, django_assert_num_queries):
    mine = login_email(fake_synerise, "mine@example.com")
    other = login_email(fake_synerise, "other@example.com")
    loaded = ClientToken.objects.select_related("account").get(account__user=mine.user)
    with django_assert_num_queries(0):  # the row read in this request serves the call
        assert services.refresh_user_token(mine.user, loaded=loaded) is loaded
        valid = services.get_valid_client_token(mine.user, loaded=loaded)
    assert valid.token == mine.token
    # Another user's row is never used: the user's own row is read.
    row = services.refresh_user_token(other.user, loaded=loaded)
    assert row.account.user_id == other.user.pk
    assert row.get_token() == other.token


# --------------------------------------------------------------------------- PostgreSQL


def _run_threads(n, target):
    barrier = threading.Barrier(n)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(target())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results, errors


def _wait_for_the_winner(settings) -> None:
    """Waiters wait as long as the winner takes, however loaded the machine: past
    ``SINGLE_FLIGHT_WAIT`` a waiter serves the current (still valid) token instead, by design
    (its bound is tested above)."""
    settings.SYNERISE = {**settings.SYNERISE, "SINGLE_FLIGHT_WAIT": 60.0}


@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_single_flight_twenty_threads(require_postgres, fake_synerise, settings):
    """R-CONC-3: 20 concurrent callers, one due token -> 1 upstream refresh, 20 same tokens."""
    _wait_for_the_winner(settings)
    result = _due_login(fake_synerise)
    fake_synerise.latency = 0.1  # keep the winner in flight while the others arrive
    before = _row(result).version
    user = User.objects.get(pk=result.user.pk)

    tokens, errors = _run_threads(20, lambda: services.get_valid_token(user))

    assert errors == []
    assert fake_synerise.count("refresh") == 1
    assert len(tokens) == 20
    assert len(set(tokens)) == 1
    assert tokens[0] != result.token
    row = _row(result)
    assert row.version == before + 1
    assert row.get_token() == tokens[0]
    assert (row.status, row.lease_until) == (TokenStatus.ACTIVE, None)


@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_refresh_user_token_single_flight_twenty_threads(require_postgres, fake_synerise, settings):
    _wait_for_the_winner(settings)
    result = login_email(fake_synerise)
    ClientToken.objects.filter(account=result.account).update(
        issued_at=timezone.now() - timedelta(minutes=5)
    )
    fake_synerise.clear_requests()
    fake_synerise.latency = 0.1
    user = User.objects.get(pk=result.user.pk)

    rows, errors = _run_threads(20, lambda: services.refresh_user_token(user).get_token())

    assert errors == []
    assert fake_synerise.count("refresh") == 1
    assert len(set(rows)) == 1 and rows[0] != result.token
    assert _row(result).version == 2


# --------------------------------------------------------------------------- cost and transactions


@pytest.mark.django_db
def test_fresh_token_costs_two_queries_and_moves_activity(fake_synerise, settings):
    from django.test.utils import CaptureQueriesContext

    settings.SYNERISE = {**settings.SYNERISE, "ACTIVITY_INTERVAL": 60}
    result = login_email(fake_synerise)
    old = timezone.now() - timedelta(minutes=5)
    ClientToken.objects.filter(account=result.account).update(last_used_at=old)
    with CaptureQueriesContext(connection) as ctx:
        services.get_valid_token(result.user)
    assert len(ctx) == 2  # read the row, move last_used_at
    assert _row(result).last_used_at > old


class _NoTransactionClient(SyneriseClient):
    """Real HTTP client that records whether a database transaction was open per call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _note(self, name):
        self.calls.append((name, connection.in_atomic_block))

    def login(self, **kwargs):
        self._note("login")
        return super().login(**kwargs)

    def refresh(self, token):
        self._note("refresh")
        return super().refresh(token)

    def personal_information(self, token):
        self._note("personal_information")
        return super().personal_information(token)


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_during_http_calls(fake_synerise, settings):
    from django_synerise.verification import clear_public_key_cache

    clear_public_key_cache()
    client = _NoTransactionClient()
    fake_synerise.token_lifetime = 600
    from tests.fixtures_services import PASSWORD, add_client

    add_client(fake_synerise)
    result = services.login(email="ann@example.com", password=PASSWORD, client=client)
    fake_synerise.token_lifetime = 3600
    services.get_valid_token(result.user, client=client)
    names = [name for name, _ in client.calls]
    assert names == ["login", "personal_information", "refresh"]
    assert [in_atomic for _, in_atomic in client.calls] == [False, False, False]
