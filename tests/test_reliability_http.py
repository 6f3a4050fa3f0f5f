"""Reliability: HTTP faults of Synerise (X1-X7, X10, X13) seen through login, refresh and status.

Every test talks to FakeSynerise over real HTTP on 127.0.0.1 with small timeouts, and checks
what the *database* holds afterwards: nothing half-stored, the old token kept while valid, the
row in the right status.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from django_synerise import services
from django_synerise.breaker import CLOSED, OPEN, get_breaker
from django_synerise.models import ClientToken, SyneriseAccount, TokenStatus
from django_synerise.services.refresh import claim_due_tokens, refresh_batch
from django_synerise.services.status import breaker_states, token_status_counts
from tests.fixtures_refresh import refresh_calls, seed_token
from tests.fixtures_services import fresh_breaker, synerise_settings  # noqa: F401
from tests.waiting import wait_for

LOGIN_URL = "/synerise/auth/login/"
PASSWORD = "correct horse battery staple"
User = get_user_model()

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake(fake_synerise: Any, settings: Any) -> Any:
    """The fake with short timeouts so that every fault resolves in well under a second."""
    synerise_settings(
        settings,
        TIMEOUT=(0.5, 0.4),
        TOTAL_TIMEOUT=1.0,
        REFRESH_CONCURRENCY=4,
        BREAKER_THRESHOLD=1000,
        RETRY_AFTER_MAX=300,
        LEASE_SECONDS=60,
    )
    cache.clear()  # login throttles
    fake_synerise.add_client(email="a@example.com", password=PASSWORD)
    fake_synerise.clear_requests()
    yield fake_synerise
    cache.clear()


def api_login(email: str = "a@example.com") -> Any:
    return APIClient().post(LOGIN_URL, {"email": email, "password": PASSWORD}, format="json")


def assert_nothing_stored_by_login() -> None:
    assert not User.objects.exists()
    assert not SyneriseAccount.objects.exists()
    assert not ClientToken.objects.exists()


def snapshot(row: ClientToken) -> tuple[str, int, Any]:
    stored = ClientToken.objects.get(pk=row.pk)
    return stored.encrypted_token, stored.version, stored.expires_at


#: Backoff base of the batches whose row is checked for a retry time still ahead: 5 to 10 s
#: away at the first attempt, far more than a loaded machine takes between two statements.
SLOW_RETRY = 10.0


def assert_untouched_but_retrying(
    row: ClientToken, before: tuple[str, int, Any], failures: int = 1
) -> None:
    """Transient failure: same ciphertext, version and expiry; active; no claim before its retry."""
    stored = ClientToken.objects.select_related("account").get(pk=row.pk)
    assert (stored.encrypted_token, stored.version, stored.expires_at) == before
    assert stored.status == TokenStatus.ACTIVE
    assert stored.get_token() == row.plaintext
    assert stored.failure_count == failures
    assert stored.lease_until is None
    assert stored.retry_at is not None and stored.retry_at > timezone.now()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManualClock:
    """A monotonic clock that moves only when the test adds to ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- X1 slow upstream


@pytest.mark.timing
def test_x1_slow_login_is_503_within_the_read_timeout_after_one_call(fake: Any) -> None:
    fake.inject(fault="latency", delay=3.0, path="login", times=None)
    started = time.monotonic()
    response = api_login()
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response["Retry-After"]
    assert elapsed < 2.5, elapsed  # read timeout 0.4 s, not the 3 s the upstream takes
    assert fake.count("login") == 1
    assert_nothing_stored_by_login()


@pytest.mark.timing
def test_x1_slow_refresh_is_transient_and_keeps_the_token(fake: Any) -> None:
    row = seed_token(fake)
    before = snapshot(row)
    fake.inject(fault="latency", delay=3.0, path="refresh", times=None)
    started = time.monotonic()
    report = refresh_batch(claim_due_tokens(), backoff=SLOW_RETRY)

    assert time.monotonic() - started < 2.5  # read timeout 0.4 s, not the 3 s upstream
    assert report.failed_transient == [row.pk]
    assert len(refresh_calls(fake)) == 1
    assert_untouched_but_retrying(row, before)
    assert ClientToken.objects.get(pk=row.pk).last_error == "synerise_unavailable"


