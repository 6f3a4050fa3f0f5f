"""Signals sent by django-synerise services (never from ``Model.save()``).

The ``token`` argument is always the :class:`~django_synerise.models.ClientToken` instance,
never the JWT string.
"""

from __future__ import annotations

from django.dispatch import Signal

#: A user signed in through Synerise.
#: sender=SyneriseAccount; kwargs: ``user``, ``account`` (SyneriseAccount), ``request``
#: (HttpRequest or None), ``created`` (bool: the Django user was created by this login).
client_logged_in = Signal()

#: A SYNERISE login through the conditional endpoint (``CONDITIONAL_LOGIN``) needs another
#: step before Synerise issues a token; nothing was stored.
#: sender=ConditionalAuthFailed; kwargs: ``request`` (HttpRequest or None), ``status`` (str:
#: ``ACTIVATION_REQUIRED``, ``REGISTRATION_REQUIRED``, ``APPROVAL_REQUIRED``,
#: ``TERMS_ACCEPTANCE_REQUIRED``, ``MFA_REQUIRED``), ``code`` (its stable lower-case code),
#: ``conditions`` (list of dicts from Synerise), ``identifier`` (the e-mail or custom id).
login_conditions_required = Signal()

#: A stored token was refreshed and saved.
#: sender=ClientToken; kwargs: ``token`` (ClientToken), ``account`` (SyneriseAccount).
token_refreshed = Signal()

#: A refresh attempt failed.
#: sender=ClientToken; kwargs: ``token`` (ClientToken), ``account`` (SyneriseAccount),
#: ``error`` (the SyneriseError raised), ``will_retry`` (bool: the pipeline will try again).
token_refresh_failed = Signal()

#: A stored token can no longer be used and the user must sign in again (status needs_login).
#: sender=ClientToken; kwargs: ``token`` (ClientToken), ``account`` (SyneriseAccount),
#: ``reason`` (str code: ``expired``, ``rejected``, ``decryption_failed``...).
token_expired = Signal()

#: A stored token was ended locally (logout, deactivation, admin revoke).
#: sender=ClientToken; kwargs: ``token`` (ClientToken), ``account`` (SyneriseAccount),
#: ``reason`` (str code: ``logout``, ``admin``, ``user_deactivated``, ``user_deleted``...).
token_revoked = Signal()

#: Background refresh paused: Synerise rejects the workspace's API key (every token would be
#: rejected alike), so no token was moved to needs_login. Sent once when the pause begins.
#: sender=RefreshHalt; kwargs: ``halt`` (RefreshHalt: ``reason``, ``detail``, ``since``).
refresh_halted = Signal()

#: Background refresh resumed: Synerise accepted the API key again.
#: sender=RefreshHalt; kwargs: ``halt`` (the RefreshHalt that ended), ``duration`` (seconds).
refresh_resumed = Signal()

__all__ = [
    "client_logged_in",
    "login_conditions_required",
    "refresh_halted",
    "refresh_resumed",
    "token_expired",
    "token_refresh_failed",
    "token_refreshed",
    "token_revoked",
]
