"""Django as the Synerise OAUTH identity provider, against FakeSynerise over real HTTP.

Both Synerise modes: "JWT token" (the fake fetches the site's JWKS) and "server" (the fake
calls the site's user-info endpoint). Real PostgreSQL, a live server of the test project.
"""

from __future__ import annotations

import time

import jwt
import pytest
import requests

from django_synerise import services
from django_synerise.exceptions import AccountInactive, CredentialsRejected
from django_synerise.models import IdentitySubject, SyneriseAccount, TokenStatus
from django_synerise.signing import load_key, thumbprint

from .fixtures_identity import AUDIENCE, configure, make_site_user, trust

pytest_plugins = ["tests.fixtures_api"]
pytestmark = pytest.mark.django_db(transaction=True)


def oauth_logins(fake) -> int:
    return fake.count("/auth/login/client")


def test_connect_signs_in_links_and_stores_the_token(idp_site):
    user = make_site_user()
    result = services.connect(user)

    account = SyneriseAccount.objects.get(user=user)
    assert account.identity_provider == "OAUTH"
    assert result.account.pk == account.pk and not result.created
    assert account.token.status == TokenStatus.ACTIVE
    assert account.token.get_token() == result.token
    client = idp_site.fake.get_client(account.client_id)
    subject = IdentitySubject.objects.get(user=user).subject
    assert client.subject == str(subject)
    assert (client.email, client.first_name, client.last_name) == (
        "dora@example.com", "Dora", "Explorer")
    # Server mode called the user-info endpoint; JWT mode read the JWKS.
    assert services.get_valid_token(user) == result.token


def test_second_connect_reuses_the_synerise_profile(idp_site):
    user = make_site_user()
    first = services.connect(user)
    second = services.connect(user)
    assert first.account.client_id == second.account.client_id
    assert len([c for c in idp_site.fake.clients if c.identity_provider == "OAUTH"]) == 1
    assert SyneriseAccount.objects.get(user=user).token.get_token() == second.token


def test_refresh_of_a_connected_token(idp_site, settings):
    user = make_site_user()
    services.connect(user)
    row = services.get_token_for(user)
    old = row.get_token()
    report = services.refresh_now([row.pk])
    assert report.refreshed == 1
    row.refresh_from_db()
    assert row.get_token() != old and row.status == TokenStatus.ACTIVE
    assert idp_site.fake.count("/auth/refresh/client") == 1


def test_the_subject_is_opaque_and_stable(idp_site):
    user = make_site_user("sam", email="sam@example.com")
    claims = jwt.decode(services.mint_identity_token(user), options={"verify_signature": False})
    again = jwt.decode(services.mint_identity_token(user), options={"verify_signature": False})
    assert claims["sub"] == again["sub"]
    assert claims["sub"] not in (str(user.pk), user.username, user.email)
    assert claims["jti"] != again["jti"]
    assert claims["iss"] == idp_site.url and claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == 300
    user.email = "new@example.com"
    user.save()
    later = jwt.decode(services.mint_identity_token(user), options={"verify_signature": False})
    assert later["sub"] == claims["sub"] and later["email"] == "new@example.com"


def test_inactive_users_are_not_connected(idp_site):
    user = make_site_user(is_active=False)
    with pytest.raises(AccountInactive):
        services.connect(user)
    assert oauth_logins(idp_site.fake) == 0


# ------------------------------------------------------------------ JWKS and user info


def test_jwks_publishes_public_keys_with_thumbprint_kids(settings, api_live_server, rsa_pem,
                                                        ec_pem):
    configure(settings, api_live_server, [ec_pem, rsa_pem])
    response = requests.get(f"{api_live_server}/synerise/oauth/jwks.json", timeout=10)
    assert response.status_code == 200
    assert "max-age" in response.headers["Cache-Control"]
    keys = response.json()["keys"]
    assert [k["kty"] for k in keys] == ["EC", "RSA"]
    for published, source in zip(keys, (ec_pem, rsa_pem), strict=True):
        assert published["kid"] == thumbprint(published) == load_key(source).kid
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(published)
    assert "PRIVATE" not in response.text


def test_wrong_methods_get_a_json_405(settings, api_live_server, rsa_pem):
    configure(settings, api_live_server, [rsa_pem])
    for path in ("oauth/jwks.json", "oauth/userinfo/"):
        for method in ("POST", "PUT", "DELETE"):
            response = requests.request(method, f"{api_live_server}/synerise/{path}", timeout=10,
                                        data=b"\xff" * 100)
            assert response.status_code == 405, (path, method)
            assert response.json()["code"] == "method_not_allowed"
            assert "GET" in response.headers["Allow"]


