"""The identity providers: the one registry every other module derives its lists from.

Plain Python (no Django import), so the testing kit, which never imports Django, uses it too.
:class:`django_synerise.models.IdentityProvider` (the ``identityProvider`` enum of the
Synerise login call and the choices of ``SyneriseAccount.identity_provider``) is built from
:data:`PROVIDER_LABELS`. Each provider other than ``SYNERISE`` signs in with a provider token
instead of a password; :data:`TOKEN_KINDS` says which token shape it sends (a ``jwt`` ID
token or an ``opaque`` access token).
"""

from __future__ import annotations

__all__ = [
    "IDENTITY_PROVIDERS",
    "PROVIDER_LABELS",
    "SOCIAL_PROVIDERS",
    "TOKEN_KINDS",
    "URL_PROVIDERS",
]

#: Provider value -> label (an untranslated message id; translated where it is shown).
PROVIDER_LABELS: dict[str, str] = {
    "SYNERISE": "Synerise (email or custom id and password)",
    "GOOGLE": "Google",
    "APPLE": "Apple",
    "FACEBOOK": "Facebook",
    "OAUTH": "OAuth",
}

#: Every provider value, in declaration order (what :func:`services.login` accepts).
IDENTITY_PROVIDERS: tuple[str, ...] = tuple(PROVIDER_LABELS)

#: Provider value -> shape of its ``identity_provider_token`` (``jwt`` or ``opaque``), for the
#: providers that sign in with a provider token instead of a password.
TOKEN_KINDS: dict[str, str] = {
    "GOOGLE": "jwt",
    "APPLE": "jwt",
    "FACEBOOK": "opaque",
    "OAUTH": "opaque",
}

#: Providers that sign in with a provider token (every provider but ``SYNERISE``).
SOCIAL_PROVIDERS: frozenset[str] = frozenset(TOKEN_KINDS)

#: URL segment of ``auth/login/<provider>/`` -> (provider value, token kind).
URL_PROVIDERS: dict[str, tuple[str, str]] = {
    value.lower(): (value, kind) for value, kind in TOKEN_KINDS.items()
}
