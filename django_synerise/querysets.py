"""Query helpers for Synerise accounts and client tokens (attached with ``as_manager()``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from .conf import synerise_settings
from .conversions import to_timedelta

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    # Named (as strings) in the querysets' base classes: models.py imports this module.
    from .models import ClientToken, SyneriseAccount  # noqa: F401


def lease_free_q(now: datetime | Now | None = None) -> Q:
    """The condition "no worker holds a lease": no lease, or one that ran out by ``now``
    (default: the database's clock, the one every worker shares)."""
    return Q(lease_until__isnull=True) | Q(lease_until__lte=Now() if now is None else now)


def retry_free_q(now: datetime | Now | None = None) -> Q:
    """The condition "no backoff pending": no ``retry_at``, or one that passed by ``now``
    (default: the database's clock)."""
    return Q(retry_at__isnull=True) | Q(retry_at__lte=Now() if now is None else now)


class AccountQuerySet(models.QuerySet["SyneriseAccount"]):
    """Queries on :class:`~django_synerise.models.SyneriseAccount`."""

    def for_user(self, user: AbstractBaseUser) -> AccountQuerySet:
        """Accounts of ``user`` (zero or one)."""
        # Any AUTH_USER_MODEL: django-stubs types the foreign key as the checked settings' User.
        return self.filter(user=user)  # type: ignore[misc]

    def of_active_users(self) -> AccountQuerySet:
        """Accounts whose Django user is active."""
        return self.filter(user__is_active=True)

    def with_token(self) -> AccountQuerySet:
        """Join the stored token (reverse one-to-one) to avoid one query per account."""
        return self.select_related("user", "token")


class ClientTokenQuerySet(models.QuerySet["ClientToken"]):
    """Queries on :class:`~django_synerise.models.ClientToken`.

    Every method taking ``now`` uses :func:`django.utils.timezone.now` when it is ``None``.
    """

    def active(self) -> ClientTokenQuerySet:
        """Tokens in status ``active``."""
        from .models import TokenStatus

        return self.filter(status=TokenStatus.ACTIVE)

    def needing_login(self) -> ClientTokenQuerySet:
        """Tokens Synerise can no longer refresh (status ``needs_login``)."""
        from .models import TokenStatus

        return self.filter(status=TokenStatus.NEEDS_LOGIN)

    def revoked(self) -> ClientTokenQuerySet:
        """Tokens ended locally (status ``revoked``)."""
        from .models import TokenStatus

        return self.filter(status=TokenStatus.REVOKED)

    def lease_free(self, now: datetime | None = None) -> ClientTokenQuerySet:
        """Tokens no worker holds a lease on at ``now``."""
        return self.filter(lease_free_q(now or timezone.now()))

    def expired(self, now: datetime | None = None) -> ClientTokenQuerySet:
        """Tokens whose expiry is at or before ``now`` (any status)."""
        return self.filter(expires_at__lte=now or timezone.now())

    def due(self, now: datetime | None = None) -> ClientTokenQuerySet:
        """Tokens the refresh pipeline should refresh at ``now``.

        Status ``active``, ``refresh_at <= now``, lease free, past any ``retry_at`` and not
        yet expired (Synerise
        refuses to refresh an expired token). Served by the ``(status, refresh_at)`` index.
        Combine with :meth:`with_recent_activity` to skip idle users.
        """
        now = now or timezone.now()
        return (
            self.active()
            .lease_free(now)
            .filter(retry_free_q(now), refresh_at__lte=now, expires_at__gt=now)
        )

    def expiring_soon(
        self, within: float | timedelta | None = None, *, now: datetime | None = None
    ) -> ClientTokenQuerySet:
        """Active or refreshing tokens expiring within ``within`` (default ``REFRESH_MARGIN``)."""
        from .models import TokenStatus

        now = now or timezone.now()
        window = to_timedelta(synerise_settings.REFRESH_MARGIN if within is None else within)
        return self.filter(
            status__in=[TokenStatus.ACTIVE, TokenStatus.REFRESHING],
            expires_at__gt=now,
            expires_at__lte=now + window,
        )

    def with_recent_activity(
        self, idle: float | timedelta | None = None, *, now: datetime | None = None
    ) -> ClientTokenQuerySet:
        """Tokens whose user was active within ``idle`` (default ``KEEPALIVE_IDLE``).

        A token never used since it was stored counts from its ``created_at``.
        """
        now = now or timezone.now()
        cutoff = now - to_timedelta(synerise_settings.KEEPALIVE_IDLE if idle is None else idle)
        return self.filter(
            Q(last_used_at__gte=cutoff) | Q(last_used_at__isnull=True, created_at__gte=cutoff)
        )

    def for_user(self, user: AbstractBaseUser) -> ClientTokenQuerySet:
        """The token of ``user`` (zero or one)."""
        # Any AUTH_USER_MODEL: django-stubs types the foreign key as the checked settings' User.
        return self.filter(account__user=user)  # type: ignore[misc]
