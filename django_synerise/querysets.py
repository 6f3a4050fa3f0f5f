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
from .token_status import CLAIMABLE, TokenStatus

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


def recent_activity_q(idle: float | timedelta, now: datetime) -> Q:
    """The condition "used within ``idle`` before ``now``" (a token never used since it was
    stored counts from its ``created_at``)."""
    cutoff = now - to_timedelta(idle)
    return Q(last_used_at__gte=cutoff) | Q(last_used_at__isnull=True, created_at__gte=cutoff)


def active_owner_q(now: datetime) -> Q:
    """The condition "owner active and seen within ``KEEPALIVE_IDLE`` before ``now``"."""
    return Q(account__user__is_active=True) & recent_activity_q(
        synerise_settings.KEEPALIVE_IDLE, now
    )


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
        return self.filter(status=TokenStatus.ACTIVE)

    def needing_login(self) -> ClientTokenQuerySet:
        """Tokens Synerise can no longer refresh (status ``needs_login``)."""
        return self.filter(status=TokenStatus.NEEDS_LOGIN)

    def revoked(self) -> ClientTokenQuerySet:
        """Tokens ended locally (status ``revoked``)."""
        return self.filter(status=TokenStatus.REVOKED)

    def lease_free(self, now: datetime | None = None) -> ClientTokenQuerySet:
        """Tokens no worker holds a lease on at ``now``."""
        return self.filter(lease_free_q(now or timezone.now()))

    def expired(self, now: datetime | None = None) -> ClientTokenQuerySet:
        """Tokens whose expiry is at or before ``now`` (any status)."""
        return self.filter(expires_at__lte=now or timezone.now())

    def due(self, now: datetime | None = None) -> ClientTokenQuerySet:
        """The rows the refresh pipeline should refresh: the one definition of "due".

        Status ``active`` (or ``refreshing`` whose lease ran out: its worker died), lease
        free, ``retry_at`` (backoff after a transient failure) unset or passed,
        ``refresh_at`` passed and ``expires_at`` not (Synerise refuses to refresh an expired
        token), owner active and seen within ``KEEPALIVE_IDLE``. Times compare with the
        database clock, the one every worker shares; pass ``now`` to ask what is due at that
        instant instead. Served by the ``(status, refresh_at)`` index. Nothing is locked:
        :func:`django_synerise.services.claim_due_tokens` claims from this set.
        """
        clock: datetime | Now = Now() if now is None else now
        return self.filter(
            lease_free_q(clock),
            retry_free_q(clock),
            active_owner_q(now or timezone.now()),
            status__in=CLAIMABLE,
            refresh_at__lte=clock,
            expires_at__gt=clock,
        )

    def expiring_soon(
        self, within: float | timedelta | None = None, *, now: datetime | None = None
    ) -> ClientTokenQuerySet:
        """Active or refreshing tokens expiring within ``within`` (default ``REFRESH_MARGIN``)."""
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
        window = synerise_settings.KEEPALIVE_IDLE if idle is None else idle
        return self.filter(recent_activity_q(window, now or timezone.now()))

    def for_user(self, user: AbstractBaseUser) -> ClientTokenQuerySet:
        """The token of ``user`` (zero or one)."""
        # Any AUTH_USER_MODEL: django-stubs types the foreign key as the checked settings' User.
        return self.filter(account__user=user)  # type: ignore[misc]
