"""Endpoints Synerise calls when this site is its OAUTH identity provider: JWKS and user info.

Plain Django views (no DRF authentication runs on them): ``oauth/jwks.json`` publishes the
public keys of ``OAUTH_SIGNING_KEYS``; ``oauth/userinfo/`` answers Synerise's "server" mode
with the claims of the user an identity token of this site vouches for.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET

from ..exceptions import InvalidToken, SyneriseConfigurationError
from ..services.identity import identity_provider_enabled, user_for_identity_token
from ..signing import SigningKeyError, jwks

logger = logging.getLogger(__name__)

__all__ = ["JWKS_MAX_AGE", "jwks_view", "userinfo_view"]

#: Seconds a JWKS answer may be cached (keep it well below ``OAUTH_TOKEN_LIFETIME`` times
#: the rotation period; a new key must be published before it signs).
JWKS_MAX_AGE = 300


def _not_configured() -> JsonResponse:
    return JsonResponse(
        {"detail": "This site is not configured as an identity provider.", "code": "not_found"},
        status=404,
    )


@require_GET
def jwks_view(request: HttpRequest) -> JsonResponse:
    """``GET oauth/jwks.json``: the JSON Web Key Set of every configured signing key.

    Public parameters only, ``kid`` = RFC 7638 thumbprint; cacheable for
    :data:`JWKS_MAX_AGE` seconds. 404 (JSON) when the identity provider is not configured,
    503 when a configured key cannot be used.
    """
    if not identity_provider_enabled():
        return _not_configured()
    try:
        body = jwks()
    except SigningKeyError:
        logger.error("SYNERISE['OAUTH_SIGNING_KEYS'] holds an unusable key; JWKS not served")
        return JsonResponse(
            {"detail": "Signing keys are misconfigured.", "code": "synerise_misconfigured"},
            status=503,
        )
    response = JsonResponse(body)
    response["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


def _unauthorized(error: str = "invalid_token") -> JsonResponse:
    response = JsonResponse(
        {"detail": "A valid identity token of this site is required.", "code": error},
        status=401,
    )
    response["WWW-Authenticate"] = f'Bearer error="{error}"'
    response["Cache-Control"] = "no-store"
    return response


@never_cache
@require_GET
@sensitive_variables("token")
def userinfo_view(request: HttpRequest) -> JsonResponse:
    """``GET oauth/userinfo/``: the mapped claims of the user an identity token vouches for.

    ``Authorization: Bearer <token>`` must carry a token this site minted, unexpired, for
    ``OAUTH_AUDIENCE``, of an existing active user; the answer is that user's
    ``identity_claims()`` as JSON. Anything else is a 401 with one body whatever the reason
    (the reason is logged at debug level, the token never). 404 when not configured.
    """
    if not identity_provider_enabled():
        return _not_configured()
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("invalid_request")
    try:
        _user, claims = user_for_identity_token(token)
    except InvalidToken as exc:
        logger.debug("User-info request refused (%s)", exc.reason)
        return _unauthorized()
    except (SyneriseConfigurationError, SigningKeyError):
        logger.error("SYNERISE['OAUTH_SIGNING_KEYS'] holds an unusable key; user info refused")
        return _unauthorized()
    return JsonResponse(claims)
