"""Django authentication backend that signs users in through Synerise."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables

from .exceptions import (
    AccountInactive,
    BadRequest,
    CredentialsRejected,
    InvalidToken,
    SyneriseError,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

#: Providers that sign in with a provider token instead of a password.
TOKEN_PROVIDERS = frozenset({"GOOGLE", "APPLE", "FACEBOOK", "OAUTH"})


class SyneriseBackend(BaseBackend):
    """Authenticate against Synerise; the user is found or created by ``services.login``.

    Accepted credentials (any other combination returns ``None`` without a Synerise call):

    * ``email`` + ``password``, or ``custom_id`` + ``password``;
    * ``identity_provider`` (GOOGLE, APPLE, FACEBOOK, OAUTH) + ``identity_provider_token``;
    * ``username`` + ``password`` (Django's login forms, the admin's included): a username
      that looks like an email is sent as ``email``, anything else as ``custom_id``.

    ``uuid`` and ``device_id`` are passed on. ``authenticate`` never raises for a Synerise
    failure: rejected credentials, an outage or a bad response all give ``None`` (the error
    class is logged, never the credentials), so the next backend may try. Inactive users are
    refused.
    """

    @method_decorator(
        sensitive_variables("password", "identity_provider_token", "credentials", "result")
    )
    def authenticate(
        self,
        request: HttpRequest | None,
        email: str | None = None,
        password: str | None = None,
        custom_id: str | None = None,
        identity_provider: str | None = None,
        identity_provider_token: str | None = None,
        uuid: str | None = None,
        device_id: str | None = None,
        username: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        """Return the Django user for valid Synerise credentials, else ``None``."""
        credentials = self._credentials(
            email=email,
            password=password,
            custom_id=custom_id,
            identity_provider=identity_provider,
            identity_provider_token=identity_provider_token,
            username=username,
        )
        if credentials is None:
            return None
        from . import services
        from .services.login import AccountConflict

        try:
            result = services.login(request=request, uuid=uuid, device_id=device_id, **credentials)
        except AccountInactive:
            logger.info("Synerise backend: the linked user is inactive")
            return None
        except (CredentialsRejected, BadRequest, InvalidToken, AccountConflict) as exc:
            logger.info("Synerise backend: sign-in refused (%s)", type(exc).__name__)
            return None
        except (SyneriseError, requests.RequestException) as exc:
            logger.warning("Synerise backend: Synerise unavailable (%s)", type(exc).__name__)
            return None
        user = result.user
        return user if self.user_can_authenticate(user) else None

    @staticmethod
    @sensitive_variables("password", "identity_provider_token")
    def _credentials(
        *,
        email: str | None,
        password: str | None,
        custom_id: str | None,
        identity_provider: str | None,
        identity_provider_token: str | None,
        username: str | None,
    ) -> dict[str, Any] | None:
        """Map the accepted credential shapes to ``services.login`` arguments (or ``None``)."""
        if identity_provider_token:
            provider = str(identity_provider or "").strip().upper()
            if provider not in TOKEN_PROVIDERS:
                return None
            return {
                "identity_provider": provider,
                "identity_provider_token": identity_provider_token,
            }
        if not password or not isinstance(password, str):
            return None
        if identity_provider and str(identity_provider).strip().upper() != "SYNERISE":
            return None
        if email:
            return {"identity_provider": "SYNERISE", "email": email, "password": password}
        if custom_id:
            return {"identity_provider": "SYNERISE", "custom_id": custom_id, "password": password}
        if username and isinstance(username, str):
            name = username.strip()
            if not name:
                return None
            key = "email" if "@" in name else "custom_id"
            return {"identity_provider": "SYNERISE", key: name, "password": password}
        return None

    def user_can_authenticate(self, user: AbstractBaseUser) -> bool:
        """Refuse users whose ``is_active`` is false (as Django's ``ModelBackend`` does)."""
        return getattr(user, "is_active", True)

    def get_user(self, user_id: Any) -> AbstractBaseUser | None:
        """Return the active user with primary key ``user_id``, or ``None``."""
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get(pk=user_id)
        except user_model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
