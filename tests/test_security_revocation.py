"""Logout and revocation are final; replaced tokens stop working; sessions end with logout.

Observation 1 of the token-lifecycle issue: after a logout, a new sign-in brought the
logged-out token back to life (it authenticated again and handed out the new token), and a
token replaced long ago by a refresh was accepted too.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from django_synerise import services
from django_synerise.authentication import SyneriseTokenAuthentication
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.testing import FakeSynerise

from .api_helpers import (
    GENERIC_401,
    LOGOUT_URL,
    REFRESH_URL,
    TOKEN_URL,
    SignedIn,
    sign_in,
)

pytest_plugins = ["tests.fixtures_api"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_clean_state")]


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def assert_refused(token: str) -> None:
    """``token`` authenticates nowhere: token, refresh and logout all answer the generic 401."""
    for method, url in (("get", TOKEN_URL), ("post", REFRESH_URL), ("post", LOGOUT_URL)):
        response = getattr(bearer(token), method)(url)
        assert response.status_code == 401, (url, response.status_code)
        assert response.json() == GENERIC_401


def current_token(token: str) -> str:
    """``GET auth/token/`` with Bearer ``token``; returns the token handed out."""
    response = bearer(token).get(TOKEN_URL)
    assert response.status_code == 200, response.content
    return response.json()["token"]


def age_stored_token(user_id: str, seconds: int = 120) -> None:
    """Date the stored token back, so ``auth/refresh/`` really refreshes it (a token stored
    in the last minute is returned as is)."""
    ClientToken.objects.filter(account__user_id=user_id).update(
        issued_at=timezone.now() - timedelta(seconds=seconds), refreshed_at=None
    )


def refresh_through_api(signed_in: SignedIn, token: str) -> str:
    age_stored_token(signed_in.user_id)
    response = bearer(token).post(REFRESH_URL)
    assert response.status_code == 200, response.content
    new = response.json()["token"]
    assert new != token
    return new


def let_grace_pass(user_id: str) -> None:
    """Move the end of the replaced token's grace period into the past (as if
    ``SUPERSEDED_TOKEN_GRACE`` seconds had gone by)."""
    ClientToken.objects.filter(account__user_id=user_id).update(
        previous_valid_until=timezone.now() - timedelta(seconds=1)
    )


# --------------------------------------------------------------------------- observation 1


def test_observation_1_logged_out_token_stays_dead_after_sign_in_again(fake_synerise) -> None:
    first = sign_in(fake_synerise)
    ta = first.token
    assert bearer(ta).post(LOGOUT_URL).status_code == 204
    assert_refused(ta)

    tb = sign_in(fake_synerise).token
    assert tb != ta
    # Ta neither authenticates nor hands out Tb, and cannot log the new sign-in out.
    response = bearer(ta).get(TOKEN_URL)
    assert response.status_code == 401
    assert tb.encode() not in response.content
    assert bearer(ta).post(LOGOUT_URL).status_code == 401
    assert ClientToken.objects.get(account__user_id=first.user_id).status == TokenStatus.ACTIVE
    assert current_token(tb) == tb


def test_observation_1_token_replaced_long_ago_by_refresh_is_refused(fake_synerise) -> None:
    signed_in = sign_in(fake_synerise)
    ta = signed_in.token
    tb = refresh_through_api(signed_in, ta)
    # Right after the refresh, a request already under way with Ta still works...
    assert current_token(ta) == tb
    # ...but not once SUPERSEDED_TOKEN_GRACE has passed.
    let_grace_pass(signed_in.user_id)
    assert_refused(ta)
    assert current_token(tb) == tb


def test_token_two_replacements_back_is_refused_at_once(fake_synerise) -> None:
    signed_in = sign_in(fake_synerise)
    ta = signed_in.token
    tb = refresh_through_api(signed_in, ta)
    tc = refresh_through_api(signed_in, tb)
    assert current_token(tb) == tc  # the immediate predecessor, within the grace period
    assert_refused(ta)


def test_grace_period_setting(fake_synerise, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "SUPERSEDED_TOKEN_GRACE": 0}
    signed_in = sign_in(fake_synerise)
    ta = signed_in.token
    tb = refresh_through_api(signed_in, ta)
    assert_refused(ta)
    assert current_token(tb) == tb


def test_grace_never_outlives_the_replaced_token(fake_synerise, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "SUPERSEDED_TOKEN_GRACE": 10 * 24 * 3600}
    signed_in = sign_in(fake_synerise)
    old_expiry = ClientToken.objects.get(account__user_id=signed_in.user_id).expires_at
    refresh_through_api(signed_in, signed_in.token)
    row = ClientToken.objects.get(account__user_id=signed_in.user_id)
    assert row.previous_valid_until == old_expiry


def test_default_grace_covers_a_background_refresh(fake_synerise) -> None:
    """The background refresh replaces the stored token without the app knowing: the app's
    token keeps working until it expires, long enough to fetch its successor."""
    signed_in = sign_in(fake_synerise)
    ta = signed_in.token
    row = ClientToken.objects.get(account__user_id=signed_in.user_id)
    # Due for the background refresh: REFRESH_MARGIN (900 s) + at most REFRESH_JITTER
    # (300 s) before expiry.
    ClientToken.objects.filter(pk=row.pk).update(
        expires_at=timezone.now() + timedelta(seconds=1150),
        refresh_at=timezone.now() - timedelta(seconds=1),
    )
    report = services.refresh_now([row.pk])
    assert report.refreshed == 1
    row.refresh_from_db()
    assert row.previous_valid_until is not None
    assert row.previous_valid_until >= timezone.now() + timedelta(seconds=1100)
    tb = current_token(ta)
    assert tb != ta
    let_grace_pass(signed_in.user_id)
    assert_refused(ta)
    assert current_token(tb) == tb


def test_sign_in_on_a_second_device_keeps_the_first_one_until_the_grace_ends(
    fake_synerise,
) -> None:
    phone = sign_in(fake_synerise)
    laptop = sign_in(fake_synerise)
    assert current_token(phone.token) == laptop.token  # the phone picks up the new token
    let_grace_pass(phone.user_id)
    assert_refused(phone.token)
    assert current_token(laptop.token) == laptop.token


def test_a_token_synerise_rejected_gets_no_grace_after_signing_in_again(fake_synerise) -> None:
    """A token the refresh found rejected (row in needs_login) is not a live predecessor."""
    first = sign_in(fake_synerise)
    services.mark_needs_login(ClientToken.objects.get(account__user_id=first.user_id),
                              reason="rejected")
    assert_refused(first.token)
    second = sign_in(fake_synerise)
    assert_refused(first.token)
    assert current_token(second.token) == second.token


def test_a_token_this_site_never_stored_is_refused(fake_synerise) -> None:
    """A valid Synerise token of the client that the site did not hand out (issued at
    Synerise directly) is not the stored token: refused."""
    signed_in = sign_in(fake_synerise)
    stray = fake_synerise.issue_token(signed_in.client_id)
    assert stray != signed_in.token
    assert_refused(stray)
    assert current_token(signed_in.token) == signed_in.token


# --------------------------------------------------------------------------- every revocation


@pytest.mark.parametrize("how", ["logout", "admin_revoke", "deactivate"])
def test_every_revocation_is_final_even_after_signing_in_again(fake_synerise, how) -> None:
    signed_in = sign_in(fake_synerise)
    ta = signed_in.token
    user = signed_in.user
    if how == "logout":
        assert services.logout(user) is True
    elif how == "admin_revoke":
        assert services.revoke_tokens(ClientToken.objects.filter(account__user=user)) == 1
    else:
        user.is_active = False
        user.save()
        user.is_active = True
        user.save()
    assert_refused(ta)
    tb = sign_in(fake_synerise).token
    assert_refused(ta)
    assert current_token(tb) == tb


def test_revocation_also_ends_the_grace_of_a_replaced_token(fake_synerise) -> None:
    signed_in = sign_in(fake_synerise)
    ta = signed_in.token
    tb = refresh_through_api(signed_in, ta)
    assert bearer(tb).post(LOGOUT_URL).status_code == 204
    assert_refused(ta)
    assert_refused(tb)
    row = ClientToken.objects.get(account__user_id=signed_in.user_id)
    assert (row.fingerprint, row.previous_fingerprint, row.previous_valid_until) == ("", "", None)


# --------------------------------------------------------------------------- one query


def test_bearer_authentication_is_one_indexed_query(fake_synerise) -> None:
    signed_in = sign_in(fake_synerise)
    auth = SyneriseTokenAuthentication()
    auth.authenticate_credentials(signed_in.token)  # public key fetched and cached
    with CaptureQueriesContext(connection) as queries:
        user, claims = auth.authenticate_credentials(signed_in.token)
    assert str(user.pk) == signed_in.user_id
    assert len(queries.captured_queries) == 1, queries.captured_queries
    sql = queries.captured_queries[0]["sql"]
    # By the unique (indexed) client id, with the user and the token row joined.
    assert '"django_synerise_syneriseaccount"."client_id" = ' in sql
    assert "django_synerise_clienttoken" in sql
    assert "auth_user" in sql


def test_refused_superseded_token_costs_one_query_too(fake_synerise) -> None:
    signed_in = sign_in(fake_synerise)
    ta = signed_in.token
    refresh_through_api(signed_in, ta)
    let_grace_pass(signed_in.user_id)
    auth = SyneriseTokenAuthentication()
    from rest_framework.exceptions import AuthenticationFailed

    with CaptureQueriesContext(connection) as queries, pytest.raises(AuthenticationFailed):
        auth.authenticate_credentials(ta)
    assert len(queries.captured_queries) == 1


# --------------------------------------------------------------------------- sessions


def _session_users() -> list[str]:
    users = []
    for session in Session.objects.filter(expire_date__gt=timezone.now()):
        user_id = session.get_decoded().get(SESSION_KEY)
        if user_id is not None:
            users.append(str(user_id))
    return users


def test_bearer_logout_ends_every_django_session_of_the_user(fake_synerise) -> None:
    browser, tablet, other = APIClient(), APIClient(), APIClient()
    alice = sign_in(fake_synerise, client=browser)
    sign_in(fake_synerise, client=tablet)
    bob = sign_in(fake_synerise, "bob@example.com", client=other)
    assert sorted(_session_users()) == sorted([alice.user_id, alice.user_id, bob.user_id])
    assert browser.get(TOKEN_URL).status_code == 200

    phone = sign_in(fake_synerise)
    assert bearer(phone.token).post(LOGOUT_URL).status_code == 204

    assert _session_users() == [bob.user_id]
    for client in (browser, tablet):
        assert client.get(TOKEN_URL).status_code in (401, 403)
    assert other.get(TOKEN_URL).status_code == 200


def test_service_logout_ends_sessions_for_code_callers(fake_synerise) -> None:
    browser = APIClient()
    alice = sign_in(fake_synerise, client=browser)
    assert services.logout(alice.user) is True
    assert _session_users() == []
    assert browser.get(TOKEN_URL).status_code in (401, 403)
    # A user whose token is already gone still gets their sessions ended.
    again = APIClient()
    sign_in(fake_synerise, client=again)
    services.revoke_tokens(ClientToken.objects.all(), end_sessions=False)
    assert _session_users() == [alice.user_id]
    assert services.logout(alice.user) is False
    assert _session_users() == []


def test_session_engines_that_cannot_be_searched_are_left_alone(fake_synerise,
                                                               settings) -> None:
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    signed_in = sign_in(fake_synerise)
    assert services.end_sessions([signed_in.user]) is None
    assert services.logout(signed_in.user) is True
    assert_refused(signed_in.token)


def test_cached_db_sessions_are_ended_in_the_cache_too(fake_synerise, settings) -> None:
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    browser = APIClient()
    alice = sign_in(fake_synerise, client=browser)
    assert browser.get(TOKEN_URL).status_code == 200  # now cached
    assert services.end_sessions([alice.user]) == 1
    assert browser.get(TOKEN_URL).status_code in (401, 403)


# --------------------------------------------------------------------------- upgrade


def test_migration_fingerprints_tokens_stored_before_it(fake_synerise) -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module("django_synerise.migrations.0002_token_fingerprints")
    signed_in = sign_in(fake_synerise)
    ClientToken.objects.update(fingerprint="")
    assert_refused(signed_in.token)
    migration.fingerprint_live_tokens(apps, None)
    assert current_token(signed_in.token) == signed_in.token


def test_fake_is_the_only_upstream(fake_synerise: FakeSynerise) -> None:
    assert fake_synerise.url.startswith("http://127.0.0.1:")
