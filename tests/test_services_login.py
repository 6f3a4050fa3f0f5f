"""Tests of services.login, storage, logout/revocation, activity, receivers and the adapter."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_synerise import services, signals
from django_synerise.adapter import DefaultSyneriseAdapter, get_adapter
from django_synerise.crypto import token_fingerprint
from django_synerise.exceptions import (
    AccountInactive,
    BadRequest,
    CredentialsRejected,
    SyneriseUnavailable,
    TokenVerificationError,
)
from django_synerise.models import ClientToken, SyneriseAccount, TokenStatus
from django_synerise.verification import claims_for
from tests.factories import make_account, make_token, make_user
from tests.fixtures_services import (
    PASSWORD,
    add_client,
    capture,
    fresh_breaker,  # noqa: F401
    login_email,
    synerise_settings,
)

pytestmark = pytest.mark.django_db

User = get_user_model()


class RefusingAdapter(DefaultSyneriseAdapter):
    """Never links by email, whatever the setting says."""

    def can_link_by_email(self, user, claims, profile):
        return False


# --------------------------------------------------------------------------- login


def test_first_login_creates_user_account_and_encrypted_token(fake_synerise):
    client = add_client(fake_synerise, "ann@example.com")
    with capture(signals.client_logged_in) as logged_in:
        result = services.login(email="ann@example.com", password=PASSWORD)

    assert result.created is True
    user = result.user
    assert user.username == f"synerise-{client.client_id}"
    assert user.email == "ann@example.com"
    assert (user.first_name, user.last_name) == ("Ann", "Example")
    assert not user.has_usable_password()
    account = SyneriseAccount.objects.get(user=user)
    assert account.client_id == client.client_id
    assert account.identity_provider == "SYNERISE"
    assert account.business_profile_id == "1234"
    assert account.last_login_at is not None
    row = ClientToken.objects.get(account=account)
    assert row.status == TokenStatus.ACTIVE
    assert row.get_token() == result.token
    assert result.token not in row.encrypted_token
    assert row.last_used_at is not None
    assert row.refresh_at < row.expires_at - timedelta(seconds=899)
    assert abs((row.expires_at - result.expires_at).total_seconds()) < 1
    assert len(logged_in) == 1
    assert logged_in[0]["user"] == user
    assert logged_in[0]["account"] == account
    assert logged_in[0]["created"] is True
    assert logged_in[0]["request"] is None


def test_second_login_reuses_link_and_bumps_version(fake_synerise):
    first = login_email(fake_synerise)
    fake_synerise.clear_requests()
    second = services.login(email="ann@example.com", password=PASSWORD)

    assert second.user.pk == first.user.pk
    assert second.created is False
    assert second.token != first.token
    assert User.objects.count() == 1
    row = ClientToken.objects.get(account__user=first.user)
    assert row.version == 2
    assert row.get_token() == second.token
    # A known client id needs no personal-information call.
    assert fake_synerise.count("personal-information") == 0


def _login_writes(ctx: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in ctx.captured_queries
            if q["sql"].startswith(("UPDATE", "INSERT", "WITH"))]


def _recorded_token_ids(monkeypatch) -> list[int | None]:
    """The ``token_id`` of every login event recorded from now on."""
    import importlib

    login_module = importlib.import_module("django_synerise.services.login")
    ids: list[int | None] = []
    record = login_module.record_login

    def spy(**kwargs):
        ids.append(kwargs.get("token_id"))
        record(**kwargs)

    monkeypatch.setattr(login_module, "record_login", spy)
    return ids


def test_second_login_stores_account_and_token_together(fake_synerise, monkeypatch):
    first = login_email(fake_synerise)
    account = SyneriseAccount.objects.get(user=first.user)
    SyneriseAccount.objects.filter(pk=account.pk).update(email="old@example.com")
    token_ids = _recorded_token_ids(monkeypatch)
    with CaptureQueriesContext(connection) as ctx:
        second = services.login(email="ann@example.com", password=PASSWORD)
    writes = _login_writes(ctx)
    if connection.vendor == "postgresql":  # one statement writes both rows
        assert len(writes) == 1 and writes[0].startswith("WITH")
    account.refresh_from_db()
    assert account.email == "ann@example.com"
    assert account.last_login_at == second.account.last_login_at
    assert account.updated_at == second.account.updated_at
    row = ClientToken.objects.get(account=account)
    assert token_ids == [row.pk]
    assert row.version == 2 and row.get_token() == second.token
    assert row.previous_fingerprint == token_fingerprint(first.token)


def test_login_saves_the_account_when_its_save_signals_are_listened_to(fake_synerise):
    """Receivers of the account's post_save see a login's save, as before."""
    first = login_email(fake_synerise)
    with capture(post_save) as saves:
        second = services.login(email="ann@example.com", password=PASSWORD)
    account_saves = [call for call in saves if call["sender"] is SyneriseAccount]
    assert len(account_saves) == 1
    assert "last_login_at" in account_saves[0]["update_fields"]
    row = ClientToken.objects.get(account__user=first.user)
    assert row.version == 2 and row.get_token() == second.token


def test_login_recreates_a_missing_token_row(fake_synerise, monkeypatch):
    first = login_email(fake_synerise)
    ClientToken.objects.filter(account__user=first.user).delete()
    token_ids = _recorded_token_ids(monkeypatch)
    second = services.login(email="ann@example.com", password=PASSWORD)
    row = ClientToken.objects.get(account__user=first.user)
    assert token_ids == [row.pk]
    assert row.version == 1 and row.status == TokenStatus.ACTIVE
    assert row.get_token() == second.token
    assert SyneriseAccount.objects.get(user=first.user).last_login_at == (
        second.account.last_login_at)


def test_login_by_custom_id(fake_synerise):
    client = fake_synerise.add_client(custom_id="cust-42", password=PASSWORD)
    result = services.login(custom_id="cust-42", password=PASSWORD)
    assert result.account.client_id == client.client_id
    assert result.account.custom_id == "cust-42"


def test_wrong_password_stores_nothing(fake_synerise):
    add_client(fake_synerise)
    with pytest.raises(CredentialsRejected):
        services.login(email="ann@example.com", password="wrong")
    assert not SyneriseAccount.objects.exists()
    assert not User.objects.exists()


def test_unknown_provider_is_refused_without_upstream_call(fake_synerise):
    with pytest.raises(BadRequest) as info:
        services.login(identity_provider="twitter", identity_provider_token="x")
    assert info.value.field_errors[0].field == "identity_provider"
    assert fake_synerise.count() == 0


def test_synerise_down_stores_nothing(fake_synerise):
    add_client(fake_synerise)
    fake_synerise.inject(status=503, times=10, path="login")
    with pytest.raises(SyneriseUnavailable):
        services.login(email="ann@example.com", password=PASSWORD)
    assert not ClientToken.objects.exists()


@pytest.mark.parametrize("provider", ["GOOGLE", "APPLE", "FACEBOOK", "OAUTH"])
def test_provider_login_creates_then_reuses_user(fake_synerise, provider):
    token = fake_synerise.provider_token(provider, subject="sub-1", email="p@example.com")
    first = services.login(identity_provider=provider.lower(), identity_provider_token=token)
    assert first.account.identity_provider == provider
    again = fake_synerise.provider_token(provider, subject="sub-1", email="p@example.com")
    second = services.login(identity_provider=provider, identity_provider_token=again)
    assert second.user.pk == first.user.pk
    assert first.created and not second.created


def test_email_match_does_not_link_by_default(fake_synerise):
    """R-SOC-1: a new Synerise client whose email equals a local user's gets its own user."""
    local = make_user("local", email="victim@example.com")
    token = fake_synerise.provider_token("GOOGLE", subject="new-sub", email="victim@example.com")
    result = services.login(identity_provider="GOOGLE", identity_provider_token=token)
    assert result.user.pk != local.pk
    assert result.created is True
    assert not SyneriseAccount.objects.filter(user=local).exists()