# --------------------------------------------------------------------------- X2 trickle


@pytest.mark.timing
def test_x2_trickled_login_body_is_cut_by_the_total_deadline(fake: Any, settings: Any) -> None:
    """1 byte every 0.1 s never trips the 0.4 s read timeout; the 1 s deadline cuts it."""
    fake.inject(fault="slow_body", delay=0.1, path="login", times=None)
    started = time.monotonic()
    response = api_login()
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    # The 1 s deadline, not the body (hundreds of bytes at one every 0.1 s: tens of seconds).
    assert 0.9 <= elapsed < 10.0, elapsed
    assert fake.count("login") == 1
    assert_nothing_stored_by_login()


@pytest.mark.timing
def test_x2_trickled_refresh_body_is_cut_by_the_total_deadline(fake: Any) -> None:
    row = seed_token(fake)
    before = snapshot(row)
    fake.inject(fault="slow_body", delay=0.1, path="refresh", times=None)
    started = time.monotonic()
    report = refresh_batch(claim_due_tokens(), backoff=SLOW_RETRY)

    assert 0.9 <= time.monotonic() - started < 10.0  # the 1 s deadline, not the whole body
    assert report.failed_transient == [row.pk]
    assert_untouched_but_retrying(row, before)


# --------------------------------------------------------------------------- X4 refused


@pytest.mark.timing
def test_x4_refused_connection_fails_fast_everywhere(fake: Any, settings: Any) -> None:
    row = seed_token(fake, lifetime=600)  # inside REFRESH_MARGIN: get_valid_token refreshes
    before = snapshot(row)
    synerise_settings(settings, BASE_URL=f"http://127.0.0.1:{free_port()}")

    started = time.monotonic()
    response = api_login()
    assert response.status_code == 503
    assert services.get_valid_token(row.account.user) == row.plaintext  # still valid: served
    report = refresh_batch(claim_tokens_free(row))
    assert time.monotonic() - started < 5.0

    assert report.failed_transient == [row.pk]
    stored = ClientToken.objects.get(pk=row.pk)
    assert (stored.encrypted_token, stored.version) == before[:2]
    assert stored.status == TokenStatus.ACTIVE
    assert User.objects.count() == 1  # only the seeded user; the login stored nothing


# --------------------------------------------------------------------------- X12 DNS


@pytest.fixture
def unresolvable(monkeypatch: pytest.MonkeyPatch) -> str:
    """A host name the resolver cannot resolve (``.invalid`` is reserved for that, RFC 6761).

    The answer is injected at ``socket.getaddrinfo`` so the test never leaves the machine;
    every other name still goes to the real resolver, and the client sees the very
    ``socket.gaierror`` a real DNS failure raises.
    """
    real_getaddrinfo = socket.getaddrinfo
    host = "api.synerise.invalid"

    def getaddrinfo(name: Any, *args: Any, **kwargs: Any) -> Any:
        text = name.decode() if isinstance(name, bytes) else str(name)
        if text.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return host


def test_x12_dns_failure_is_transient_and_counted_by_the_breaker(
    fake: Any, settings: Any, unresolvable: str
) -> None:
    row = seed_token(fake, lifetime=600)  # inside REFRESH_MARGIN: get_valid_token refreshes
    before = snapshot(row)
    synerise_settings(
        settings, BASE_URL=f"http://{unresolvable}", BREAKER_THRESHOLD=3, BREAKER_RESET_TIMEOUT=30
    )

    response = api_login()
    assert response.status_code == 503
    assert response.json()["code"] == "synerise_unavailable"
    assert services.get_valid_token(row.account.user) == row.plaintext  # still valid: served
    report = refresh_batch(claim_tokens_free(row), backoff=SLOW_RETRY)
    assert report.failed_transient == [row.pk]

    assert_untouched_but_retrying(row, before, failures=2)  # get_valid_token's try, the batch's
    assert User.objects.count() == 1  # only the seeded user; the login stored nothing
    assert get_breaker().state == OPEN, "three DNS failures are three consecutive failures"
    assert fake.requests == []


