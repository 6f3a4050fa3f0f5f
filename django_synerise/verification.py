"""Verify Synerise client tokens and turn login/refresh results into typed claims.

:func:`verify_token` checks a client JWT locally:

* size (``MAX_TOKEN_BYTES``) and shape (three base64url segments) are checked **before**
  anything is parsed; each segment must be canonical base64url;
* the algorithm list is pinned from ``JWT_ALGORITHMS`` (only RSA algorithms are ever used;
  ``none`` and ``HS*`` are dropped), never taken from the token header, so ``alg: none``
  and ``HS512`` tokens signed with the public key as the HMAC secret are rejected;
* ``exp`` is required, ``JWT_LEEWAY`` seconds of leeway apply, ``iss`` must equal
  ``JWT_ISSUER`` unless that setting is ``None``;
* ``jku``, ``x5u``, ``jwk`` and ``kid`` headers are ignored (no key is ever fetched from a
  token; a ``kid`` must still be a string), ``crit``/``b64`` headers and a ``typ`` other
  than ``JWT`` are rejected; so are tokens naming an ``aud``, and ``sub`` or ``jti`` claims
  that are not strings (PyJWT's rules: :mod:`django_synerise.jws_verify` applies them).

Failures raise :class:`~django_synerise.exceptions.TokenVerificationError` whose ``reason`` is
one of ``malformed``, ``too_large``, ``header``, ``algorithm``, ``signature``, ``expired``,
``claims`` or ``invalid``.

The public key is ``PUBLIC_KEY`` when set, otherwise fetched once from
``BASE_URL + /v4/public.pem`` through the client and cached per base URL (thread-safe). A
failed refetch keeps the last good key. A ``signature`` failure with a fetched key triggers
at most one forced refetch per 30-second cooldown (key rotation), never one per token.

**Opaque tokens and ``VERIFY_SIGNATURE = False``.** Synerise may hand out tokens that are not
readable JWS (the SDKs mention "encrypted tokens"). For a token that came straight from
Synerise (a login or refresh answer), :func:`claims_for` then does not verify anything
locally: the expiry comes from the answer's ``expiration`` field and the identity (client
id, e-mail, custom id, uuid) from ``GET /v4/my-account/personal-information`` called with
that token; the resulting :class:`TokenClaims` has ``verified=False``. The same happens for
every token when ``VERIFY_SIGNATURE`` is ``False``. Bearer tokens presented by *our* API
clients must always go through :func:`verify_token`, never :func:`claims_for`.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from . import process_state
from .client import get_client
from .conf import synerise_settings
from .exceptions import (
    BadResponse,
    SyneriseConfigurationError,
    TokenVerificationError,
    UpstreamError,
)
from .jws import MalformedJWS, unverified_claims, unverified_header
from .jws_verify import SIGNATURES, check_claims, verified_payload

if TYPE_CHECKING:
    from .client import AuthResult, SyneriseClient

logger = logging.getLogger(__name__)

__all__ = [
    "TokenClaims",
    "check_token_shape",
    "claims_for",
    "clear_public_key_cache",
    "get_public_key",
    "is_jws",
    "offline_public_key",
    "pinned_algorithms",
    "verify_token",
]

#: Algorithms that may ever verify a Synerise token (RSA keys only).
RSA_ALGORITHMS = frozenset(SIGNATURES)
#: Seconds between two forced refetches of the public key per base URL.
REFETCH_COOLDOWN = 30.0

_SHAPE_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class TokenClaims:
    """What a Synerise client token says about its holder.

    ``verified`` is True when the claims come from a locally verified signature, False when
    they come from the login answer plus personal information (opaque token or
    ``VERIFY_SIGNATURE = False``).
    """

    client_id: str
    email: str | None
    custom_id: str | None
    uuid: str | None
    origin: str | None
    realm: str | None
    business_profile_id: str | None
    issued_at: datetime | None
    expires_at: datetime
    verified: bool

    @property
    def is_anonymous(self) -> bool:
        """True unless the realm is ``client`` (anonymous tokens say ``anonymous_client``)."""
        return self.realm != "client"


# --------------------------------------------------------------------------- shape


def check_token_shape(token: Any) -> None:
    """Cheap checks run before any parsing.

    :raises TokenVerificationError: ``reason="too_large"`` over ``MAX_TOKEN_BYTES``;
        ``reason="malformed"`` when not a str of three base64url segments.
    """
    if not isinstance(token, str) or not token:
        raise TokenVerificationError("The token is not a string.", reason="malformed")
    if len(token) > int(synerise_settings.MAX_TOKEN_BYTES):
        raise TokenVerificationError("The token is too large.", reason="too_large")
    if _SHAPE_RE.fullmatch(token) is None:
        raise TokenVerificationError("The token is not a JWS.", reason="malformed")


def is_jws(token: Any) -> bool:
    """True when ``token`` passes :func:`check_token_shape` and its header is a JSON object
    naming an ``alg`` (a signed JWT, as opposed to an opaque or encrypted token)."""
    return _jws_header(token) is not None


def _jws_header(token: Any) -> dict[str, Any] | None:
    """The JOSE header of ``token`` when it is a JWS (see :func:`is_jws`), else ``None``."""
    try:
        check_token_shape(token)
        header = _header(token)
    except TokenVerificationError:
        return None
    return header if isinstance(header.get("alg"), str) else None


def _header(token: str) -> dict[str, Any]:
    """Decode the (unverified) JOSE header of a shape-checked token.

    :raises TokenVerificationError: ``reason="malformed"`` unless it is base64url JSON of an object.
    """
    try:
        return unverified_header(token)
    except MalformedJWS as exc:
        raise TokenVerificationError("The token header is malformed.", reason="malformed") from exc


def pinned_algorithms() -> list[str]:
    """The algorithms tokens are verified with: ``JWT_ALGORITHMS`` minus anything that is not
    an RSA algorithm (``none`` and ``HS*`` can never be used).

    :raises SyneriseConfigurationError: when nothing usable remains.
    """
    algorithms = [alg for alg in synerise_settings.JWT_ALGORITHMS if alg in RSA_ALGORITHMS]
    if not algorithms:
        raise SyneriseConfigurationError(
            "SYNERISE['JWT_ALGORITHMS'] contains no RSA algorithm (use ['RS512'])."
        )
    return algorithms


# --------------------------------------------------------------------------- verification


def verify_token(
    token: str, *, public_key: str | None = None, client: SyneriseClient | None = None
) -> TokenClaims:
    """Verify a Synerise client JWT and return its claims (``verified=True``).

    ``public_key`` (PEM) overrides the configured/fetched key; ``client`` is used to fetch
    the key when it is not configured.

    :raises TokenVerificationError: with ``reason`` ``too_large``, ``malformed``, ``header``,
        ``algorithm``, ``signature``, ``expired``, ``claims`` or ``invalid``.
    :raises TransientUpstreamError: the public key is needed and could not be fetched.
    :raises SyneriseConfigurationError: ``PUBLIC_KEY`` or ``JWT_ALGORITHMS`` is unusable.
    """
    check_token_shape(token)
    return _verify(token, _header(token), public_key=public_key, client=client)


def _verify(
    token: str, header: dict[str, Any], *, public_key: str | None, client: SyneriseClient | None
) -> TokenClaims:
    """:func:`verify_token` once the token's shape is checked and its header decoded."""
    algorithms = pinned_algorithms()
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise TokenVerificationError("The token algorithm is not accepted.", reason="algorithm")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise TokenVerificationError("The token type is not JWT.", reason="header")
    if "crit" in header or "b64" in header:
        raise TokenVerificationError(
            "The token uses unsupported header extensions.", reason="header"
        )

    refetchable = False
    if public_key is None:
        configured = synerise_settings.PUBLIC_KEY
        if configured:
            public_key = configured
        else:
            public_key = get_public_key(client=client)
            refetchable = True
    try:
        payload = _decode(token, header, public_key, alg)
    except TokenVerificationError as exc:
        if exc.reason != "signature" or not refetchable:
            raise
        fresh = get_public_key(client=client, force=True)
        if fresh == public_key:
            raise
        logger.info("Synerise public key changed; verifying again with the new key")
        payload = _decode(token, header, fresh, alg)
    return _claims_from_payload(payload)