def test_link_by_email_when_enabled(fake_synerise, settings):
    synerise_settings(settings, LINK_BY_EMAIL=True)
    local = make_user("local", email="Ann@Example.com")
    result = login_email(fake_synerise, "ann@example.com")
    assert result.user.pk == local.pk
    assert result.created is False
    assert result.account.user_id == local.pk


def test_link_by_email_needs_adapter_consent(fake_synerise, settings):
    synerise_settings(settings, LINK_BY_EMAIL=True,
                      ADAPTER="tests.test_services_login.RefusingAdapter")
    local = make_user("local", email="ann@example.com")
    result = login_email(fake_synerise, "ann@example.com")
    assert result.user.pk != local.pk


def test_link_by_email_skips_ambiguous_and_already_linked_users(fake_synerise, settings):
    synerise_settings(settings, LINK_BY_EMAIL=True)
    linked = make_user("linked", email="ann@example.com")
    make_account(linked)
    result = login_email(fake_synerise, "ann@example.com")
    assert result.user.pk != linked.pk


def test_inactive_linked_user_is_refused(fake_synerise):
    first = login_email(fake_synerise)
    row = ClientToken.objects.get(account__user=first.user)
    User.objects.filter(pk=first.user.pk).update(is_active=False)
    with pytest.raises(AccountInactive):
        services.login(email="ann@example.com", password=PASSWORD)
    row.refresh_from_db()
    assert row.version == 1  # nothing stored for the inactive user


