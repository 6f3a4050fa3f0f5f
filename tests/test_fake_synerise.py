"""FakeSynerise's own behaviour, exercised over real HTTP with plain ``requests``."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests

from django_synerise.testing import FakeSynerise, RecordedRequest
from django_synerise.testing.runner import serve

API_KEY = "fake-api-key"
ROOT = Path(__file__).resolve().parent.parent
SOCIAL = ["GOOGLE", "APPLE", "FACEBOOK", "OAUTH"]


@pytest.fixture(scope="module")
def fake():
    with FakeSynerise() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset_faults()
    fake.clear_requests()
    fake.latency = 0.0
    fake.token_lifetime = 3600
    fake.on_request = None
    fake.on_response = None
    yield
    fake.reset_faults()
    fake.on_request = None
    fake.on_response = None


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


_counter = iter(range(10**9))


def unique_email() -> str:
    return f"user{next(_counter)}-{time.monotonic_ns()}@example.com"


def login(http, fake, version="v3", **body):
    payload = {"apiKey": API_KEY, "identityProvider": "SYNERISE", **body}
    return http.post(f"{fake.url}/sauth/{version}/auth/login/client", json=payload, timeout=5)


def refresh(http, fake, token, version="v3", api_key=API_KEY):
    return http.post(
        f"{fake.url}/sauth/{version}/auth/refresh/client",
        json={"apiKey": api_key},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


def decode(fake, token):
    return jwt.decode(token, fake.public_key_pem, algorithms=["RS512"], issuer="Synerise", leeway=0)


def assert_spring_error(response, status, path_suffix):
    assert response.status_code == status
    body = response.json()
    assert body["status"] == status
    assert body["path"].endswith(path_suffix)
    assert set(body) >= {"status", "error", "message", "path", "timestamp", "errors"}
    return body


# -- login -----------------------------------------------------------------------------------


def test_email_password_login_returns_signed_token_with_documented_claims(fake, http):
    email = unique_email()
    client = fake.add_client(email=email, password="pw", first_name="Ann", custom_id=None)
    response = login(http, fake, email=email, password="pw")
    assert response.status_code == 200
    body = response.json()
    assert body["realm"] == "client"
    assert body["origin"] == "SYNERISE"
    assert body["customId"] is None
    header = jwt.get_unverified_header(body["token"])
    assert header == {"alg": "RS512", "typ": "JWT"}
    public_pem = http.get(f"{fake.url}/v4/public.pem", timeout=5).text
    claims = jwt.decode(body["token"], public_pem, algorithms=["RS512"], issuer="Synerise")
    assert claims["clId"] == int(client.client_id)
    assert claims["eml"] == email
    assert claims["rlm"] == "client"
    assert claims["origin"] == "SYNERISE"
    assert claims["uuid"] == client.uuid
    assert claims["bpi"] == 1234
    assert claims["exp"] - claims["iat"] == 3600
    assert body["expiration"] == claims["exp"]
    assert body["created"] == claims["ctd"]
    assert abs(claims["ctd"] / 1000 - time.time()) < 5


def test_custom_id_login_and_cid_claim(fake, http):
    fake.add_client(custom_id="cust-42", password="secret")
    response = login(http, fake, customId="cust-42", password="secret")
    assert response.status_code == 200
    assert response.json()["customId"] == "cust-42"
    assert decode(fake, response.json()["token"])["cId"] == "cust-42"


def test_email_lookup_is_case_insensitive(fake, http):
    email = unique_email()
    fake.add_client(email=email, password="pw")
    assert login(http, fake, email=email.upper(), password="pw").status_code == 200


@pytest.mark.parametrize(
    ("email_known", "password"), [(True, "wrong"), (False, "pw")], ids=["wrong-pw", "unknown"]
)
def test_bad_credentials_are_401_and_synerise_never_registers(fake, http, email_known, password):
    email = unique_email()
    if email_known:
        fake.add_client(email=email, password="pw")
    before = len(fake.clients)
    response = login(http, fake, email=email, password=password)
    body = assert_spring_error(response, 401, "/sauth/v3/auth/login/client")
    assert body["error"] == "Unauthorized"
    assert len(fake.clients) == before


def test_missing_fields_give_400_with_field_errors(fake, http):
    response = http.post(f"{fake.url}/sauth/v3/auth/login/client", json={}, timeout=5)
    body = assert_spring_error(response, 400, "/auth/login/client")
    assert {e["field"] for e in body["errors"]} == {"apiKey", "identityProvider"}
    response = login(http, fake, email="x@example.com")
    assert {e["field"] for e in assert_spring_error(response, 400, "client")["errors"]} == {
        "password"
    }
    response = login(http, fake, identityProvider="MYSPACE", email="x@example.com", password="p")
    assert assert_spring_error(response, 400, "client")["errors"][0]["field"] == "identityProvider"
    response = http.post(
        f"{fake.url}/sauth/v3/auth/login/client",
        data=b"not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert_spring_error(response, 400, "client")


def test_wrong_api_key_is_403_everywhere(fake, http):
    email = unique_email()
    fake.add_client(email=email, password="pw")
    response = login(http, fake, email=email, password="pw", apiKey="nope")
    assert_spring_error(response, 403, "/auth/login/client")
    token = login(http, fake, email=email, password="pw").json()["token"]
    assert_spring_error(refresh(http, fake, token, api_key="nope"), 403, "/auth/refresh/client")
    response = http.post(
        f"{fake.url}/sauth/v3/auth/login/client/anonymous",
        json={"apiKey": "nope", "uuid": "u-1"},
        timeout=5,
    )
    assert_spring_error(response, 403, "/anonymous")


@pytest.mark.parametrize("provider", SOCIAL)
def test_social_login_registers_on_first_login_then_reuses_client(fake, http, provider):
    subject = f"{provider}-{time.monotonic_ns()}"
    token = fake.provider_token(provider, subject=subject, email=f"{subject}@mail.test")
    assert fake.client_for(provider, subject) is None
    first = login(http, fake, identityProvider=provider, identityProviderToken=token, uuid="u-9")
    assert first.status_code == 200
    client = fake.client_for(provider, subject)
    assert client is not None and client.uuid == "u-9"
    assert first.json()["origin"] == provider
    claims = decode(fake, first.json()["token"])
    assert claims["origin"] == provider
    assert claims["clId"] == int(client.client_id)
    assert claims["eml"] == f"{subject}@mail.test"
    again = fake.provider_token(provider, subject=subject)
    second = login(http, fake, identityProvider=provider, identityProviderToken=again)
    assert decode(fake, second.json()["token"])["clId"] == int(client.client_id)


@pytest.mark.parametrize("provider", SOCIAL)
def test_provider_token_is_rejected_by_other_providers(fake, http, provider):
    token = fake.provider_token(provider, subject=f"s-{time.monotonic_ns()}")
    for other in SOCIAL:
        if other == provider:
            continue
        response = login(http, fake, identityProvider=other, identityProviderToken=token)
        assert_spring_error(response, 401, "/auth/login/client")
    response = login(http, fake, identityProvider=provider, identityProviderToken="made-up")
    assert_spring_error(response, 401, "/auth/login/client")
    response = login(http, fake, identityProvider=provider)
    body = assert_spring_error(response, 400, "/auth/login/client")
    assert body["errors"][0]["field"] == "identityProviderToken"


def test_conditional_login_statuses_and_never_registers(fake, http):
    url = f"{fake.url}/sauth/v3/auth/login/client/conditional"
    email = unique_email()
    fake.add_client(email=email, password="pw")
    body = {"apiKey": API_KEY, "identityProvider": "SYNERISE", "email": email, "password": "pw"}
    ok = http.post(url, json=body, timeout=5).json()
    assert ok["status"] == "SUCCESS" and ok["conditions"] == []
    assert decode(fake, ok["token"])["eml"] == email

    subject = f"new-{time.monotonic_ns()}"
    token = fake.provider_token("OAUTH", subject=subject)
    social = {"apiKey": API_KEY, "identityProvider": "OAUTH", "identityProviderToken": token}
    response = http.post(url, json=social, timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "REGISTRATION_REQUIRED", "conditions": []}
    assert fake.client_for("OAUTH", subject) is None

    inactive = unique_email()
    fake.add_client(email=inactive, password="pw", activated=False)
    body = {**body, "email": inactive}
    response = http.post(url, json=body, timeout=5)
    assert response.json()["status"] == "ACTIVATION_REQUIRED"
    assert "token" not in response.json()
    assert_spring_error(login(http, fake, email=inactive, password="pw"), 403, "/login/client")
    body["password"] = "bad"
    assert_spring_error(http.post(url, json=body, timeout=5), 401, "/conditional")


def test_anonymous_login(fake, http):
    url = f"{fake.url}/sauth/v3/auth/login/client/anonymous"
    response = http.post(url, json={"apiKey": API_KEY, "uuid": "anon-1"}, timeout=5)
    assert response.status_code == 200
    token = response.json()["token"]
    claims = decode(fake, token)
    assert claims["rlm"] == "anonymous_client"
    assert claims["origin"] == "ANONYMOUS"
    assert claims["uuid"] == "anon-1"
    assert "eml" not in claims
    again = http.post(url, json={"apiKey": API_KEY, "uuid": "anon-1"}, timeout=5).json()
    assert decode(fake, again["token"])["clId"] == claims["clId"]
    assert refresh(http, fake, token).json()["realm"] == "anonymous_client"
    response = http.get(
        f"{fake.url}/v4/my-account/personal-information",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert_spring_error(response, 403, "/personal-information")
    missing = http.post(url, json={"apiKey": API_KEY}, timeout=5)
    assert assert_spring_error(missing, 400, "/anonymous")["errors"][0]["field"] == "uuid"


# -- refresh ----------------------------------------------------------------------------------


def _logged_in(fake, http, version="v3"):
    email = unique_email()
    client = fake.add_client(email=email, password="pw")
    response = login(http, fake, version=version, email=email, password="pw")
    assert response.status_code == 200
    return client, response.json()["token"]


def test_refresh_returns_new_token_and_previous_stays_valid(fake, http):
    client, token = _logged_in(fake, http)
    response = refresh(http, fake, token)
    assert response.status_code == 200
    new = response.json()["token"]
    assert new != token
    assert decode(fake, new)["clId"] == int(client.client_id)
    assert refresh(http, fake, token).status_code == 200
    assert refresh(http, fake, new).status_code == 200
    request = fake.requests[-1]
    assert request.bearer == new
    assert request.json == {"apiKey": API_KEY}


def test_refresh_of_expired_token_is_401_token_expired(fake, http):
    client, _ = _logged_in(fake, http)
    expired = fake.issue_token(client.client_id, lifetime=-5)
    body = assert_spring_error(refresh(http, fake, expired), 401, "/auth/refresh/client")
    assert body["error"] == "Unauthorized"
    assert body["message"] == "Token expired."


@pytest.mark.timing
def test_short_token_lifetime_expires_for_real(fake, http):
    fake.token_lifetime = 1
    _, token = _logged_in(fake, http)
    # Read without checking exp: a loaded machine may take more than the second it lives.
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 1
    time.sleep(1.1)
    assert refresh(http, fake, token).json()["message"] == "Token expired."


def test_expire_tokens_and_revoke_client(fake, http):
    client, token = _logged_in(fake, http)
    other_client, other = _logged_in(fake, http)
    assert fake.expire_tokens(client.client_id) >= 1
    assert refresh(http, fake, token).json()["message"] == "Token expired."
    assert refresh(http, fake, other).status_code == 200
    fake.revoke_client(other_client.client_id)
    assert_spring_error(refresh(http, fake, other), 401, "/refresh/client")
    assert fake.token_info(other)["valid"] is False
    fresh = login(http, fake, email=other_client.email, password="pw").json()["token"]
    assert refresh(http, fake, fresh).status_code == 200


def test_refresh_rejects_unknown_tampered_and_missing_tokens(fake, http):
    _, token = _logged_in(fake, http)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    for bad in (tampered, "not-a-token"):
        assert_spring_error(refresh(http, fake, bad), 401, "/refresh/client")
    with FakeSynerise() as other:
        foreign = other.issue_token(other.add_client(email="o@example.com", password="p").client_id)
    assert_spring_error(refresh(http, fake, foreign), 401, "/refresh/client")
    response = http.post(
        f"{fake.url}/sauth/v3/auth/refresh/client", json={"apiKey": API_KEY}, timeout=5
    )
    assert_spring_error(response, 401, "/refresh/client")
    response = http.post(
        f"{fake.url}/sauth/v3/auth/refresh/client",
        json={},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert assert_spring_error(response, 400, "/refresh/client")["errors"][0]["field"] == "apiKey"


def test_v2_paths(fake, http):
    _, token = _logged_in(fake, http, version="v2")
    response = refresh(http, fake, token, version="v2")
    assert response.status_code == 200
    assert fake.count("/sauth/v2/") == 2
    assert fake.count("/sauth/v3/") == 0
    assert_spring_error(http.post(f"{fake.url}/sauth/v1/auth/login/client", timeout=5), 404, "")
    assert_spring_error(
        http.get(f"{fake.url}/sauth/v2/auth/login/client", timeout=5), 405, "/login/client"
    )


def test_personal_information(fake, http):
    email = unique_email()
    client = fake.add_client(email=email, password="pw", first_name="Ann", last_name="Lee")
    token = login(http, fake, email=email, password="pw").json()["token"]
    response = http.get(
        f"{fake.url}/v4/my-account/personal-information",
        headers={"Authorization": f"Bearer {token}", "Api-Version": "4.4"},
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["clientId"] == int(client.client_id)
    assert (body["email"], body["firstName"], body["lastName"]) == (email, "Ann", "Lee")
    assert body["uuid"] == client.uuid
    response = http.get(f"{fake.url}/v4/my-account/personal-information", timeout=5)
    assert_spring_error(response, 401, "/personal-information")


def test_public_key_is_pem_and_business_profile_id_configurable(http):
    with FakeSynerise(business_profile_id="abc", token_lifetime=120) as fake:
        response = http.get(f"{fake.url}/v4/public.pem", timeout=5)
        assert response.status_code == 200
        assert response.text.startswith("-----BEGIN PUBLIC KEY-----")
        assert response.text == fake.public_key_pem
        token = fake.issue_token(fake.add_client(email="b@example.com", password="p").client_id)
        claims = decode(fake, token)
        assert claims["bpi"] == "abc"
        assert claims["exp"] - claims["iat"] == 120
        with pytest.raises(jwt.InvalidAlgorithmError):
            jwt.decode(token, fake.public_key_pem, algorithms=["RS256"])


# -- faults -----------------------------------------------------------------------------------


def test_status_fault_with_retry_after_applies_times_then_clears(fake, http):
    client, token = _logged_in(fake, http)
    fake.inject(status=503, times=2, path="refresh", retry_after="120")
    for _ in range(2):
        response = refresh(http, fake, token)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "120"
        assert response.json()["error"] == "Service Unavailable"
    assert refresh(http, fake, token).status_code == 200
    assert fake.count("refresh") == 3


def test_status_fault_path_filter_custom_body_and_persistence(fake, http):
    client, token = _logged_in(fake, http)
    fake.inject(status=429, times=None, path="refresh", body={"custom": True}, headers={"X-A": "1"})
    assert login(http, fake, email=client.email, password="pw").status_code == 200
    for _ in range(3):
        response = refresh(http, fake, token)
        assert response.status_code == 429
        assert response.json() == {"custom": True}
        assert response.headers["X-A"] == "1"
    fake.reset_faults()
    assert refresh(http, fake, token).status_code == 200


def test_reset_fault_raises_connection_error(fake, http):
    _, token = _logged_in(fake, http)
    fake.inject(fault="reset", path="refresh")
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        refresh(http, fake, token)
    assert refresh(http, fake, token).status_code == 200


def test_truncated_body_raises(fake, http):
    _, token = _logged_in(fake, http)
    fake.inject(fault="truncated", path="refresh")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        refresh(http, fake, token)


def test_garbage_html_empty_and_bad_shape_bodies(fake, http):
    _, token = _logged_in(fake, http)
    fake.inject(fault="garbage", path="refresh")
    response = refresh(http, fake, token)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    fake.inject(fault="html", path="refresh")
    response = refresh(http, fake, token)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    fake.inject(fault="empty", path="refresh")
    response = refresh(http, fake, token)
    assert (response.status_code, response.content) == (200, b"")
    fake.inject(fault="bad_json_shape", path="refresh")
    response = refresh(http, fake, token)
    assert response.status_code == 200
    assert "token" not in response.json()


def test_redirect_points_to_another_host(fake, http):
    _, token = _logged_in(fake, http)
    fake.inject(fault="redirect", path="refresh")
    response = http.post(
        f"{fake.url}/sauth/v3/auth/refresh/client",
        json={"apiKey": API_KEY},
        headers={"Authorization": f"Bearer {token}"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302
    assert not response.headers["Location"].startswith(fake.url)
    assert response.headers["Location"].startswith("http://")


@pytest.mark.timing
def test_latency_fault_and_global_latency(fake, http):
    fake.inject(fault="latency", delay=0.3, path="public.pem")
    started = time.monotonic()
    assert http.get(f"{fake.url}/v4/public.pem", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.exceptions.ReadTimeout):
        fake.inject(fault="latency", delay=1.0, path="public.pem")
        http.get(f"{fake.url}/v4/public.pem", timeout=(1, 0.2))
    fake.latency = 0.1
    started = time.monotonic()
    http.get(f"{fake.url}/v4/public.pem", timeout=5)
    assert time.monotonic() - started >= 0.1


@pytest.mark.timing
def test_slow_body_trickles_one_byte_per_delay(fake, http):
    fake.inject(fault="slow_body", delay=0.15, path="public.pem")
    started = time.monotonic()
    with http.get(f"{fake.url}/v4/public.pem", stream=True, timeout=(1, 1)) as response:
        assert response.status_code == 200
        headers_at = time.monotonic() - started
        chunks = []
        for chunk in response.raw.stream(1, decode_content=False):
            chunks.append(chunk)
            if len(chunks) == 4:
                break
    elapsed = time.monotonic() - started
    assert b"".join(chunks) == b"----"
    assert elapsed >= 0.5
    # The headers came first, then the bytes one per delay: three gaps after the headers.
    assert elapsed - headers_at >= 3 * 0.15 - 0.01
    with pytest.raises(requests.exceptions.ConnectionError):
        fake.inject(fault="slow_body", delay=0.5, path="public.pem")
        requests.get(f"{fake.url}/v4/public.pem", timeout=(1, 0.2))


def test_inject_rejects_unknown_fault(fake):
    with pytest.raises(ValueError):
        fake.inject(fault="meteor")
    with pytest.raises(ValueError):
        fake.inject(status=500, times=0)


def test_on_request_hook_runs_before_response_and_errors_become_500(fake, http):
    seen: list[RecordedRequest] = []
    fake.on_request = seen.append
    http.get(f"{fake.url}/v4/public.pem", headers={"Api-Version": "4.4"}, timeout=5)
    assert seen[0].path == "/v4/public.pem"
    assert seen[0].headers["api-version"] == "4.4"

    def boom(request):
        raise RuntimeError("hook failed")

    fake.on_request = boom
    response = http.get(f"{fake.url}/v4/public.pem", timeout=5)
    assert response.status_code == 500
    assert isinstance(fake.hook_errors[-1], RuntimeError)


@pytest.mark.timing
def test_on_response_hook_runs_after_the_answer(fake, http):
    # Only this test's requests count: a request left over from another test on this fake
    # (still held by a latency fault) may be answered meanwhile.
    mark = f"hook-{time.monotonic_ns()}"
    answered: list[tuple[str, int]] = []

    def hook(request, status):
        if request.query == mark:
            answered.append((request.path, status))

    fake.on_response = hook
    try:
        fake.inject(status=502, path="public.pem")
        assert http.get(f"{fake.url}/v4/public.pem?{mark}", timeout=5).status_code == 502
        assert http.get(f"{fake.url}/v4/public.pem?{mark}", timeout=5).status_code == 200
        deadline = time.monotonic() + 30  # the hook runs after the client got its answer
        while len(answered) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        fake.on_response = None
    assert answered == [("/v4/public.pem", 502), ("/v4/public.pem", 200)]


def test_request_log_records_and_hides_token_in_repr(fake, http):
    _, token = _logged_in(fake, http)
    fake.clear_requests()
    refresh(http, fake, token)
    (recorded,) = fake.requests
    assert recorded.method == "POST"
    assert recorded.path == "/sauth/v3/auth/refresh/client"
    assert recorded.bearer == token
    assert recorded.json == {"apiKey": API_KEY}
    assert recorded.at <= time.time()
    assert token not in repr(recorded)
    assert API_KEY not in repr(recorded)
    assert fake.count("refresh") == 1
    assert fake.count("login") == 0
    assert fake.count(method="GET") == 0


def test_keep_alive_reuses_one_connection(fake, http):
    for _ in range(5):
        assert http.get(f"{fake.url}/v4/public.pem", timeout=5).status_code == 200
    body = b'{"apiKey": "fake-api-key", "uuid": "chunked-1"}'
    response = http.post(
        f"{fake.url}/sauth/v3/auth/login/client/anonymous",
        data=iter([body[:10], body[10:]]),  # a generator body is sent chunked
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 200
    assert fake.requests[-1].json["uuid"] == "chunked-1"
    assert "chunked" in fake.requests[-1].headers["Transfer-Encoding"]
    peers = {r.peer for r in fake.requests}
    assert len(peers) == 1


@pytest.mark.timing
def test_concurrent_refreshes(fake):
    client, token = _logged_in(fake, requests.Session())
    fake.latency = 0.1
    failures: list[int] = []

    def worker():
        with requests.Session() as session:
            current = token
            for _ in range(10):
                response = refresh(session, fake, current)
                if response.status_code != 200:
                    failures.append(response.status_code)
                    return
                current = response.json()["token"]

    threads = [threading.Thread(target=worker) for _ in range(16)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert failures == []
    assert fake.count("refresh") == 160
    # 16 parallel connections: 10 x 0.1 s each, where one at a time would take 16 s.
    assert time.monotonic() - started < 8


@pytest.mark.timing
def test_presign_hands_out_presigned_tokens(http):
    with FakeSynerise(presign=True, presign_depth=3) as fake:
        client = fake.add_client(email="p@example.com", password="pw")
        token = fake.issue_token(client.client_id)
        deadline = time.monotonic() + 30
        key = (client.client_id, "SYNERISE", "client")
        while len(fake._pools[key]) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        pooled = list(fake._pools[key])
        assert len(pooled) == 3
        response = refresh(http, fake, token)
        assert response.json()["token"] == pooled[0]
        assert decode(fake, pooled[0])["clId"] == int(client.client_id)
        fake.revoke_client(client.client_id)
        assert_spring_error(refresh(http, fake, pooled[1]), 401, "/refresh/client")
        signed = http.post(
            f"{fake.url}/__fake__/presign",
            json={"client_ids": [client.client_id], "count": 5},
            timeout=5,
        ).json()["signed"]
        assert signed >= 1
        assert len(fake._pools[key]) >= 5
        new = refresh(http, fake, fake.issue_token(client.client_id))
        assert refresh(http, fake, new.json()["token"]).status_code == 200


# -- control API -------------------------------------------------------------------------------


def test_control_api(fake, http):
    base = f"{fake.url}/__fake__"
    created = http.post(
        f"{base}/clients", json={"email": "ctl@example.com", "password": "pw"}, timeout=5
    )
    assert created.status_code == 201
    client_id = created.json()["client_id"]
    assert "password" not in created.json()
    assert login(http, fake, email="ctl@example.com", password="pw").status_code == 200

    token = http.post(
        f"{base}/provider-tokens", json={"provider": "GOOGLE", "subject": "ctl-g"}, timeout=5
    ).json()["identity_provider_token"]
    assert login(http, fake, identityProvider="GOOGLE", identityProviderToken=token).ok

    tokens = http.post(
        f"{base}/tokens", json={"client_id": client_id, "lifetime": 600, "count": 3}, timeout=5
    ).json()["tokens"]
    assert len(set(tokens)) == 3
    assert all(refresh(http, fake, t).status_code == 200 for t in tokens)
    claims = decode(fake, tokens[0])
    assert claims["exp"] - claims["iat"] == 600

    assert http.post(f"{base}/faults", json={"status": 502, "path": "refresh"}, timeout=5).ok
    assert refresh(http, fake, tokens[0]).status_code == 502
    http.post(f"{base}/faults", json={"fault": "empty", "times": None}, timeout=5)
    assert http.get(f"{base}/faults", timeout=5).json()["faults"][0]["fault"] == "empty"
    assert http.delete(f"{base}/faults", timeout=5).status_code == 204
    assert refresh(http, fake, tokens[0]).status_code == 200

    stats = http.get(f"{base}/stats", timeout=5).json()
    assert stats["requests"] == fake.count() > 0
    assert stats["by_path"]["POST /sauth/v3/auth/refresh/client"] == 5
    assert not any(r.path.startswith("/__fake__") for r in fake.requests)

    config = http.post(f"{base}/config", json={"token_lifetime": 90}, timeout=5).json()
    assert config["token_lifetime"] == fake.token_lifetime == 90
    assert http.post(f"{base}/revoke", json={"client_id": client_id}, timeout=5).ok
    assert refresh(http, fake, tokens[1]).status_code == 401

    assert http.post(f"{base}/reset", timeout=5).status_code == 204
    assert http.get(f"{base}/stats", timeout=5).json() == {"requests": 0, "by_path": {}}
    assert http.post(f"{base}/faults", json={"fault": "meteor"}, timeout=5).status_code == 400
    assert http.post(f"{base}/tokens", json={"client_id": "0"}, timeout=5).status_code == 400
    assert http.get(f"{base}/nothing", timeout=5).status_code == 404


# -- lifecycle, standalone, plugin -----------------------------------------------------------


def test_context_manager_frees_the_port_and_closes_connections():
    session = requests.Session()
    with FakeSynerise() as fake:
        port = fake.port
        assert session.get(f"{fake.url}/v4/public.pem", timeout=5).ok
    assert not fake.running
    fake.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v4/public.pem", timeout=2)
    with FakeSynerise(port=port) as again:
        assert again.port == port
        assert session.get(f"{again.url}/v4/public.pem", timeout=5).ok
    with pytest.raises(RuntimeError):
        _ = FakeSynerise().url


class _InterruptedOutput(io.StringIO):
    """Output whose first line naming the URL raises KeyboardInterrupt, as Ctrl-C does when it
    arrives while the server is still printing (a client may already have used the URL)."""

    def write(self, text: str) -> int:
        written = super().write(text)
        if "listening on" in text:
            raise KeyboardInterrupt
        return written


def test_ctrl_c_while_the_server_prints_its_address_still_stops_cleanly():
    out = _InterruptedOutput()
    try:
        serve(port=0, clients=[("ann@example.com", "pw")], stdout=out)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped serve() with a traceback")
    assert out.getvalue().endswith("Stopping.\n")
    url = out.getvalue().split("listening on ")[1].split()[0]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v4/public.pem", timeout=5)  # the server was stopped


def _read_url(process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if "listening on" in line:
            return line.rsplit(" ", 1)[-1].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError("server did not report its URL:\n" + "".join(seen))


@pytest.mark.timing
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "django_synerise.testing"],
        [sys.executable, "-m", "django", "synerise_fake_server", "--settings=tests.settings"],
    ],
    ids=["python-m", "manage-command"],
)
def test_standalone_server(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    pem_file = tmp_path / "public.pem"
    process = subprocess.Popen(
        [
            *command,
            "--port=0",
            "--api-key=K",
            "--token-lifetime=60",
            "--client=cli@example.com:pw",
            f"--public-key-file={pem_file}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C must reach the server even when this run was started with SIGINT ignored
        # (a background job of a shell without job control), which children inherit.
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads of ours are touched
    )
    try:
        url = _read_url(process)
        response = requests.post(
            f"{url}/sauth/v3/auth/login/client",
            json={
                "apiKey": "K",
                "identityProvider": "SYNERISE",
                "email": "cli@example.com",
                "password": "pw",
            },
            timeout=30,
        )
        assert response.status_code == 200
        claims = jwt.decode(response.json()["token"], pem_file.read_text(), algorithms=["RS512"])
        assert claims["exp"] - claims["iat"] == 60
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert "Stopping" in output


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_testing_kit_never_imports_django():
    code = (
        "import sys, django_synerise.testing, django_synerise.testing.__main__;"
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_plugin_fixture_points_settings_at_the_fake(fake_synerise, settings):
    from django_synerise.conf import synerise_settings

    assert settings.SYNERISE["BASE_URL"] == fake_synerise.url
    assert settings.SYNERISE["API_KEY"] == fake_synerise.api_key
    assert settings.SYNERISE["TOKEN_ENCRYPTION_KEYS"]  # other keys are kept
    assert fake_synerise.url == synerise_settings.BASE_URL
    response = requests.get(f"{synerise_settings.BASE_URL}/v4/public.pem", timeout=5)
    assert response.text == fake_synerise.public_key_pem
