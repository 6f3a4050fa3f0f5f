"""Web SDK tokens: short-lived RS256 JWTs the site signs so the web tracker can identify a
signed-in customer (``SR.client.setAccessToken``).

Synerise checks them with the public part of ``WEB_SDK_SIGNING_KEY``, uploaded in Synerise
(Data Management > Events > JS SDK event settings > Certificate). They are unrelated to the
Synerise client tokens of :mod:`django_synerise.services` and cannot call Synerise's API.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.views.decorators.debug import sensitive_variables

__all__ = [
    "ALGORITHM",
    "MIN_KEY_BITS",
    "WebSdkToken",
    "load_signing_key",
    "mint",
    "public_key_pem",
    "signing_key_problem",
]

#: The only algorithm Synerise accepts for Web SDK tokens.
ALGORITHM = "RS256"

#: Smallest RSA key accepted for ``WEB_SDK_SIGNING_KEY``.
MIN_KEY_BITS = 2048


@dataclass(frozen=True, repr=False)
class WebSdkToken:
    """A signed Web SDK token, its expiry and its lifetime in seconds.
    ``repr()``/``str()`` never show the token."""

    token: str
    expires_at: datetime
    lifetime: int

    def __repr__(self) -> str:
        return f"WebSdkToken(token=<redacted>, expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__


@sensitive_variables("value", "data", "key")
def signing_key_problem(value: Any) -> str | None:
    """Return why ``value`` cannot be ``WEB_SDK_SIGNING_KEY`` (``None`` when it can): it must
    be the PEM text of an unencrypted RSA *private* key of at least :data:`MIN_KEY_BITS` bits.
    The message never contains the key."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode("utf-8", "replace")
    else:
        return f"expected PEM text, got {type(value).__name__}"
    if b"PRIVATE KEY" not in data:
        if b"PUBLIC KEY" in data or b"CERTIFICATE" in data:
            return "it is a public key or certificate; the private key is needed to sign"
        return "it is not a PEM private key"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return "the private key is encrypted; give it unencrypted (from a secret store)"
    except (ValueError, UnsupportedAlgorithm):
        return "the PEM private key could not be loaded"
    if not isinstance(key, rsa.RSAPrivateKey):
        return f"expected an RSA key, got {type(key).__name__}"
    if key.key_size < MIN_KEY_BITS:
        return f"the RSA key has {key.key_size} bits, fewer than {MIN_KEY_BITS}"
    return None


@functools.lru_cache(maxsize=4)
@sensitive_variables("pem", "data", "key")
def load_signing_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    """Load (once per key) the RSA private key of ``WEB_SDK_SIGNING_KEY``.

    :raises ValueError: the key is unusable (see :func:`signing_key_problem`); the message
        never contains the key.
    """
    problem = signing_key_problem(pem)
    if problem is not None:
        raise ValueError(f"SYNERISE['WEB_SDK_SIGNING_KEY'] is invalid: {problem}")
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)  # noqa: S101 - checked above
    return key


@sensitive_variables("pem")
def public_key_pem(pem: str | bytes) -> str:
    """Return the PEM public key of the signing key ``pem``: what to upload in Synerise."""
    public = load_signing_key(pem).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@sensitive_variables("pem", "token")
def mint(
    pem: str | bytes,
    *,
    profile_uuid: str,
    email: str | None = None,
    custom_id: str | None = None,
    lifetime: int = 600,
    now: float | None = None,
) -> WebSdkToken:
    """Sign a Web SDK token (RS256, header ``typ: JWT``) for the profile ``profile_uuid``.

    Claims: ``uuid`` (the profile's uuid, which the tracker's cookie holds after sign-in),
    ``email`` and ``customId`` when known, ``iat``, ``exp`` (``iat + lifetime``) and a random
    ``jti``.

    :raises ValueError: the signing key is unusable.
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"uuid": profile_uuid}
    if email:
        claims["email"] = email
    if custom_id:
        claims["customId"] = custom_id
    claims.update({"iat": issued, "exp": issued + int(lifetime), "jti": uuid.uuid4().hex})
    token = jwt.encode(claims, load_signing_key(pem), algorithm=ALGORITHM, headers={"typ": "JWT"})
    expires_at = datetime.fromtimestamp(claims["exp"], tz=timezone.utc)
    return WebSdkToken(token=token, expires_at=expires_at, lifetime=int(lifetime))