def test_business_profile_setting_mismatch(fake_synerise, settings):
    synerise_settings(settings, BUSINESS_PROFILE_ID="9999")
    add_client(fake_synerise)
    with pytest.raises(TokenVerificationError) as info:
        services.login(email="ann@example.com", password=PASSWORD)
    assert info.value.reason == "business_profile"
    assert not SyneriseAccount.objects.exists()


def test_business_profile_of_existing_account_mismatch(fake_synerise):
    first = login_email(fake_synerise)
    SyneriseAccount.objects.filter(pk=first.account.pk).update(business_profile_id="777")
    with pytest.raises(TokenVerificationError) as info:
        services.login(email="ann@example.com", password=PASSWORD)
    assert info.value.reason == "business_profile"


def test_login_result_repr_hides_token(fake_synerise):
    result = login_email(fake_synerise)
    for text in (repr(result), str(result)):
        assert result.token not in text
        assert result.account.client_id in text


# --------------------------------------------------------------------------- storing


def test_store_token_rejects_token_of_another_client(fake_synerise):
    result = login_email(fake_synerise)
    other = add_client(fake_synerise, "bob@example.com")
    foreign = fake_synerise.issue_token(other.client_id)
    from django_synerise.client import get_client

    login = get_client().login(email="bob@example.com", password=PASSWORD)
    claims = claims_for(login)
    with pytest.raises(TokenVerificationError) as info:
        services.store_token(result.account, foreign, claims)
    assert info.value.reason == "client_mismatch"


def test_store_token_rejects_expired_and_anonymous(fake_synerise):
    result = login_email(fake_synerise)
    from django_synerise.client import get_client

    client = get_client()
    expired = client.login(email="ann@example.com", password=PASSWORD)
    claims = claims_for(expired)
    from dataclasses import replace

    past = replace(claims, expires_at=timezone.now() - timedelta(seconds=5))
    with pytest.raises(TokenVerificationError) as info:
        services.store_token(result.account, expired.token, past)
    assert info.value.reason == "expired"
    too_long = replace(claims, expires_at=timezone.now() + timedelta(days=2))
    with pytest.raises(TokenVerificationError) as info:
        services.store_token(result.account, expired.token, too_long)
    assert info.value.reason == "lifetime"
    anon = replace(claims, realm="anonymous_client")
    with pytest.raises(TokenVerificationError):
        services.store_token(result.account, expired.token, anon)


def test_store_token_upserts(fake_synerise):
    result = login_email(fake_synerise)
    from django_synerise.client import get_client

    fresh = get_client().login(email="ann@example.com", password=PASSWORD)
    ClientToken.objects.filter(account=result.account).update(
        status=TokenStatus.NEEDS_LOGIN, failure_count=3, last_error="x"
    )
    row = services.store_token(result.account, fresh.token, claims_for(fresh))
    assert (row.status, row.failure_count, row.last_error, row.version) == (
        TokenStatus.ACTIVE, 0, "", 2)
    assert row.get_token() == fresh.token


def test_compute_refresh_at_spread(settings):
    synerise_settings(settings, REFRESH_MARGIN=900, REFRESH_JITTER=300)
    exp = timezone.now() + timedelta(hours=1)
    values = {services.compute_refresh_at(exp) for _ in range(50)}
    assert all(exp - timedelta(seconds=1200) <= v <= exp - timedelta(seconds=900) for v in values)
    assert len(values) > 1
    synerise_settings(settings, REFRESH_JITTER=0)
    assert services.compute_refresh_at(exp) == exp - timedelta(seconds=900)


# --------------------------------------------------------------------------- logout / revoke


def test_logout_revokes_and_signals_once(fake_synerise):
    result = login_email(fake_synerise)
    with capture(signals.token_revoked) as revoked:
        assert services.logout(result.user) is True
        assert services.logout(result.user) is False
    row = ClientToken.objects.get(account=result.account)
    assert row.status == TokenStatus.REVOKED
    assert row.encrypted_token == ""
    assert [c["reason"] for c in revoked] == ["logout"]
    assert revoked[0]["token"].pk == row.pk
    assert services.logout(make_user()) is False


def test_revoke_tokens_by_ids_and_queryset():
    rows = [make_token() for _ in range(3)]
    with capture(signals.token_revoked) as revoked:
        assert services.revoke_tokens([rows[0].pk], reason="admin") == 1
        assert services.revoke_tokens(ClientToken.objects.all(), reason="admin") == 2
        assert services.revoke_tokens([]) == 0
    assert len(revoked) == 3
    assert set(ClientToken.objects.values_list("status", flat=True)) == {TokenStatus.REVOKED}


