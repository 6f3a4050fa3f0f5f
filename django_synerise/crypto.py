"""Encryption at rest of client tokens: MultiFernet over a JSON envelope bound to its row.

The plaintext that gets encrypted is ``{"v": 1, "aid": <account pk>, "cid": "<client id>",
"tok": "<JWT>"}``. Fernet has no associated data, so the binding is checked by hand after
decrypting: a ciphertext copied into another row fails exactly like a tampered one.

Keys come from ``SYNERISE["TOKEN_ENCRYPTION_KEYS"]`` (newest first; the first key encrypts,
every key decrypts), read on every call so ``override_settings`` works. When the list is
empty, one key is derived from ``SECRET_KEY`` with HKDF-SHA256; that is for development only
and the system checks report it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from . import process_state
from .conf import synerise_settings
from .exceptions import SyneriseConfigurationError, TokenDecryptionError

logger = logging.getLogger(__name__)

ENVELOPE_VERSION = 1
HKDF_INFO = b"django-synerise token encryption"

__all__ = [
    "ENVELOPE_VERSION",
    "configured_keys",
    "decrypt_token",
    "derive_key",
    "encrypt_token",
    "get_multifernet",
    "key_index",
    "keys_are_derived",
    "rotate_ciphertext",
    "token_fingerprint",
]


def token_fingerprint(token: str) -> str:
    """Return the SHA-256 of ``token`` as 64 hex digits.

    Stored next to the ciphertext so a presented Bearer token can be matched against the
    stored one without decrypting. A client token is a long random-looking signed value, so
    an unkeyed digest reveals nothing usable about it (the same choice as django-oauth-toolkit's
    token checksums).
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class _Keyring:
    fernets: tuple[Fernet, ...]
    multi: MultiFernet


_cache: dict[tuple[str, ...], _Keyring] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 8


def configured_keys() -> list[str]:
    """Return ``TOKEN_ENCRYPTION_KEYS`` as a list of strings (a lone string counts as one key)."""
    return synerise_settings.TOKEN_ENCRYPTION_KEYS


def keys_are_derived() -> bool:
    """Return ``True`` when no keys are configured and the key is derived from ``SECRET_KEY``."""
    return not configured_keys()


def derive_key(secret: str | bytes) -> str:
    """Derive a Fernet key from ``secret`` with HKDF-SHA256 (development fallback)."""
    material = secret.encode("utf-8") if isinstance(secret, str) else secret
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(material)
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _active_keys() -> tuple[str, ...]:
    keys = configured_keys()
    if keys:
        return tuple(keys)
    secret = getattr(settings, "SECRET_KEY", "")
    if not secret:
        raise SyneriseConfigurationError(
            "No TOKEN_ENCRYPTION_KEYS and no SECRET_KEY to derive a key from."
        )
    return (derive_key(secret),)


def _keyring() -> _Keyring:
    keys = _active_keys()
    ring = _cache.get(keys)
    if ring is not None:
        return ring
    fernets: list[Fernet] = []
    for position, key in enumerate(keys):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Never echo the key itself.
            raise SyneriseConfigurationError(
                f"SYNERISE['TOKEN_ENCRYPTION_KEYS'][{position}] is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from None
    ring = _Keyring(fernets=tuple(fernets), multi=MultiFernet(fernets))
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[keys] = ring
    return ring


def _clear_keyrings() -> None:
    with _cache_lock:
        _cache.clear()


def _new_cache_lock() -> None:
    global _cache_lock
    _cache_lock = threading.Lock()


process_state.register("crypto.keyrings", after_fork=_new_cache_lock, reset=_clear_keyrings)


def get_multifernet() -> MultiFernet:
    """Return the :class:`~cryptography.fernet.MultiFernet` for the current settings.

    :raises SyneriseConfigurationError: a configured key is malformed.
    """
    return _keyring().multi


def encrypt_token(token: str, *, account_id: Any, client_id: str) -> str:
    """Encrypt ``token`` under the primary key, bound to ``(account_id, client_id)``.

    :returns: url-safe Fernet ciphertext (starts with ``gAAAAA``).
    :raises ValueError: ``token`` is empty or not a string, or ``account_id`` is ``None``.
    """
    if not isinstance(token, str) or not token:
        raise ValueError("token must be a non-empty string.")
    if account_id is None:
        raise ValueError("account_id is required to bind the ciphertext to its row.")
    envelope = {"v": ENVELOPE_VERSION, "aid": account_id, "cid": str(client_id), "tok": token}
    plaintext = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
    return _keyring().multi.encrypt(plaintext).decode("ascii")


def _fail(reason: str, account_id: Any) -> TokenDecryptionError:
    logger.warning("Stored Synerise token rejected: reason=%s account=%s", reason, account_id)
    return TokenDecryptionError(f"The stored token could not be decrypted ({reason}).")


def _to_bytes(ciphertext: Any, account_id: Any) -> bytes:
    if not isinstance(ciphertext, (str, bytes)) or not ciphertext:
        raise _fail("empty", account_id)
    if isinstance(ciphertext, bytes):
        return ciphertext
    try:
        return ciphertext.encode("ascii")
    except UnicodeEncodeError:
        raise _fail("not_ciphertext", account_id) from None


def decrypt_token(ciphertext: str, *, account_id: Any, client_id: str) -> str:
    """Decrypt ``ciphertext`` and check it belongs to ``(account_id, client_id)``.

    :returns: the plaintext token.
    :raises TokenDecryptionError: on any failure (empty, tampered, truncated, unknown key,
        plaintext stored by an older version, unknown envelope version, malformed envelope,
        or an envelope bound to another account or client id). Never partially succeeds.
    """
    data = _to_bytes(ciphertext, account_id)
    try:
        plaintext = _keyring().multi.decrypt(data)
    except InvalidToken:
        raise _fail("invalid_ciphertext", account_id) from None
    try:
        envelope = json.loads(plaintext)
    except ValueError:
        raise _fail("bad_envelope", account_id) from None
    if not isinstance(envelope, dict):
        raise _fail("bad_envelope", account_id)
    if envelope.get("v") != ENVELOPE_VERSION or isinstance(envelope.get("v"), bool):
        raise _fail("unsupported_version", account_id)
    aid = envelope.get("aid")
    if isinstance(aid, bool) or aid != account_id or type(aid) is not type(account_id):
        raise _fail("binding_mismatch", account_id)
    if envelope.get("cid") != str(client_id):
        raise _fail("binding_mismatch", account_id)
    token = envelope.get("tok")
    if not isinstance(token, str) or not token:
        raise _fail("bad_envelope", account_id)
    return token


def key_index(ciphertext: str) -> int:
    """Return the position in the key list of the key that decrypts ``ciphertext``.

    ``0`` means it is already under the primary key. Does not check the row binding.

    :raises TokenDecryptionError: no configured key decrypts it.
    """
    data = _to_bytes(ciphertext, None)
    for position, fernet in enumerate(_keyring().fernets):
        try:
            fernet.decrypt(data)
        except InvalidToken:
            continue
        return position
    raise _fail("invalid_ciphertext", None)


def rotate_ciphertext(ciphertext: str) -> str:
    """Re-encrypt ``ciphertext`` under the primary key (``MultiFernet.rotate``).

    The envelope, and so the row binding, is unchanged.

    :raises TokenDecryptionError: no configured key decrypts it.
    """
    data = _to_bytes(ciphertext, None)
    try:
        return _keyring().multi.rotate(data).decode("ascii")
    except InvalidToken:
        raise _fail("invalid_ciphertext", None) from None