def test_jwks_and_userinfo_are_404_json_when_not_configured(api_live_server):
    for path in ("oauth/jwks.json", "oauth/userinfo/"):
        response = requests.get(f"{api_live_server}/synerise/{path}", timeout=10)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def _userinfo(url: str, token: str | None):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.get(f"{url}/synerise/oauth/userinfo/", headers=headers, timeout=10)


def test_userinfo_answers_for_a_valid_token_only(settings, api_live_server, rsa_pem, rsa_pem_2):
    configure(settings, api_live_server, [rsa_pem])
    user = make_site_user()
    token = services.mint_identity_token(user)
    ok = _userinfo(api_live_server, token)
    assert ok.status_code == 200
    assert ok.json() == {"sub": services.subject_for(user), "email": "dora@example.com",
                         "given_name": "Dora", "family_name": "Explorer"}

    now = int(time.time())
    key = load_key(rsa_pem)
    base = {"iss": api_live_server, "aud": AUDIENCE, "sub": services.subject_for(user),
            "iat": now, "exp": now + 60}

    def signed(claims, with_key=key, kid=None):
        return jwt.encode(claims, with_key.private_key, algorithm="RS256",
                          headers={"kid": kid or with_key.kid})

    other = load_key(rsa_pem_2)
    bad = {
        "missing": None,
        "garbage": "not-a-token",
        "expired": signed({**base, "iat": now - 600, "exp": now - 300}),
        "wrong_audience": signed({**base, "aud": "another-workspace"}),
        "wrong_issuer": signed({**base, "iss": "https://evil.example"}),
        "unknown_key": signed(base, other),
        "forged_kid": signed(base, other, kid=key.kid),
        "unknown_subject": signed({**base, "sub": "00000000-0000-0000-0000-000000000000"}),
        "no_exp": signed({k: v for k, v in base.items() if k != "exp"}),
        "alg_none": jwt.encode(base, None, algorithm="none", headers={"kid": key.kid}),
        "oversized": "a" * 10_000,
    }
    for name, token in bad.items():
        response = _userinfo(api_live_server, token)
        assert response.status_code == 401, name
        assert response.json()["code"] in ("invalid_token", "invalid_request"), name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name

    user.is_active = False
    user.save()
    assert _userinfo(api_live_server, token).status_code == 401


# ------------------------------------------------------------------ bad tokens at Synerise


@pytest.mark.parametrize("mode", ["jwt", "server"])
def test_synerise_refuses_tokens_the_site_would_not_vouch_for(
        mode, settings, fake_synerise, api_live_server, rsa_pem, rsa_pem_2):
    configure(settings, api_live_server, [rsa_pem])
    trust(fake_synerise, api_live_server, mode)
    user = make_site_user()
    subject = services.subject_for(user)
    now = int(time.time())
    key, other = load_key(rsa_pem), load_key(rsa_pem_2)
    base = {"iss": api_live_server, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 60}

    def signed(claims, with_key=key, kid=None):
        return jwt.encode(claims, with_key.private_key, algorithm="RS256",
                          headers={"kid": kid or with_key.kid})

    from django_synerise.adapter import get_adapter

    synerise = get_adapter().get_client()
    cases = {
        "bad_signature": signed(base, other, kid=key.kid),
        "wrong_audience": signed({**base, "aud": "another-workspace"}),
        "expired": signed({**base, "iat": now - 600, "exp": now - 300}),
        "unknown_key": signed(base, other),
    }
    for name, token in cases.items():
        with pytest.raises(CredentialsRejected) as info:
            synerise.login(identity_provider="OAUTH", identity_provider_token=token)
        assert info.value.status == 401, name
    assert not [c for c in fake_synerise.clients if c.identity_provider == "OAUTH"]
    # A good token of the same user passes: the cases above failed for their own reason.
    synerise.login(identity_provider="OAUTH", identity_provider_token=signed(base))


def test_unreachable_jwks_is_refused(settings, fake_synerise, api_live_server, rsa_pem):
    configure(settings, api_live_server, [rsa_pem])
    fake_synerise.configure_oauth("jwt", jwks_url="http://127.0.0.1:9/jwks.json",
                                  issuer=api_live_server, audience=AUDIENCE)
    user = make_site_user()
    with pytest.raises(CredentialsRejected) as info:
        services.connect(user)
    assert info.value.status == 403
    assert not SyneriseAccount.objects.filter(user=user).exists()


def test_userinfo_401_is_refused(settings, fake_synerise, api_live_server, rsa_pem):
    configure(settings, api_live_server, [rsa_pem])
    trust(fake_synerise, api_live_server, "server")
    user = make_site_user(is_active=True)
    token = services.mint_identity_token(user)
    user.is_active = False  # the site no longer vouches for the user: user info says 401
    user.save()
    from django_synerise.adapter import get_adapter

    with pytest.raises(CredentialsRejected) as info:
        get_adapter().get_client().login(identity_provider="OAUTH",
                                         identity_provider_token=token)
    assert info.value.status == 401


