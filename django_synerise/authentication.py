"""DRF authentication by Synerise client token: ``Authorization: Bearer <client JWT>``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from . import verification
from .conf import synerise_settings
from .exceptions import TokenVerificationError
from .services.activity import account_for_client_id, touch_token_activity
from .services.tokens import check_business_profile, check_presented_token

if TYPE_CHECKING:
    from .models import ClientToken, SyneriseAccount

__all__ = ["SyneriseTokenAuthentication"]

logger = logging.getLogger(__name__)

#: Token statuses under which a Bearer token still authenticates.
_USABLE_STATUSES = frozenset({"active", "refreshing"})


class SyneriseTokenAuthentication(BaseAuthentication):
    """Authenticate ``Authorization: Bearer <Synerise client token>``.

    A token authenticates only when, in this order (cheapest first):

    1. it is at most ``MAX_TOKEN_BYTES`` bytes and shaped like a JWS (no parsing before that);
    2. :func:`django_synerise.verification.verify_token` accepts it (RS512 signature, ``exp``,
       issuer);
    3. its realm is ``client`` (anonymous tokens are refused);
    4. its client id maps to an existing, active user (the rule of
       :func:`django_synerise.services.account_for_client_id`, one query with the token row);
    5. its business profile (``bpi``) equals ``BUSINESS_PROFILE_ID`` or, when that is unset,
       the one stored on the account at login — Synerise's signing key is shared by all
       workspaces, so this is what makes it *our* token (the rule of
       :func:`django_synerise.services.check_business_profile`, ``presented=True``);
    6. the account's stored token row is not revoked / needs_login (logout and
       deactivation take effect immediately);
    7. it *is* the stored token, or the token that one replaced within
       ``SUPERSEDED_TOKEN_GRACE`` (:func:`django_synerise.services.check_presented_token`):
       a token issued before a logout or revocation, or replaced longer ago, is refused for
       good, even after the user signs in again.

    Steps 4 to 7 cost one indexed query (account by client id, joined with its user and
    token row); the fingerprint comparison needs no decryption. The row read is kept in
    :attr:`stored_token` for the view.

    Returns ``None`` when there is no Bearer header (so session authentication can run),
    ``(user, claims)`` on success (``request.auth`` is the
    :class:`~django_synerise.verification.TokenClaims`, never the token string); raises
    :class:`~rest_framework.exceptions.AuthenticationFailed` with one generic message
    otherwise. ``last_used_at`` moves at most once per ``ACTIVITY_INTERVAL``.
    A failure to fetch the public key is an upstream error (503), not a 401.
    """

    keyword = "Bearer"
    www_authenticate_realm = "api"

    #: The stored token row (with its account) read by the last successful
    #: :meth:`authenticate_credentials`. DRF makes one authenticator per request, so a view
    #: finds the row of its own request in ``request.successful_authenticator.stored_token``
    #: and need not read it again.
    stored_token: ClientToken | None = None

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = get_authorization_header(request)
        if not header:
            return None
        scheme, _, raw = header.partition(b" ")
        if scheme.lower() != self.keyword.lower().encode():
            return None
        raw = raw.strip()
        if not raw or b" " in raw or len(raw) > synerise_settings.MAX_TOKEN_BYTES:
            raise self._failed("malformed")
        try:
            token = raw.decode("ascii")
        except UnicodeDecodeError:
            raise self._failed("malformed") from None
        return self.authenticate_credentials(token)

    def authenticate_credentials(self, token: str) -> tuple[Any, Any]:
        """Verify ``token`` and map it to an active user (see the class docstring).

        :raises AuthenticationFailed: for any reason the token does not authenticate.
        :raises django_synerise.exceptions.TransientUpstreamError: the public key could not
            be fetched.
        """
        try:
            verification.check_token_shape(token)
            claims = verification.verify_token(token)
        except TokenVerificationError as exc:
            raise self._failed(exc.reason) from None
        if claims.is_anonymous:
            raise self._failed("anonymous")
        account = account_for_client_id(claims.client_id)
        if account is None:
            raise self._failed("unknown_client")
        user = account.user
        try:
            check_business_profile(claims, account, presented=True)
        except TokenVerificationError as exc:
            raise self._failed(exc.reason) from None
        stored = _stored_token(account)
        if stored is None or stored.status not in _USABLE_STATUSES:
            raise self._failed("token_not_usable")
        try:
            check_presented_token(stored, token)
        except TokenVerificationError as exc:
            raise self._failed(exc.reason) from None
        now = timezone.now()
        if touch_token_activity(stored.pk, now=now, last_used_at=stored.last_used_at):
            stored.last_used_at = now
        self.stored_token = stored
        return user, claims

    def authenticate_header(self, request: Request) -> str:
        """The ``WWW-Authenticate`` challenge; its presence makes DRF answer 401, not 403."""
        return f'{self.keyword} realm="{self.www_authenticate_realm}"'

    @staticmethod
    def _failed(reason: str) -> AuthenticationFailed:
        logger.info("Bearer authentication failed: %s", reason)
        return AuthenticationFailed("Invalid credentials.", code="invalid_credentials")


def _stored_token(account: SyneriseAccount) -> ClientToken | None:
    try:
        return account.token
    except ObjectDoesNotExist:
        return None
