"""The uuid every SYNERISE login sends, and the tracker cookie reset after a session login.

Over real HTTP against FakeSynerise with ``require_uuid`` on (Synerise's reference says the
uuid is required for SYNERISE logins): the order is the app's uuid, the ``_snrs_uuid`` cookie
when it holds a UUID, the uuid stored on the account, else the uuid5 of the e-mail.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import authenticate
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from django_synerise import services
from django_synerise.exceptions import BadRequest
from django_synerise.models import SyneriseAccount
from django_synerise.profile_uuid import (
    RESET_COOKIE,
    TRACKER_COOKIE,
    UUID_NAMESPACE,
    choose_uuid,
    email_uuid,
    parse_uuid,
)
from tests.fixtures_services import PASSWORD, add_client, synerise_settings

pytestmark = pytest.mark.django_db

LOGIN_URL = "/synerise/auth/login/"
COOKIE_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
APP_UUID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.fixture
def fake(fake_synerise):
    fake_synerise.require_uuid = True
    return fake_synerise


def sent_uuids(fake) -> list[str | None]:
    return [r.json.get("uuid") for r in fake.requests if "/auth/login/" in r.path]


def api_login(client, email="ann@example.com", **extra):
    return client.post(LOGIN_URL, {"email": email, "password": PASSWORD, **extra}, format="json")


# --------------------------------------------------------------------------- helpers


def test_email_uuid_is_uuid5_of_the_stripped_lower_cased_email():
    expected = str(uuid.uuid5(uuid.UUID("ea1c3a9d-64a6-45d0-a70c-d2a055f350d3"), "ann@example.com"))
    assert uuid.UUID("ea1c3a9d-64a6-45d0-a70c-d2a055f350d3") == UUID_NAMESPACE
    assert email_uuid("  Ann@Example.COM ") == expected
    assert uuid.UUID(expected).version == 5


@pytest.mark.parametrize(
    "value",
    [None, "", "not-a-uuid", COOKIE_UUID + "x", "{" + COOKIE_UUID + "}", " " + COOKIE_UUID,
     "urn:uuid:" + COOKIE_UUID, "0f8fad5bd9cb-469f-a165-70867728950e0", 12345,
     "0f8fad5b-d9cb-469f-a165-70867728950" + "\x00"],
)
def test_parse_uuid_refuses_anything_but_a_uuid(value):
    assert parse_uuid(value) is None


def test_parse_uuid_canonicalises():
    assert parse_uuid(COOKIE_UUID.upper()) == COOKIE_UUID
    assert parse_uuid(COOKIE_UUID.replace("-", "")) == COOKIE_UUID


def test_choose_uuid_order_and_sources():
    request = RequestFactory().get("/")
    request.COOKIES[TRACKER_COOKIE] = COOKIE_UUID
    stored = str(uuid.uuid4())
    assert choose_uuid(requested=APP_UUID, request=request, stored=stored, email="a@b.c").source \
        == "app"
    assert choose_uuid(request=request, stored=stored, email="a@b.c").value == COOKIE_UUID
    assert choose_uuid(stored=stored, email="a@b.c").source == "stored"
    assert choose_uuid(email="a@b.c").value == email_uuid("a@b.c")
    assert choose_uuid() is None


# ------------------------------------------------------------------- the order, case by case


def test_api_sends_the_uuid_the_app_sends(fake):
    add_client(fake)
    client = APIClient()
    client.cookies[TRACKER_COOKIE] = COOKIE_UUID
    response = api_login(client, uuid=APP_UUID.upper())
    assert response.status_code == 200, response.content
    assert sent_uuids(fake) == [APP_UUID]
    assert fake.clients[0].login_uuids == [APP_UUID]


def test_api_sends_the_tracker_cookie_when_it_holds_a_uuid(fake):
    add_client(fake)
    client = APIClient()
    client.cookies[TRACKER_COOKIE] = COOKIE_UUID
    assert api_login(client).status_code == 200
    assert sent_uuids(fake) == [COOKIE_UUID]


def test_backend_sends_the_tracker_cookie_of_the_request(fake):
    add_client(fake)
    request = RequestFactory().post("/login/")
    request.COOKIES[TRACKER_COOKIE] = COOKIE_UUID
    user = authenticate(request, email="ann@example.com", password=PASSWORD)
    assert user is not None
    assert sent_uuids(fake) == [COOKIE_UUID]


@pytest.mark.parametrize("cookie", ["not-a-uuid", "<script>", "' OR 1=1 --", "x" * 4000, ""])
def test_an_invalid_cookie_is_ignored_for_the_email_uuid(fake, cookie):
    add_client(fake)
    client = APIClient()
    client.cookies[TRACKER_COOKIE] = cookie
    assert api_login(client).status_code == 200
    assert sent_uuids(fake) == [email_uuid("ann@example.com")]


def test_an_invalid_cookie_falls_back_to_the_stored_uuid(fake):
    fake_client = add_client(fake)
    assert api_login(APIClient()).status_code == 200
    stored = SyneriseAccount.objects.get().uuid
    assert stored == fake_client.uuid  # what Synerise knows (the token's uuid claim)
    fake.clear_requests()
    client = APIClient()
    client.cookies[TRACKER_COOKIE] = "garbage"
    assert api_login(client).status_code == 200
    assert sent_uuids(fake) == [stored]


def test_stored_uuid_is_sent_without_cookie(fake):
    fake_client = add_client(fake)
    request = RequestFactory().post("/login/")
    assert authenticate(request, email="ann@example.com", password=PASSWORD) is not None
    fake.clear_requests()
    assert authenticate(None, email="ANN@example.com", password=PASSWORD) is not None
    assert sent_uuids(fake) == [fake_client.uuid]


def test_stored_uuid_of_a_custom_id_login(fake):
    fake_client = fake.add_client(custom_id="card-7", password=PASSWORD)
    assert authenticate(None, custom_id="card-7", password=PASSWORD) is not None
    first = sent_uuids(fake)
    fake.clear_requests()
    assert authenticate(None, custom_id="card-7", password=PASSWORD) is not None
    # No e-mail and nothing stored: the first login sends the uuid5 of the custom id.
    assert first == [str(uuid.uuid5(UUID_NAMESPACE, "card-7"))]
    assert sent_uuids(fake) == [fake_client.uuid]


def test_without_anything_the_uuid5_of_the_email_is_sent(fake):
    add_client(fake)
    result = services.login(email="ann@example.com", password=PASSWORD)
    assert sent_uuids(fake) == [email_uuid("ann@example.com")]
    assert result.account.uuid == fake.clients[0].uuid


def test_the_account_stores_the_sent_uuid_when_the_token_has_none(fake, monkeypatch):
    add_client(fake)
    original = fake._claims

    def without_uuid(*args, **kwargs):
        claims = original(*args, **kwargs)
        claims.pop("uuid")
        return claims

    monkeypatch.setattr(fake, "_claims", without_uuid)
    result = services.login(email="ann@example.com", password=PASSWORD, uuid=APP_UUID)
    assert result.account.uuid == APP_UUID


def test_an_invalid_app_uuid_is_a_field_error_and_nothing_is_sent(fake):
    add_client(fake)
    with pytest.raises(BadRequest) as caught:
        services.login(email="ann@example.com", password=PASSWORD, uuid="u-1")
    assert caught.value.field_errors[0].field == "uuid"
    assert fake.count() == 0
    assert authenticate(None, email="ann@example.com", password=PASSWORD, uuid="u-1") is None
    assert fake.count() == 0


def test_provider_logins_send_the_cookie_uuid_when_known(fake):
    token = fake.provider_token("GOOGLE", subject="g-1", email="g@example.com")
    request = RequestFactory().post("/login/")
    request.COOKIES[TRACKER_COOKIE] = COOKIE_UUID
    assert authenticate(request, identity_provider="GOOGLE", identity_provider_token=token)
    token = fake.provider_token("APPLE", subject="a-1", email="a@example.com")
    assert authenticate(None, identity_provider="APPLE", identity_provider_token=token)
    assert sent_uuids(fake) == [COOKIE_UUID, None]
    # The fake registers a new client with the uuid the login sent.
    assert fake.client_for("GOOGLE", "g-1").uuid == COOKIE_UUID


# --------------------------------------------------------------------------- cookie reset


def test_api_session_login_resets_the_tracker_cookies(fake):
    fake_client = add_client(fake)
    client = APIClient()
    client.cookies[TRACKER_COOKIE] = COOKIE_UUID
    response = api_login(client)
    assert response.status_code == 200
    known = SyneriseAccount.objects.get().uuid
    assert known == fake_client.uuid != COOKIE_UUID
    for name in (TRACKER_COOKIE, RESET_COOKIE):
        morsel = response.cookies[name]
        assert morsel.value == known
        assert morsel["path"] == "/"
        assert not morsel["httponly"]
        assert morsel["samesite"] == "Lax"
    assert int(response.cookies[TRACKER_COOKIE]["max-age"]) > 365 * 24 * 3600


def test_api_login_without_session_leaves_the_cookie_alone(fake, settings):
    synerise_settings(settings, LOGIN_STARTS_SESSION=False)
    add_client(fake)
    response = api_login(APIClient())
    assert response.status_code == 200
    assert TRACKER_COOKIE not in response.cookies


def test_cookie_reset_can_be_turned_off(fake, settings):
    synerise_settings(settings, TRACKER_UUID_COOKIE=False)
    add_client(fake)
    assert TRACKER_COOKIE not in api_login(APIClient()).cookies
    response = Client().post(
        "/accounts/login/", {"username": "ann@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert TRACKER_COOKIE not in response.cookies


def test_django_login_view_resets_the_tracker_cookies(fake):
    fake_client = add_client(fake)
    browser = Client()
    browser.cookies[TRACKER_COOKIE] = COOKIE_UUID
    response = browser.post(
        "/accounts/login/", {"username": "ann@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert sent_uuids(fake) == [COOKIE_UUID]
    assert response.cookies[TRACKER_COOKIE].value == fake_client.uuid
    assert response.cookies[RESET_COOKIE].value == fake_client.uuid


def test_a_failed_login_sets_no_tracker_cookie(fake):
    add_client(fake)
    response = Client().post("/accounts/login/", {"username": "ann@example.com",
                                                  "password": "wrong"})
    assert response.status_code == 200
    assert TRACKER_COOKIE not in response.cookies


def test_authenticate_without_session_login_sets_no_cookie(fake):
    """The middleware resets the cookie only when the request ended in a session login."""
    from django.http import HttpResponse

    from django_synerise.middleware import SyneriseTrackerMiddleware

    add_client(fake)

    def view(request):
        authenticate(request, email="ann@example.com", password=PASSWORD)
        return HttpResponse("ok")

    request = RequestFactory().post("/")
    request.session = {}
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    response = SyneriseTrackerMiddleware(view)(request)
    assert fake.count("login") == 1
    assert TRACKER_COOKIE not in response.cookies


def test_provider_session_login_resets_the_tracker_cookie_too(fake):
    token = fake.provider_token("FACEBOOK", subject="fb-1", email="f@example.com")
    client = APIClient()
    client.cookies[TRACKER_COOKIE] = COOKIE_UUID
    response = client.post("/synerise/auth/login/facebook/",
                           {"identity_provider_token": token}, format="json")
    assert response.status_code == 200, response.content
    assert sent_uuids(fake) == [COOKIE_UUID]
    assert response.cookies[TRACKER_COOKIE].value == fake.client_for("FACEBOOK", "fb-1").uuid
