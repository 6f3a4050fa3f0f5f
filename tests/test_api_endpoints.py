"""Success paths of the HTTP API, against FakeSynerise over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from django_synerise.models import ClientToken, SyneriseAccount, TokenStatus

from .api_helpers import (
    LOGIN_URL,
    LOGOUT_URL,
    PASSWORD,
    REFRESH_URL,
    TOKEN_URL,
    max_statements,
    provider_token,
    provider_url,
    round_trips,
    sign_in,
    upstream_calls,
)

pytest_plugins = ["tests.fixtures_api"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_clean_state")]


def _age_token(user_id: str, seconds: int = 120) -> None:
    """Pretend the stored token was obtained ``seconds`` ago (so refresh calls upstream)."""
    past = timezone.now() - timedelta(seconds=seconds)
    ClientToken.objects.filter(account__user_id=user_id).update(issued_at=past,
                                                                 refreshed_at=past)


def test_urls_are_namespaced() -> None:
    assert reverse("synerise:login") == LOGIN_URL
    assert reverse("synerise:provider-login", kwargs={"provider": "google"}) == \
        provider_url("google")
    assert reverse("synerise:refresh") == REFRESH_URL
    assert reverse("synerise:token") == TOKEN_URL
    assert reverse("synerise:logout") == LOGOUT_URL


def test_login_returns_token_and_creates_user(fake_synerise, api) -> None:
    acct = fake_synerise.add_client(email="bob@example.com", password=PASSWORD)
    response = api.post(LOGIN_URL, {"email": "bob@example.com", "password": PASSWORD},
                        format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expires_at", "client_id", "user_id"}
    assert body["client_id"] == acct.client_id
    assert fake_synerise.token_info(body["token"])["client_id"] == acct.client_id
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=55) < expires - timezone.now() <= timedelta(hours=1)
    account = SyneriseAccount.objects.get(client_id=acct.client_id)
    assert str(account.user_id) == body["user_id"]
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    assert response["Content-Type"] == "application/json"
    sent = fake_synerise.requests[0]
    assert sent.path.endswith("/auth/login/client")
    assert sent.json["identityProvider"] == "SYNERISE"
    assert sent.json["email"] == "bob@example.com"


def test_token_body_follows_the_projects_rest_framework_settings_per_request(
        fake_synerise, api) -> None:
    """The views render every token body with one serializer instance: the project's
    ``DATETIME_FORMAT`` still applies to each response as it is at that request, and each
    body carries its own request's token and user."""
    fake_synerise.add_client(email="fmt@example.com", password=PASSWORD)
    fake_synerise.add_client(email="other@example.com", password=PASSWORD)
    first = api.post(LOGIN_URL, {"email": "fmt@example.com", "password": PASSWORD},
                     format="json").json()
    with override_settings(REST_FRAMEWORK={"DATETIME_FORMAT": "%Y-%m-%d %H:%M"}):
        other = APIClient().post(LOGIN_URL, {"email": "other@example.com",
                                             "password": PASSWORD}, format="json").json()
    expires = datetime.strptime(other["expires_at"], "%Y-%m-%d %H:%M")
    assert timedelta(minutes=55) < expires.replace(tzinfo=timezone.get_current_timezone()) \
        - timezone.now() <= timedelta(hours=1)
    again = api.post(LOGIN_URL, {"email": "fmt@example.com", "password": PASSWORD},
                     format="json").json()
    datetime.fromisoformat(again["expires_at"].replace("Z", "+00:00"))
    assert again["user_id"] == first["user_id"] != other["user_id"]
    assert fake_synerise.token_info(other["token"])["client_id"] == other["client_id"] \
        != first["client_id"]


