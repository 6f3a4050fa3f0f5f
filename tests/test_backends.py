"""Tests of SyneriseBackend against FakeSynerise over real HTTP (and the admin login form)."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.test import RequestFactory

from django_synerise.backends import SyneriseBackend
from django_synerise.models import ClientToken, SyneriseAccount
from tests.factories import make_account, make_user
from tests.fixtures_services import PASSWORD, add_client, fresh_breaker  # noqa: F401

pytestmark = pytest.mark.django_db

User = get_user_model()
PROVIDERS = ["GOOGLE", "APPLE", "FACEBOOK", "OAUTH"]


def test_email_and_password(fake_synerise):
    client = add_client(fake_synerise, "ann@example.com")
    request = RequestFactory().post("/login/")
    user = authenticate(request, email="ann@example.com", password=PASSWORD)
    assert user is not None
    assert user.synerise_account.client_id == client.client_id
    assert user.backend == "django_synerise.backends.SyneriseBackend"
    assert ClientToken.objects.filter(account__user=user).exists()


def test_custom_id_and_password(fake_synerise):
    client = fake_synerise.add_client(custom_id="cust-7", password=PASSWORD)
    user = authenticate(None, custom_id="cust-7", password=PASSWORD)
    assert user.synerise_account.client_id == client.client_id


def test_uuid_and_device_id_are_passed_on(fake_synerise):
    add_client(fake_synerise)
    uuid = "3f2b8c1e-0d4a-4e6f-9b7a-1c2d3e4f5a6b"
    authenticate(None, email="ann@example.com", password=PASSWORD, uuid=uuid.upper(),
                 device_id="dev-1")
    body = [r for r in fake_synerise.requests if "login" in r.path][0].json
    assert (body["uuid"], body["deviceId"]) == (uuid, "dev-1")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_identity_provider(fake_synerise, provider):
    token = fake_synerise.provider_token(provider, subject=f"{provider}-sub", email="s@example.com")
    user = authenticate(None, identity_provider=provider, identity_provider_token=token)
    assert user is not None
    account = SyneriseAccount.objects.get(user=user)
    assert account.identity_provider == provider
    assert account.client_id == fake_synerise.client_for(provider, f"{provider}-sub").client_id
    body = [r for r in fake_synerise.requests if "login" in r.path][0].json
    assert body["identityProvider"] == provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_provider_token_is_refused(fake_synerise, provider):
    assert authenticate(None, identity_provider=provider,
                        identity_provider_token="fake-unknown-token") is None
    assert fake_synerise.count("login") == 1
    assert not User.objects.exists()


def test_provider_token_of_another_provider_is_refused(fake_synerise):
    token = fake_synerise.provider_token("GOOGLE", subject="g")
    assert authenticate(None, identity_provider="APPLE", identity_provider_token=token) is None


def test_unsupported_provider_makes_no_upstream_call(fake_synerise):
    assert authenticate(None, identity_provider="TWITTER", identity_provider_token="t") is None
    assert authenticate(None, identity_provider="SYNERISE", identity_provider_token="t") is None
    assert fake_synerise.count() == 0


def test_wrong_password(fake_synerise):
    add_client(fake_synerise)
    assert authenticate(None, email="ann@example.com", password="wrong") is None
    assert fake_synerise.count("login") == 1
    assert not User.objects.exists()


def test_incomplete_credentials_make_no_upstream_call(fake_synerise):
    assert authenticate(None, email="ann@example.com") is None
    assert authenticate(None, password=PASSWORD) is None
    assert authenticate(None, username="   ", password=PASSWORD) is None
    assert fake_synerise.count() == 0


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 500}, {"fault": "reset"},
                                   {"fault": "garbage"}, {"fault": "html"}, {"status": 429}])
def test_synerise_failure_returns_none(fake_synerise, fault, caplog):
    add_client(fake_synerise)
    fake_synerise.inject(times=5, **fault)
    assert authenticate(None, email="ann@example.com", password=PASSWORD) is None
    assert not User.objects.exists()
    messages = [r.getMessage() for r in caplog.records if r.name == "django_synerise.backends"]
    assert messages and PASSWORD not in " ".join(messages)


def test_synerise_unreachable_returns_none(fake_synerise):
    add_client(fake_synerise)
    fake_synerise.stop()
    assert authenticate(None, email="ann@example.com", password=PASSWORD) is None


def test_inactive_user_is_refused(fake_synerise):
    client = add_client(fake_synerise)
    make_account(make_user("off", is_active=False), client_id=client.client_id)
    assert authenticate(None, email="ann@example.com", password=PASSWORD) is None
    assert not ClientToken.objects.exists()


def test_username_maps_to_email_or_custom_id(fake_synerise):
    by_email = add_client(fake_synerise, "ann@example.com")
    by_custom = fake_synerise.add_client(custom_id="ann-custom", password=PASSWORD)
    user = authenticate(None, username="ann@example.com", password=PASSWORD)
    assert user.synerise_account.client_id == by_email.client_id
    user = authenticate(None, username="ann-custom", password=PASSWORD)
    assert user.synerise_account.client_id == by_custom.client_id
    bodies = [r.json for r in fake_synerise.requests if "login" in r.path]
    assert bodies[0]["email"] == "ann@example.com" and "customId" not in bodies[0]
    assert bodies[1]["customId"] == "ann-custom"


def test_get_user_returns_active_users_only():
    backend = SyneriseBackend()
    active, inactive = make_user(), make_user(is_active=False)
    assert backend.get_user(active.pk) == active
    assert backend.get_user(inactive.pk) is None
    assert backend.get_user(999999) is None


def test_admin_login_form(fake_synerise, client, settings):
    # Staff credentials stay local by default (tests/test_security_local_credentials.py);
    # a site may opt in to staff signing in with their Synerise password.
    settings.SYNERISE = {**settings.SYNERISE, "UPSTREAM_PASSWORDS": "all"}
    synerise_client = add_client(fake_synerise, "staff@example.com")
    staff = make_user("staff", email="staff@example.com", is_staff=True, is_superuser=True)
    make_account(staff, client_id=synerise_client.client_id)

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "staff@example.com", "password": PASSWORD, "next": "/admin/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert fake_synerise.count("login") == 1


def test_admin_login_form_wrong_password(fake_synerise, client):
    synerise_client = add_client(fake_synerise, "staff@example.com")
    staff = make_user("staff", email="staff@example.com", is_staff=True)
    make_account(staff, client_id=synerise_client.client_id)
    response = client.post("/admin/login/", {"username": "staff@example.com",
                                             "password": "nope"})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
