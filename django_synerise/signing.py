"""Signing keys of this site as an identity provider: parse ``OAUTH_SIGNING_KEYS``, publish a JWKS.

Each key of ``SYNERISE["OAUTH_SIGNING_KEYS"]`` is a PEM private key: RSA of at least 2048
bits (signs with RS256) or EC on P-256 (ES256). The first key signs; every key is published
in the JWKS so tokens signed by a key being retired still verify until they expire. The
``kid`` of a key is its RFC 7638 JWK thumbprint, so it never depends on the order of the list.
Nothing here logs or returns private material: :func:`jwks` holds public parameters only.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from .conf import synerise_settings

__all__ = [
    "MIN_RSA_BITS",
    "SigningKey",
    "SigningKeyError",
    "jwks",
    "key_problem",
    "load_key",
    "signing_keys",
    "thumbprint",
]

#: Smallest RSA modulus accepted, in bits.
MIN_RSA_BITS = 2048

# RFC 7638: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


class SigningKeyError(ValueError):
    """A configured signing key cannot be used; the message says why (never the key).

    ``kind`` is ``unparsable`` (not a usable PEM private key), ``public`` (a public key or
    certificate) or ``weak`` (RSA below :data:`MIN_RSA_BITS`, EC other than P-256).
    """

    def __init__(self, message: str, *, kind: str = "unparsable") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, repr=False)
class SigningKey:
    """One parsed signing key: the private key object, its algorithm, ``kid`` and public JWK.

    ``repr()`` shows the ``kid`` and algorithm only.
    """

    private_key: Any
    algorithm: str
    kid: str
    public_jwk: dict[str, str]

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r})"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of a public ``jwk`` (base64url, no padding)."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def load_key(pem: str | bytes) -> SigningKey:
    """Parse one PEM private key into a :class:`SigningKey`.

    :raises SigningKeyError: the value is not a PEM private key (a public key or a
        certificate included), is encrypted, is RSA below :data:`MIN_RSA_BITS` bits, is EC
        on a curve other than P-256, or is another key type.
    """
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    if not isinstance(pem, bytes) or not pem.strip():
        raise SigningKeyError("is not a PEM private key")
    if b"PUBLIC KEY" in pem or b"CERTIFICATE" in pem:
        raise SigningKeyError("is a public key or certificate, not a private key", kind="public")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise SigningKeyError("is encrypted; give an unencrypted PEM private key") from None
    except ValueError:
        raise SigningKeyError("could not be parsed as a PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise SigningKeyError(
                f"is RSA of {key.key_size} bits, below {MIN_RSA_BITS}", kind="weak"
            )
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SigningKeyError(f"is EC on {key.curve.name}; only P-256 is accepted", kind="weak")
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        algorithm = "ES256"
    else:
        raise SigningKeyError("is neither an RSA nor an EC (P-256) private key")
    public = {
        name: str(value)
        for name, value in jwk.items()
        if name in ("kty", "n", "e", "crv", "x", "y")
    }
    kid = thumbprint(public)
    public.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return SigningKey(private_key=key, algorithm=algorithm, kid=kid, public_jwk=public)


def key_problem(pem: Any) -> SigningKeyError | None:
    """Return why ``pem`` cannot be a signing key (for the system checks), or ``None``."""
    if not isinstance(pem, (str, bytes)):
        return SigningKeyError("is not a PEM string")
    try:
        _load_cached(pem if isinstance(pem, str) else pem.decode("utf-8", "replace"))
    except SigningKeyError as exc:
        return exc
    return None


@lru_cache(maxsize=16)
def _load_cached(pem: str) -> SigningKey:
    return load_key(pem)


def signing_keys() -> list[SigningKey]:
    """Return the parsed ``OAUTH_SIGNING_KEYS``, the signing key first (parsed once each).

    :raises SigningKeyError: when a key cannot be used (the checks report it at start-up).
    """
    return [_load_cached(pem) for pem in synerise_settings.OAUTH_SIGNING_KEYS]


def jwks() -> dict[str, list[dict[str, str]]]:
    """Return the JSON Web Key Set of every configured key: public parameters only."""
    return {"keys": [dict(key.public_jwk) for key in signing_keys()]}
