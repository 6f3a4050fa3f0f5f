"""Django authentication backend that signs users in through Synerise."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db.models import Q, QuerySet
from django.utils.decorators import method_decorator
from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables

from . import services, throttle
from .conf import synerise_settings
from .exceptions import (
    AccountInactive,
    BadRequest,
    ConditionalAuthFailed,
    CredentialsRejected,
    SyneriseError,
    TokenVerificationError,
)
from .models import SyneriseAccount
from .providers import SOCIAL_PROVIDERS
from .services.login import AccountConflict

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

#: Providers that sign in with a provider token instead of a password.
TOKEN_PROVIDERS = SOCIAL_PROVIDERS

#: Values of ``SYNERISE["UPSTREAM_PASSWORDS"]``, narrowest first.
UPSTREAM_PASSWORD_POLICIES = ("linked", "non_local", "non_staff", "all")

#: Local users matched for one identifier, at most (enough to decide; bounds the query).
MAX_LOCAL_MATCHES = 20


class SyneriseBackend(BaseBackend):
    """Authenticate against Synerise; the user is found or created by ``services.login``.

    Accepted credentials (any other combination returns ``None`` without a Synerise call):

    * ``email`` + ``password``, or ``custom_id`` + ``password``;
    * ``identity_provider`` (GOOGLE, APPLE, FACEBOOK, OAUTH) + ``identity_provider_token``;
    * ``username`` + ``password`` (Django's login forms, the admin's included): a username
      that looks like an email is sent as ``email``, anything else as ``custom_id``.

    ``uuid`` and ``device_id`` are passed on; without ``uuid``, ``services.login`` chooses the
    uuid to send (the ``_snrs_uuid`` cookie of ``request``, the stored one, the uuid5 of the
    e-mail). Before anything is sent to Synerise:

    * **Local credentials stay local.** A password is not sent when the identifier belongs to
      a local user that ``SYNERISE["UPSTREAM_PASSWORDS"]`` keeps local (by default: any staff
      or superuser, and any user with a usable local password; see :meth:`may_send_password`).
      ``None`` is returned, so the next backend (``ModelBackend``) checks it.
    * **One throttle.** The attempt is counted by :func:`django_synerise.throttle.check_attempt`,
      the budget the HTTP API uses too. A throttled attempt returns ``None`` (Django then sends
      ``user_login_failed``) and makes no Synerise call.

    Synerise failures never raise: an outage or a bad response gives ``None`` (the error class
    is logged, never the credentials), so the next backend may try. A *rejected password*
    raises :class:`~django.core.exceptions.PermissionDenied` when every backend listed after
    this one is a ``ModelBackend`` (see :meth:`rejection_is_final`): such a backend cannot
    accept this identifier (it has no usable local password, or it would not have been sent),
    and ending the chain spares the dummy password hash it would run, so a wrong password
    takes as long as a right one. Django's :func:`~django.contrib.auth.authenticate` turns
    ``PermissionDenied`` into ``None`` and ``user_login_failed``. Inactive users are refused.

    With ``CONDITIONAL_LOGIN`` on, a login that needs another step (activation, terms, MFA,
    ...) returns ``None`` too; ``services.login`` has sent
    :data:`~django_synerise.signals.login_conditions_required` with the status, so a login
    view can show the next step.
    """

    @method_decorator(
        sensitive_variables("password", "identity_provider_token", "credentials", "result")
    )
    # django-stubs type the user as the checked settings' User; any AUTH_USER_MODEL works.
    def authenticate(  # type: ignore[override]
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
        """Return the Django user for valid Synerise credentials, else ``None``.

        :raises PermissionDenied: Synerise rejected the password and no later backend could
            accept it (see :meth:`rejection_is_final`).
        """
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
        identifier = credentials.get("email") or credentials.get("custom_id")
        if identifier is not None and not self.may_send_password(identifier):
            logger.info("Synerise backend: credentials of a local user are not sent upstream")
            return None
        verdict = throttle.check_attempt(request, identifier)
        if not verdict.allowed:
            logger.info("Synerise backend: sign-in throttled (%s)", verdict.scope)
            return None

        try:
            result = services.login(request=request, uuid=uuid, device_id=device_id, **credentials)
        except AccountInactive:
            logger.info("Synerise backend: the linked user is inactive")
            return None
        except ConditionalAuthFailed as exc:
            # services.login sent ``login_conditions_required`` with the status already.
            logger.info("Synerise backend: sign-in needs another step (%s)", exc.status)
            return None
        except CredentialsRejected as exc:
            logger.info("Synerise backend: sign-in refused (%s)", type(exc).__name__)
            if identifier is not None and self.rejection_is_final():
                raise PermissionDenied from None
            return None
        except (BadRequest, TokenVerificationError, AccountConflict) as exc:
            logger.info("Synerise backend: sign-in refused (%s)", type(exc).__name__)
            return None
        except (SyneriseError, requests.RequestException) as exc:
            logger.warning("Synerise backend: Synerise unavailable (%s)", type(exc).__name__)
            return None
        user = result.user
        if not self.user_can_authenticate(user):
            return None
        throttle.record_success(request, identifier)
        return user

    def may_send_password(self, identifier: str) -> bool:
        """Whether a password typed for ``identifier`` may be sent to Synerise.

        Follows ``SYNERISE["UPSTREAM_PASSWORDS"]``; the local users considered are those whose
        username or e-mail equals ``identifier`` (case-insensitively) or whose linked
        :class:`~django_synerise.models.SyneriseAccount` has that e-mail or custom id:

        ``"linked"``
            only identifiers of a linked Synerise account, and never as below;
        ``"non_local"`` (default)
            never for a staff user, a superuser or a user with a usable local password;
        ``"non_staff"``
            never for a staff user or a superuser;
        ``"all"``
            always (system check ``django_synerise.W070``).
        """
        policy = synerise_settings.UPSTREAM_PASSWORDS
        if policy == "all":
            return True
        users = local_users_for(identifier)
        if any(_is_staff(user) for user in users):
            return False
        if policy == "non_staff":
            return True
        if any(user.has_usable_password() for user in users):
            return False
        if policy == "linked":
            return _linked_account_exists(identifier)
        return True

    def rejection_is_final(self) -> bool:
        """Whether a password Synerise rejected should end Django's backend chain.

        True when this backend is in ``AUTHENTICATION_BACKENDS`` and every backend listed
        after it is a :class:`~django.contrib.auth.backends.ModelBackend`: that backend only
        accepts a user with a usable local password, whose credentials this backend never
        sends (unless ``UPSTREAM_PASSWORDS`` is ``"non_staff"`` or ``"all"``, when the chain
        goes on). Any other later backend gets its turn.
        """
        if synerise_settings.UPSTREAM_PASSWORDS not in ("linked", "non_local"):
            return False
        paths = list(getattr(settings, "AUTHENTICATION_BACKENDS", []) or [])
        later: list[str] | None = None
        for index, path in enumerate(paths):
            if _backend_class(path) is type(self):
                later = paths[index + 1 :]
                break
        if later is None:
            return False
        for path in later:
            backend = _backend_class(path)
            if not (isinstance(backend, type) and issubclass(backend, ModelBackend)):
                return False
        return True

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

    # django-stubs type the user as the checked settings' User; any AUTH_USER_MODEL works.
    def get_user(self, user_id: Any) -> AbstractBaseUser | None:  # type: ignore[override]
        """Return the active user with primary key ``user_id``, or ``None``."""
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get(pk=user_id)
        except user_model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None


def local_users_for(identifier: str) -> list[Any]:
    """Return the local users (at most :data:`MAX_LOCAL_MATCHES`) an identifier may name:
    username or e-mail equal to it (case-insensitively), or a linked Synerise account with
    that e-mail (case-insensitively) or custom id.

    One query, the ``UNION`` of the users matched on their own fields and the users of the
    matching accounts, so the database plans each half on its own: the accounts' half reads
    their indexes (``synerise_account_email_ci_idx``, ``synerise_account_custom_id_idx``);
    the users' half reads the user table, by index when the site has indexed
    ``UPPER(username)`` and ``UPPER(email)`` (see :doc:`/scaling`). One ``OR`` across the
    join read both whole tables on every password sign-in.
    """
    user_model = get_user_model()
    value = identifier.strip()
    own = Q(**{f"{user_model.USERNAME_FIELD}__iexact": value})
    email_field = user_model.get_email_field_name()
    try:
        user_model._meta.get_field(email_field)
    except FieldDoesNotExist:
        pass
    else:
        own |= Q(**{f"{email_field}__iexact": value})
    users = user_model._default_manager
    linked = users.filter(pk__in=_linked_accounts(value).values("user_id"))
    # No ORDER BY, in either half (a user model's Meta.ordering: SQLite refuses it there) or
    # on the whole (Django 6.1 applies Meta.ordering to it): which users match is all that counts.
    combined = users.filter(own).order_by().union(linked.order_by()).order_by()
    return list(combined[:MAX_LOCAL_MATCHES])


def _linked_accounts(value: str) -> QuerySet[SyneriseAccount]:
    """The accounts whose e-mail (case-insensitively) or custom id is ``value``."""
    return SyneriseAccount.objects.filter(Q(email__iexact=value) | Q(custom_id=value))


def _linked_account_exists(identifier: str) -> bool:
    return _linked_accounts(identifier.strip()).exists()


def _is_staff(user: Any) -> bool:
    return bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))


def _backend_class(path: str) -> Any:
    try:
        return import_string(path)
    except ImportError:
        return None
