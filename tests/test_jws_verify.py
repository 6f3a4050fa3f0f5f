"""The signature and claim checks of ``jws_verify`` give PyJWT's answer on every token.

Each token of a corpus (good, tampered, non-canonical, odd claims, other algorithms and keys)
goes through ``verification._decode`` and through ``jwt.decode`` with the options
verification passed it before, whose exceptions are mapped to the same reasons. Both must
accept the same tokens with the same claims and reject the others for the same reason.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from django_synerise import verification
from django_synerise.exceptions import TokenVerificationError
from django_synerise.jws import unverified_header
from django_synerise.jws_verify import decode_segment

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()
LEEWAY = 30


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    data = {"iss": "Synerise", "rlm": "client", "clId": 1, "iat": now, "exp": now + 3600}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def resign(
    header: dict[str, Any], payload_segment: str, alg: str = "RS512", key: Any = KEY
) -> str:
    """A token with exactly these header and payload segments, signed (PyJWT's encode
    refuses some of the odd claims below)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{payload_segment}"
    signature = jwt.get_algorithm_by_name(alg).sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def mint(body: Any = None, *, alg: str = "RS512", key: Any = KEY, headers: Any = None) -> str:
    header = {"alg": alg, "typ": "JWT", **(headers or {})}
    payload = claims() if body is None else body
    return resign(header, b64(json.dumps(payload).encode()), alg, key)


def bump_last(segment: str) -> str:
    """The same bytes spelled differently: set the unused low bits of the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3)
    last = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[last | 1]


def now() -> int:
    return int(time.time())


def corpus() -> dict[str, tuple[str, str]]:
    """Token and the algorithm it is checked with, by name."""
    good = mint()
    head, body, sig = good.split(".")
    tokens = {
        "good": mint(),
        "good-rs256": mint(alg="RS256"),
        "good-ps512": mint(alg="PS512"),
        "good-ps256": mint(alg="PS256"),
        "expired": mint(claims(exp=now() - 3600)),
        "expired-within-leeway": mint(claims(exp=now() - 5)),
        "exp-string-digits": mint(claims(exp=str(now() + 3600))),
        "exp-string": mint(claims(exp="soon")),
        "exp-list": mint(claims(exp=[1])),
        "exp-float": mint(claims(exp=now() + 3600.5)),
        "exp-bool": mint(claims(exp=True)),
        "no-exp": mint(claims(exp=None)),
        "exp-null": mint({**claims(), "exp": None}),
        "nbf-future": mint(claims(nbf=now() + 3600)),
        "nbf-within-leeway": mint(claims(nbf=now() + 5)),
        "nbf-string": mint(claims(nbf="later")),
        "iat-future": mint(claims(iat=now() + 3600)),
        "iat-within-leeway": mint(claims(iat=now() + 5)),
        "iat-string": mint(claims(iat="then")),
        "iat-object": mint(claims(iat={"a": 1})),
        "no-iss": mint(claims(iss=None)),
        "wrong-iss": mint(claims(iss="Evil")),
        "iss-number": mint(claims(iss=7)),
        "iss-list": mint(claims(iss=["Synerise"])),
        "aud": mint(claims(aud="someone")),
        "aud-list": mint(claims(aud=["someone"])),
        "aud-empty": mint(claims(aud="")),
        "aud-empty-list": mint(claims(aud=[])),
        "sub-number": mint(claims(sub=5)),
        "sub-string": mint(claims(sub="5")),
        "jti-number": mint(claims(jti=5)),
        "jti-string": mint(claims(jti="x")),
        "kid-number": mint(headers={"kid": 5}),
        "kid-string": mint(headers={"kid": "k1"}),
        "payload-array": resign({"alg": "RS512", "typ": "JWT"}, b64(b"[1, 2]")),
        "payload-not-json": resign({"alg": "RS512", "typ": "JWT"}, b64(b"not json")),
        "payload-not-utf8": resign({"alg": "RS512", "typ": "JWT"}, b64(b"\xff\xfe{}")),
        "payload-deep": resign({"alg": "RS512", "typ": "JWT"}, b64(b"[" * 100000)),
        "tampered-payload": f"{head}.{b64(json.dumps(claims(clId=2)).encode())}.{sig}",
        "tampered-signature": f"{head}.{body}.{sig[:-6]}AAAAAA",
        "empty-signature": f"{head}.{body}.",
        "short-signature": f"{head}.{body}.{sig[:40]}",
        "other-key": mint(key=OTHER_KEY),
        "signature-length-1-mod-4": f"{head}.{body}.{sig}A",
        "signature-non-canonical": f"{head}.{body}.{bump_last(sig)}",
    }
    body_segment = b64(json.dumps(claims()).encode() + b" ")
    if len(body_segment) % 4 in (2, 3):
        tokens["payload-non-canonical"] = resign(
            {"alg": "RS512", "typ": "JWT"}, bump_last(body_segment)
        )
    header_json = json.dumps({"alg": "RS512", "typ": "JWT", "x": "y"}).encode()
    for pad in range(3):
        header = header_json + b" " * pad
        if len(b64(header)) % 4 in (2, 3):
            break
    segment = bump_last(b64(header))
    signing_input = f"{segment}.{body}"
    signature = jwt.get_algorithm_by_name("RS512").sign(signing_input.encode(), KEY)
    tokens["header-non-canonical"] = f"{signing_input}.{b64(signature)}"
    algorithms = {
        "good-rs256": "RS256",
        "good-ps512": "PS512",
        "good-ps256": "PS256",
    }
    return {name: (token, algorithms.get(name, "RS512")) for name, token in tokens.items()}


def pyjwt_answer(token: str, alg: str) -> tuple[str, Any]:
    """What ``jwt.decode`` says, with its exceptions mapped to verification's reasons."""
    try:
        payload = jwt.decode(
            token,
            verification._load_key(PEM),
            algorithms=[alg],
            options={"require": ["exp", "iss"], "verify_signature": True},
            leeway=LEEWAY,
            issuer="Synerise",
        )
    except jwt.ExpiredSignatureError:
        return "expired", None
    except jwt.InvalidSignatureError:
        return "signature", None
    except jwt.InvalidAlgorithmError:
        return "algorithm", None
    except (
        jwt.MissingRequiredClaimError,
        jwt.InvalidIssuerError,
        jwt.ImmatureSignatureError,
        jwt.InvalidIssuedAtError,
        jwt.InvalidAudienceError,
    ):
        return "claims", None
    except jwt.DecodeError:
        return "malformed", None
    except jwt.InvalidTokenError:
        return "invalid", None
    return "ok", payload


