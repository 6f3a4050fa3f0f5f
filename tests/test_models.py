"""Models and query helpers: field metadata, token access, due/expiring/activity queries."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.utils import timezone
from django.utils.functional import Promise

from django_synerise.exceptions import TokenDecryptionError
from django_synerise.models import (
    ClientToken,
    IdentityProvider,
    SyneriseAccount,
    TokenStatus,
)
from tests.factories import make_account, make_token, make_user


def test_every_field_has_a_translated_verbose_name():
    for model in (SyneriseAccount, ClientToken):
        assert isinstance(model._meta.verbose_name, Promise)
        for field in model._meta.get_fields():
            if field.auto_created or not field.concrete:
                continue
            assert isinstance(field.verbose_name, Promise), (model, field.name)


def test_choices():
    assert set(IdentityProvider.values) == {"SYNERISE", "GOOGLE", "APPLE", "FACEBOOK", "OAUTH"}
    assert set(TokenStatus.values) == {"active", "refreshing", "needs_login", "revoked"}


@pytest.mark.django_db
def test_migrations_are_up_to_date():
    out = StringIO()
    call_command("makemigrations", "django_synerise", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_due_index_exists_in_database():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(
            cursor, ClientToken._meta.db_table
        )
    assert constraints["synerise_token_due_idx"]["columns"] == ["status", "refresh_at"]
    indexed = {tuple(c["columns"]) for c in constraints.values() if c["index"]}
    assert ("expires_at",) in indexed
    assert ("last_used_at",) in indexed


@pytest.mark.django_db
def test_get_token_roundtrip_and_defaults():
    row = make_token(token="aaa.bbb.ccc")
    fresh = ClientToken.objects.get(pk=row.pk)
    assert fresh.get_token() == "aaa.bbb.ccc"
    assert fresh.status == TokenStatus.ACTIVE
    assert fresh.version == 1
    assert fresh.failure_count == 0
    assert fresh.lease_until is None


@pytest.mark.django_db
def test_revoked_row_with_cleared_ciphertext_fails_closed():
    row = make_token()
    ClientToken.objects.filter(pk=row.pk).update(status=TokenStatus.REVOKED, encrypted_token="")
    with pytest.raises(TokenDecryptionError):
        ClientToken.objects.get(pk=row.pk).get_token()


@pytest.mark.django_db
def test_is_expired_and_expires_in():
    live = make_token(expires_in=600)
    dead = make_token(expires_in=-5)
    assert not live.is_expired()
    assert dead.is_expired()
    assert 590 < live.expires_in <= 600
    assert dead.expires_in < 0
    assert live.is_expired(now=live.expires_at)
    assert not live.is_expired(now=live.expires_at - timedelta(seconds=1))
    assert ClientToken(expires_at=None).is_expired()


@pytest.mark.django_db
def test_account_str_repr_and_uniqueness():
    account = make_account(client_id="4242")
    assert str(account) == "Synerise client 4242"
    assert "4242" in repr(account)
    with pytest.raises(IntegrityError):
        make_account(client_id="4242")


@pytest.mark.django_db
def test_one_token_per_account():
    row = make_token()
    with pytest.raises(IntegrityError):
        make_token(row.account)


@pytest.mark.django_db
def test_user_deletion_cascades():
    row = make_token()
    row.account.user.delete()
    assert not ClientToken.objects.exists()
    assert not SyneriseAccount.objects.exists()


@pytest.mark.django_db
def test_due_selects_only_refreshable_rows():
    now = timezone.now()
    due = make_token(expires_in=600, now=now)                         # refresh_at = exp - 900
    not_yet = make_token(expires_in=3600, now=now)
    expired = make_token(expires_in=-1, now=now)
    leased = make_token(expires_in=600, now=now, lease_until=now + timedelta(seconds=30))
    lease_over = make_token(expires_in=600, now=now, lease_until=now - timedelta(seconds=1))
    needs_login = make_token(expires_in=600, now=now, status=TokenStatus.NEEDS_LOGIN)
    # a refreshing row carries its worker's lease (one whose lease ran out is due again)
    refreshing = make_token(expires_in=600, now=now, status=TokenStatus.REFRESHING,
                            lease_until=now + timedelta(seconds=30))
    revoked = make_token(expires_in=600, now=now, status=TokenStatus.REVOKED)

    ids = set(ClientToken.objects.due(now=now).values_list("pk", flat=True))
    assert ids == {due.pk, lease_over.pk}
    assert not {not_yet.pk, expired.pk, leased.pk, needs_login.pk, refreshing.pk,
                revoked.pk} & ids
    # later, the hour-long token becomes due as well
    later = now + timedelta(seconds=2800)
    assert not_yet.pk in set(ClientToken.objects.due(now=later).values_list("pk", flat=True))


@pytest.mark.django_db
def test_expiring_soon(settings):
    now = timezone.now()
    soon = make_token(expires_in=300, now=now)
    refreshing = make_token(expires_in=300, now=now, status=TokenStatus.REFRESHING)
    later = make_token(expires_in=3000, now=now)
    gone = make_token(expires_in=-10, now=now)
    needs = make_token(expires_in=300, now=now, status=TokenStatus.NEEDS_LOGIN)

    ids = set(ClientToken.objects.expiring_soon(now=now).values_list("pk", flat=True))
    assert ids == {soon.pk, refreshing.pk}
    ids = set(ClientToken.objects.expiring_soon(3600, now=now).values_list("pk", flat=True))
    assert ids == {soon.pk, refreshing.pk, later.pk}
    ids = set(ClientToken.objects.expiring_soon(timedelta(seconds=60), now=now)
              .values_list("pk", flat=True))
    assert ids == set()
    assert gone.pk not in ids and needs.pk not in ids


@pytest.mark.django_db
def test_status_helpers():
    active = make_token()
    needs = make_token(status=TokenStatus.NEEDS_LOGIN)
    revoked = make_token(status=TokenStatus.REVOKED)
    assert list(ClientToken.objects.active()) == [active]
    assert list(ClientToken.objects.needing_login()) == [needs]
    assert list(ClientToken.objects.revoked()) == [revoked]
    assert list(ClientToken.objects.for_user(needs.account.user)) == [needs]


@pytest.mark.django_db
def test_with_recent_activity(settings):
    settings.SYNERISE = {**settings.SYNERISE, "KEEPALIVE_IDLE": 3600}
    now = timezone.now()
    recent = make_token(last_used_at=now - timedelta(minutes=10))
    idle = make_token(last_used_at=now - timedelta(hours=2))
    never_used_new = make_token(last_used_at=None)
    never_used_old = make_token(last_used_at=None)
    ClientToken.objects.filter(pk=never_used_old.pk).update(created_at=now - timedelta(days=1))

    ids = set(ClientToken.objects.with_recent_activity(now=now).values_list("pk", flat=True))
    assert ids == {recent.pk, never_used_new.pk}
    ids = set(ClientToken.objects.with_recent_activity(idle=timedelta(hours=3), now=now)
              .values_list("pk", flat=True))
    assert ids == {recent.pk, idle.pk, never_used_new.pk}
    # composes with due()
    assert idle.pk not in set(
        ClientToken.objects.due(now=now + timedelta(minutes=50))
        .with_recent_activity(now=now).values_list("pk", flat=True)
    )


@pytest.mark.django_db
def test_account_queryset_helpers():
    active = make_account()
    inactive = make_account(make_user(is_active=False))
    make_token(active)
    assert list(SyneriseAccount.objects.of_active_users()) == [active]
    assert list(SyneriseAccount.objects.for_user(inactive.user)) == [inactive]
    accounts = list(SyneriseAccount.objects.with_token().order_by("pk"))
    assert accounts[0].token.status == TokenStatus.ACTIVE