def test_login_with_custom_id_uuid_and_device(fake_synerise, api) -> None:
    acct = fake_synerise.add_client(custom_id="cust-77", password=PASSWORD)
    uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    response = api.post(LOGIN_URL, {"custom_id": "cust-77", "password": PASSWORD,
                                    "uuid": uuid.upper(), "device_id": "ios-1"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["client_id"] == acct.client_id
    sent = fake_synerise.requests[0].json
    assert sent["customId"] == "cust-77"
    assert sent["uuid"] == uuid
    assert sent["deviceId"] == "ios-1"
    assert "email" not in sent or sent["email"] is None


def test_login_normalises_email_whitespace_and_domain_case(fake_synerise, api) -> None:
    fake_synerise.add_client(email="carol@example.com", password=PASSWORD)
    response = api.post(LOGIN_URL, {"email": "  carol@EXAMPLE.com ", "password": PASSWORD},
                        format="json")
    assert response.status_code == 200
    assert fake_synerise.requests[0].json["email"] == "carol@example.com"


def test_login_second_time_links_same_user(fake_synerise, api) -> None:
    first = sign_in(fake_synerise, "dave@example.com")
    second = sign_in(fake_synerise, "dave@example.com")
    assert first.user_id == second.user_id
    assert get_user_model().objects.count() == 1


def test_login_starts_session_by_default(fake_synerise, api) -> None:
    result = sign_in(fake_synerise, "erin@example.com", client=api)
    assert settings.SESSION_COOKIE_NAME in api.cookies
    # The session authenticates the other endpoints (APIClient skips CSRF unless asked).
    response = api.get(TOKEN_URL)
    assert response.status_code == 200
    assert response.json()["token"] == result.token
    assert api.session[SESSION_KEY] == result.user_id
    assert api.session["_auth_user_backend"] == "django_synerise.backends.SyneriseBackend"


def test_login_without_session_sets_no_cookie(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "LOGIN_STARTS_SESSION": False}
    fake_synerise.add_client(email="frank@example.com", password=PASSWORD)
    response = api.post(LOGIN_URL, {"email": "frank@example.com", "password": PASSWORD},
                        format="json")
    assert response.status_code == 200
    assert settings.SESSION_COOKIE_NAME not in response.cookies
    assert api.get(TOKEN_URL).status_code == 401


@pytest.mark.parametrize("provider,enum", [
    ("google", "GOOGLE"), ("apple", "APPLE"), ("facebook", "FACEBOOK"), ("oauth", "OAUTH"),
])
def test_provider_login_each_provider(fake_synerise, api, provider, enum) -> None:
    token = provider_token(fake_synerise, enum, subject=f"{provider}-sub-1",
                           email=f"{provider}@example.com")
    response = api.post(provider_url(provider), {
        "identity_provider_token": token,
        "uuid": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "device_id": "android-1",
        "agreements": {"email": True, "sms": False},
        "attributes": {"favourite_colour": "teal", "points": 3},
    }, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    created = fake_synerise.client_for(enum, f"{provider}-sub-1")
    assert created is not None and body["client_id"] == created.client_id
    account = SyneriseAccount.objects.get(client_id=created.client_id)
    assert account.identity_provider == enum
    assert response["Cache-Control"] == "no-store"
    sent = fake_synerise.requests[0].json
    assert sent["identityProvider"] == enum
    assert sent["identityProviderToken"] == token
    assert sent["agreements"] == {"email": True, "sms": False}
    assert sent["attributes"] == {"favourite_colour": "teal", "points": 3}


def test_refresh_with_bearer_returns_new_token(fake_synerise, signed_in) -> None:
    _age_token(signed_in.user_id)
    client = signed_in.bearer()
    response = client.post(REFRESH_URL)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token"] != signed_in.token
    assert body["client_id"] == signed_in.client_id
    assert body["user_id"] == signed_in.user_id
    assert fake_synerise.count(path_contains="refresh") == 1
    assert response["Cache-Control"] == "no-store" and response["Pragma"] == "no-cache"
    stored = ClientToken.objects.get(account__user_id=signed_in.user_id)
    assert stored.get_token() == body["token"]


def test_refresh_right_after_login_costs_no_upstream_call(fake_synerise, signed_in) -> None:
    response = signed_in.bearer().post(REFRESH_URL)
    assert response.status_code == 200
    assert response.json()["token"] == signed_in.token
    assert fake_synerise.count(path_contains="refresh") == 0


def test_token_returns_stored_token(fake_synerise, signed_in) -> None:
    response = signed_in.bearer().get(TOKEN_URL)
    assert response.status_code == 200
    body = response.json()
    assert body == {**signed_in.body}
    assert response["Cache-Control"] == "no-store"
    assert upstream_calls(fake_synerise) == []


def test_token_refreshes_inside_margin(fake_synerise, signed_in) -> None:
    soon = timezone.now() + timedelta(seconds=300)
    ClientToken.objects.filter(account__user_id=signed_in.user_id).update(expires_at=soon)
    response = signed_in.bearer().get(TOKEN_URL)
    assert response.status_code == 200
    assert response.json()["token"] != signed_in.token
    assert fake_synerise.count(path_contains="refresh") == 1


def test_head_token_is_allowed(signed_in) -> None:
    response = signed_in.bearer().head(TOKEN_URL)
    assert response.status_code == 200


def test_logout_revokes_and_ends_session(fake_synerise, api) -> None:
    result = sign_in(fake_synerise, "gina@example.com", client=api)
    response = api.post(LOGOUT_URL)
    assert response.status_code == 204
    assert response.content == b""
    stored = ClientToken.objects.get(account__user_id=result.user_id)
    assert stored.status == TokenStatus.REVOKED
    assert SESSION_KEY not in api.session
    assert api.get(TOKEN_URL).status_code == 401


def test_logout_with_bearer_then_bearer_is_refused(fake_synerise, signed_in) -> None:
    client = signed_in.bearer()
    assert client.post(LOGOUT_URL).status_code == 204
    response = client.get(TOKEN_URL)
    assert response.status_code == 401
    assert upstream_calls(fake_synerise) == []


def test_bearer_request_moves_last_used_at_at_most_once_a_minute(signed_in) -> None:
    row = ClientToken.objects.get(account__user_id=signed_in.user_id)
    stale = timezone.now() - timedelta(minutes=10)
    ClientToken.objects.filter(pk=row.pk).update(last_used_at=stale)
    client = signed_in.bearer()
    assert client.post(LOGOUT_URL.replace("logout", "refresh")).status_code == 200
    first = ClientToken.objects.get(pk=row.pk).last_used_at
    assert first > stale
    client.get(TOKEN_URL)
    assert ClientToken.objects.get(pk=row.pk).last_used_at - first < timedelta(seconds=61)


# --------------------------------------------------------------------------- query counts


@pytest.mark.django_db(transaction=True)
def test_query_budget_login(fake_synerise) -> None:
    sign_in(fake_synerise, "hugo@example.com")  # first login creates the user
    client = APIClient()
    # One statement reads the uuid stored on the account before the Synerise call; the
    # account and token writes are one statement on PostgreSQL, two elsewhere; Django's
    # session (new key, insert, save) and last_login take four.
    with max_statements(7 if connection.vendor == "postgresql" else 8):
        response = client.post(LOGIN_URL, {"email": "hugo@example.com", "password": PASSWORD},
                               format="json")
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_query_budget_refresh(fake_synerise) -> None:
    result = sign_in(fake_synerise, "ivy@example.com")
    _age_token(result.user_id)
    client = result.bearer()
    with max_statements(5):
        response = client.post(REFRESH_URL)
    assert response.status_code == 200
    assert fake_synerise.count(path_contains="refresh") == 1


@pytest.mark.django_db(transaction=True)
def test_query_budget_token(fake_synerise) -> None:
    result = sign_in(fake_synerise, "jack@example.com")
    client = result.bearer()
    client.get(TOKEN_URL)  # activity recorded; the next request is the steady state
    with max_statements(1):  # the token row Bearer authentication read serves the view too
        response = client.get(TOKEN_URL)
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_round_trips_login_postgres(require_postgres, fake_synerise, settings) -> None:
    """A returning user's login: the account read (with its user), then one statement that
    updates the account and the token row together; with a session, Django's own session
    read, ``last_login`` update and session save (BEGIN, UPDATE, COMMIT)."""
    body = {"email": "hugo@example.com", "password": PASSWORD}
    browser = APIClient()
    first = sign_in(fake_synerise, "hugo@example.com", client=browser)
    # The session's first request records activity; the next ones are the steady state.
    assert browser.post(LOGIN_URL, body, format="json").status_code == 200
    with round_trips(7) as queries:
        response = browser.post(LOGIN_URL, body, format="json")
    assert response.status_code == 200
    assert sum(sql.startswith("WITH ") for sql in queries) == 1
    row = ClientToken.objects.get(account__user_id=first.user_id)
    assert row.version == 3 and row.status == TokenStatus.ACTIVE
    assert row.previous_fingerprint and row.fingerprint != row.previous_fingerprint
    assert row.get_token() == response.json()["token"]

    settings.SYNERISE = {**settings.SYNERISE, "LOGIN_STARTS_SESSION": False}
    # The uuid stored on the account of this e-mail, the account, the write.
    with round_trips(3):
        response = APIClient().post(LOGIN_URL, body, format="json")
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.version == 4 and row.get_token() == response.json()["token"]


@pytest.mark.django_db(transaction=True)
def test_round_trips_refresh_postgres(require_postgres, fake_synerise) -> None:
    """Authentication's read (account, user and token row in one query) serves the refresh;
    then the claim (one statement: lock, lease, read back), the compare-and-swap write of the
    new token and the hourly outcome count."""
    result = sign_in(fake_synerise, "ivy@example.com")
    _age_token(result.user_id)
    client = result.bearer()
    with round_trips(4) as queries:
        response = client.post(REFRESH_URL)
    assert response.status_code == 200
    assert response.json()["token"] != result.token
    token_reads = [sql for sql in queries if 'FROM "django_synerise_clienttoken"' in sql]
    assert len(token_reads) == 1 and "FOR UPDATE" in token_reads[0]  # the claim's only


@pytest.mark.django_db(transaction=True)
def test_round_trips_token_postgres(require_postgres, fake_synerise) -> None:
    result = sign_in(fake_synerise, "jack@example.com")
    client = result.bearer()
    client.get(TOKEN_URL)
    with round_trips(1):
        response = client.get(TOKEN_URL)
    assert response.status_code == 200
    assert response.json()["token"] == result.token


def test_provider_login_links_by_synerise_client_id_not_token_claims(fake_synerise, api) -> None:
    """R-SOC-5 / S13: a provider token claiming a local user's e-mail gets its own user."""
    victim = sign_in(fake_synerise, "victim@example.com")
    token = provider_token(fake_synerise, "GOOGLE", subject="attacker-sub",
                           email="victim@example.com")
    response = api.post(provider_url("google"), {"identity_provider_token": token},
                        format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] != victim.user_id
    assert body["client_id"] == fake_synerise.client_for("GOOGLE", "attacker-sub").client_id
    assert body["client_id"] != victim.client_id
    assert SyneriseAccount.objects.get(client_id=victim.client_id).user_id == int(victim.user_id)


def test_bearer_logout_keeps_another_users_session(fake_synerise, api) -> None:
    session_user = sign_in(fake_synerise, "session@example.com", client=api)
    bearer_user = sign_in(fake_synerise, "bearer@example.com", client=APIClient())
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_user.token}")
    assert api.post(LOGOUT_URL).status_code == 204
    assert api.session[SESSION_KEY] == session_user.user_id
    stored = ClientToken.objects.get(account__user_id=session_user.user_id)
    assert stored.status == TokenStatus.ACTIVE


def test_session_user_without_synerise_account(fake_synerise, api) -> None:
    """A user signed in some other way (admin, ModelBackend) has no Synerise token."""
    user = get_user_model().objects.create_user("staff", password="pw-local")
    api.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    response = api.get(TOKEN_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "login_required"
    assert api.post(REFRESH_URL).status_code == 401
    assert api.post(LOGOUT_URL).status_code == 204
    assert upstream_calls(fake_synerise) == []
