"""Token verification: RS512 pinned, claims required, size capped, key fetched and cached."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from django_synerise.breaker import reset_breakers
from django_synerise.client import AuthResult, SyneriseClient
from django_synerise.exceptions import (
    BadResponse,
    SyneriseConfigurationError,
    SyneriseUnavailable,
    TokenVerificationError,
)
from django_synerise.verification import (
    REFETCH_COOLDOWN,
    TokenClaims,
    check_token_shape,
    claims_for,
    clear_public_key_cache,
    get_public_key,
    is_jws,
    pinned_algorithms,
    verify_token,
)

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


PEM = pem_of(KEY)
OTHER_PEM = pem_of(OTHER_KEY)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def payload(**overrides) -> dict:
    now = int(time.time())
    data = {
        "iss": "Synerise",
        "rlm": "client",
        "origin": "SYNERISE",
        "clId": 123456,
        "eml": "ann@example.com",
        "cId": "cust-1",
        "uuid": "uuid-1",
        "bpi": 1234,
        "ctd": now * 1000,
        "iat": now,
        "exp": now + 3600,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def mint(claims: dict | None = None, *, key=KEY, alg: str = "RS512", headers=None) -> str:
    return jwt.encode(claims if claims is not None else payload(), key, algorithm=alg,
                      headers=headers)


def raw_token(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def hmac_token(alg: str, secret: bytes) -> str:
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signing_input = ".".join(
        [b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()),
         b64(json.dumps(payload()).encode())]
    )
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def configure(settings, **values) -> None:
    settings.SYNERISE = {**settings.SYNERISE, **values}


@pytest.fixture(autouse=True)
def _clean():
    clear_public_key_cache()
    reset_breakers()
    yield
    clear_public_key_cache()
    reset_breakers()


@pytest.fixture
def pinned_key(settings):
    configure(settings, PUBLIC_KEY=PEM)


def reason_of(token, **kwargs) -> str:
    with pytest.raises(TokenVerificationError) as info:
        verify_token(token, **kwargs)
    return info.value.reason


# --------------------------------------------------------------------------- accepted


def test_valid_token_gives_typed_claims(pinned_key):
    now = int(time.time())
    claims = verify_token(mint(payload(iat=now, exp=now + 3600)))

    assert claims == TokenClaims(
        client_id="123456",
        email="ann@example.com",
        custom_id="cust-1",
        uuid="uuid-1",
        origin="SYNERISE",
        realm="client",
        business_profile_id="1234",
        issued_at=datetime.fromtimestamp(now, tz=timezone.utc),
        expires_at=datetime.fromtimestamp(now + 3600, tz=timezone.utc),
        verified=True,
    )
    assert not claims.is_anonymous


def test_anonymous_realm_is_anonymous(pinned_key):
    assert verify_token(mint(payload(rlm="anonymous_client"))).is_anonymous


def test_issued_at_falls_back_to_ctd(pinned_key):
    claims = verify_token(mint(payload(iat=None, ctd=1_700_000_000_500)))
    assert claims.issued_at == datetime.fromtimestamp(1_700_000_000.5, tz=timezone.utc)


def test_explicit_public_key_argument_wins(settings):
    configure(settings, PUBLIC_KEY=OTHER_PEM)
    assert verify_token(mint(), public_key=PEM).client_id == "123456"


def test_expired_within_leeway_is_accepted(pinned_key):
    assert verify_token(mint(payload(exp=int(time.time()) - 10))).client_id == "123456"


def test_issuer_check_can_be_disabled(settings):
    configure(settings, PUBLIC_KEY=PEM, JWT_ISSUER=None)
    assert verify_token(mint(payload(iss="Someone else"))).client_id == "123456"
    assert verify_token(mint(payload(iss=None))).client_id == "123456"


# --------------------------------------------------------------------------- rejected


def test_expired_token(pinned_key):
    assert reason_of(mint(payload(exp=int(time.time()) - 100))) == "expired"


def test_leeway_setting_is_used(settings):
    configure(settings, PUBLIC_KEY=PEM, JWT_LEEWAY=0)
    assert reason_of(mint(payload(exp=int(time.time()) - 5))) == "expired"


def test_tampered_payload(pinned_key):
    header, _, signature = mint().split(".")
    forged = b64(json.dumps(payload(clId=999)).encode())
    assert reason_of(f"{header}.{forged}.{signature}") == "signature"


def test_tampered_signature(pinned_key):
    token = mint()
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert reason_of(flipped) == "signature"


def test_wrong_key(pinned_key):
    assert reason_of(mint(key=OTHER_KEY)) == "signature"


def test_alg_none(pinned_key):
    assert reason_of(raw_token({"alg": "none", "typ": "JWT"}, payload())) == "algorithm"
    assert reason_of(jwt.encode(payload(), None, algorithm="none")) == "algorithm"


@pytest.mark.parametrize("alg", ["HS512", "HS256"])
def test_hmac_signed_with_the_public_key_is_rejected(pinned_key, alg):
    assert reason_of(hmac_token(alg, PEM.encode())) == "algorithm"


def test_hs_stays_rejected_even_if_configured(settings):
    configure(settings, PUBLIC_KEY=PEM, JWT_ALGORITHMS=["RS512", "HS512", "none"])
    assert pinned_algorithms() == ["RS512"]
    assert reason_of(hmac_token("HS512", PEM.encode())) == "algorithm"
    assert reason_of(raw_token({"alg": "none"}, payload())) == "algorithm"


def test_only_hmac_configured_is_a_configuration_error(settings):
    configure(settings, PUBLIC_KEY=PEM, JWT_ALGORITHMS=["HS256"])
    with pytest.raises(SyneriseConfigurationError):
        verify_token(mint())


def test_other_rsa_algorithm_than_pinned(pinned_key):
    assert reason_of(mint(alg="RS256")) == "algorithm"


@pytest.mark.parametrize(
    "claims",
    [
        payload(exp=None),
        payload(iss="Evil"),
        payload(iss="Synerise.evil"),
        payload(iss=None),
        payload(nbf=int(time.time()) + 3600),
        payload(clId=None),
        payload(clId=["1"]),
        payload(eml={"a": 1}),
        payload(clId=True),
    ],
    ids=["no-exp", "wrong-iss", "partial-iss", "no-iss", "nbf-future", "no-clId",
         "clId-list", "eml-object", "clId-bool"],
)
def test_claims_rejected(pinned_key, claims):
    assert reason_of(mint(claims)) == "claims"


@pytest.mark.parametrize(
    "headers",
    [{"typ": "JWE"}, {"crit": ["exp"]}, {"b64": False, "crit": ["b64"]}],
)
def test_unusual_headers_rejected(pinned_key, headers):
    claims = payload()
    header = {"alg": "RS512", **headers}
    assert reason_of(raw_token(header, claims, b"signature")) == "header"


def test_detached_payload_token_is_malformed(pinned_key):
    assert reason_of(mint(headers={"b64": False, "crit": ["b64"]})) == "malformed"


def test_jku_x5u_jwk_headers_are_ignored(settings, fake_synerise):
    """An attacker's key advertised in the header never verifies anything nor gets fetched."""
    configure(settings, PUBLIC_KEY=PEM)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_KEY.public_key()))
    token = mint(key=OTHER_KEY, headers={"jku": f"{fake_synerise.url}/jwks.json",
                                         "x5u": f"{fake_synerise.url}/cert.pem", "jwk": jwk})
    assert reason_of(token) == "signature"
    assert fake_synerise.count() == 0
    # and a good token carrying those headers is still verified with the pinned key
    assert verify_token(mint(headers={"jku": f"{fake_synerise.url}/x"})).client_id == "123456"


