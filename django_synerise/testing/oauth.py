"""How FakeSynerise validates a site's OAUTH tokens: JWKS ("JWT token" mode) or user info
("server" mode), over real HTTP, as Synerise does. Never imports Django."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jwt
import requests

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = ["OAuthRefused", "fetch_json", "identity_from_jwt", "identity_from_userinfo"]

#: Seconds the fake waits for the site's JWKS or user-info endpoint.
TIMEOUT = 5.0
_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")


class OAuthRefused(Exception):
    """The token is refused: ``status`` (401 token, 403 provider failure) and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fetch_json(url: str, *, token: str | None = None) -> dict[str, Any]:
    """GET ``url`` (with a Bearer ``token`` when given) and return its JSON object.

    :raises OAuthRefused: 401 when the endpoint answers 401/403 to the token, 403 when it
        cannot be reached, fails, or answers something else than a JSON object.
    """
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = requests.get(url, headers=headers, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException:
        raise OAuthRefused(403, "Identity provider could not be reached.") from None
    if token is not None and response.status_code in (401, 403):
        raise OAuthRefused(401, "Invalid identity provider token.")
    if response.status_code != 200:
        raise OAuthRefused(403, "Identity provider answered with an error.")
    try:
        data = response.json()
    except ValueError:
        raise OAuthRefused(403, "Identity provider answered with an invalid body.") from None
    if not isinstance(data, dict):
        raise OAuthRefused(403, "Identity provider answered with an invalid body.")
    return data


def _key_for(kid: str, jwks: dict[str, Any]) -> jwt.PyJWK | None:
    for entry in jwks.get("keys") or []:
        if isinstance(entry, dict) and entry.get("kid") == kid:
            try:
                return jwt.PyJWK(entry)
            except jwt.PyJWTError:
                return None
    return None


def identity_from_jwt(
    token: str,
    *,
    fetch_jwks: Callable[..., dict[str, Any]],
    issuer: str | None,
    audience: str | None,
) -> dict[str, Any]:
    """Verify a JWT against the site's JWKS; return its claims (``sub`` required).

    ``fetch_jwks(refresh=bool)`` returns the key set (cached or fetched again).

    :raises OAuthRefused: 401 for a token that fails, 403 when the JWKS cannot be fetched.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise OAuthRefused(401, "Invalid identity provider token.") from None
    kid = str(header.get("kid") or "")
    key = _key_for(kid, fetch_jwks(refresh=False)) or _key_for(kid, fetch_jwks(refresh=True))
    if key is None or header.get("alg") not in _ALGORITHMS:
        raise OAuthRefused(401, "Invalid identity provider token.")
    options: Options = {"require": ["exp", "sub"], "verify_aud": audience is not None}
    try:
        return jwt.decode(
            token,
            key.key,
            algorithms=[str(header["alg"])],
            audience=audience,
            issuer=issuer,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise OAuthRefused(401, "Identity provider token expired.") from None
    except jwt.PyJWTError:
        raise OAuthRefused(401, "Invalid identity provider token.") from None


def identity_from_userinfo(token: str, url: str) -> dict[str, Any]:
    """Call the site's user-info ``url`` with the token; return the JSON (``sub`` required).

    :raises OAuthRefused: 401 when the site refuses the token or names no ``sub``, 403 when
        the endpoint cannot be reached or fails.
    """
    data = fetch_json(url, token=token)
    if not isinstance(data.get("sub"), str) or not data["sub"]:
        raise OAuthRefused(401, "Invalid identity provider token.")
    return data
