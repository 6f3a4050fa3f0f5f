"""Single-flight access to a user's token: :func:`get_valid_token` and its companions.

A token inside ``REFRESH_MARGIN`` is refreshed by exactly one caller across all processes
(lease + version compare-and-swap) through the refresh engine's batch of one
(:func:`django_synerise.services.refresh.refresh_single`); the others wait for the new
version. This module sits above both :mod:`.tokens` (storage rules) and :mod:`.refresh` (the
engine), so neither imports the other's callers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import signals
from ..bulkhead import interactive_call
from ..conf import synerise_settings
from ..exceptions import LoginRequired, SyneriseBusy, TokenDecryptionError
from ..models import ClientToken, TokenStatus
from .activity import touch_token_activity
from .refresh import refresh_single
from .tokens import get_token_for, mark_needs_login

if TYPE_CHECKING:
    from ..client import SyneriseClient

logger = logging.getLogger(__name__)

__all__ = [
    "RECENT_REFRESH",
    "ValidToken",
    "get_valid_client_token",
    "get_valid_token",
    "refresh_client_token",
    "refresh_user_token",
]

#: ``refresh_user_token`` returns the stored token when it was stored this recently.
RECENT_REFRESH = timedelta(seconds=60)

_POLL_FIRST = 0.02
_POLL_MAX = 0.2
_LEASE_GRACE = 0.5


def _refuse_status(row: ClientToken) -> None:
    if row.status == TokenStatus.REVOKED:
        raise LoginRequired(reason="revoked")
    if row.status == TokenStatus.NEEDS_LOGIN:
        raise LoginRequired(reason="needs_login")


@sensitive_variables()
def _decrypt(row: ClientToken) -> str:
    """Decrypt ``row``; on failure move it to needs_login and raise (fail closed)."""
    try:
        return row.get_token()
    except TokenDecryptionError:
        logger.error("Stored Synerise token %s could not be decrypted", row.pk)
        mark_needs_login(row, reason="decryption_failed")
        raise LoginRequired(reason="decryption_failed") from None


def _load_row(user: Any, loaded: ClientToken | None = None) -> ClientToken:
    if not getattr(user, "is_active", False):
        raise LoginRequired(reason="inactive")
    if loaded is not None and loaded.account.user_id == getattr(user, "pk", None):
        row: ClientToken | None = loaded
    else:
        row = get_token_for(user)
    if row is None:
        raise LoginRequired(reason="no_token")
    _refuse_status(row)
    return row


def _still_valid(row: ClientToken, now: datetime | None = None) -> bool:
    return row.expires_at > (now or timezone.now())


def _last_stored(row: ClientToken) -> datetime | None:
    stamps = [stamp for stamp in (row.refreshed_at, row.issued_at) if stamp is not None]
    return max(stamps) if stamps else None


@sensitive_variables("current")
def _refresh_single_flight(
    row: ClientToken, current: str, *, client: SyneriseClient | None
) -> tuple[ClientToken, str]:
    """Refresh ``row`` once across every process; return the (row, token) to use.

    A batch of one through the refresh engine
    (:func:`~django_synerise.services.refresh.refresh_single`), so every upstream answer
    leaves the row exactly as a background batch would. The caller that claims the row
    calls Synerise with no transaction or lock held; every other caller waits (bounded by
    ``SINGLE_FLIGHT_WAIT``) for the version to move. A row backing off after a transient
    failure (``retry_at`` ahead) is not refreshed: its current token is served while valid.
    """
    if not _still_valid(row):
        # Synerise refreshes only a token that is still valid: do not ask.
        mark_needs_login(row, reason="expired")
        raise LoginRequired(reason="expired")
    if row.retry_at is not None and row.retry_at > timezone.now():
        return row, current

    version = row.version
    try:
        # A request waits for this call: it takes a slot of the interactive bulkhead. A full
        # bulkhead claims nothing and calls nobody; the current token is still valid.
        with interactive_call():
            report = refresh_single(row, client=client)
    except SyneriseBusy as exc:
        logger.warning("Refresh of Synerise token %s deferred: %s", row.pk, exc.code)
        signals.token_refresh_failed.send(
            sender=ClientToken, token=row, account=row.account, error=exc, will_retry=True
        )
        return row, current
    if report is None:
        return _wait_for_refresh(row, current)
    if report.refreshed:
        logger.debug("Synerise token %s refreshed (version %s)", row.pk, row.version)
        return row, _decrypt(row)
    if report.needs_login:
        raise LoginRequired(reason=report.reasons.get(row.pk, "needs_login"))
    if report.skipped and not (report.failed_transient or report.halted):
        # Lost the race (the row changed while Synerise answered): use what is stored now.
        fresh = ClientToken.objects.select_related("account").filter(pk=row.pk).first()
        if fresh is None:
            raise LoginRequired(reason="no_token")
        _refuse_status(fresh)
        if fresh.version != version:
            return fresh, _decrypt(fresh)
    # Transient failure, or Synerise rejects the workspace (refresh halted): keep serving.
    if _still_valid(row):
        return row, current
    raise LoginRequired(reason="expired")


@sensitive_variables("current")
def _wait_for_refresh(row: ClientToken, current: str) -> tuple[ClientToken, str]:
    """Poll until another caller's refresh lands; bounded by ``SINGLE_FLIGHT_WAIT``."""
    started = time.monotonic()
    deadline = started + float(synerise_settings.SINGLE_FLIGHT_WAIT)
    # The winner's lease may not be committed yet when we first look: keep looking briefly.
    grace = min(deadline, started + _LEASE_GRACE)
    pause = _POLL_FIRST
    while True:
        fresh = ClientToken.objects.select_related("account").filter(pk=row.pk).first()
        if fresh is None:
            raise LoginRequired(reason="no_token")
        _refuse_status(fresh)
        if fresh.version != row.version:
            return fresh, _decrypt(fresh)
        lease_held = fresh.status == TokenStatus.REFRESHING and (
            fresh.lease_until is not None and fresh.lease_until > timezone.now()
        )
        now = time.monotonic()
        if (not lease_held and now >= grace) or now >= deadline:
            # The refresher gave up (or is slow): keep serving the current token while valid.
            if _still_valid(fresh):
                return fresh, current
            raise LoginRequired(reason="expired")
        time.sleep(pause)
        pause = min(pause * 2, _POLL_MAX)


