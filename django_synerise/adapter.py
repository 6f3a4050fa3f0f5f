"""Customisation hooks for sign-in: user lookup, creation, linking and profile mapping.

Subclass :class:`DefaultSyneriseAdapter`, override the hooks you need and point
``SYNERISE["ADAPTER"]`` at your class (allauth style). :func:`get_adapter` returns an
instance of the configured class (defined in :mod:`django_synerise.adapter_loader`, which the
services use, so that this module and the services do not import each other in a cycle).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import BaseUserManager
from django.core.exceptions import FieldDoesNotExist
from django.utils.translation import gettext

from .adapter_loader import get_adapter
from .client import SyneriseClient, get_client
from .conf import synerise_settings
from .exceptions import SyneriseError
from .messages import DEFAULT_ERROR_MESSAGES, GENERIC_CODE
from .services.identity import subject_for

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

    from .verification import TokenClaims

__all__ = ["DefaultSyneriseAdapter", "get_adapter"]

logger = logging.getLogger(__name__)

_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


class DefaultSyneriseAdapter:
    """Default sign-in policy: link by Synerise client id, create a user otherwise.

    Every hook may be overridden. ``services.login`` calls them in this order for a client id
    seen for the first time: :meth:`get_client` (before the Synerise call),
    :meth:`fetch_profile`, :meth:`find_user`, then :meth:`create_user` (which calls
    :meth:`username_for` and :meth:`populate_user`) when no user was found. A client id that
    is already linked goes straight to its user; no hook runs.
    """

    #: Messages per error code, shown to end users: the API's error bodies
    #: (:mod:`django_synerise.api.errors`) take their ``detail`` from :meth:`error_message`.
    #: Override to reword (keys of :data:`django_synerise.messages.DEFAULT_ERROR_MESSAGES`).
    error_messages: dict[str, Any] = dict(DEFAULT_ERROR_MESSAGES)

    def __init__(self, request: HttpRequest | None = None) -> None:
        self.request = request

    # ------------------------------------------------------------------ client

    def get_client(self) -> SyneriseClient:
        """Return the :class:`~django_synerise.client.SyneriseClient` used for sign-in.

        Override to use another client (a subclass, different credentials, a test double).
        """
        return get_client()

    def fetch_profile(
        self, client: SyneriseClient, token: str, claims: TokenClaims
    ) -> dict[str, Any] | None:
        """Return the client's Synerise personal information, or ``None`` when unavailable.

        Called only when a client id is seen for the first time (one extra HTTP call). A
        failure is logged by class and ignored: the profile only fills optional fields.
        """
        try:
            profile = client.personal_information(token)
        except SyneriseError as exc:
            logger.info("Personal information unavailable: %s", type(exc).__name__)
            return None
        return profile if isinstance(profile, dict) else None

    # ------------------------------------------------------------------ linking

    def can_link_by_email(
        self, user: AbstractBaseUser, claims: TokenClaims, profile: dict[str, Any] | None
    ) -> bool:
        """Return whether a new Synerise client may be linked to the existing ``user``.

        Called only for a user whose email equals the token's email. Defaults to the
        ``LINK_BY_EMAIL`` setting (off): linking by email lets whoever controls that address
        at Synerise (or at Google, Apple, Facebook) take over the local account, so only
        enable it when every identity provider verifies email ownership.
        """
        return synerise_settings.LINK_BY_EMAIL

    def find_user(
        self, claims: TokenClaims, profile: dict[str, Any] | None
    ) -> AbstractBaseUser | None:
        """Return an existing user to link to a client id seen for the first time, or ``None``.

        The default finds a user only by email, and only when exactly one active user without
        a Synerise link has the token's email and :meth:`can_link_by_email` agrees. Never use
        an email from request input here: only the verified token (or the Synerise profile).
        """
        if not synerise_settings.LINK_BY_EMAIL:
            return None
        email = claims.email or (profile or {}).get("email")
        if not email:
            return None
        User = get_user_model()  # noqa: N806
        email_field = User.get_email_field_name()
        candidates = list(
            User._default_manager.filter(
                **{f"{email_field}__iexact": email, "is_active": True},
                synerise_account__isnull=True,
            )[:2]
        )
        if len(candidates) != 1:
            return None
        user = candidates[0]
        return user if self.can_link_by_email(user, claims, profile) else None

    # ------------------------------------------------------------------ creation

    def username_for(self, claims: TokenClaims) -> str:
        """Return a unique value for the user model's ``USERNAME_FIELD``.

        The default is ``synerise-<client id>`` (never the email: that would let a Synerise
        client pick a name such as ``admin``), with a numeric suffix on a collision.
        """
        User = get_user_model()  # noqa: N806
        field = User._meta.get_field(User.USERNAME_FIELD)
        max_length = getattr(field, "max_length", None) or 150
        base = _USERNAME_UNSAFE.sub("", f"synerise-{claims.client_id}")[:max_length]
        candidate, suffix = base, 1
        manager = User._default_manager
        while manager.filter(**{User.USERNAME_FIELD: candidate}).exists():
            suffix += 1
            tail = f"-{suffix}"
            candidate = base[: max_length - len(tail)] + tail
        return candidate

    def populate_user(
        self, user: AbstractBaseUser, claims: TokenClaims, profile: dict[str, Any] | None
    ) -> AbstractBaseUser:
        """Fill ``user`` (not saved) from the token and the Synerise profile; return it.

        Sets the email (profile, else token claim) and ``first_name``/``last_name`` (profile)
        when the user model has those fields; values are cut to the field length.
        """
        User = type(user)  # noqa: N806
        profile = profile or {}
        email = profile.get("email") or claims.email
        values = {
            User.get_email_field_name(): BaseUserManager.normalize_email(email) if email else None,
            "first_name": profile.get("firstName"),
            "last_name": profile.get("lastName"),
        }
        for name, value in values.items():
            if not value or not isinstance(value, str):
                continue
            try:
                field = User._meta.get_field(name)
            except FieldDoesNotExist:  # a custom user model without this field
                continue
            max_length = getattr(field, "max_length", None)
            setattr(user, name, value[:max_length] if max_length else value)
        return user

    def create_user(
        self,
        claims: TokenClaims,
        profile: dict[str, Any] | None,
        request: HttpRequest | None,
    ) -> AbstractBaseUser:
        """Create and save the Django user of a new Synerise client; return it.

        Runs inside the login transaction. The user gets :meth:`username_for`, the fields of
        :meth:`populate_user` and an unusable password (Synerise keeps the password).
        """
        User = get_user_model()  # noqa: N806
        user = User()
        setattr(user, User.USERNAME_FIELD, self.username_for(claims))
        self.populate_user(user, claims, profile)
        user.set_unusable_password()
        user.save()
        return user

    # ------------------------------------------------------------------ identity provider

    def identity_claims(self, user: AbstractBaseUser) -> dict[str, Any]:
        """Return the claims this site vouches for when it signs ``user`` into Synerise (OAUTH).

        They go into the identity token :func:`~django_synerise.services.mint_identity_token`
        signs and into the answer of the ``oauth/userinfo/`` endpoint; Synerise maps them to
        profile fields. ``sub`` must stay the same for the user forever: the default is the
        random UUID kept for the user
        (:class:`~django_synerise.models.IdentitySubject`), never the username, the email or
        the primary key. ``email``, ``given_name`` and ``family_name`` are added when set.
        Override to add claims (keep ``sub``); ``iss``, ``aud``, ``iat``, ``exp`` and ``jti``
        are set by the minting and cannot be overridden here.
        """
        claims: dict[str, Any] = {"sub": subject_for(user)}
        for claim, attribute in (
            ("email", "email"),
            ("given_name", "first_name"),
            ("family_name", "last_name"),
        ):
            value = getattr(user, attribute, "")
            if isinstance(value, str) and value.strip():
                claims[claim] = value.strip()
        return claims

    # ------------------------------------------------------------------ messages

    def error_message(self, code: str) -> str:
        """Return the end-user message for an error ``code``, translated.

        Looks in :attr:`error_messages`, then in the package defaults (so an override that
        lists only the codes it rewords keeps the others); an unknown code gets the generic
        ``credentials_rejected`` message, so a message never reveals why a sign-in failed.
        """
        message = (
            self.error_messages.get(code)
            or DEFAULT_ERROR_MESSAGES.get(code)
            or self.error_messages.get(GENERIC_CODE)
            or DEFAULT_ERROR_MESSAGES[GENERIC_CODE]
        )
        return gettext(str(message))