def test_mark_needs_login_sends_token_expired_once():
    row = make_token()
    with capture(signals.token_expired) as expired:
        services.mark_needs_login(row, reason="rejected")
        services.mark_needs_login(row, reason="rejected")
    row.refresh_from_db()
    assert row.status == TokenStatus.NEEDS_LOGIN
    assert [c["reason"] for c in expired] == ["rejected"]


def test_mark_needs_login_leaves_revoked_rows():
    row = make_token(status=TokenStatus.REVOKED)
    services.mark_needs_login(row, reason="expired")
    row.refresh_from_db()
    assert row.status == TokenStatus.REVOKED


def test_get_token_for():
    row = make_token()
    assert services.get_token_for(row.account.user).pk == row.pk
    assert services.get_token_for(make_user()) is None


# --------------------------------------------------------------------------- receivers


def test_deactivating_user_revokes_token():
    row = make_token()
    user = row.account.user
    with capture(signals.token_revoked) as revoked:
        user.first_name = "still active"
        user.save()
        assert revoked == []
        user.is_active = False
        user.save()
    row.refresh_from_db()
    assert row.status == TokenStatus.REVOKED
    assert [c["reason"] for c in revoked] == ["inactive"]


def test_deleting_user_sends_token_revoked():
    row = make_token()
    with capture(signals.token_revoked) as revoked:
        row.account.user.delete()
    assert [c["reason"] for c in revoked] == ["deleted"]
    assert not ClientToken.objects.exists()


# --------------------------------------------------------------------------- activity


def test_touch_activity_at_most_once_per_interval(settings):
    synerise_settings(settings, ACTIVITY_INTERVAL=60)
    now = timezone.now()
    row = make_token(last_used_at=None)
    user = row.account.user
    services.touch_activity(user, now=now)
    row.refresh_from_db()
    assert row.last_used_at == now
    services.touch_activity(user, now=now + timedelta(seconds=30))
    row.refresh_from_db()
    assert row.last_used_at == now
    later = now + timedelta(seconds=61)
    with CaptureQueriesContext(connection) as ctx:
        services.touch_activity(user, now=later)
    assert len(ctx) == 1
    row.refresh_from_db()
    assert row.last_used_at == later


def test_user_for_client_id_only_active_users():
    account = make_account()
    assert services.user_for_client_id(account.client_id) == account.user
    assert services.user_for_client_id("nope") is None
    assert services.user_for_client_id("") is None
    User.objects.filter(pk=account.user_id).update(is_active=False)
    assert services.user_for_client_id(account.client_id) is None


def test_middleware_touches_session_user_once_a_minute(client, settings):
    synerise_settings(settings, ACTIVITY_INTERVAL=60)
    row = make_token(last_used_at=None)
    client.force_login(row.account.user)
    client.get("/admin/login/")
    row.refresh_from_db()
    first = row.last_used_at
    assert first is not None
    ClientToken.objects.filter(pk=row.pk).update(last_used_at=None)
    client.get("/admin/login/")  # within the interval: the session remembers the touch
    row.refresh_from_db()
    assert row.last_used_at is None


def test_middleware_ignores_anonymous_requests(client):
    row = make_token(last_used_at=None)
    client.get("/admin/login/")
    row.refresh_from_db()
    assert row.last_used_at is None


# --------------------------------------------------------------------------- adapter


def test_get_adapter_uses_setting(settings):
    assert type(get_adapter()) is DefaultSyneriseAdapter
    synerise_settings(settings, ADAPTER="tests.test_services_login.RefusingAdapter")
    assert type(get_adapter()) is RefusingAdapter


def test_username_for_avoids_collisions(fake_synerise):
    client = add_client(fake_synerise)
    make_user(f"synerise-{client.client_id}")
    result = services.login(email="ann@example.com", password=PASSWORD)
    assert result.user.username == f"synerise-{client.client_id}-2"


def test_error_message_falls_back_to_generic():
    adapter = DefaultSyneriseAdapter()
    assert adapter.error_message("account_inactive") == "This account is disabled."
    assert adapter.error_message("whatever") == adapter.error_message("credentials_rejected")


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_logins_link_once(require_postgres, fake_synerise):
    """Eight simultaneous first sign-ins of one client: one user, one account, one token row."""
    import threading

    add_client(fake_synerise)
    fake_synerise.latency = 0.05
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(services.login(email="ann@example.com", password=PASSWORD))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len({r.user.pk for r in results}) == 1
    assert User.objects.count() == 1
    assert SyneriseAccount.objects.count() == 1
    row = ClientToken.objects.get()
    assert row.version == 8
    assert sum(r.created for r in results) == 1
