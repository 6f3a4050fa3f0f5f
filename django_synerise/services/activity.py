"""Activity tracking: when a user last used their Synerise token, and client id lookups."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Q
from django.utils import timezone

from ..compiled import CompiledQuery, field_of
from ..conf import synerise_settings
from ..models import ClientToken, SyneriseAccount

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from ..models import SyneriseAccount

logger = logging.getLogger(__name__)


def _user_pk(user: Any) -> Any:
    """Return the primary key of ``user`` (a user instance or a raw primary key)."""
    return getattr(user, "pk", user)


def touch_activity(user: Any, *, now: datetime | None = None) -> None:
    """Record that ``user`` used their token, at most once per ``ACTIVITY_INTERVAL``.

    One ``UPDATE ... WHERE last_used_at IS NULL OR last_used_at < cutoff``; no read, no
    transaction, and nothing happens when the user has no stored token. ``user`` may be a
    user instance or its primary key. ``KEEPALIVE_IDLE`` reads ``last_used_at``.
    """
    pk = _user_pk(user)
    if pk is None:
        return
    _touch(ClientToken.objects.filter(account__user_id=pk), now)


def touch_token_activity(
    token_pk: int, *, now: datetime | None = None, last_used_at: datetime | None = None
) -> bool:
    """Like :func:`touch_activity` for a known ``ClientToken`` primary key (no join).

    ``last_used_at`` is the value the caller just read from the row: when it is recent
    enough, no query is made at all. Returns ``True`` when the ``UPDATE`` was sent (the row's
    ``last_used_at`` is then recent, whoever moved it).
    """
    now = now or timezone.now()
    if last_used_at is not None and last_used_at >= _cutoff(now):
        return False
    _touch(ClientToken.objects.filter(pk=token_pk), now)
    return True


def _cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=synerise_settings.ACTIVITY_INTERVAL)


def _touch(queryset: Any, now: datetime | None) -> None:
    now = now or timezone.now()
    queryset.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=_cutoff(now))).update(
        last_used_at=now
    )


def account_for_client_id(client_id: str | None) -> SyneriseAccount | None:
    """Return the account linked to the Synerise ``client_id`` whose user is active, with its
    user and token row loaded in the same query, or ``None``.

    Unknown client ids and inactive users both give ``None``: a client id maps only to an
    existing, active account.
    """
    if client_id is None or str(client_id) == "":
        return None
    return _ACTIVE_ACCOUNT_BY_CLIENT_ID.first(client_id=str(client_id))


#: :func:`account_for_client_id`'s query, compiled once per database.
_ACTIVE_ACCOUNT_BY_CLIENT_ID = CompiledQuery(
    SyneriseAccount,
    lambda v: (
        SyneriseAccount.objects.select_related("user", "token")
        .filter(client_id=v["client_id"], user__is_active=True)
        .order_by("pk")[:1]
    ),
    {"client_id": field_of(SyneriseAccount, "client_id")},
)


def user_for_client_id(client_id: str | None) -> AbstractBaseUser | None:
    """Return the active Django user linked to the Synerise ``client_id``, or ``None``
    (see :func:`account_for_client_id`)."""
    account = account_for_client_id(client_id)
    return account.user if account is not None else None