@pytest.mark.timing
def test_oversized_token_rejected_fast_before_parsing(pinned_key):
    huge = mint() + "A" * (1024 * 1024)
    # CPU time of this thread, which a loaded machine does not stretch as it does wall time.
    started = time.thread_time()
    assert reason_of(huge) == "too_large"
    assert time.thread_time() - started < 0.05


def test_max_token_bytes_setting(settings):
    configure(settings, PUBLIC_KEY=PEM, MAX_TOKEN_BYTES=100)
    assert reason_of(mint()) == "too_large"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d.e", "a b.c.d", "a.b.c\n", "é.b.c", "a..c", 12345, None,
     b64(b"not json") + ".eyJ4IjoxfQ.sig", b64(b"[1,2]") + ".eyJ4IjoxfQ.sig"],
)
def test_malformed_tokens(pinned_key, token):
    assert reason_of(token) == "malformed"


def test_header_without_alg(pinned_key):
    assert reason_of(raw_token({"typ": "JWT"}, payload(), b"sig")) == "algorithm"


def test_check_token_shape_and_is_jws():
    check_token_shape(mint())
    assert is_jws(mint())
    assert not is_jws("opaque-token")
    assert not is_jws("a.b.c.d.e")
    assert not is_jws(b64(b"{}") + ".e30.")
    with pytest.raises(TokenVerificationError) as info:
        check_token_shape("x" * 9000)
    assert info.value.reason == "too_large"