def _decode(token: str, header: dict[str, Any], pem: str, alg: str) -> dict[str, Any]:
    """The claims of ``token`` once its signature (``alg``, already pinned) verifies with the
    key ``pem`` and its registered claims pass (:mod:`django_synerise.jws_verify`)."""
    issuer = synerise_settings.JWT_ISSUER or None
    payload = verified_payload(token, header, _load_key(pem), alg)
    return check_claims(
        payload,
        require=["exp", "iss"] if issuer else ["exp"],
        leeway=synerise_settings.JWT_LEEWAY,
        issuer=issuer,
    )


def _claim_str(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise TokenVerificationError(
            f"The token claim {name!r} has the wrong type.", reason="claims"
        )
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TokenVerificationError(
            f"The token claim {name!r} has the wrong type.", reason="claims"
        )
    return value


def _claim_time(value: Any, *, scale: int = 1) -> datetime | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value / scale, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _claims_from_payload(payload: dict[str, Any]) -> TokenClaims:
    client_id = _claim_str(payload, "clId")
    if not client_id:
        raise TokenVerificationError("The token has no client id.", reason="claims")
    expires_at = _claim_time(payload.get("exp"))
    if expires_at is None:
        raise TokenVerificationError("The token expiry is unusable.", reason="claims")
    issued_at = _claim_time(payload.get("iat")) or _claim_time(payload.get("ctd"), scale=1000)
    return TokenClaims(
        client_id=client_id,
        email=_claim_str(payload, "eml"),
        custom_id=_claim_str(payload, "cId"),
        uuid=_claim_str(payload, "uuid"),
        origin=_claim_str(payload, "origin"),
        realm=_claim_str(payload, "rlm"),
        business_profile_id=_claim_str(payload, "bpi"),
        issued_at=issued_at,
        expires_at=expires_at,
        verified=True,
    )


# --------------------------------------------------------------------------- claims_for


def claims_for(
    result: AuthResult, *, client: SyneriseClient | None = None, public_key: str | None = None
) -> TokenClaims:
    """Claims of a token Synerise just issued (a login or refresh answer).

    With ``VERIFY_SIGNATURE`` on and a JWS token, this is :func:`verify_token`. Otherwise
    (opaque token, or verification off) the expiry is ``result.expiration`` and the identity
    comes from ``client.personal_information(token)``; ``verified`` is then False and
    ``business_profile_id`` is only set when personal information carries one.

    ``public_key`` (PEM, as :func:`offline_public_key` returns it) verifies a JWS with that
    key and never fetches one: a signature it does not verify is final
    (``reason="signature"``), where the configured or fetched key would be fetched again once.

    :raises TokenVerificationError: verification failed, or no expiry is known.
    :raises UpstreamError: personal information could not be fetched (any subclass).
    """
    client = client or get_client()
    token = result.token
    if synerise_settings.VERIFY_SIGNATURE:
        header = _jws_header(token)
        if header is not None:  # verify_token, without checking the shape a second time
            return _verify(token, header, public_key=public_key, client=client)

    expires_at = result.expiration
    if expires_at is None and is_jws(token):
        # Scheduling only: the unverified exp never decides identity.
        try:
            unverified = unverified_claims(token)
        except MalformedJWS:
            unverified = {}
        expires_at = _claim_time(unverified.get("exp"))
    if expires_at is None:
        raise TokenVerificationError(
            "Synerise did not say when the token expires.", reason="claims"
        )

    info = client.personal_information(token)
    client_id = info.get("clientId")
    if isinstance(client_id, bool) or not isinstance(client_id, (int, str)) or not str(client_id):
        raise BadResponse("Personal information has no clientId.", status=200)

    def text(key: str) -> str | None:
        value = info.get(key)
        if isinstance(value, bool) or value is None:
            return None
        return str(value) if isinstance(value, (str, int)) else None

    return TokenClaims(
        client_id=str(client_id),
        email=text("email"),
        custom_id=result.custom_id or text("customId"),
        uuid=text("uuid"),
        origin=result.origin,
        realm=result.realm,
        business_profile_id=text("businessProfileId"),
        issued_at=result.created,
        expires_at=expires_at,
        verified=False,
    )


# --------------------------------------------------------------------------- public key

_cache: dict[str, str] = {}
_last_forced: dict[str, float] = {}
_fetch_locks: dict[str, threading.Lock] = {}
_lock = threading.Lock()


@functools.lru_cache(maxsize=16)
def _load_key(pem: str) -> RSAPublicKey:
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SyneriseConfigurationError("The Synerise public key is not a valid PEM.") from exc
    if not isinstance(key, RSAPublicKey):
        raise SyneriseConfigurationError("The Synerise public key is not an RSA key.")
    return key


def get_public_key(*, client: SyneriseClient | None = None, force: bool = False) -> str:
    """Return the PEM key that verifies client tokens.

    ``PUBLIC_KEY`` when set; otherwise ``client.public_key()`` fetched once per base URL and
    cached. ``force=True`` refetches, at most once per :data:`REFETCH_COOLDOWN` seconds per
    base URL (inside the cooldown the cached key is returned, once a refetch in flight has
    ended: callers whose tokens failed the old key while another thread fetched the new one
    get the new one). A failed refetch logs a warning and returns the last good key.

    :raises TransientUpstreamError: no key is cached and the fetch failed (any
        :class:`~django_synerise.exceptions.UpstreamError` from the client).
    """
    configured = synerise_settings.PUBLIC_KEY
    if configured:
        return configured

    client = client or get_client()
    base = client.base_url
    cooling = False
    with _lock:
        cached = _cache.get(base)
        if cached is not None and not force:
            return cached
        if force and cached is not None:
            now = time.monotonic()
            last = _last_forced.get(base)
            cooling = last is not None and now - last < REFETCH_COOLDOWN
            if not cooling:
                _last_forced[base] = now
        fetch_lock = _fetch_locks.setdefault(base, threading.Lock())
    with fetch_lock:
        # Behind the fetch lock: a refetch another thread has in flight has ended.
        with _lock:
            current = _cache.get(base)
        if cooling and current is not None:
            return current  # that refetch's key (or the last good one), not the one we had
        if current is not None and (not force or current != cached):
            return current  # another thread fetched it while we waited
        try:
            pem = client.public_key()
        except UpstreamError as exc:
            if current is not None:
                logger.warning(
                    "Refetching the Synerise public key failed (%s); keeping the cached key",
                    type(exc).__name__,
                )
                return current
            raise
        with _lock:
            _cache[base] = pem
        logger.info("Fetched the Synerise public key from %s", base)
        return pem


def offline_public_key(token: str, *, client: SyneriseClient | None = None) -> str | None:
    """The key :func:`claims_for` would verify ``token`` with, when it needs no call to
    Synerise for it: ``VERIFY_SIGNATURE`` is on, ``token`` is a JWS and the key is
    ``PUBLIC_KEY`` or already fetched for ``client``'s base URL. ``None`` otherwise (an opaque
    token, verification off, or a key still to fetch).
    """
    if not synerise_settings.VERIFY_SIGNATURE or _jws_header(token) is None:
        return None
    configured = synerise_settings.PUBLIC_KEY
    if configured:
        return str(configured)
    client = client or get_client()
    with _lock:
        return _cache.get(client.base_url)


def clear_public_key_cache() -> None:
    """Forget every fetched key, the refetch cooldowns and the parsed-key cache (tests)."""
    with _lock:
        _cache.clear()
        _last_forced.clear()
    _load_key.cache_clear()


def _new_locks_after_fork() -> None:
    """New locks in a forked child (the fetched keys and cooldowns carry over)."""
    global _lock, _fetch_locks
    _lock = threading.Lock()
    _fetch_locks = {}


process_state.register(
    "verification.public_keys", after_fork=_new_locks_after_fork, reset=clear_public_key_cache
)
