"""Signal receivers: deactivating or deleting a user ends their stored Synerise token; with
``CONNECT_ON_LOGIN`` a site login (any backend) connects the user to Synerise, and a token of
an OAUTH-connected user that needs a new login is connected again."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_save, pre_delete

from .conf import synerise_settings
from .models import IdentityProvider, TokenStatus
from .services.connect import request_connection
from .services.identity import identity_provider_enabled
from .services.tokens import get_token_for, logout
from .signals import token_expired

logger = logging.getLogger(__name__)

_UID_POST_SAVE = "django_synerise.revoke_on_deactivate"
_UID_PRE_DELETE = "django_synerise.revoke_on_delete"
_UID_LOGGED_IN = "django_synerise.connect_on_login"
_UID_EXPIRED = "django_synerise.reconnect_on_needs_login"


def revoke_on_deactivate(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    """Revoke the token of a saved user whose ``is_active`` is false (reason ``inactive``).

    Nothing happens for active users or new users; for an inactive one it is one query when
    there is no live token (``token_revoked`` is sent only when a token actually changed).
    Sessions are left alone: Django's backends (ours included) already refuse the sessions of
    an inactive user, and this runs on every save of one.
    """
    if created or getattr(instance, "is_active", True) or kwargs.get("raw"):
        return

    logout(instance, reason="inactive", end_sessions=False)


def revoke_on_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Revoke the token of a user about to be deleted (reason ``deleted``), so
    ``token_revoked`` receivers hear about it before the row cascades away. Sessions are left
    to Django: a deleted user's sessions no longer authenticate anybody."""
    logout(instance, reason="deleted", end_sessions=False)


def connect_on_login(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """With ``CONNECT_ON_LOGIN``, ask for a Synerise connection of a user who just signed in.

    Runs for every backend (``ModelBackend``, django-allauth, SSO). Users whose token is live
    (active or refreshing, for example after a Synerise login) are left alone. The login never
    waits on Synerise: this records a pending connection and enqueues a Celery task after
    commit (see :func:`~django_synerise.services.request_connection`); any error here is
    logged and swallowed so the site login always succeeds.
    """
    if not synerise_settings.CONNECT_ON_LOGIN or user is None or not user.is_active:
        return
    try:
        if not identity_provider_enabled():
            return
        row = get_token_for(user)
        if row is not None and row.status in (TokenStatus.ACTIVE, TokenStatus.REFRESHING):
            return
        request_connection([user.pk], reason="login")
    except Exception:  # the site login must never fail because of Synerise
        logger.exception("Could not request the Synerise connection of user %s", user.pk)


def reconnect_on_needs_login(
    sender: Any, token: Any = None, account: Any = None, reason: str = "", **kwargs: Any
) -> None:
    """Connect again, through OAUTH, a connected user whose token ended ``needs_login``.

    Only for accounts whose latest sign-in was OAUTH, while the identity provider is
    configured and the user is active; goes through :func:`~django_synerise.services.
    request_connection` (pending, Celery task after commit, beat retries with backoff and
    the refresh rate limit), so the customer never has to sign in again for Synerise's sake.
    """
    if account is None or account.identity_provider != IdentityProvider.OAUTH:
        return
    try:
        if not identity_provider_enabled():
            return
        user_model = get_user_model()
        if not user_model.objects.filter(pk=account.user_id, is_active=True).exists():
            return
        request_connection([account.user_id], reason=f"needs_login: {reason}")
    except Exception:  # never break the refresh pipeline that sent the signal
        logger.exception("Could not request the Synerise reconnection of user %s", account.user_id)


def connect() -> None:
    """Connect the receivers to the configured user model (called from ``AppConfig.ready``)."""
    user_model = get_user_model()
    post_save.connect(revoke_on_deactivate, sender=user_model, dispatch_uid=_UID_POST_SAVE)
    pre_delete.connect(revoke_on_delete, sender=user_model, dispatch_uid=_UID_PRE_DELETE)
    user_logged_in.connect(connect_on_login, dispatch_uid=_UID_LOGGED_IN)
    token_expired.connect(reconnect_on_needs_login, dispatch_uid=_UID_EXPIRED)
