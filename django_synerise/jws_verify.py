"""Check the signature and the registered claims of an RSA-signed compact JWS.

The checks are PyJWT's (``jwt.decode`` with ``algorithms``, ``options={"require": ...}``,
``leeway`` and ``issuer``), done with the C primitives of :mod:`base64`, :mod:`re`,
:mod:`json` and ``cryptography`` at half of PyJWT's CPU (which tests each character of a
token in Python; ``benchmarks/verification.py``). ``tests/test_jws_verify.py`` holds both to
the same answer over a corpus of good, tampered and malformed tokens.

The caller (:func:`django_synerise.verification.verify_token`) has already checked the
token's size and shape and pinned its ``alg`` to an RSA algorithm of ``JWT_ALGORITHMS``;
nothing here takes a key or an algorithm from the token.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .exceptions import TokenVerificationError

__all__ = ["SIGNATURES", "check_claims", "decode_segment", "verified_payload"]

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]*")

#: Padding (``RS*``: PKCS#1 v1.5, ``PS*``: PSS with MGF1 of the same hash) and hash of each
#: RSA algorithm: the one list of algorithms a token may be verified with.
SIGNATURES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "RS256": ("pkcs1", hashes.SHA256),
    "RS384": ("pkcs1", hashes.SHA384),
    "RS512": ("pkcs1", hashes.SHA512),
    "PS256": ("pss", hashes.SHA256),
    "PS384": ("pss", hashes.SHA384),
    "PS512": ("pss", hashes.SHA512),
}


def _malformed(what: str) -> TokenVerificationError:
    return TokenVerificationError(f"The token {what} is malformed.", reason="malformed")


def _claims(message: str) -> TokenVerificationError:
    return TokenVerificationError(message, reason="claims")


def decode_segment(segment: str, what: str = "segment") -> bytes:
    """The bytes of one base64url segment, without padding, in its one canonical spelling.

    :raises TokenVerificationError: ``reason="malformed"`` for a character outside the
        base64url alphabet, a length no encoding has, or unused bits that are not zero (a
        second spelling of the same bytes).
    """
    if _SEGMENT_RE.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise _malformed(what)
    # Cannot fail: the alphabet and the length are checked, the padding is added.
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise _malformed(what)
    return raw


def _verify_signature(key: RSAPublicKey, alg: str, signing_input: bytes, signature: bytes) -> None:
    if alg not in SIGNATURES:
        raise TokenVerificationError("The token algorithm is not accepted.", reason="algorithm")
    scheme, hash_type = SIGNATURES[alg]
    algorithm = hash_type()
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if scheme == "pkcs1"
        else padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)
    )
    try:
        key.verify(signature, signing_input, pad, algorithm)
    except InvalidSignature:
        raise TokenVerificationError(
            "The token signature is invalid.", reason="signature"
        ) from None


def verified_payload(token: str, header: dict[str, Any], key: RSAPublicKey, alg: str) -> bytes:
    """The payload bytes of ``token`` once its signature verifies with ``key`` under ``alg``.

    ``header`` is the token's decoded JOSE header (its ``kid``, when present, must be a
    string, as PyJWT requires; it selects nothing).

    :raises TokenVerificationError: ``malformed`` (a segment is not canonical base64url),
        ``invalid`` (a ``kid`` that is not a string), ``signature``.
    """
    signing_input, _, signature_segment = token.rpartition(".")
    header_segment, _, payload_segment = signing_input.partition(".")
    decode_segment(header_segment, "header")
    payload = decode_segment(payload_segment, "payload")
    signature = decode_segment(signature_segment, "signature")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenVerificationError("The token's key id is not a string.", reason="invalid")
    _verify_signature(key, alg, signing_input.encode("ascii"), signature)
    return payload


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _check_times(claims: dict[str, Any], leeway: float) -> None:
    """``iat``, ``nbf`` and ``exp`` of :func:`check_claims`."""
    now = datetime.now(tz=timezone.utc).timestamp()
    if "iat" in claims:
        iat = _integer(claims["iat"])
        if iat is None or iat > now + leeway:
            raise _claims("The token's issue time is not acceptable.")
    if "nbf" in claims:
        nbf = _integer(claims["nbf"])
        if nbf is None:
            raise _malformed("not-before time")
        if nbf > now + leeway:
            raise _claims("The token is not valid yet.")
    if "exp" in claims:
        exp = _integer(claims["exp"])
        if exp is None:
            raise _malformed("expiry")
        if exp <= now - leeway:
            raise TokenVerificationError("The token has expired.", reason="expired")


def check_claims(
    payload: bytes, *, require: list[str], leeway: float, issuer: str | None
) -> dict[str, Any]:
    """Parse the verified ``payload`` and check its registered claims; return the claims.

    In PyJWT's order: the ``require`` claims are present and not ``null``; ``iat`` and ``nbf``
    are integers not after now + ``leeway``; ``exp`` is an integer after now - ``leeway``;
    ``iss`` equals ``issuer`` (unless ``None``); there is no ``aud`` (no audience is
    expected); ``sub`` and ``jti``, when present, are strings.

    :raises TokenVerificationError: ``malformed`` (not a JSON object; ``exp`` or ``nbf`` not
        an integer), ``claims``, ``expired``, ``invalid`` (``sub`` or ``jti``).
    """
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _malformed("payload") from exc
    if not isinstance(claims, dict):
        raise _malformed("payload")
    for name in require:
        if claims.get(name) is None:
            raise _claims(f"The token has no {name!r} claim.")
    _check_times(claims, leeway)
    if issuer is not None and not (isinstance(claims.get("iss"), str) and claims["iss"] == issuer):
        raise _claims("The token's issuer is not accepted.")
    if claims.get("aud"):
        raise _claims("The token names an audience.")
    for name in ("sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenVerificationError(f"The token's {name!r} is not a string.", reason="invalid")
    return claims