# --------------------------------------------------------------------------- public key


def test_public_key_setting_is_used_without_fetching(settings, fake_synerise):
    configure(settings, PUBLIC_KEY=PEM)
    assert get_public_key() == PEM
    assert verify_token(mint()).client_id == "123456"
    assert fake_synerise.count() == 0


def test_public_key_is_fetched_once_and_cached(fake_synerise):
    account = fake_synerise.add_client(email="c@example.com", password="pw")
    token = fake_synerise.issue_token(account.client_id)

    assert verify_token(token).client_id == account.client_id
    assert verify_token(token).client_id == account.client_id
    assert fake_synerise.count(path_contains="public.pem") == 1


@pytest.mark.timing
def test_concurrent_cold_cache_fetches_once(fake_synerise):
    fake_synerise.latency = 0.05
    barrier = threading.Barrier(16)
    keys = []

    def work():
        barrier.wait()
        keys.append(get_public_key())

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 16 and len(set(keys)) == 1
    assert fake_synerise.count(path_contains="public.pem") == 1


def test_failed_refetch_keeps_the_last_good_key(fake_synerise):
    good = get_public_key()
    fake_synerise.inject(status=500, path="public.pem", times=None)
    assert get_public_key(force=True) == good
    assert fake_synerise.count(path_contains="public.pem") == 2
    account = fake_synerise.add_client(email="d@example.com", password="pw")
    assert verify_token(fake_synerise.issue_token(account.client_id)).client_id


def test_no_key_and_fetch_fails_raises_transient(fake_synerise):
    fake_synerise.inject(status=503, path="public.pem")
    with pytest.raises(SyneriseUnavailable):
        verify_token(mint())


def test_signature_failures_refetch_at_most_once_per_cooldown(fake_synerise):
    get_public_key()
    for _ in range(50):
        assert reason_of(mint(key=OTHER_KEY)) == "signature"
    assert fake_synerise.count(path_contains="public.pem") == 2  # first fetch + one forced
    assert REFETCH_COOLDOWN == 30.0


def test_rotated_key_is_picked_up_by_one_forced_refetch(fake_synerise):
    fake_synerise.inject(status=200, path="public.pem", body=OTHER_PEM,
                         headers={"X-Old-Key": "1"})
    assert get_public_key() == OTHER_PEM.strip() + "\n"
    account = fake_synerise.add_client(email="e@example.com", password="pw")
    token = fake_synerise.issue_token(account.client_id)

    assert verify_token(token).client_id == account.client_id
    assert fake_synerise.count(path_contains="public.pem") == 2
    assert get_public_key().strip() == fake_synerise.public_key_pem.strip()