def _obtain(
    user: Any, *, client: SyneriseClient | None, force: bool, loaded: ClientToken | None = None
) -> tuple[ClientToken, str]:
    row = _load_row(user, loaded)
    current = _decrypt(row)
    now = timezone.now()
    if force:
        last = _last_stored(row)
        if last is not None and now - last < RECENT_REFRESH and _still_valid(row, now):
            return row, current
    else:
        margin = timedelta(seconds=float(synerise_settings.REFRESH_MARGIN))
        if row.expires_at - now > margin:
            return row, current
    return _refresh_single_flight(row, current, client=client)


@dataclass(frozen=True, repr=False)
class ValidToken:
    """A usable client token with its expiry, as :func:`get_valid_client_token` returns it.

    ``token`` is the plaintext (never log it); ``expires_at`` is the expiry stored with it
    (the token's ``exp`` claim, or the expiry Synerise announced for an opaque token), so no
    caller needs to decode the token. ``str()``/``repr()`` never show the token.
    """

    token: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"ValidToken(expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__


def get_valid_client_token(
    user: Any, *, client: SyneriseClient | None = None, loaded: ClientToken | None = None
) -> ValidToken:
    """:func:`get_valid_token`, returning the token together with its expiry.

    Same refresh, activity and error behaviour as :func:`get_valid_token`. ``loaded`` is the
    user's token row (with its account) when the caller read it in this same request, as
    Bearer authentication does: it is used instead of reading the row again. Never pass a row
    read earlier than that: whether it is revoked, and whether it is due, is decided on it.

    :raises LoginRequired: as :func:`get_valid_token`.
    """
    row, token = _obtain(user, client=client, force=False, loaded=loaded)
    touch_token_activity(row.pk, last_used_at=row.last_used_at)
    return ValidToken(token=token, expires_at=row.expires_at)


def get_valid_token(user: Any, *, client: SyneriseClient | None = None) -> str:
    """Return a usable Synerise client token of ``user``, refreshing it first when needed.

    A token with more than ``REFRESH_MARGIN`` seconds left is returned as is (no upstream
    call). Otherwise exactly one caller across all processes refreshes it (lease + version
    compare-and-swap) while the others wait up to ``SINGLE_FLIGHT_WAIT`` seconds for the new
    token. The refresh goes through the same engine as the background batches (a batch of
    one), so the row ends in the same state for every upstream answer. When the refresh
    fails transiently, or Synerise rejects the workspace's API key (background refresh then
    halts), the current token is returned while it is still valid; a row whose ``retry_at``
    is ahead is not refreshed. Moves ``last_used_at`` (at most once per
    ``ACTIVITY_INTERVAL``). Never call it inside ``transaction.atomic()``: the refresh must
    not hold a transaction open over HTTP.

    :raises LoginRequired: ``reason`` ``inactive``, ``no_token``, ``needs_login``, ``revoked``,
        ``decryption_failed`` (nothing sent upstream), ``rejected`` (Synerise rejected the
        token while accepting the API key; the row moves to needs_login and
        ``token_expired`` is sent) or ``expired``.
    """
    return get_valid_client_token(user, client=client).token


def refresh_user_token(
    user: Any, *, client: SyneriseClient | None = None, loaded: ClientToken | None = None
) -> ClientToken:
    """Refresh the token of ``user`` now (single flight) and return the stored row.

    When a token was stored in the last 60 seconds (login or refresh) it is returned without
    an upstream call, so a burst of refresh requests costs one Synerise call. ``loaded`` as in
    :func:`get_valid_client_token`.

    :raises LoginRequired: as :func:`get_valid_token`.
    """
    row, _ = refresh_client_token(user, client=client, loaded=loaded)
    return row


def refresh_client_token(
    user: Any, *, client: SyneriseClient | None = None, loaded: ClientToken | None = None
) -> tuple[ClientToken, str]:
    """:func:`refresh_user_token`, returning the plaintext token too (decrypted once, where
    the refresh needs it anyway: a decryption costs some 0.1 ms)."""
    row, token = _obtain(user, client=client, force=True, loaded=loaded)
    touch_token_activity(row.pk, last_used_at=row.last_used_at)
    return row, token
