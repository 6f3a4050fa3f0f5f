"""SyneriseClient over real HTTP against FakeSynerise: every method and every fault."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import jwt
import pytest

from django_synerise import __version__
from django_synerise.breaker import reset_breakers
from django_synerise.client import (
    AuthResult,
    ConditionalResult,
    SyneriseClient,
    close_session,
    get_client,
    get_session,
    parse_retry_after,
)
from django_synerise.exceptions import (
    BadRequest,
    BadResponse,
    CredentialsRejected,
    FieldErrorDetail,
    RateLimited,
    SyneriseConfigurationError,
    SyneriseUnavailable,
)

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _fresh_breaker():
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def client(fake_synerise) -> SyneriseClient:
    return SyneriseClient()


@pytest.fixture
def account(fake_synerise):
    return fake_synerise.add_client(
        email="ann@example.com", password=PASSWORD, custom_id="cust-1", first_name="Ann"
    )


def configure(settings, **values) -> None:
    settings.SYNERISE = {**settings.SYNERISE, **values}


def login(client: SyneriseClient) -> AuthResult:
    return client.login(email="ann@example.com", password=PASSWORD)


def unverified(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --------------------------------------------------------------------------- happy paths


def test_login_with_email_returns_token_and_metadata(client, account, fake_synerise):
    result = client.login(email="ann@example.com", password=PASSWORD, uuid="u-1")

    info = fake_synerise.token_info(result.token)
    assert info is not None and info["valid"]
    assert info["client_id"] == account.client_id
    assert result.expiration == datetime.fromtimestamp(info["exp"], tz=timezone.utc)
    assert result.created == datetime.fromtimestamp(info["created"] / 1000, tz=timezone.utc)
    assert result.origin == "SYNERISE"
    assert result.realm == "client"
    assert result.custom_id == "cust-1"
    assert str(unverified(result.token)["clId"]) == account.client_id


def test_login_sends_headers_and_camelcase_body_without_none(client, account, fake_synerise):
    client.login(email="ann@example.com", password=PASSWORD, uuid="u-1", device_id="dev-9")

    (request,) = fake_synerise.requests
    assert request.method == "POST"
    assert request.path == "/sauth/v3/auth/login/client"
    assert request.headers["Api-Version"] == "4.4"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"django-synerise/{__version__}"
    assert "Authorization" not in request.headers
    assert request.json == {
        "apiKey": fake_synerise.api_key,
        "identityProvider": "SYNERISE",
        "email": "ann@example.com",
        "password": PASSWORD,
        "uuid": "u-1",
        "deviceId": "dev-9",
    }


def test_login_with_custom_id(client, account, fake_synerise):
    result = client.login(custom_id="cust-1", password=PASSWORD)

    assert fake_synerise.token_info(result.token)["client_id"] == account.client_id
    assert fake_synerise.requests[0].json["customId"] == "cust-1"
    assert "email" not in fake_synerise.requests[0].json


def test_api_version_setting_is_sent(settings, client, account, fake_synerise):
    configure(settings, API_VERSION="4.5")
    login(client)
    assert fake_synerise.requests[0].headers["Api-Version"] == "4.5"


def test_auth_api_v2_uses_v2_paths(settings, client, account, fake_synerise):
    configure(settings, AUTH_API="v2")
    result = login(client)
    client.refresh(result.token)
    assert [r.path for r in fake_synerise.requests] == [
        "/sauth/v2/auth/login/client",
        "/sauth/v2/auth/refresh/client",
    ]


def test_social_login_creates_client_and_sends_every_field(client, fake_synerise):
    provider_token = fake_synerise.provider_token("GOOGLE", subject="g-1", email="g@gmail.com")
    result = client.login(
        identity_provider="google",
        identity_provider_token=provider_token,
        uuid="u-2",
        agreements={"email": True, "sms": False},
        attributes={"plan": "gold"},
    )

    assert result.origin == "GOOGLE"
    assert unverified(result.token)["eml"] == "g@gmail.com"
    body = fake_synerise.requests[0].json
    assert body == {
        "apiKey": fake_synerise.api_key,
        "identityProvider": "GOOGLE",
        "identityProviderToken": provider_token,
        "uuid": "u-2",
        "agreements": {"email": True, "sms": False},
        "attributes": {"plan": "gold"},
    }


def test_conditional_login_success(client, account, fake_synerise):
    outcome = client.login_conditional(email="ann@example.com", password=PASSWORD)

    assert isinstance(outcome, ConditionalResult)
    assert outcome.status == "SUCCESS"
    assert outcome.succeeded
    assert outcome.conditions == []
    assert fake_synerise.token_info(outcome.result.token)["client_id"] == account.client_id
    assert fake_synerise.requests[0].path == "/sauth/v3/auth/login/client/conditional"


def test_conditional_login_registration_required_has_no_token(client, fake_synerise):
    provider_token = fake_synerise.provider_token("APPLE", subject="a-1")
    outcome = client.login_conditional(
        identity_provider="APPLE", identity_provider_token=provider_token
    )
    assert outcome.status == "REGISTRATION_REQUIRED"
    assert outcome.result is None
    assert not outcome.succeeded
    assert fake_synerise.client_for("APPLE", "a-1") is None


def test_conditional_login_activation_required_keeps_conditions(client, fake_synerise):
    fake_synerise.add_client(email="new@example.com", password=PASSWORD, activated=False)
    outcome = client.login_conditional(email="new@example.com", password=PASSWORD)
    assert outcome.status == "ACTIVATION_REQUIRED"
    assert outcome.result is None
    assert outcome.conditions == [{"type": "ACTIVATION", "email": "new@example.com"}]


def test_conditional_success_without_token_is_bad_response(client, account, fake_synerise):
    fake_synerise.inject(status=200, body={"status": "SUCCESS", "conditions": []})
    with pytest.raises(BadResponse) as info:
        client.login_conditional(email="ann@example.com", password=PASSWORD)
    assert info.value.status == 200


def test_anonymous_login(client, fake_synerise):
    result = client.login_anonymous(uuid="anon-uuid", device_id="dev-1")

    assert result.realm == "anonymous_client"
    assert unverified(result.token)["rlm"] == "anonymous_client"
    request = fake_synerise.requests[0]
    assert request.path == "/sauth/v3/auth/login/client/anonymous"
    assert request.json == {"apiKey": fake_synerise.api_key, "uuid": "anon-uuid",
                            "deviceId": "dev-1"}


def test_refresh_sends_bearer_and_api_key_and_returns_new_token(client, account, fake_synerise):
    first = login(client)
    fake_synerise.clear_requests()

    second = client.refresh(first.token)

    assert second.token != first.token
    assert fake_synerise.token_info(second.token)["valid"]
    (request,) = fake_synerise.requests
    assert request.path == "/sauth/v3/auth/refresh/client"
    assert request.headers["Authorization"] == f"Bearer {first.token}"
    assert request.json == {"apiKey": fake_synerise.api_key}


def test_refresh_of_expired_token_is_rejected(client, account, fake_synerise):
    first = login(client)
    fake_synerise.expire_tokens(account.client_id)

    with pytest.raises(CredentialsRejected) as info:
        client.refresh(first.token)

    assert info.value.status == 401
    assert info.value.message == "Token expired."
    assert info.value.error == "Unauthorized"
    assert info.value.path == "/sauth/v3/auth/refresh/client"


@pytest.mark.parametrize("token", ["", "has space.x.y", "line\nbreak", "a" * 9000, None])
def test_refresh_of_malformed_token_sends_nothing(client, fake_synerise, token):
    with pytest.raises(CredentialsRejected) as info:
        client.refresh(token)
    assert info.value.status is None
    assert fake_synerise.count() == 0


def test_public_key(client, fake_synerise):
    pem = client.public_key()
    assert pem.strip() == fake_synerise.public_key_pem.strip()
    assert fake_synerise.requests[0].path == "/v4/public.pem"
    assert fake_synerise.requests[0].method == "GET"


def test_public_key_that_is_not_pem_is_bad_response(client, fake_synerise):
    fake_synerise.inject(status=200, body="hello, not a key", path="public.pem")
    with pytest.raises(BadResponse):
        client.public_key()


def test_personal_information(client, account, fake_synerise):
    result = login(client)
    info = client.personal_information(result.token)
    assert str(info["clientId"]) == account.client_id
    assert info["email"] == "ann@example.com"
    assert fake_synerise.requests[-1].bearer == result.token


def test_personal_information_with_unknown_token_is_rejected(client, fake_synerise):
    with pytest.raises(CredentialsRejected) as info:
        client.personal_information("aaa.bbb.ccc")
    assert info.value.status == 401


def test_auth_result_repr_hides_token(client, account):
    result = login(client)
    assert result.token not in repr(result)
    assert result.token not in str(result)
    assert "redacted" in repr(result)
    assert result.token not in repr(ConditionalResult("SUCCESS", [], result))


def test_get_client_is_a_shared_live_client(settings, fake_synerise):
    assert get_client() is get_client()
    assert get_client().base_url == fake_synerise.url
    configure(settings, BASE_URL="https://api.geb.synerise.com/")
    assert get_client().base_url == "https://api.geb.synerise.com"


def test_missing_api_key_is_a_configuration_error(settings, fake_synerise):
    settings.SYNERISE = {"BASE_URL": fake_synerise.url}
    with pytest.raises(SyneriseConfigurationError):
        SyneriseClient().login(email="ann@example.com", password=PASSWORD)
    assert fake_synerise.count() == 0


def test_bad_auth_api_is_a_configuration_error(settings, fake_synerise):
    configure(settings, AUTH_API="v9")
    with pytest.raises(SyneriseConfigurationError):
        SyneriseClient().login(email="ann@example.com", password=PASSWORD)


def test_secrets_are_never_logged(client, account, fake_synerise, caplog):
    caplog.set_level(logging.DEBUG)
    result = login(client)
    refreshed = client.refresh(result.token)
    client.personal_information(refreshed.token)
    fake_synerise.inject(status=503)
    with pytest.raises(SyneriseUnavailable):
        login(client)
    text = caplog.text
    assert "/sauth/v3/auth/login/client" in text  # method + path are logged
    for secret in (PASSWORD, fake_synerise.api_key, result.token, refreshed.token):
        assert secret not in text


# --------------------------------------------------------------------------- HTTP errors


def test_wrong_password_is_credentials_rejected(client, account, fake_synerise):
    with pytest.raises(CredentialsRejected) as info:
        client.login(email="ann@example.com", password="wrong")
    assert info.value.status == 401
    assert info.value.message == "Bad credentials"
    assert info.value.path == "/sauth/v3/auth/login/client"
    assert fake_synerise.count() == 1


def test_wrong_api_key_is_credentials_rejected_403(fake_synerise, account):
    with pytest.raises(CredentialsRejected) as info:
        SyneriseClient(api_key="not-the-key").login(email="ann@example.com", password=PASSWORD)
    assert info.value.status == 403
    assert info.value.message == "Invalid API key."


def test_missing_fields_is_bad_request_with_field_errors(client, fake_synerise):
    with pytest.raises(BadRequest) as info:
        client.login(identity_provider="SYNERISE")
    exc = info.value
    assert exc.status == 400
    assert exc.message == "Validation failed"
    assert {e.field for e in exc.field_errors} == {"email", "password"}
    assert all(isinstance(e, FieldErrorDetail) and e.message for e in exc.field_errors)


def test_field_errors_never_keep_the_rejected_value(client, fake_synerise):
    fake_synerise.inject(
        status=400,
        body={"status": 400, "error": "Bad Request", "message": "Validation failed",
              "errorCode": "SAUTH-1",
              "errors": [{"code": 7, "field": "password", "message": "too weak",
                          "rejectedValue": "hunter2"}]},
    )
    with pytest.raises(BadRequest) as info:
        client.login(email="x@example.com", password="hunter2")
    assert info.value.error_code == "SAUTH-1"
    assert info.value.error == "Bad Request"
    assert info.value.field_errors == [
        FieldErrorDetail(field="password", message="too weak", code=7)
    ]
    assert "hunter2" not in repr(info.value.__dict__)


@pytest.mark.parametrize("status", [404, 405, 409, 412, 422])
def test_other_4xx_is_bad_request(client, fake_synerise, status):
    fake_synerise.inject(status=status)
    with pytest.raises(BadRequest) as info:
        client.login(email="ann@example.com", password=PASSWORD)
    assert info.value.status == status
    assert not isinstance(info.value, CredentialsRejected)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), ("999999", 300.0), ("-5", None), ("banana", None),
     ("1.5", None), (None, None)],
)
def test_429_retry_after_variants(client, fake_synerise, header, expected):
    fake_synerise.inject(status=429, retry_after=header)
    with pytest.raises(RateLimited) as info:
        client.login(email="ann@example.com", password=PASSWORD)
    assert info.value.status == 429
    assert info.value.retry_after == expected


def test_429_retry_after_http_date(client, fake_synerise):
    when = datetime.now(timezone.utc) + timedelta(seconds=90)
    fake_synerise.inject(status=429, retry_after=format_datetime(when, usegmt=True))
    with pytest.raises(RateLimited) as info:
        client.login(email="ann@example.com", password=PASSWORD)
    assert 85 <= info.value.retry_after <= 91


def test_429_retry_after_is_capped_by_setting(settings, client, fake_synerise):
    configure(settings, RETRY_AFTER_MAX=60)
    fake_synerise.inject(status=429, retry_after="120")
    with pytest.raises(RateLimited) as info:
        client.login(email="ann@example.com", password=PASSWORD)
    assert info.value.retry_after == 60.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_unavailable_after_exactly_one_call(client, account, fake_synerise, status):
    fake_synerise.inject(status=status)
    with pytest.raises(SyneriseUnavailable) as info:
        login(client)
    assert info.value.status == status
    assert info.value.retry_after is None
    assert fake_synerise.count(path_contains="login") == 1  # a POST is never retried


def test_503_retry_after_is_parsed(client, fake_synerise):
    fake_synerise.inject(status=503, retry_after="30")
    with pytest.raises(SyneriseUnavailable) as info:
        login(client)
    assert info.value.retry_after == 30.0


def test_5xx_with_html_body_is_still_unavailable(client, fake_synerise):
    fake_synerise.inject(status=502, body="<html>Bad gateway</html>",
                         headers={"Content-Type": "text/html"})
    with pytest.raises(SyneriseUnavailable) as info:
        login(client)
    assert info.value.status == 502
    assert info.value.message == SyneriseUnavailable.default_message


# --------------------------------------------------------------------------- transport faults


@pytest.mark.timing
def test_read_timeout_is_unavailable_and_not_retried(settings, client, account, fake_synerise):
    configure(settings, TIMEOUT=(1.0, 0.3))
    fake_synerise.inject(fault="latency", delay=4.0)
    started = time.monotonic()
    with pytest.raises(SyneriseUnavailable) as info:
        login(client)
    assert time.monotonic() - started < 2.5  # the 0.3 s read timeout, not the 4 s answer
    assert info.value.status is None
    assert "in time" in info.value.message
    assert fake_synerise.count(path_contains="login") == 1


@pytest.mark.timing
def test_trickled_body_hits_the_total_deadline(settings, client, account, fake_synerise):
    configure(settings, TIMEOUT=(1.0, 5.0), TOTAL_TIMEOUT=0.8)
    fake_synerise.inject(fault="slow_body", delay=0.1)
    started = time.monotonic()
    with pytest.raises(SyneriseUnavailable) as info:
        login(client)
    elapsed = time.monotonic() - started
    # The 0.8 s deadline (never early), not the full body at a byte every 0.1 s (tens of
    # seconds for a token of hundreds of bytes).
    assert 0.8 <= elapsed < 10.0
    assert info.value.status == 200
    assert "deadline" in info.value.message


@pytest.mark.timing
def test_refused_connection_is_unavailable(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = SyneriseClient(base_url=f"http://127.0.0.1:{port}", api_key="k")
    started = time.monotonic()
    with pytest.raises(SyneriseUnavailable) as info:
        client.login(email="ann@example.com", password=PASSWORD)
    assert time.monotonic() - started < 3.0  # refused at once, not a timeout
    assert info.value.status is None
    assert info.value.message == "Could not reach Synerise."


@pytest.mark.timing
def test_connect_timeout_is_retried_exactly_once(caplog):
    """A listener whose accept queue is full drops our SYN: the connect phase times out,
    is retried once (two attempts of 0.3 s), then fails. urllib3 logs each retry."""
    caplog.set_level(logging.WARNING, "urllib3.connectionpool")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        client = SyneriseClient(base_url=f"http://127.0.0.1:{port}", api_key="k",
                                timeout=(0.3, 1.0))
        started = time.monotonic()
        try:
            with pytest.raises(SyneriseUnavailable) as info:
                client.login(email="ann@example.com", password=PASSWORD)
        finally:
            for filler in fillers:
                filler.close()
    elapsed = time.monotonic() - started
    retries = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert len(retries) == 1, [r.getMessage() for r in retries]
    assert elapsed >= 0.55  # two whole attempts of 0.3 s
    assert info.value.status is None
    assert info.value.message == "Timed out connecting to Synerise."


def test_connection_reset_mid_body_is_unavailable(client, account, fake_synerise):
    fake_synerise.inject(fault="reset")
    with pytest.raises(SyneriseUnavailable) as info:
        login(client)
    assert info.value.status == 200
    assert "broke" in info.value.message
    assert fake_synerise.count(path_contains="login") == 1


def test_truncated_body_is_unavailable(client, account, fake_synerise):
    fake_synerise.inject(fault="truncated")
    with pytest.raises(SyneriseUnavailable) as info:
        login(client)
    assert info.value.status == 200
    # the next call works over a new connection
    assert login(client).token


def test_garbage_body_is_bad_response(client, account, fake_synerise):
    fake_synerise.inject(fault="garbage")
    with pytest.raises(BadResponse) as info:
        login(client)
    assert info.value.status == 200
    assert info.value.message == "Synerise's answer is not valid JSON."


def test_html_200_is_bad_response(client, account, fake_synerise):
    fake_synerise.inject(fault="html")
    with pytest.raises(BadResponse) as info:
        login(client)
    assert info.value.status == 200
    assert info.value.message == "Synerise's answer is not JSON."


def test_empty_200_is_bad_response(client, account, fake_synerise):
    fake_synerise.inject(fault="empty")
    with pytest.raises(BadResponse) as info:
        login(client)
    assert info.value.status == 200


def test_redirect_is_not_followed(client, account, fake_synerise):
    fake_synerise.inject(fault="redirect")
    with pytest.raises(BadResponse) as info:
        login(client)
    assert info.value.status == 302
    assert "redirect" in info.value.message
    assert fake_synerise.count() == 1


def test_json_without_token_is_bad_response(client, account, fake_synerise):
    fake_synerise.inject(fault="bad_json_shape")
    with pytest.raises(BadResponse) as info:
        login(client)
    assert info.value.message == "Synerise's answer has no usable token."


@pytest.mark.parametrize(
    "body",
    [
        {"token": 123},
        {"token": ""},
        {"token": "has spaces in it"},
        {"token": "a.b.c", "expiration": "1700000000"},
        {"token": "a.b.c", "expiration": 1.5e9},
        {"token": "a.b.c", "expiration": True},
        {"token": "a.b.c", "expiration": 10**12},
        {"token": "a.b.c", "created": -1},
        {"token": "a.b.c", "realm": 5},
        [{"token": "a.b.c"}],
        '{"token": "a.b.c", "token": "d.e.f"}',
        '{"token": "a.b.c", "expiration": NaN}',
        '{"token": "a.b.c"',
        "[" * 5000 + "]" * 5000,
    ],
)
def test_wrong_shapes_are_bad_response(client, fake_synerise, body):
    fake_synerise.inject(status=200, body=body)
    with pytest.raises(BadResponse) as info:
        login(client)
    assert info.value.status == 200


def test_oversized_body_is_bad_response(settings, client, fake_synerise):
    configure(settings, MAX_RESPONSE_BYTES=4096)
    fake_synerise.inject(status=200, body={"token": "a.b.c", "padding": "x" * 10_000})
    with pytest.raises(BadResponse) as info:
        login(client)
    assert "MAX_RESPONSE_BYTES" in info.value.message


def test_oversized_error_body_keeps_the_status_verdict(settings, client, fake_synerise):
    configure(settings, MAX_RESPONSE_BYTES=1024)
    fake_synerise.inject(status=401, body={"message": "no", "padding": "x" * 10_000})
    with pytest.raises(CredentialsRejected) as info:
        login(client)
    assert info.value.status == 401


def test_minimal_token_answer_is_accepted(client, fake_synerise):
    fake_synerise.inject(status=200, body={"token": "opaque-token_123~+/="})
    result = login(client)
    assert result.token == "opaque-token_123~+/="
    assert result.expiration is None and result.created is None and result.realm is None


# --------------------------------------------------------------------------- sessions


def test_32_concurrent_calls_get_their_own_answers(settings, fake_synerise):
    configure(settings, REFRESH_CONCURRENCY=8)
    accounts = [
        fake_synerise.add_client(email=f"user{i}@example.com", password=f"pw-{i}")
        for i in range(32)
    ]
    client = SyneriseClient()
    sessions: dict[str, int] = {}
    lock = threading.Lock()

    def work(index: int) -> tuple[str, str, str]:
        with lock:
            sessions[threading.current_thread().name] = id(get_session())
        result = client.login(email=f"user{index}@example.com", password=f"pw-{index}")
        refreshed = client.refresh(result.token)
        info = client.personal_information(refreshed.token)
        return str(unverified(refreshed.token)["clId"]), str(info["clientId"]), info["email"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(work, range(32)))

    for index, (token_client, info_client, email) in enumerate(answers):
        assert token_client == accounts[index].client_id
        assert info_client == accounts[index].client_id
        assert email == f"user{index}@example.com"
    assert len(set(sessions.values())) == len(sessions) > 1
    assert fake_synerise.count() == 96


def test_session_is_reused_within_a_thread(client, account, fake_synerise):
    assert get_session() is get_session()
    login(client)
    login(client)
    peers = {r.peer for r in fake_synerise.requests}
    assert len(peers) == 1  # one kept-alive pooled connection


def test_session_retries_only_the_connect_phase_and_pools_for_concurrency(settings):
    configure(settings, REFRESH_CONCURRENCY=12)
    close_session()
    adapter = get_session().get_adapter("https://api.synerise.com")
    retry = adapter.max_retries
    assert (retry.connect, retry.read, retry.status, retry.redirect, retry.other) == (
        1, False, 0, 0, 0)
    assert not retry.status_forcelist
    assert adapter._pool_maxsize == 12
    assert get_session().headers["User-Agent"] == f"django-synerise/{__version__}"
    close_session()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_session_is_recreated_after_fork():
    parent = get_session()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0 if get_session() is not parent and get_session() is get_session() else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert get_session() is parent


# --------------------------------------------------------------------------- Retry-After


def test_parse_retry_after_unit():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after("120", cap=300) == 120.0
    assert parse_retry_after(" 7 ", cap=300) == 7.0
    assert parse_retry_after("999999999", cap=300) == 300.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", cap=300, now=now) == 60.0
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", cap=300, now=now) == 0.0
    for bad in ("-5", "banana", "", "1e3", "\u0661\u0662", "x" * 100, None):
        assert parse_retry_after(bad, cap=300) is None


# --------------------------------------------------------------------------- transport route


class _ForwardProxy:
    """A plain-HTTP forward proxy on loopback that records each request line it relays."""

    def __init__(self) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        seen: list[str] = []
        self.seen = seen

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002
                pass

            def _relay(self) -> None:
                seen.append(f"{self.command} {self.path}")
                target = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
                upstream.request(self.command, target.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forward_proxy():
    proxy = _ForwardProxy()
    yield proxy
    proxy.close()


def test_calls_go_through_the_proxy_the_environment_names(
    client, account, fake_synerise, forward_proxy, monkeypatch
):
    """``HTTP_PROXY`` is honoured as requests honours it: the request line carries the whole
    URL, and the answer comes back through the proxy."""
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    close_session()
    result = login(client)
    assert str(unverified(result.token)["clId"]) == account.client_id
    path = "/sauth/v3/auth/login/client"
    assert forward_proxy.seen == [f"POST {fake_synerise.url}{path}"]
    assert [r.path for r in fake_synerise.requests] == [path]


def test_the_environment_is_read_when_the_session_is_made(
    client, account, fake_synerise, forward_proxy, monkeypatch
):
    """Proxy variables are resolved once per session and base URL, not on every call: a
    change takes effect with the next session (``close_session()``, a new thread or
    process)."""
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    close_session()
    login(client)
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    login(client)
    assert forward_proxy.seen == []  # the session's route was resolved without a proxy
    close_session()
    login(client)
    assert len(forward_proxy.seen) == 1
    assert fake_synerise.count() == 3


def test_a_closed_pool_is_replaced_not_used(client, account, fake_synerise):
    """A route whose pool was closed (the adapter's pool manager evicts and closes pools) is
    resolved again on the next call instead of failing."""
    login(client)
    for adapter in get_session().adapters.values():
        adapter.poolmanager.clear()  # closes every pool, as an eviction does
    result = login(client)
    assert str(unverified(result.token)["clId"]) == account.client_id


def test_frozen_client_reads_the_settings_once(settings, account, fake_synerise):
    """A refresh batch's calls share one reading of the settings: a frozen copy keeps what it
    read (its class too), while the live client follows the settings."""

    class Custom(SyneriseClient):
        pass

    live = Custom()
    frozen = live.frozen()
    assert type(frozen) is Custom and frozen.breaker is live.breaker
    configure(settings, BASE_URL="http://127.0.0.1:9", API_KEY="another-key")
    assert frozen.base_url == fake_synerise.url and frozen.api_key == fake_synerise.api_key
    assert login(frozen).token  # still talks to the fake
    assert live.base_url == "http://127.0.0.1:9"


def test_frozen_client_without_an_api_key_fails_per_call_as_before(settings, fake_synerise):
    configure(settings, API_KEY="")
    client = SyneriseClient()
    frozen = client.frozen()
    with pytest.raises(SyneriseConfigurationError):
        frozen.refresh("a.b.c")
    configure(settings, API_KEY=fake_synerise.api_key)
    assert frozen.api_key == fake_synerise.api_key  # read live, like the client it copies
