"""Signal receivers: deactivating or deleting a user ends their stored Synerise token."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_delete

logger = logging.getLogger(__name__)

_UID_POST_SAVE = "django_synerise.revoke_on_deactivate"
_UID_PRE_DELETE = "django_synerise.revoke_on_delete"


def revoke_on_deactivate(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    """Revoke the token of a saved user whose ``is_active`` is false (reason ``inactive``).

    Nothing happens for active users or new users; for an inactive one it is one query when
    there is no live token (``token_revoked`` is sent only when a token actually changed).
    Sessions are left alone: Django's backends (ours included) already refuse the sessions of
    an inactive user, and this runs on every save of one.
    """
    if created or getattr(instance, "is_active", True) or kwargs.get("raw"):
        return
    from .services.tokens import logout

    logout(instance, reason="inactive", end_sessions=False)


def revoke_on_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Revoke the token of a user about to be deleted (reason ``deleted``), so
    ``token_revoked`` receivers hear about it before the row cascades away. Sessions are left
    to Django: a deleted user's sessions no longer authenticate anybody."""
    from .services.tokens import logout

    logout(instance, reason="deleted", end_sessions=False)


def connect() -> None:
    """Connect the receivers to the configured user model (called from ``AppConfig.ready``)."""
    user_model = get_user_model()
    post_save.connect(revoke_on_deactivate, sender=user_model, dispatch_uid=_UID_POST_SAVE)
    pre_delete.connect(revoke_on_delete, sender=user_model, dispatch_uid=_UID_PRE_DELETE)
