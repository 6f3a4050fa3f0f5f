"""Bad-input tables L1-L10, S1-S3 and F1-F3 of reliability.md §9 against the HTTP API.

"No upstream" is asserted on FakeSynerise's request log.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from django_synerise.models import ClientToken, TokenStatus
from django_synerise.testing import FakeSynerise

from .api_helpers import (
    GENERIC_401,
    LOGIN_URL,
    LOGOUT_URL,
    PASSWORD,
    REFRESH_URL,
    TOKEN_URL,
    b64url,
    jwt_shaped,
    provider_token,
    provider_url,
    sign_in,
    upstream_calls,
)

pytest_plugins = ["tests.fixtures_api"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_clean_state")]


def _post_raw(client: APIClient, url: str, body: bytes | str, content_type: str):
    return client.generic("POST", url, body, content_type=content_type)


def _assert_400_no_upstream(response, fake: FakeSynerise, field: str | None = None) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] in {"invalid", "parse_error"}
    if field is not None:
        assert field in {error["field"] for error in body["errors"]}
    assert upstream_calls(fake) == []


# --------------------------------------------------------------------------- L1


@pytest.mark.parametrize("payload,field", [
    ({"password": PASSWORD}, "non_field_errors"),
    ({"email": "a@example.com"}, "password"),
    ({}, "password"),
    ({"email": "a@example.com", "custom_id": "c-1", "password": PASSWORD}, "non_field_errors"),
])
def test_l1_missing_fields(fake_synerise, api, payload, field) -> None:
    _assert_400_no_upstream(api.post(LOGIN_URL, payload, format="json"), fake_synerise, field)


def test_l1_unknown_fields_are_ignored(fake_synerise, api) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    response = api.post(LOGIN_URL, {"email": "a@example.com", "password": PASSWORD,
                                    "is_superuser": True, "user_id": 1}, format="json")
    assert response.status_code == 200
    sent = fake_synerise.requests[0].json
    assert "is_superuser" not in sent and "user_id" not in sent


# --------------------------------------------------------------------------- L2


@pytest.mark.parametrize("field", ["email", "password", "custom_id", "uuid", "device_id"])
@pytest.mark.parametrize("value", [[], {}, 123, 1.5, None, True])
def test_l2_wrong_types(fake_synerise, api, field, value) -> None:
    payload = {"email": "a@example.com", "password": PASSWORD}
    if field == "custom_id":
        payload = {"custom_id": "c-1", "password": PASSWORD}
    payload[field] = value
    _assert_400_no_upstream(api.post(LOGIN_URL, payload, format="json"), fake_synerise, field)


@pytest.mark.parametrize("body", [b"[]", b'"email"', b"123", b"null", b"true"])
def test_l2_body_not_an_object(fake_synerise, api, body) -> None:
    _assert_400_no_upstream(_post_raw(api, LOGIN_URL, body, "application/json"), fake_synerise)


# --------------------------------------------------------------------------- L3


@pytest.mark.parametrize("email", [
    "a" * 243 + "@example.com",           # 255 characters
    "no-at-sign.example.com",
    "a@example.com\r\nX-Injected: 1",
    "a@example.com\n",
    "a\x00@example.com",
    "a@ex\u0430mple.com",                   # Cyrillic 'а' homoglyph
    "\u0430lice@example.com",
    "a@@example.com",
])
def test_l3_bad_emails(fake_synerise, api, email) -> None:
    response = api.post(LOGIN_URL, {"email": email, "password": PASSWORD}, format="json")
    _assert_400_no_upstream(response, fake_synerise, "email")


def test_l3_error_does_not_echo_value(fake_synerise, api) -> None:
    email = "secret-marker-\u0430@example.com"
    response = api.post(LOGIN_URL, {"email": email, "password": PASSWORD}, format="json")
    assert response.status_code == 400
    assert "secret-marker" not in response.content.decode()


def test_l3_surrounding_spaces_are_normalised(fake_synerise, api) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    response = api.post(LOGIN_URL, {"email": "\t a@example.com  ", "password": PASSWORD},
                        format="json")
    # A tab is a control character: refused before anything is sent.
    _assert_400_no_upstream(response, fake_synerise, "email")
    response = api.post(LOGIN_URL, {"email": "  a@example.com  ", "password": PASSWORD},
                        format="json")
    assert response.status_code == 200
    assert fake_synerise.requests[0].json["email"] == "a@example.com"


# --------------------------------------------------------------------------- L4


def test_l4_case_variants_share_the_account_throttle(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": None, "account": "2/min"}}
    fake_synerise.add_client(email="kate@example.com", password=PASSWORD)
    for variant in ("Kate@Example.com", "KATE@EXAMPLE.COM "):
        response = api.post(LOGIN_URL, {"email": variant, "password": "wrong"}, format="json")
        assert response.status_code == 401
    response = api.post(LOGIN_URL, {"email": "kate@example.com", "password": PASSWORD},
                        format="json")
    assert response.status_code == 429
    assert len(fake_synerise.requests) == 2


def test_l4_upstream_decides_case(fake_synerise, api) -> None:
    acct = fake_synerise.add_client(email="liam@example.com", password=PASSWORD)
    response = api.post(LOGIN_URL, {"email": "Liam@EXAMPLE.com", "password": PASSWORD},
                        format="json")
    # The local part goes upstream as typed (domain lower-cased); the fake matches
    # case-insensitively, so this signs in to the same client.
    assert fake_synerise.requests[0].json["email"] == "Liam@example.com"
    assert response.status_code == 200
    assert response.json()["client_id"] == acct.client_id


# --------------------------------------------------------------------------- L5


@pytest.mark.parametrize("password", ["", "x" * (1024 * 1024), "pass\x00word", "pa\r\nss"])
def test_l5_bad_passwords(fake_synerise, api, password) -> None:
    response = api.post(LOGIN_URL, {"email": "a@example.com", "password": password},
                        format="json")
    _assert_400_no_upstream(response, fake_synerise, "password")


def test_l5_password_of_1024_characters_is_sent(fake_synerise, api) -> None:
    response = api.post(LOGIN_URL, {"email": "a@example.com", "password": "p" * 1024},
                        format="json")
    assert response.status_code == 401
    assert len(fake_synerise.requests) == 1


# --------------------------------------------------------------------------- L6


@pytest.mark.parametrize("content_type,body", [
    ("text/plain", b'{"email": "a@example.com", "password": "x"}'),
    ("application/x-www-form-urlencoded", b"email=a%40example.com&password=x"),
    ("multipart/form-data; boundary=XX",
     b'--XX\r\nContent-Disposition: form-data; name="email"\r\n\r\na@example.com\r\n--XX--\r\n'),
    ("application/xml", b"<login/>"),
])
def test_l6_wrong_content_type_is_415(fake_synerise, api, content_type, body) -> None:
    response = _post_raw(api, LOGIN_URL, body, content_type)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert upstream_calls(fake_synerise) == []


@pytest.mark.parametrize("body", [
    b'{"email": "a@example.com", "password": ',                         # truncated
    b'{"email": "a@example.com", "email": "b@example.com", "password": "x"}',  # duplicate
    b'{"email": "a@example.com", "password": NaN}',
    b"\xff\xfe{}",                                                         # not UTF-8
    b"[" * 10_000 + b"]" * 10_000,                                        # nested 10k deep
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b"{} {}",
])
def test_l6_invalid_json_is_400(fake_synerise, api, body) -> None:
    response = _post_raw(api, LOGIN_URL, body, "application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert upstream_calls(fake_synerise) == []


def test_l6_body_over_limit_is_413(fake_synerise, api, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = json.dumps({"email": "a@example.com", "password": "x" * 5000}).encode()
    response = _post_raw(api, LOGIN_URL, body, "application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is too large.",
                               "code": "request_too_large"}
    assert upstream_calls(fake_synerise) == []


def test_l6_default_limit_1mib_password_is_400_not_413(fake_synerise, api) -> None:
    # 1 MiB is under Django's default 2.5 MiB cap: the length cap answers.
    body = json.dumps({"email": "a@example.com", "password": "x" * (1 << 20)}).encode()
    assert _post_raw(api, LOGIN_URL, body, "application/json").status_code == 400


def test_l6_form_body_over_limit_with_session_cookie_is_413(fake_synerise, csrf_api,
                                                            settings) -> None:
    # The CSRF check reads form bodies through Django (which raises RequestDataTooBig).
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    csrf_api.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
    csrf_api.cookies[settings.CSRF_COOKIE_NAME] = "A" * 32
    response = _post_raw(csrf_api, LOGIN_URL, b"password=" + b"x" * 4096,
                         "application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert upstream_calls(fake_synerise) == []


# --------------------------------------------------------------------------- L7


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
@pytest.mark.parametrize("url", [LOGIN_URL, provider_url("google"), REFRESH_URL, LOGOUT_URL])
def test_l7_wrong_method_is_405_with_allow(fake_synerise, signed_in, method, url) -> None:
    # Authenticated endpoints authenticate first (DRF order): an anonymous GET gets 401.
    client = signed_in.bearer() if url in (REFRESH_URL, LOGOUT_URL) else APIClient()
    response = getattr(client, method)(url)
    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert response.json()["code"] == "method_not_allowed"
    assert upstream_calls(fake_synerise) == []


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_l7_token_endpoint_allows_get_only(signed_in, method) -> None:
    response = getattr(signed_in.bearer(), method)(TOKEN_URL)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD, OPTIONS"


# --------------------------------------------------------------------------- L8


def test_l8_login_with_session_cookie_needs_csrf(fake_synerise, csrf_api) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    csrf_api.cookies[settings.SESSION_COOKIE_NAME] = "attacker-or-stale-session"
    response = csrf_api.post(LOGIN_URL, {"email": "a@example.com", "password": PASSWORD},
                             format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert upstream_calls(fake_synerise) == []


def test_l8_login_with_session_cookie_and_csrf_token_succeeds(fake_synerise, csrf_api) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    secret = "A" * 32
    csrf_api.cookies[settings.SESSION_COOKIE_NAME] = "some-session"
    csrf_api.cookies[settings.CSRF_COOKIE_NAME] = secret
    response = csrf_api.post(LOGIN_URL, {"email": "a@example.com", "password": PASSWORD},
                             format="json", HTTP_X_CSRFTOKEN=secret)
    assert response.status_code == 200


def test_l8_login_without_cookies_needs_no_csrf(fake_synerise, csrf_api) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    response = csrf_api.post(LOGIN_URL, {"email": "a@example.com", "password": PASSWORD},
                             format="json")
    assert response.status_code == 200
    # The new session comes with a CSRF cookie for the next requests.
    assert settings.SESSION_COOKIE_NAME in response.cookies
    assert settings.CSRF_COOKIE_NAME in response.cookies


def test_l8_cookie_ignored_when_login_starts_no_session(fake_synerise, csrf_api,
                                                        settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "LOGIN_STARTS_SESSION": False}
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    csrf_api.cookies[settings.SESSION_COOKIE_NAME] = "some-session"
    response = csrf_api.post(LOGIN_URL, {"email": "a@example.com", "password": PASSWORD},
                             format="json")
    assert response.status_code == 200
    assert settings.SESSION_COOKIE_NAME not in response.cookies or \
        not response.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.mark.parametrize("url,method", [(REFRESH_URL, "post"), (LOGOUT_URL, "post")])
def test_l8_session_endpoints_need_csrf(fake_synerise, csrf_api, url, method) -> None:
    sign_in(fake_synerise, "a@example.com", client=csrf_api)
    fake_synerise.clear_requests()
    csrf_api.cookies.pop(settings.CSRF_COOKIE_NAME, None)
    response = getattr(csrf_api, method)(url)
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert upstream_calls(fake_synerise) == []
    assert ClientToken.objects.get().status == TokenStatus.ACTIVE


def test_l8_session_refresh_with_csrf_token_succeeds(fake_synerise, csrf_api) -> None:
    login = None
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    login = csrf_api.post(LOGIN_URL, {"email": "a@example.com", "password": PASSWORD},
                          format="json")
    token = login.cookies[settings.CSRF_COOKIE_NAME].value
    response = csrf_api.post(REFRESH_URL, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


# --------------------------------------------------------------------------- L9


def test_l9_rotating_x_forwarded_for_is_throttled(fake_synerise, api) -> None:
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    statuses = []
    for i in range(20):
        response = api.post(LOGIN_URL, {"email": "a@example.com", "password": "wrong"},
                            format="json", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
        statuses.append(response.status_code)
    assert statuses[:10] == [401] * 10           # account rate 10/min
    assert statuses[10:] == [429] * 10
    assert len(fake_synerise.requests) == 10
    assert 1 <= int(response["Retry-After"]) <= 66  # the window: a minute and a bucket


def test_l9_ip_throttle_ignores_x_forwarded_for(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": "5/min", "account": None}}
    statuses = [
        api.post(LOGIN_URL, {"email": f"u{i}@example.com", "password": "x"}, format="json",
                 HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
        for i in range(8)
    ]
    assert statuses == [401] * 5 + [429] * 3


def test_l9_num_proxies_selects_the_trusted_hop(fake_synerise, api, settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": "2/min", "account": None}}
    settings.REST_FRAMEWORK = {"NUM_PROXIES": 1}
    statuses = [
        api.post(LOGIN_URL, {"email": f"u{i}@example.com", "password": "x"}, format="json",
                 HTTP_X_FORWARDED_FOR=f"spoofed, 198.51.100.{i}").status_code
        for i in range(4)
    ]
    assert statuses == [401] * 4  # each request came through the proxy from another client


# --------------------------------------------------------------------------- L10


def _deactivated_local_user(fake: FakeSynerise) -> None:
    result = sign_in(fake, "inactive@example.com")
    user = result.user
    user.is_active = False
    user.save(update_fields=["is_active"])


@pytest.mark.parametrize("case", ["unknown", "wrong_password", "unconfirmed", "inactive_local"])
def test_l10_every_rejection_has_the_same_body(fake_synerise, api, case) -> None:
    fake_synerise.add_client(email="known@example.com", password=PASSWORD)
    unconfirmed = fake_synerise.add_client(email="unconfirmed@example.com", password=PASSWORD)
    fake_synerise.deactivate_client(unconfirmed.client_id)
    _deactivated_local_user(fake_synerise)
    payload = {
        "unknown": {"email": "nobody@example.com", "password": PASSWORD},
        "wrong_password": {"email": "known@example.com", "password": "wrong"},
        "unconfirmed": {"email": "unconfirmed@example.com", "password": PASSWORD},
        "inactive_local": {"email": "inactive@example.com", "password": PASSWORD},
    }[case]
    response = APIClient().post(LOGIN_URL, payload, format="json")
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert settings.SESSION_COOKIE_NAME not in response.cookies


# --------------------------------------------------------------------------- S1-S3


_JWT_PROVIDERS = ["google", "apple"]


@pytest.mark.parametrize("provider", ["google", "apple", "facebook", "oauth"])
@pytest.mark.parametrize("token", ["", "   ", "abc def", "tok\nen", "tok\x00en", "a.b\tc"])
def test_s1_malformed_tokens_every_provider(fake_synerise, api, provider, token) -> None:
    response = api.post(provider_url(provider), {"identity_provider_token": token},
                        format="json")
    _assert_400_no_upstream(response, fake_synerise, "identity_provider_token")


@pytest.mark.parametrize("provider", _JWT_PROVIDERS)
@pytest.mark.parametrize("token", [
    "abc",
    "aaa.bbb",                                  # 2 segments
    "aaa.bbb.ccc.ddd.eee",                       # 5 segments (JWE)
    "aaa..ccc",
    jwt_shaped() + " ",
    "not-json-header.e30.c2ln",
    b64url(b"[1]") + ".e30.c2ln",                # header not an object
])
def test_s1_id_token_shape(fake_synerise, api, provider, token) -> None:
    response = api.post(provider_url(provider), {"identity_provider_token": token},
                        format="json")
    _assert_400_no_upstream(response, fake_synerise, "identity_provider_token")


@pytest.mark.timing
@pytest.mark.parametrize("provider", ["google", "apple", "facebook", "oauth"])
def test_s2_one_mib_token_is_400_fast(fake_synerise, api, provider) -> None:
    token = "a" * (1 << 20)
    # CPU time of this thread (the test client runs the view here), which a loaded machine
    # does not stretch as it does wall time.
    started = time.thread_time()
    response = api.post(provider_url(provider), {"identity_provider_token": token},
                        format="json")
    elapsed = time.thread_time() - started
    _assert_400_no_upstream(response, fake_synerise, "identity_provider_token")
    assert elapsed < 0.25  # the 50 ms budget of R-JWT-6, with room for a slow CI box


@pytest.mark.parametrize("provider", _JWT_PROVIDERS)
@pytest.mark.parametrize("header,signature", [
    ({"alg": "none", "typ": "JWT"}, ""),
    ({"alg": "none", "typ": "JWT"}, "c2ln"),
    ({"alg": "None"}, "c2ln"),
    ({"alg": "HS256", "typ": "JWT"}, "c2ln"),
    ({"typ": "JWT"}, "c2ln"),
])
def test_s3_unsigned_or_hmac_tokens_rejected(fake_synerise, api, provider, header,
                                            signature) -> None:
    token = jwt_shaped(header, {"sub": "x", "email": "victim@example.com"}, signature)
    response = api.post(provider_url(provider), {"identity_provider_token": token},
                        format="json")
    _assert_400_no_upstream(response, fake_synerise, "identity_provider_token")


@pytest.mark.parametrize("provider", ["twitter", "GOOGLE", "Google", "synerise"])
def test_s15_unknown_provider_is_400(fake_synerise, api, provider) -> None:
    response = api.post(provider_url(provider),
                        {"identity_provider_token": jwt_shaped()}, format="json")
    _assert_400_no_upstream(response, fake_synerise, "provider")


def test_provider_token_of_another_provider_is_generic_401(fake_synerise, api) -> None:
    token = provider_token(fake_synerise, "GOOGLE", subject="g-1")
    response = api.post(provider_url("apple"), {"identity_provider_token": token},
                        format="json")
    assert response.status_code == 401
    assert response.json() == GENERIC_401


@pytest.mark.parametrize("field,value", [
    ("agreements", {"email": "yes"}),
    ("agreements", {"email": 1}),
    ("agreements", [True]),
    ("agreements", {f"k{i}": True for i in range(17)}),
    ("agreements", {"bad key": True}),
    ("attributes", {"nested": {"a": 1}}),
    ("attributes", {"list": [1, 2]}),
    ("attributes", {f"k{i}": 1 for i in range(51)}),
    ("attributes", {"long": "x" * 1025}),
    ("attributes", {"": 1}),
    ("attributes", "string"),
    ("uuid", "not-a-uuid"),
    ("uuid", 12345),
])
def test_provider_optional_fields_are_validated(fake_synerise, api, field, value) -> None:
    token = provider_token(fake_synerise, "GOOGLE", subject="g-1")
    response = api.post(provider_url("google"), {"identity_provider_token": token,
                                                 field: value}, format="json")
    assert response.status_code == 400
    assert any(error["field"].startswith(field) for error in response.json()["errors"])
    assert upstream_calls(fake_synerise) == []


# --------------------------------------------------------------------------- F1


def _other_key_token(claims: dict) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return jwt.encode(claims, pem, algorithm="RS512")


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.parametrize("url,method", [(REFRESH_URL, "post"), (TOKEN_URL, "get"),
                                        (LOGOUT_URL, "post")])
def test_f1_no_credentials_is_401(fake_synerise, api, url, method) -> None:
    response = getattr(api, method)(url)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert upstream_calls(fake_synerise) == []


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Bearer a b", "Bearer abc", "Bearer " + "a" * 9000,
    "Bearer aaa.bbb.ccc", "Bearer \u00e9\u00e9.a.b",
])
def test_f1_malformed_bearer_is_generic_401_without_upstream(fake_synerise, signed_in,
                                                            header) -> None:
    client = APIClient()
    response = client.get(TOKEN_URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json() in (GENERIC_401, {"detail": response.json()["detail"],
                                             "code": "not_authenticated"})
    assert upstream_calls(fake_synerise) == []


def test_f1_other_scheme_is_not_authenticated(fake_synerise, signed_in) -> None:
    response = APIClient().get(TOKEN_URL, HTTP_AUTHORIZATION="Basic dXNlcjpwdw==")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_f1_expired_bearer_is_401(fake_synerise, signed_in) -> None:
    expired = fake_synerise.issue_token(signed_in.client_id, lifetime=-120)
    response = _bearer(expired).post(REFRESH_URL)
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert fake_synerise.count(path_contains="refresh") == 0


def test_f1_forged_bearer_is_401(fake_synerise, signed_in) -> None:
    now = int(time.time())
    forged = _other_key_token({"iss": "Synerise", "rlm": "client", "clId": int(signed_in.client_id),
                               "bpi": fake_synerise.business_profile_id, "iat": now,
                               "exp": now + 3600})
    response = _bearer(forged).get(TOKEN_URL)
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert fake_synerise.count(path_contains="refresh") == 0


def test_f1_alg_none_bearer_is_401(fake_synerise, signed_in) -> None:
    now = int(time.time())
    token = jwt_shaped({"alg": "none"}, {"iss": "Synerise", "rlm": "client",
                                         "clId": int(signed_in.client_id), "exp": now + 60},
                       signature="")
    response = APIClient().get(TOKEN_URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert upstream_calls(fake_synerise) == []


def test_f1_anonymous_token_is_401(fake_synerise, signed_in) -> None:
    anonymous = fake_synerise.issue_token(signed_in.client_id, realm="anonymous_client")
    assert _bearer(anonymous).get(TOKEN_URL).status_code == 401


def test_f1_token_of_another_workspace_is_401(fake_synerise, signed_in) -> None:
    # Synerise signs every workspace's tokens with the same key: only bpi tells them apart.
    with FakeSynerise(business_profile_id="9999") as other:
        for _ in range(int(signed_in.client_id) - 100000000):
            other.add_client(email=f"x{_}@example.com", password="pw")
        foreign = other.issue_token(signed_in.client_id)
    response = _bearer(foreign).get(TOKEN_URL)
    assert response.status_code == 401
    assert response.json() == GENERIC_401


def test_f1_unknown_client_id_is_401(fake_synerise, signed_in) -> None:
    stranger = fake_synerise.add_client(email="stranger@example.com", password=PASSWORD)
    token = fake_synerise.issue_token(stranger.client_id)
    assert _bearer(token).get(TOKEN_URL).status_code == 401


# --------------------------------------------------------------------------- F2


def test_f2_other_users_id_is_ignored(fake_synerise) -> None:
    alice = sign_in(fake_synerise, "alice@example.com")
    bob = sign_in(fake_synerise, "bob@example.com")
    client = alice.bearer()
    for response in (
        client.post(f"{REFRESH_URL}?user_id={bob.user_id}&client_id={bob.client_id}",
                    {"user_id": bob.user_id, "client_id": bob.client_id}, format="json"),
        client.get(f"{TOKEN_URL}?user_id={bob.user_id}&client_id={bob.client_id}"),
    ):
        assert response.status_code == 200
        assert response.json()["user_id"] == alice.user_id
        assert response.json()["token"] != bob.token


# --------------------------------------------------------------------------- F3


def test_f3_deactivated_user_is_401_without_upstream(fake_synerise, signed_in) -> None:
    user = signed_in.user
    user.is_active = False
    user.save(update_fields=["is_active"])
    fake_synerise.clear_requests()
    for response in (signed_in.bearer().post(REFRESH_URL), signed_in.bearer().get(TOKEN_URL)):
        assert response.status_code == 401
    assert upstream_calls(fake_synerise) == []


def test_f3_deactivated_session_user_is_401(fake_synerise, api) -> None:
    result = sign_in(fake_synerise, "s@example.com", client=api)
    user = result.user
    user.is_active = False
    user.save(update_fields=["is_active"])
    fake_synerise.clear_requests()
    assert api.post(REFRESH_URL).status_code in (401, 403)
    assert api.get(TOKEN_URL).status_code in (401, 403)
    assert upstream_calls(fake_synerise) == []


def test_f3_logged_out_user_is_401(fake_synerise, signed_in) -> None:
    client = signed_in.bearer()
    assert client.post(LOGOUT_URL).status_code == 204
    assert client.post(REFRESH_URL).status_code == 401
    assert client.get(TOKEN_URL).status_code == 401
    assert upstream_calls(fake_synerise) == []


@pytest.mark.parametrize("status", [TokenStatus.NEEDS_LOGIN, TokenStatus.REVOKED])
def test_f3_row_needing_login_is_401_without_upstream(fake_synerise, signed_in, status) -> None:
    ClientToken.objects.filter(account__user_id=signed_in.user_id).update(status=status)
    for response in (signed_in.bearer().post(REFRESH_URL), signed_in.bearer().get(TOKEN_URL)):
        assert response.status_code == 401
        assert "token" not in response.json()
    assert upstream_calls(fake_synerise) == []


def test_f3_session_user_whose_row_needs_login_gets_login_required(fake_synerise, api) -> None:
    result = sign_in(fake_synerise, "s@example.com", client=api)
    ClientToken.objects.filter(account__user_id=result.user_id).update(
        status=TokenStatus.NEEDS_LOGIN)
    fake_synerise.clear_requests()
    response = api.get(TOKEN_URL)
    assert response.status_code == 401
    assert response.json() == {"detail": "Sign in again.", "code": "login_required"}
    assert upstream_calls(fake_synerise) == []


def test_f3_expired_stored_token_is_login_required(fake_synerise, api) -> None:
    result = sign_in(fake_synerise, "s@example.com", client=api)
    ClientToken.objects.filter(account__user_id=result.user_id).update(
        expires_at=timezone.now() - timedelta(seconds=5))
    fake_synerise.clear_requests()
    response = api.post(REFRESH_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "login_required"
    assert upstream_calls(fake_synerise) == []