def our_answer(token: str, alg: str) -> tuple[str, Any]:
    try:
        header = unverified_header(token)
        payload = verification._decode(token, header, PEM, alg)
    except TokenVerificationError as exc:
        return exc.reason, None
    return "ok", payload


@pytest.fixture
def issuer_and_leeway(settings):
    settings.SYNERISE = {**settings.SYNERISE, "JWT_ISSUER": "Synerise", "JWT_LEEWAY": LEEWAY}


#: The corpus's names; its tokens are minted when the tests run (``tokens``), not at
#: collection, so the times in them (``exp`` 5 s ago, ``iat`` in 5 s) still sit where their
#: names say, inside the leeway, and no boundary can fall between the two answers.
NAMES = sorted(corpus())


@pytest.fixture(scope="module")
def tokens() -> dict[str, tuple[str, str]]:
    return corpus()


@pytest.mark.parametrize("name", NAMES)
def test_same_answer_as_pyjwt(issuer_and_leeway, tokens, name):
    token, alg = tokens[name]
    expected = pyjwt_answer(token, alg)
    assert our_answer(token, alg) == expected


def test_the_corpus_exercises_every_reason(issuer_and_leeway, tokens):
    """Guard the corpus itself: it must contain accepted tokens and each kind of rejection."""
    reasons = {pyjwt_answer(token, alg)[0] for token, alg in tokens.values()}
    assert reasons >= {"ok", "expired", "signature", "claims", "malformed", "invalid"}


def test_the_algorithm_comes_from_the_caller_never_from_the_token(issuer_and_leeway):
    """``verify_token`` refuses a header naming another algorithm before this point; were
    one to get here, the caller's algorithm is still the one checked."""
    assert our_answer(mint(alg="RS256"), "RS512")[0] == "signature"
    assert our_answer(mint(alg="RS512"), "PS512")[0] == "signature"


@pytest.mark.parametrize(
    "segment", ["", "QQ", "QUI", "QUJD", "QUJDRA", "a-_b"], ids=lambda s: s or "empty"
)
def test_decode_segment_accepts_canonical_base64url(segment):
    assert b64(decode_segment(segment)) == segment


@pytest.mark.parametrize(
    "segment", ["Q", "QR", "QUJ", "QQ==", "QQ=", "a+b/", "a b", "é", "QUJDR"],
)
def test_decode_segment_rejects_other_spellings(segment):
    with pytest.raises(TokenVerificationError) as info:
        decode_segment(segment)
    assert info.value.reason == "malformed"