def test_tokens_failing_the_old_key_during_a_refetch_all_get_the_new_key(fake_synerise):
    """Synerise changed its key: while one thread fetches the new key (slowly), the other
    threads whose tokens failed the old key wait for that fetch, inside the cooldown, rather
    than get the old key back and refuse good tokens."""
    fake_synerise.inject(status=200, path="public.pem", body=OTHER_PEM)
    get_public_key()
    fake_synerise.inject(fault="latency", delay=0.5, path="public.pem")
    account = fake_synerise.add_client(email="race@example.com", password="pw")
    tokens = [fake_synerise.issue_token(account.client_id) for _ in range(6)]
    start = threading.Barrier(len(tokens))
    results: list[str | None] = []

    def verify(token: str) -> None:
        start.wait()
        try:
            results.append(verify_token(token).client_id)
        except TokenVerificationError as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=verify, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert results == [account.client_id] * len(tokens)
    assert fake_synerise.count(path_contains="public.pem") == 2


def test_key_cache_is_per_base_url(fake_synerise):
    from django_synerise.testing import FakeSynerise

    with FakeSynerise() as other:
        get_public_key()
        get_public_key(client=SyneriseClient(base_url=other.url))
        get_public_key(client=SyneriseClient(base_url=other.url))
        assert other.count(path_contains="public.pem") == 1
    assert fake_synerise.count(path_contains="public.pem") == 1


# --------------------------------------------------------------------------- claims_for


def _login(fake) -> tuple[AuthResult, str]:
    account = fake.add_client(email="f@example.com", password="pw", custom_id="cf")
    return SyneriseClient().login(email="f@example.com", password="pw"), account.client_id


def test_claims_for_verifies_a_jws(fake_synerise):
    result, client_id = _login(fake_synerise)
    fake_synerise.clear_requests()
    claims = claims_for(result)
    assert claims.verified
    assert claims.client_id == client_id
    assert claims.business_profile_id == fake_synerise.business_profile_id
    assert claims.expires_at == result.expiration
    assert fake_synerise.count(path_contains="personal-information") == 0


def test_claims_for_without_verification_uses_personal_information(settings, fake_synerise):
    configure(settings, VERIFY_SIGNATURE=False)
    result, client_id = _login(fake_synerise)
    fake_synerise.clear_requests()

    claims = claims_for(result)

    assert not claims.verified
    assert claims.client_id == client_id
    assert claims.email == "f@example.com"
    assert claims.custom_id == "cf"
    assert claims.expires_at == result.expiration
    assert claims.issued_at == result.created
    assert claims.realm == "client" and claims.origin == "SYNERISE"
    assert fake_synerise.count(path_contains="personal-information") == 1
    assert fake_synerise.count(path_contains="public.pem") == 0


def test_claims_for_opaque_token_falls_back(fake_synerise):
    fake_synerise.inject(status=200, path="personal-information",
                         body={"clientId": 777, "email": "o@example.com", "uuid": "u-o"})
    expiration = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    result = AuthResult(token="opaque~token", expiration=expiration, realm="client",
                        origin="OAUTH")

    claims = claims_for(result)

    assert claims == TokenClaims(
        client_id="777", email="o@example.com", custom_id=None, uuid="u-o", origin="OAUTH",
        realm="client", business_profile_id=None, issued_at=None, expires_at=expiration,
        verified=False,
    )
    assert fake_synerise.requests[-1].bearer == "opaque~token"


def test_claims_for_opaque_token_without_expiration_is_rejected(fake_synerise):
    with pytest.raises(TokenVerificationError) as info:
        claims_for(AuthResult(token="opaque~token"))
    assert info.value.reason == "claims"
    assert fake_synerise.count() == 0


def test_claims_for_personal_information_without_client_id(fake_synerise):
    fake_synerise.inject(status=200, path="personal-information", body={"email": "x@y.z"})
    expiration = datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(BadResponse):
        claims_for(AuthResult(token="opaque~token", expiration=expiration))


def test_claims_for_bad_jws_never_falls_back(fake_synerise):
    forged = AuthResult(token=mint(key=OTHER_KEY),
                        expiration=datetime.now(timezone.utc) + timedelta(hours=1))
    with pytest.raises(TokenVerificationError) as info:
        claims_for(forged)
    assert info.value.reason == "signature"
    assert fake_synerise.count(path_contains="personal-information") == 0
