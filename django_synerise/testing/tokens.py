"""RSA key and RS512 signing for FakeSynerise (one 2048-bit key per process)."""

from __future__ import annotations

import threading
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["get_private_key", "get_public_key_pem", "next_created_ms", "sign_claims"]

_lock = threading.Lock()
_private_key: rsa.RSAPrivateKey | None = None
_public_pem: str | None = None
_last_ms = 0


def get_private_key() -> rsa.RSAPrivateKey:
    """Return the process-wide 2048-bit RSA private key, generating it on first use."""
    global _private_key, _public_pem
    if _private_key is None:
        with _lock:
            if _private_key is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                _public_pem = (
                    key.public_key()
                    .public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    )
                    .decode("ascii")
                )
                _private_key = key
    return _private_key


def get_public_key_pem() -> str:
    """Return the process-wide public key as PEM (SubjectPublicKeyInfo), as served by the fake."""
    get_private_key()
    assert _public_pem is not None
    return _public_pem


def next_created_ms() -> int:
    """Return a strictly increasing millisecond timestamp (the ``ctd`` claim).

    Strictly increasing values make every token this process signs unique, even when two tokens
    for the same client are signed within the same millisecond (RSA PKCS#1 v1.5 signatures are
    deterministic).
    """
    global _last_ms
    with _lock:
        now_ms = int(time.time() * 1000)
        _last_ms = max(now_ms, _last_ms + 1)
        return _last_ms


def sign_claims(claims: dict[str, Any]) -> str:
    """Sign ``claims`` as an RS512 JWS with header ``{"alg": "RS512", "typ": "JWT"}``."""
    return jwt.encode(claims, get_private_key(), algorithm="RS512", headers={"typ": "JWT"})