# ------------------------------------------------------------------ key rotation


@pytest.mark.parametrize("mode", ["jwt", "server"])
def test_key_rotation(mode, settings, fake_synerise, api_live_server, rsa_pem, ec_pem):
    """A token signed by the old key verifies while both keys are published; after the old
    key is dropped it is refused, and new tokens (signed by the new key) pass."""
    from django_synerise.adapter import get_adapter

    synerise = get_adapter().get_client()
    configure(settings, api_live_server, [rsa_pem])
    trust(fake_synerise, api_live_server, mode)
    user = make_site_user()
    old_token = services.mint_identity_token(user)
    assert jwt.get_unverified_header(old_token)["kid"] == load_key(rsa_pem).kid

    configure(settings, api_live_server, [ec_pem, rsa_pem])  # step 1: new key first
    new_token = services.mint_identity_token(user)
    assert jwt.get_unverified_header(new_token)["kid"] == load_key(ec_pem).kid
    first = synerise.login(identity_provider="OAUTH", identity_provider_token=old_token)
    second = synerise.login(identity_provider="OAUTH", identity_provider_token=new_token)
    assert first.token and second.token

    configure(settings, api_live_server, [ec_pem])  # step 2: old key dropped
    with pytest.raises(CredentialsRejected):
        synerise.login(identity_provider="OAUTH", identity_provider_token=old_token)
    services.connect(user)
    assert SyneriseAccount.objects.get(user=user).token.status == TokenStatus.ACTIVE


# ------------------------------------------------------------------ admin action


def test_admin_action_connects_the_selected_users(idp_site, client):
    from django.contrib.auth import get_user_model
    from django.contrib.messages import get_messages

    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    users = [make_site_user(f"u{i}") for i in range(3)]
    inactive = make_site_user("gone", is_active=False)
    client.force_login(admin_user)
    response = client.post("/admin/auth/user/", {
        "action": "connect_to_synerise",
        "_selected_action": [u.pk for u in [*users, inactive]],
    })
    assert response.status_code == 302
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert "3 users connected to Synerise." in texts
    assert "1 inactive user was skipped." in texts
    for user in users:
        assert services.get_token_for(user).status == TokenStatus.ACTIVE
    assert services.get_token_for(inactive) is None
    assert services.get_token_for(admin_user) is None  # not selected


def test_admin_action_leaves_users_pending_while_synerise_is_down(idp_site, client):
    from django.contrib.auth import get_user_model

    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    user = make_site_user()
    idp_site.fake.inject(503, times=None, path="/auth/login/client")
    client.force_login(admin_user)
    client.post("/admin/auth/user/", {"action": "connect_to_synerise",
                                      "_selected_action": [user.pk]})
    subject = IdentitySubject.objects.get(user=user)
    assert subject.connect_requested_at is not None and subject.connect_retry_at is not None
    assert subject.last_connect_error == "synerise_unavailable"
    idp_site.fake.reset_faults()
    IdentitySubject.objects.filter(user=user).update(connect_retry_at=None)  # backoff over
    from django_synerise import tasks

    counts = tasks.connect_users.apply(kwargs={"pending": True}).get()  # the beat entry
    assert counts == {"selected": 1, "connected": 1, "retry": 0, "failed": 0, "skipped": 0}
    assert services.get_token_for(user).status == TokenStatus.ACTIVE
    assert IdentitySubject.objects.get(user=user).connect_requested_at is None


# ------------------------------------------------------------------ the fake's control API


def test_oauth_mode_is_set_through_the_control_api(settings, fake_synerise, api_live_server,
                                                    rsa_pem):
    configure(settings, api_live_server, [rsa_pem])
    control = f"{fake_synerise.url}/__fake__/oauth"
    bad = requests.post(control, json={"mode": "jwt"}, timeout=10)  # no jwks_url
    assert bad.status_code == 400
    assert requests.post(control, json={"mode": "jwt", "extra": 1}, timeout=10).status_code == 400
    for mode, field, path in (("jwt", "jwks_url", "oauth/jwks.json"),
                              ("server", "userinfo_url", "oauth/userinfo/")):
        response = requests.post(control, timeout=10, json={
            "mode": mode, field: f"{api_live_server}/synerise/{path}",
            "issuer": api_live_server, "audience": AUDIENCE})
        assert response.status_code == 200
        assert response.json()["oauth"]["mode"] == mode
        user = make_site_user(f"ctl-{mode}")
        services.connect(user)
        assert services.get_token_for(user).status == TokenStatus.ACTIVE
    reset = requests.post(control, json={"mode": None}, timeout=10)
    assert reset.json()["oauth"]["mode"] is None
    with pytest.raises(CredentialsRejected):  # back to the registry: the site's token is unknown
        services.connect(make_site_user("ctl-none"))
