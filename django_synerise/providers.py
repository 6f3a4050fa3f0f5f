"""The identity providers: the one registry every other module derives its lists from.

:class:`IdentityProvider` is the ``identityProvider`` enum of the Synerise login call (and the
choices of ``SyneriseAccount.identity_provider``). Each provider other than ``SYNERISE``
signs in with a provider token instead of a password; :data:`TOKEN_KINDS` says which token
shape it sends (a ``jwt`` ID token or an ``opaque`` access token). Importable before
``django.setup()``.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = [
    "IDENTITY_PROVIDERS",
    "SOCIAL_PROVIDERS",
    "TOKEN_KINDS",
    "URL_PROVIDERS",
    "IdentityProvider",
]


class IdentityProvider(models.TextChoices):
    """How the Synerise client signed in (the ``identityProvider`` of the login call)."""

    SYNERISE = "SYNERISE", _("Synerise (email or custom id and password)")
    GOOGLE = "GOOGLE", _("Google")
    APPLE = "APPLE", _("Apple")
    FACEBOOK = "FACEBOOK", _("Facebook")
    OAUTH = "OAUTH", _("OAuth")


#: Every provider value, in declaration order (what :func:`services.login` accepts).
IDENTITY_PROVIDERS: tuple[str, ...] = tuple(IdentityProvider.values)

#: Provider value -> shape of its ``identity_provider_token`` (``jwt`` or ``opaque``), for the
#: providers that sign in with a provider token instead of a password.
TOKEN_KINDS: dict[str, str] = {
    IdentityProvider.GOOGLE.value: "jwt",
    IdentityProvider.APPLE.value: "jwt",
    IdentityProvider.FACEBOOK.value: "opaque",
    IdentityProvider.OAUTH.value: "opaque",
}

#: Providers that sign in with a provider token (every provider but ``SYNERISE``).
SOCIAL_PROVIDERS: frozenset[str] = frozenset(TOKEN_KINDS)

#: URL segment of ``auth/login/<provider>/`` -> (provider value, token kind).
URL_PROVIDERS: dict[str, tuple[str, str]] = {
    value.lower(): (value, kind) for value, kind in TOKEN_KINDS.items()
}