def claim_tokens_free(row: ClientToken) -> Any:
    from django_synerise.services.refresh import claim_tokens

    ClientToken.objects.filter(pk=row.pk).update(lease_until=None, retry_at=None)
    return claim_tokens([row.pk])


# --------------------------------------------------------------------------- X5 reset


@pytest.mark.timing
def test_x5_reset_mid_body_stores_nothing_then_a_later_retry_succeeds(fake: Any) -> None:
    row = seed_token(fake)
    before = snapshot(row)
    fake.inject(fault="reset", path="refresh", times=1)
    # A retry 5 to 10 s away: far more than a loaded machine takes between two statements.
    report = refresh_batch(claim_due_tokens(), backoff=SLOW_RETRY)

    assert report.failed_transient == [row.pk]
    assert_untouched_but_retrying(row, before)
    retry_at = ClientToken.objects.get(pk=row.pk).retry_at
    assert not claim_due_tokens(), "leased until its retry time"

    claims: list[Any] = []
    wait_for(lambda: bool(claims.append(claim_due_tokens()) or claims[-1]), timeout=60,
             what="the retry time", interval=0.2)
    assert timezone.now() >= retry_at, "claimed again only once its retry time came"
    second = refresh_batch(claims[-1])
    assert second.refreshed == [row.pk]
    stored = ClientToken.objects.select_related("account").get(pk=row.pk)
    assert stored.version == before[1] + 1 and stored.failure_count == 0
    assert fake.token_info(stored.get_token())["valid"]
    assert len(refresh_calls(fake)) == 2


def test_x5_reset_mid_login_body_is_503_and_stores_nothing(fake: Any) -> None:
    fake.inject(fault="reset", path="login", times=1)
    response = api_login()
    assert response.status_code == 503
    assert fake.count("login") == 1
    assert_nothing_stored_by_login()


# --------------------------------------------------------------------------- X6 5xx


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_x6_login_5xx_is_503_after_exactly_one_call(fake: Any, status: int) -> None:
    fake.inject(status=status, path="login", times=None)
    response = api_login()
    assert response.status_code == 503
    assert response.json()["code"] == "synerise_unavailable"
    assert fake.count("login") == 1, "login is never retried"
    assert_nothing_stored_by_login()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_x6_refresh_5xx_retries_with_bounded_backoff(fake: Any, status: int) -> None:
    row = seed_token(fake)
    before = snapshot(row)
    fake.inject(status=status, path="refresh", times=None)
    attempt = 3
    report = refresh_batch(claim_due_tokens(), attempt=attempt, backoff=2.0)

    assert report.failed_transient == [row.pk]
    assert 0.2 <= report.retry_after <= 2.0 * 2**attempt
    assert len(refresh_calls(fake)) == 1, "no retry inside the batch"
    assert_untouched_but_retrying(row, before)


# --------------------------------------------------------------------------- X7 Retry-After


