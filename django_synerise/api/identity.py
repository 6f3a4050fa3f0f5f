"""Endpoints Synerise calls when this site is its OAUTH identity provider: JWKS and user info.

Plain Django views (no DRF authentication runs on them): ``oauth/jwks.json`` publishes the
public keys of ``OAUTH_SIGNING_KEYS``; ``oauth/userinfo/`` answers Synerise's "server" mode
with the claims of the user an identity token of this site vouches for.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables

from ..exceptions import SyneriseConfigurationError, TokenVerificationError
from ..services.identity import identity_provider_enabled, user_for_identity_token
from ..signing import SigningKeyError, jwks

logger = logging.getLogger(__name__)

__all__ = ["JWKS_MAX_AGE", "jwks_view", "userinfo_view"]

#: Seconds a JWKS answer may be cached (keep it well below ``OAUTH_TOKEN_LIFETIME`` times
#: the rotation period; a new key must be published before it signs).
JWKS_MAX_AGE = 300


def _method_not_allowed(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(
        {"detail": f'Method "{request.method}" not allowed.', "code": "method_not_allowed"},
        status=405,
    )
    response["Allow"] = "GET, HEAD"
    return response


def _not_configured() -> JsonResponse:
    return JsonResponse(
        {"detail": "This site is not configured as an identity provider.", "code": "not_found"},
        status=404,
    )


@csrf_exempt  # read-only, no cookies used: any other method gets a JSON 405
def jwks_view(request: HttpRequest) -> JsonResponse:
    """``GET oauth/jwks.json``: the JSON Web Key Set of every configured signing key.

    Public parameters only, ``kid`` = RFC 7638 thumbprint; cacheable for
    :data:`JWKS_MAX_AGE` seconds. 404 (JSON) when the identity provider is not configured,
    503 when a configured key cannot be used, 405 for a method other than GET or HEAD (all
    JSON).
    """
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(request)
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


@csrf_exempt  # Bearer only, read-only: any other method gets a JSON 405
@never_cache
@sensitive_variables("token")
def userinfo_view(request: HttpRequest) -> JsonResponse:
    """``GET oauth/userinfo/``: the mapped claims of the user an identity token vouches for.

    ``Authorization: Bearer <token>`` must carry a token this site minted, unexpired, for
    ``OAUTH_AUDIENCE``, of an existing active user; the answer is that user's
    ``identity_claims()`` as JSON. Anything else is a 401 with one body whatever the reason
    (the reason is logged at debug level, the token never). 404 when not configured, 405
    (JSON) for a method other than GET or HEAD.
    """
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(request)
    if not identity_provider_enabled():
        return _not_configured()
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("invalid_request")
    try:
        _user, claims = user_for_identity_token(token)
    except TokenVerificationError as exc:
        logger.debug("User-info request refused (%s)", exc.reason)
        return _unauthorized()
    except (SyneriseConfigurationError, SigningKeyError):
        logger.error("SYNERISE['OAUTH_SIGNING_KEYS'] holds an unusable key; user info refused")
        return _unauthorized()
    return JsonResponse(claims)
