"""This site as a Synerise OAUTH identity provider: subjects, identity tokens and their checks.

:func:`mint_identity_token` signs a short-lived JWT for a user with the first key of
``OAUTH_SIGNING_KEYS``; Synerise validates it against ``oauth/jwks.json`` (its "JWT token"
mode) or by calling ``oauth/userinfo/`` with it (its "server" mode), which answers through
:func:`verify_identity_token`. Minted tokens are never logged, stored or shown.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import jwt
from django.views.decorators.debug import sensitive_variables

from ..adapter_loader import get_adapter
from ..conf import synerise_settings
from ..exceptions import SyneriseConfigurationError, TokenVerificationError
from ..models import IdentitySubject
from ..signing import SigningKeyError, signing_keys

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

__all__ = [
    "RESERVED_CLAIMS",
    "identity_provider_enabled",
    "mint_identity_token",
    "subject_for",
    "subjects_for",
    "user_for_identity_token",
    "verify_identity_token",
]

#: Claims set by the minting; :meth:`identity_claims` cannot override them.
RESERVED_CLAIMS = frozenset({"iss", "aud", "iat", "nbf", "exp", "jti"})
#: Clock skew (seconds) allowed when checking ``iat`` and ``exp`` of a presented token.
LEEWAY = 5


def identity_provider_enabled() -> bool:
    """``True`` when ``OAUTH_SIGNING_KEYS``, ``OAUTH_ISSUER`` and ``OAUTH_AUDIENCE`` are set."""
    return bool(
        synerise_settings.OAUTH_SIGNING_KEYS
        and synerise_settings.OAUTH_ISSUER
        and synerise_settings.OAUTH_AUDIENCE
    )


def _require_enabled() -> None:
    if not identity_provider_enabled():
        raise SyneriseConfigurationError(
            "Set SYNERISE['OAUTH_SIGNING_KEYS'], ['OAUTH_ISSUER'] and ['OAUTH_AUDIENCE'] to "
            "use this site as the Synerise identity provider."
        )


def subject_for(user: Any) -> str:
    """Return the stable opaque ``sub`` of ``user`` (a random UUID, created on first use).

    Batch callers set it ahead on the instance (``user._synerise_subject``) to save a query.
    """
    known = getattr(user, "_synerise_subject", None)
    if known:
        return str(known)
    subject, _ = IdentitySubject.objects.get_or_create(user_id=user.pk)
    return str(subject.subject)


def subjects_for(user_ids: Iterable[int]) -> dict[int, str]:
    """Return ``{user id: sub}`` for many users, creating the missing subjects in bulk."""
    ids = sorted({int(pk) for pk in user_ids})
    if not ids:
        return {}
    IdentitySubject.objects.bulk_create(
        [IdentitySubject(user_id=pk) for pk in ids], ignore_conflicts=True, batch_size=1000
    )
    return {
        user_id: str(subject)
        for user_id, subject in IdentitySubject.objects.filter(user_id__in=ids).values_list(
            "user_id", "subject"
        )
    }


def _lifetime() -> int:
    return synerise_settings.OAUTH_TOKEN_LIFETIME


@sensitive_variables("token")
def mint_identity_token(user: Any, *, claims: dict[str, Any] | None = None) -> str:
    """Return a short-lived identity token (JWT) vouching for ``user``.

    Signed with the first key of ``OAUTH_SIGNING_KEYS`` (RS256 or ES256, ``kid`` in the
    header). Claims: ``iss`` (``OAUTH_ISSUER``), ``aud`` (``OAUTH_AUDIENCE``), ``sub``,
    ``iat``, ``exp`` (``iat + OAUTH_TOKEN_LIFETIME``), a random ``jti``, plus the mapped
    profile claims of the adapter's
    :meth:`~django_synerise.adapter.DefaultSyneriseAdapter.identity_claims` (or ``claims``
    when the caller already has them). The token is never logged or stored.

    :raises SyneriseConfigurationError: the identity provider is not configured, or a key
        cannot be used.
    :raises ValueError: the claims carry no ``sub``.
    """
    _require_enabled()
    if claims is None:
        claims = get_adapter().identity_claims(user)
    if not claims.get("sub"):
        raise ValueError("identity_claims() must return a non-empty 'sub'.")
    try:
        key = signing_keys()[0]
    except SigningKeyError as exc:
        raise SyneriseConfigurationError(f"SYNERISE['OAUTH_SIGNING_KEYS']: a key {exc}") from None
    now = int(time.time())
    payload = {name: value for name, value in claims.items() if name not in RESERVED_CLAIMS}
    payload.update(
        {
            "iss": str(synerise_settings.OAUTH_ISSUER),
            "aud": str(synerise_settings.OAUTH_AUDIENCE),
            "iat": now,
            "exp": now + _lifetime(),
            "jti": uuid.uuid4().hex,
        }
    )
    token = jwt.encode(
        payload, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"}
    )
    return token


@sensitive_variables("token")
def verify_identity_token(token: str) -> dict[str, Any]:
    """Return the claims of an identity token this site minted, after checking everything.

    The token must be at most ``MAX_TOKEN_BYTES`` long, carry the ``kid`` of a configured
    key (one being retired included), verify with that key's algorithm only, and have this
    site's ``iss`` and ``aud``, a ``sub``, and an ``exp`` in the future (``iat`` and ``exp``
    required, :data:`LEEWAY` seconds of skew).

    :raises TokenVerificationError: ``reason`` ``malformed``, ``unknown_key``, ``signature``,
        ``expired``, ``audience``, ``issuer`` or ``claims`` (nothing else is said about it).
    """
    _require_enabled()
    if (
        not isinstance(token, str)
        or not token
        or len(token) > int(synerise_settings.MAX_TOKEN_BYTES)
    ):
        raise TokenVerificationError("Malformed identity token.", reason="malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenVerificationError("Malformed identity token.", reason="malformed") from None
    keys = {key.kid: key for key in signing_keys()}
    key = keys.get(str(header.get("kid") or ""))
    if key is None:
        raise TokenVerificationError("Unknown signing key.", reason="unknown_key")
    try:
        claims = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=[key.algorithm],
            audience=str(synerise_settings.OAUTH_AUDIENCE),
            issuer=str(synerise_settings.OAUTH_ISSUER),
            leeway=LEEWAY,
            options={"require": ["iss", "aud", "sub", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenVerificationError("Expired identity token.", reason="expired") from None
    except jwt.InvalidAudienceError:
        raise TokenVerificationError("Wrong audience.", reason="audience") from None
    except jwt.InvalidIssuerError:
        raise TokenVerificationError("Wrong issuer.", reason="issuer") from None
    except jwt.InvalidSignatureError:
        raise TokenVerificationError("Bad signature.", reason="signature") from None
    except jwt.PyJWTError:
        raise TokenVerificationError("Invalid identity token.", reason="claims") from None
    return claims


def user_for_identity_token(token: str) -> tuple[Any, dict[str, Any]]:
    """Return ``(user, claims)`` for a valid identity token of an existing, active user.

    The claims are those of the adapter's ``identity_claims(user)`` now (not the ones frozen
    in the token), so Synerise's server mode reads current profile data.

    :raises TokenVerificationError: as :func:`verify_identity_token`, or
        ``reason="unknown_subject"`` when no active user has the token's ``sub``.
    """
    verified = verify_identity_token(token)
    try:
        subject = uuid.UUID(str(verified["sub"]))
    except ValueError:
        raise TokenVerificationError("Unknown subject.", reason="unknown_subject") from None
    row = (
        IdentitySubject.objects.select_related("user")
        .filter(subject=subject, user__is_active=True)
        .first()
    )
    if row is None:
        raise TokenVerificationError("Unknown subject.", reason="unknown_subject")
    return row.user, get_adapter().identity_claims(row.user)
