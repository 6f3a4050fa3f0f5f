"""Signing keys of the identity provider: RFC 7638 thumbprints, parsing and the JWKS."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from django_synerise.signing import SigningKeyError, jwks, load_key, thumbprint

from .fixtures_identity import pem, public_pem

# RFC 7638, section 3.1: the example RSA key and its SHA-256 thumbprint.
RFC_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJ"
    "ECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
    "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vM"
    "QFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_thumbprint_matches_the_rfc_7638_example():
    jwk = {"kty": "RSA", "n": RFC_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_keys_load_with_their_algorithm_and_a_thumbprint_kid():
    rsa_key = load_key(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    ec_key = load_key(pem(ec.generate_private_key(ec.SECP256R1())))
    assert (rsa_key.algorithm, ec_key.algorithm) == ("RS256", "ES256")
    for key in (rsa_key, ec_key):
        assert key.kid == thumbprint(key.public_jwk)
        assert key.kid in repr(key) and "PRIVATE" not in repr(key)


def test_public_keys_are_refused_with_their_kind():
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SigningKeyError) as info:
        load_key(public_pem(key))
    assert info.value.kind == "public"


def test_jwks_lists_every_key_in_order(settings, rsa_pem, ec_pem):
    settings.SYNERISE = {**settings.SYNERISE, "OAUTH_SIGNING_KEYS": [ec_pem, rsa_pem]}
    keys = jwks()["keys"]
    assert [k["kid"] for k in keys] == [load_key(ec_pem).kid, load_key(rsa_pem).kid]
    assert all(set(k) <= {"kty", "n", "e", "crv", "x", "y", "kid", "alg", "use"} for k in keys)