def _http_date(seconds_ahead: int) -> str:
    from email.utils import format_datetime

    return format_datetime(timezone.now() + timedelta(seconds=seconds_ahead), usegmt=True)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        pytest.param("120", 120, 121, id="seconds"),
        pytest.param(None, 195, 201, id="http-date"),  # 200 s ahead
        pytest.param("999999999", 300, 301, id="huge-capped"),
        # Ignored: the backoff applies (5 to 10 s at attempt 0 with a base of 10 s).
        pytest.param("-5", 5.0, 10.0, id="negative-ignored"),
        pytest.param("banana", 5.0, 10.0, id="garbage-ignored"),
    ],
)
def test_x7_retry_after_variants_on_refresh(
    fake: Any, header: str | None, low: float, high: float
) -> None:
    row = seed_token(fake)
    fake.inject(
        status=429,
        path="refresh",
        times=1,
        retry_after=header if header is not None else _http_date(200),
    )
    before = timezone.now()
    report = refresh_batch(claim_due_tokens(), attempt=0, backoff=10.0)

    assert report.failed_transient == [row.pk]
    assert low <= report.retry_after <= high, report.retry_after
    lease = ClientToken.objects.get(pk=row.pk).retry_at
    assert (
        before + timedelta(seconds=low - 1) <= lease <= timezone.now() + timedelta(seconds=high + 1)
    )
    assert not claim_due_tokens(), "no scheduler may claim it before Retry-After"


@pytest.mark.parametrize("header", ["120", "999999999", "-5", "banana"])
def test_x7_retry_after_variants_on_login_are_passed_on_capped(fake: Any, header: str) -> None:
    fake.inject(status=429, path="login", times=1, retry_after=header)
    response = api_login()
    assert response.status_code == 503
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 300
    if header == "120":
        assert retry_after == 120
    assert fake.count("login") == 1
    assert_nothing_stored_by_login()


# --------------------------------------------------------------------------- X10 malformed 200


@pytest.mark.parametrize(
    "fault", ["garbage", "html", "empty", "truncated", "bad_json_shape", "redirect"]
)
def test_x10_malformed_refresh_answers_store_nothing(fake: Any, fault: str) -> None:
    row = seed_token(fake)
    before = snapshot(row)
    fake.inject(fault=fault, path="refresh", times=1)
    report = refresh_batch(claim_due_tokens(), backoff=SLOW_RETRY)

    assert report.failed_transient == [row.pk]
    assert not report.refreshed
    assert_untouched_but_retrying(row, before)


@pytest.mark.parametrize("case", ["other-client", "expired", "too-long", "not-a-jwt"])
def test_x10_u3_refresh_token_failing_verification_is_not_stored(fake: Any, case: str) -> None:
    row = seed_token(fake)
    before = snapshot(row)
    other = fake.add_client(email="other@example.com", password="x")
    token = {
        "other-client": lambda: fake.issue_token(other.client_id),
        "expired": lambda: fake.issue_token(row.account.client_id, lifetime=-120),
        "too-long": lambda: fake.issue_token(row.account.client_id, lifetime=48 * 3600),
        "not-a-jwt": lambda: "opaque-token-without-dots",
    }[case]()
    fake.inject(
        status=200,
        path="refresh",
        times=1,
        body={
            "token": token,
            "expiration": int(time.time()) + 3600,
            "created": int(time.time() * 1000),
            "origin": "SYNERISE",
            "realm": "client",
        },
    )
    report = refresh_batch(claim_due_tokens())

    assert row.pk not in report.refreshed
    stored = ClientToken.objects.select_related("account").get(pk=row.pk)
    assert stored.get_token() == row.plaintext != token
    assert (stored.encrypted_token, stored.version) == before[:2]


@pytest.mark.parametrize("fault", ["garbage", "html", "empty", "bad_json_shape"])
def test_x10_malformed_login_answers_store_nothing(fake: Any, fault: str) -> None:
    fake.inject(fault=fault, path="login", times=1)
    response = api_login()
    assert response.status_code == 502
    assert response.json()["code"] == "synerise_bad_response"
    assert_nothing_stored_by_login()


# --------------------------------------------------------------------------- X13 breaker


