"""Error statuses of the HTTP API: the JSON contract, Retry-After, Allow, never a 500."""

from __future__ import annotations

import logging

import django
import pytest
from django.core import mail
from django.core.exceptions import RequestDataTooBig
from django.utils.log import AdminEmailHandler
from rest_framework import exceptions as drf_exceptions
from rest_framework.test import APIClient

from django_synerise import exceptions as errors
from django_synerise.adapter import DefaultSyneriseAdapter
from django_synerise.api.errors import exception_handler, flatten_field_errors
from django_synerise.breaker import get_breaker
from django_synerise.services import AccountConflict

from .api_helpers import (
    GENERIC_401,
    LOGIN_URL,
    PASSWORD,
    REFRESH_URL,
    TOKEN_URL,
    provider_token,
    provider_url,
    upstream_calls,
)

pytest_plugins = ["tests.fixtures_api"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_clean_state")]

UNAVAILABLE = {"detail": "Synerise is temporarily unavailable. Try again later.",
               "code": "synerise_unavailable"}
BAD_RESPONSE = {"detail": "Synerise sent an answer that could not be used. Try again later.",
                "code": "synerise_bad_response"}


def _login(client: APIClient, email: str = "a@example.com", password: str = PASSWORD):
    return client.post(LOGIN_URL, {"email": email, "password": password}, format="json")


# --------------------------------------------------------------------------- 400 / 401


def test_400_body_lists_field_errors(fake_synerise, api) -> None:
    response = api.post(LOGIN_URL, {"email": "nope", "password": ""}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Invalid input." and body["code"] == "invalid"
    by_field = {error["field"]: error for error in body["errors"]}
    assert by_field["email"]["code"] == "invalid"
    assert by_field["password"]["code"] == "blank"
    assert all(set(error) == {"field", "code", "message"} for error in body["errors"])


def test_401_wrong_password_is_generic(fake_synerise, api) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    response = _login(api, password="wrong")
    assert response.status_code == 401
    assert response.json() == GENERIC_401


# --------------------------------------------------------------------------- 405 / 406 / 415


def test_405_has_allow_and_json(fake_synerise, api) -> None:
    response = api.get(LOGIN_URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert response.json() == {"detail": 'Method "GET" not allowed.',
                               "code": "method_not_allowed"}


def test_406_when_json_is_not_acceptable(fake_synerise, api) -> None:
    response = api.post(LOGIN_URL, {}, format="json", HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert response.json()["code"] == "not_acceptable"


def test_415_is_json(fake_synerise, api) -> None:
    response = api.generic("POST", LOGIN_URL, "email=a", content_type="text/plain")
    assert response.status_code == 415
    assert response.json() == {"detail": 'Unsupported media type "text/plain" in request.',
                               "code": "unsupported_media_type"}


# --------------------------------------------------------------------------- 429


def test_429_has_retry_after(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": "3/min", "account": None}}
    statuses = [_login(api, f"u{i}@example.com").status_code for i in range(3)]
    response = _login(api, "u9@example.com")
    assert statuses == [401, 401, 401]
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 66  # a minute and one bucket at most
    assert body["retry_after"] == int(response["Retry-After"])
    assert len(fake_synerise.requests) == 3


def test_429_applies_to_provider_login(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": "1/min", "account": "1/min"}}
    api.post(provider_url("oauth"), {"identity_provider_token": "opaque-1"}, format="json")
    response = api.post(provider_url("oauth"), {"identity_provider_token": "opaque-2"},
                        format="json")
    assert response.status_code == 429


def test_concurrent_logins_do_not_pass_the_limit(fake_synerise, settings) -> None:
    """R-API-4: the counter is atomic (cache.incr), so 50 parallel attempts get 10 through."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": None, "account": "10/min"}}

    def attempt(_: int) -> int:
        try:
            return _login(APIClient(), "victim@example.com", "guess").status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(attempt, range(50)))
    assert statuses.count(429) == 40
    assert len(fake_synerise.requests) == 10


# --------------------------------------------------------------------------- 503


@pytest.mark.parametrize("inject,retry_after", [
    ({"status": 503, "retry_after": "120"}, "120"),
    ({"status": 502}, "30"),
    ({"status": 500}, "30"),
    ({"status": 429, "retry_after": "7"}, "7"),
    ({"status": 429, "retry_after": "100000"}, "300"),   # capped by RETRY_AFTER_MAX
    ({"fault": "reset"}, "30"),
    ({"fault": "truncated"}, "30"),
])
def test_503_when_synerise_fails_on_login(fake_synerise, api, inject, retry_after) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    fake_synerise.inject(path="login", times=5, **inject)
    response = _login(api)
    assert response.status_code == 503, response.content
    assert response.json() == UNAVAILABLE
    assert response["Retry-After"] == retry_after
    assert "token" not in response.json()


# --------------------------------------------------------------------------- 502


@pytest.mark.parametrize("inject", [
    {"fault": "garbage"},
    {"fault": "html"},
    {"fault": "empty"},
    {"fault": "redirect"},
    {"fault": "bad_json_shape"},
])
def test_502_when_synerise_answers_something_unusable_on_login(fake_synerise, api,
                                                               inject) -> None:
    """U1/U2/U5: an answer that is not a usable login answer is a bad gateway, retryable."""
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    fake_synerise.inject(path="login", times=5, **inject)
    response = _login(api)
    assert response.status_code == 502, response.content
    assert response.json() == BAD_RESPONSE
    assert response["Retry-After"] == "30"
    assert len(fake_synerise.requests) == 1


@pytest.mark.timing
def test_503_when_synerise_times_out(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "TIMEOUT": (0.5, 0.2), "TOTAL_TIMEOUT": 0.5}
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    fake_synerise.inject(fault="latency", delay=3.0, path="login", times=3)  # >> 0.2 s timeout
    response = _login(api)
    assert response.status_code == 503
    assert response["Retry-After"] == "30"


def test_503_when_synerise_is_unreachable(api, settings, db) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "BASE_URL": "http://127.0.0.1:9",
                         "TIMEOUT": (0.5, 0.5)}
    response = _login(api)
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE


def test_503_when_circuit_is_open(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "BREAKER_THRESHOLD": 2,
                         "BREAKER_RESET_TIMEOUT": 45}
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    fake_synerise.inject(status=503, path="login", times=None)
    for _ in range(get_breaker().threshold):
        assert _login(api).status_code == 503
    fake_synerise.clear_requests()
    response = _login(api)
    assert response.status_code == 503
    assert response["Retry-After"] == "45"
    assert upstream_calls(fake_synerise) == []  # the open breaker sent nothing


def test_503_on_provider_login(fake_synerise, api) -> None:
    fake_synerise.inject(status=503, path="login", retry_after="60", times=5)
    token = provider_token(fake_synerise, "FACEBOOK", subject="fb-1")
    response = api.post(provider_url("facebook"), {"identity_provider_token": token},
                        format="json")
    assert response.status_code == 503
    assert response["Retry-After"] == "60"


def test_bearer_with_public_key_unavailable_is_503(fake_synerise, signed_in) -> None:
    from django_synerise.verification import clear_public_key_cache

    clear_public_key_cache()
    fake_synerise.inject(status=503, path="public.pem", times=10)
    response = signed_in.bearer().get(TOKEN_URL)
    assert response.status_code == 503
    assert response["Retry-After"] == "30"


def test_refresh_failing_upstream_serves_current_token(fake_synerise, signed_in) -> None:
    """A transient refresh failure is not the caller's problem while the token is valid."""
    from datetime import timedelta

    from django.utils import timezone

    from django_synerise.models import ClientToken

    past = timezone.now() - timedelta(minutes=5)
    ClientToken.objects.filter(account__user_id=signed_in.user_id).update(
        issued_at=past, refreshed_at=past)
    fake_synerise.inject(status=503, path="refresh", times=5)
    response = signed_in.bearer().post(REFRESH_URL)
    assert response.status_code == 200
    assert response.json()["token"] == signed_in.token


def test_refresh_rejected_upstream_is_login_required(fake_synerise, signed_in) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus

    past = timezone.now() - timedelta(minutes=5)
    ClientToken.objects.filter(account__user_id=signed_in.user_id).update(
        issued_at=past, refreshed_at=past)
    fake_synerise.inject(status=401, path="refresh", times=1)
    response = signed_in.bearer().post(REFRESH_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "login_required"
    assert ClientToken.objects.get().status == TokenStatus.NEEDS_LOGIN


# --------------------------------------------------------------------------- handler table


@pytest.mark.parametrize("exc,status,code", [
    (errors.CredentialsRejected(status=401), 401, "invalid_credentials"),
    (errors.CredentialsRejected(status=403), 401, "invalid_credentials"),
    (errors.AccountInactive(), 401, "invalid_credentials"),
    (errors.TokenVerificationError(reason="signature"), 401, "invalid_credentials"),
    (errors.ConditionalAuthFailed("ACTIVATION_REQUIRED"), 403, "activation_required"),
    (errors.ConditionalAuthFailed("MFA_REQUIRED"), 403, "mfa_required"),
    (errors.ConditionalAuthFailed("SOMETHING_NEW"), 401, "invalid_credentials"),
    (errors.BadRequest(status=400), 401, "invalid_credentials"),
    (drf_exceptions.AuthenticationFailed("why"), 401, "invalid_credentials"),
    (errors.LoginRequired(reason="revoked"), 401, "login_required"),
    (errors.TokenDecryptionError(), 401, "login_required"),
    (errors.SyneriseUnavailable(status=500), 503, "synerise_unavailable"),
    (errors.RateLimited(retry_after=12.2), 503, "synerise_unavailable"),
    (errors.BadResponse(), 502, "synerise_bad_response"),
    (errors.CircuitOpen(), 503, "synerise_unavailable"),
    (errors.UpstreamError(), 503, "synerise_unavailable"),
    (AccountConflict(), 409, "account_conflict"),
    (RequestDataTooBig(), 413, "request_too_large"),
    (drf_exceptions.NotFound(), 404, "not_found"),
    (drf_exceptions.ParseError(), 400, "parse_error"),
    (drf_exceptions.PermissionDenied("CSRF Failed: CSRF token missing."), 403, "csrf_failed"),
    (drf_exceptions.PermissionDenied(), 403, "permission_denied"),
    (drf_exceptions.Throttled(wait=3.2), 429, "throttled"),
])
def test_handler_maps_every_error(settings, exc, status, code) -> None:
    response = exception_handler(exc, {"view": None})
    assert response is not None
    assert response.status_code == status
    assert response.data["code"] == code
    assert isinstance(response.data["detail"], str)
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    if status in (429, 503):
        assert int(response["Retry-After"]) >= 1
    if code == "invalid_credentials":
        assert response.data == GENERIC_401


def test_handler_retry_after_rounds_up() -> None:
    assert exception_handler(errors.RateLimited(retry_after=12.2), {})["Retry-After"] == "13"
    assert exception_handler(drf_exceptions.Throttled(wait=3.2), {})["Retry-After"] == "4"


def test_handler_leaves_bugs_to_django() -> None:
    assert exception_handler(ZeroDivisionError(), {}) is None


def test_flatten_nested_field_errors() -> None:
    detail = drf_exceptions.ValidationError(
        {"agreements": {"email": ["Must be true or false."]}, "non_field_errors": ["x"]}).detail
    assert flatten_field_errors(detail) == [
        {"field": "agreements.email", "code": "invalid", "message": "Must be true or false."},
        {"field": "non_field_errors", "code": "invalid", "message": "x"},
    ]


# --------------------------------------------------------------------------- R-API-2


class ExplodingAdapter(DefaultSyneriseAdapter):
    """Raises inside the login view, after the password reached the service layer."""

    def get_client(self):
        raise RuntimeError("boom inside the login view")


def test_password_is_masked_in_error_reports(fake_synerise, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "ADAPTER": "tests.test_api_errors.ExplodingAdapter"}
    # Django 6.0 takes plain addresses and deprecates the (name, address) pairs 5.2 needs.
    admin = "admin@example.com"
    settings.ADMINS = [admin] if django.VERSION >= (6, 0) else [("Admin", admin)]
    settings.DEBUG = False
    handler = AdminEmailHandler(include_html=True)
    request_logger = logging.getLogger("django.request")
    if not any(isinstance(h, AdminEmailHandler) for h in logging.getLogger("django").handlers):
        request_logger.addHandler(handler)  # Django's default mail_admins is not configured
    secret = "pw-Secret-Marker-4242"
    try:
        client = APIClient(raise_request_exception=False)
        response = client.post(LOGIN_URL, {"email": "a@example.com", "password": secret},
                               format="json")
    finally:
        request_logger.removeHandler(handler)
    assert response.status_code == 500
    assert mail.outbox
    for message in mail.outbox:
        report = message.body + "".join(str(alt[0]) for alt in message.alternatives)
        assert "boom inside the login view" in report
        assert secret not in report
        assert "********************" in report


def test_password_and_token_never_logged(fake_synerise, api, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake_synerise.add_client(email="a@example.com", password="pw-Secret-Marker-1")
    response = _login(api, password="pw-Secret-Marker-1")
    token = response.json()["token"]
    _login(api, password="pw-Secret-Marker-2")
    provider = provider_token(fake_synerise, "GOOGLE", subject="g-1")
    api.post(provider_url("google"), {"identity_provider_token": provider}, format="json")
    assert caplog.records
    text = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    for secret in ("pw-Secret-Marker", token, token.split(".")[2], provider):
        assert secret not in text
