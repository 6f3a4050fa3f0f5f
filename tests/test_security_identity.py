"""Security of the identity provider: minted tokens are never logged or shown, forged or
foreign identity tokens get nothing, and the JWKS publishes public parameters only."""

from __future__ import annotations

import logging
import time

import jwt
import pytest
import requests
from django.contrib.auth import get_user_model

from django_synerise import services
from django_synerise.adapter import get_adapter
from django_synerise.exceptions import CredentialsRejected
from django_synerise.signing import load_key

from .fixtures_identity import AUDIENCE, configure, make_site_user, trust

pytest_plugins = ["tests.fixtures_api"]
pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/sauth/v3/auth/login/client"


def _minted(fake) -> list[str]:
    """Every identity token the site sent to Synerise."""
    return [r.json["identityProviderToken"] for r in fake.requests
            if r.path == LOGIN and isinstance(r.json, dict)]


def test_minted_tokens_never_reach_logs_repr_or_admin(settings, fake_synerise, api_live_server,
                                                     rsa_pem, caplog, client):
    configure(settings, api_live_server, [rsa_pem])
    trust(fake_synerise, api_live_server, "server")
    caplog.set_level(logging.DEBUG)
    users = [make_site_user(f"s{i}") for i in range(3)]
    result = services.connect(users[0])
    report = services.connect_users(user_ids=[u.pk for u in users[1:]])
    fake_synerise.inject(503, times=1, path=LOGIN)
    services.connect_users(user_ids=[users[1].pk])  # a failure is logged too
    refused = requests.get(f"{api_live_server}/synerise/oauth/userinfo/", timeout=10,
                           headers={"Authorization": "Bearer " + _minted(fake_synerise)[0] + "x"})
    assert refused.status_code == 401

    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    pages = "".join(
        client.get(url).content.decode()
        for url in ("/admin/auth/user/", f"/admin/auth/user/{users[0].pk}/change/",
                    "/admin/django_synerise/syneriseaccount/",
                    "/admin/django_synerise/clienttoken/")
    )
    minted = _minted(fake_synerise)
    assert len(minted) >= 4
    shown = caplog.text + repr(result) + str(result) + str(report) + repr(report) + pages
    for token in minted:
        for fragment in token.split("."):
            assert fragment not in shown
    assert result.token not in shown


def test_userinfo_refuses_tokens_of_another_audience_or_issuer(settings, api_live_server,
                                                              rsa_pem):
    """A token this site's key signed for another audience (or that another issuer claims)
    gets nothing; neither does an expired one or one signed by a key not configured."""
    configure(settings, api_live_server, [rsa_pem])
    user = make_site_user()
    key = load_key(rsa_pem)
    now = int(time.time())
    base = {"iss": api_live_server, "aud": AUDIENCE, "sub": services.subject_for(user),
            "iat": now, "exp": now + 60}
    url = f"{api_live_server}/synerise/oauth/userinfo/"

    def answer(claims):
        token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
        return requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    assert answer(base).status_code == 200
    for claims in ({**base, "aud": "other"}, {**base, "iss": "https://other.example"},
                   {**base, "exp": now - 10, "iat": now - 100}):
        response = answer(claims)
        assert response.status_code == 401
        assert "email" not in response.text and "dora" not in response.text


def test_synerise_refuses_an_identity_token_signed_by_a_key_the_site_dropped(
        settings, fake_synerise, api_live_server, rsa_pem, rsa_pem_2):
    configure(settings, api_live_server, [rsa_pem_2, rsa_pem])
    trust(fake_synerise, api_live_server, "jwt")
    user = make_site_user()
    configure(settings, api_live_server, [rsa_pem])
    old = services.mint_identity_token(user)  # signed by the key about to be dropped
    configure(settings, api_live_server, [rsa_pem_2])
    with pytest.raises(CredentialsRejected):
        get_adapter().get_client().login(identity_provider="OAUTH", identity_provider_token=old)