def status_json() -> dict[str, Any]:
    out = io.StringIO()
    call_command("synerise_status", "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.timing
def test_x13_breaker_opens_blocks_100_calls_answers_503_then_a_probe_closes_it(
    fake: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    synerise_settings(settings, BREAKER_THRESHOLD=5, BREAKER_RESET_TIMEOUT=5)
    # The breaker's time moves only when the test says: a loaded machine cannot let the
    # reset timeout run out while the 100 calls are blocked.
    clock = ManualClock(time.monotonic())
    monkeypatch.setattr(get_breaker(), "_clock", clock)
    rows = [seed_token(fake, lifetime=600) for _ in range(5)]  # due and inside the margin
    fake.inject(fault="latency", delay=2.0, path="refresh", times=5)  # 5 timeouts

    report = refresh_batch(claim_due_tokens())
    assert sorted(report.failed_transient) == sorted(r.pk for r in rows)
    assert get_breaker().state == OPEN
    assert status_json()["breakers"][0]["state"] == OPEN
    # On a loaded machine the fake may start handling (and recording) a call that already
    # timed out only now: let it see all five before its log is cleared.
    wait_for(lambda: len(refresh_calls(fake)) == 5, timeout=30, what="the five timed-out calls")
    fake.clear_requests()

    started = time.monotonic()
    for i in range(100):  # users asking for their token while the circuit is open
        row = rows[i % len(rows)]
        assert services.get_valid_token(row.account.user) == row.plaintext
    response = api_login()
    elapsed = time.monotonic() - started
    assert fake.requests == [], "an open circuit sends nothing"
    assert response.status_code == 503 and 0 < int(response["Retry-After"]) <= 5
    # No call waited: 100 read timeouts of 0.4 s would take 40 s.
    assert elapsed < 30.0, elapsed

    ClientToken.objects.update(lease_until=None, retry_at=None)
    blocked = refresh_batch(claim_due_tokens())
    assert sorted(blocked.failed_transient) == sorted(r.pk for r in rows)
    assert fake.requests == []
    assert set(ClientToken.objects.values_list("status", "version")) == {(TokenStatus.ACTIVE, 1)}, (
        "nothing lost while open"
    )

    # From here on Synerise is healthy: timeouts no loaded machine reaches, so that the probe
    # and the refreshes after it cannot time out (the 0.4 s read timeout served the outage).
    synerise_settings(settings, TIMEOUT=(10, 30), TOTAL_TIMEOUT=60)
    retry_in = get_breaker().snapshot().retry_in
    assert retry_in is not None
    clock.now += retry_in  # reset timeout over: the next call is the half-open probe
    out = io.StringIO()
    call_command("synerise_status", "--probe", stdout=out)
    assert "probe: ok" in out.getvalue()
    assert f"breaker {fake.url}: closed" in out.getvalue()
    assert fake.count() == 1  # exactly the probe
    assert get_breaker().state == CLOSED

    ClientToken.objects.update(lease_until=None, retry_at=None)
    assert sorted(refresh_batch(claim_due_tokens()).refreshed) == sorted(r.pk for r in rows)


def test_status_command_and_services(fake: Any, settings: Any) -> None:
    seed_token(fake)
    seed_token(fake, due=False)
    seed_token(fake, status=TokenStatus.NEEDS_LOGIN)
    seed_token(fake, status=TokenStatus.REVOKED)
    seed_token(fake, lifetime=-30)  # expired but still active: missed
    with CaptureQueriesContext(connection) as queries:
        counts = token_status_counts()
    assert len(queries) == 2
    assert counts == {
        "active": 3,
        "refreshing": 0,
        "needs_login": 1,
        "revoked": 1,
        "total": 5,
        "due": 1,
        "expired_active": 1,
    }
    names = [b["name"] for b in breaker_states()]
    assert names[0] == fake.url

    out = io.StringIO()
    call_command("synerise_status", stdout=out)
    text = out.getvalue()
    assert f"breaker {fake.url}: closed (failures 0/1000" in text
    assert (
        "tokens: active=3 refreshing=0 needs_login=1 revoked=1 total=5 due=1 "
        "expired_active=1" in text
    )
    assert fake.requests == [], "no probe unless asked"

    synerise_settings(settings, BREAKER_THRESHOLD=1, BREAKER_RESET_TIMEOUT=60)
    fake.inject(status=503, path="public.pem", times=1)
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("synerise_status", "--probe", "--fail-on-open", stdout=out)
    assert info.value.code == 1
    assert "probe: failed (synerise_unavailable)" in out.getvalue()
    assert "next probe in 60 s" in out.getvalue()


# --------------------------------------------------------------------------- X11 TLS


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    *,
    issuer: tuple[Any, str] | None,
    san: Any,
    days: tuple[int, int],
    ca: bool = False,
) -> tuple[Any, bytes]:
    """Return ``(private key, PEM certificate)``; ``issuer`` is ``(key, name)`` or self-signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    signer, issuer_name = issuer if issuer is not None else (key, subject)
    now = timezone.now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=days[0]))
        .not_valid_after(now + timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    # The extensions Python 3.13's strict X.509 verification (VERIFY_X509_STRICT) requires.
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
    ).add_extension(
        x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    from cryptography.hazmat.primitives.serialization import Encoding

    return key, builder.sign(signer, hashes.SHA256()).public_bytes(Encoding.PEM)


class TlsFront(threading.Thread):
    """A TLS terminator on 127.0.0.1 in front of the (plain HTTP) fake: ``handshakes`` counts
    the connections whose TLS handshake succeeded."""

    def __init__(self, target_port: int, key: Any, cert_pem: bytes, tmp: Any) -> None:
        import ssl

        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        super().__init__(daemon=True)
        self.target_port = target_port
        cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import select

        conn.settimeout(5)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except OSError:  # ssl.SSLError included: the client refused our certificate
            conn.close()
            return
        self.handshakes += 1
        upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        try:
            while not self.stopping.is_set():
                readable, _, _ = select.select([tls, upstream], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is tls else tls).sendall(data)
        except OSError:
            return
        finally:
            tls.close()
            upstream.close()

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.join(2)


@pytest.mark.parametrize("case", ["valid", "self-signed", "expired", "wrong-host"])
def test_x11_tls_certificate_problems_are_hard_failures(
    fake: Any, settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Only a certificate for the host, valid now and signed by a trusted CA gets through; any
    other makes login 503 and refresh a transient failure, with nothing sent to Synerise."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ca_key, ca_pem = _certificate("Test CA", issuer=None, san=None, days=(-1, 30), ca=True)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    localhost = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    trusted = (ca_key, "Test CA")
    key, cert_pem = {
        "valid": lambda: _certificate("127.0.0.1", issuer=trusted, san=localhost, days=(-1, 30)),
        "self-signed": lambda: _certificate("127.0.0.1", issuer=None, san=localhost, days=(-1, 30)),
        "expired": lambda: _certificate("127.0.0.1", issuer=trusted, san=localhost, days=(-30, -1)),
        "wrong-host": lambda: _certificate(
            "api.example.com", issuer=trusted, san=x509.DNSName("api.example.com"), days=(-1, 30)
        ),
    }[case]()
    assert x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.PEM) == cert_pem
    front = TlsFront(fake.port, key, cert_pem, tmp_path)
    front.start()
    try:
        row = seed_token(fake)
        before = snapshot(row)
        synerise_settings(settings, BASE_URL=f"https://127.0.0.1:{front.port}")
        response = api_login()
        report = refresh_batch(claim_due_tokens())
    finally:
        front.stop()

    if case == "valid":  # the control: the same path works with a good certificate
        assert response.status_code == 200, response.content
        assert report.refreshed == [row.pk]
        assert front.handshakes >= 1
        return
    assert response.status_code == 503
    assert report.failed_transient == [row.pk]
    assert_untouched_but_retrying(row, before)
    assert front.handshakes == 0
    assert fake.requests == [], "no credential or token left over an unverified channel"
