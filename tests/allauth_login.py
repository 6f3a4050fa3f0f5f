"""Signing in through django-allauth's own login view ends with a stored Synerise token.

Run by tests/test_allauth.py in a child pytest with ``--ds tests.settings_allauth`` (allauth
installed); the file name keeps the main suite from collecting it. CONNECT_ON_LOGIN is on
and no Celery broker can be reached, so the login records a pending connection and the next
``connect_users`` run (the beat entry) connects the user through OAUTH; FakeSynerise
validates the site's token against the live site's JWKS.
"""

from __future__ import annotations

import pytest
from django.test import Client

import tests.celery_app  # noqa: F401  (the Celery app of these settings: an unreachable broker)
from django_synerise import services
from django_synerise.models import IdentitySubject, SyneriseAccount, TokenStatus
from tests.fixtures_identity import PASSWORD, configure, make_site_user, trust

pytest_plugins = ["tests.fixtures_api"]
pytestmark = pytest.mark.django_db(transaction=True)


def test_allauth_login_ends_with_a_synerise_token(settings, fake_synerise, api_live_server,
                                                  rsa_pem):
    from django.conf import settings as django_settings

    assert "allauth.account" in django_settings.INSTALLED_APPS
    configure(settings, api_live_server, [rsa_pem], CONNECT_ON_LOGIN=True)
    trust(fake_synerise, api_live_server, "jwt")
    user = make_site_user("ada")

    browser = Client()
    page = browser.get("/allauth/login/")
    assert page.status_code == 200 and b'name="login"' in page.content
    response = browser.post("/allauth/login/", {"login": "ada", "password": PASSWORD})
    assert response.status_code == 302, response.content[:2000]
    assert browser.session["_auth_user_id"] == str(user.pk)
    # The login asked for a connection; no broker, so nothing was sent to Synerise yet.
    assert IdentitySubject.objects.get(user=user).connect_requested_at is not None
    assert fake_synerise.count("/auth/login/client") == 0

    report = services.connect_users(pending=True)  # the next beat run
    assert report.connected == [user.pk]
    row = services.get_token_for(user)
    assert row.status == TokenStatus.ACTIVE
    account = SyneriseAccount.objects.get(user=user)
    assert account.identity_provider == "OAUTH"
    assert fake_synerise.get_client(account.client_id).email == "ada@example.com"
    assert IdentitySubject.objects.get(user=user).connect_requested_at is None
