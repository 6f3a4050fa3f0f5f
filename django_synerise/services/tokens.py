"""Stored client tokens: verify and store, single-flight refresh, logout and revocation."""

from __future__ import annotations

import hmac
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    ExpressionWrapper,
    F,
    Q,
    Value,
    When,
)
from django.db.models.functions import Least, Now
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import signals
from ..bulkhead import interactive_call
from ..conf import synerise_settings
from ..exceptions import (
    LoginRequired,
    SyneriseBusy,
    TokenDecryptionError,
    TokenVerificationError,
)
from .activity import touch_token_activity

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.db.models import QuerySet

    from ..client import AuthResult, SyneriseClient
    from ..models import ClientToken, SyneriseAccount
    from ..verification import TokenClaims

logger = logging.getLogger(__name__)

#: Default of the ``MAX_TOKEN_LIFETIME`` setting: the longest accepted lifetime of a token
#: Synerise hands us. Use :func:`max_token_lifetime` for the configured value.
MAX_TOKEN_LIFETIME = timedelta(hours=24)
#: ``refresh_user_token`` returns the stored token when it was stored this recently.
RECENT_REFRESH = timedelta(seconds=60)

_POLL_FIRST = 0.02
_POLL_MAX = 0.2
_LEASE_GRACE = 0.5


@dataclass(frozen=True, repr=False)
class PreparedToken:
    """A verified token, encrypted for its account row, ready to be written.

    Holds only the ciphertext, never the plaintext; ``repr()`` shows the expiry only.
    """

    ciphertext: str
    fingerprint: str
    expires_at: datetime
    refresh_at: datetime
    issued_at: datetime | None
    origin: str
    claims: TokenClaims

    def __repr__(self) -> str:
        return f"PreparedToken(expires_at={self.expires_at.isoformat()})"

    def row_values(self) -> dict[str, Any]:
        """Return the ``ClientToken`` field values this token sets."""
        return {
            "encrypted_token": self.ciphertext,
            "fingerprint": self.fingerprint,
            "expires_at": self.expires_at,
            "refresh_at": self.refresh_at,
            "issued_at": self.issued_at,
            "origin": self.origin,
        }


# --------------------------------------------------------------------------- helpers


def _models() -> tuple[type[ClientToken], type[SyneriseAccount], Any]:
    from ..models import ClientToken, SyneriseAccount, TokenStatus

    return ClientToken, SyneriseAccount, TokenStatus


def _lease_expression() -> ExpressionWrapper:
    """``now() + LEASE_SECONDS`` evaluated by the database (one clock for every worker)."""
    seconds = float(synerise_settings.LEASE_SECONDS)
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def max_token_lifetime() -> timedelta:
    """The configured ``MAX_TOKEN_LIFETIME`` (seconds or a ``timedelta``) as a ``timedelta``."""
    value = synerise_settings.MAX_TOKEN_LIFETIME
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def _expected_business_profile(account: SyneriseAccount | None) -> str | None:
    configured = synerise_settings.BUSINESS_PROFILE_ID
    if configured not in (None, ""):
        return str(configured)
    stored = getattr(account, "business_profile_id", "") if account is not None else ""
    return str(stored) if stored else None


def check_business_profile(
    claims: TokenClaims, account: SyneriseAccount | None = None, *, presented: bool = False
) -> None:
    """Refuse a token of another Synerise workspace: the one business-profile rule.

    The expected business profile is ``BUSINESS_PROFILE_ID`` when set, else the one stored on
    ``account`` at its first login; a token must carry a matching ``bpi`` claim. Where the
    rule has nothing to compare, the token's source decides:

    - a token Synerise just answered with (login, refresh; ``presented=False``) came back for
      our API key, so with nothing expected yet it is accepted (the first login learns the
      workspace), and an unverified one (``VERIFY_SIGNATURE`` off, opaque token) is checked
      only when it carries the claim;
    - a token a caller *presents* (``Authorization: Bearer``; ``presented=True``) fails
      closed: with no expected business profile, or no ``bpi`` claim, it is refused.

    :raises TokenVerificationError: ``reason="business_profile"`` on a mismatch.
    """
    expected = _expected_business_profile(account)
    actual = claims.business_profile_id
    if not presented and (expected is None or (actual is None and not claims.verified)):
        return
    if expected is None or actual is None or str(actual) != expected:
        raise TokenVerificationError(
            "The token belongs to another business profile.", reason="business_profile"
        )


def compute_refresh_at(expires_at: datetime) -> datetime:
    """Return when the background refresh should pick a token expiring at ``expires_at``.

    ``expires_at - REFRESH_MARGIN - uniform(0, REFRESH_JITTER)`` seconds, so tokens issued
    together do not all come due in the same beat.
    """
    margin = float(synerise_settings.REFRESH_MARGIN)
    jitter = float(synerise_settings.REFRESH_JITTER)
    spread = random.uniform(0, jitter) if jitter > 0 else 0.0
    return expires_at - timedelta(seconds=margin + spread)


@sensitive_variables("token")
def _prepare(account: SyneriseAccount, token: str, claims: TokenClaims) -> PreparedToken:
    """Check ``claims`` against ``account`` and encrypt ``token`` for its row."""
    from ..crypto import encrypt_token, token_fingerprint

    if account.pk is None:
        raise ValueError("The account must be saved before a token is stored for it.")
    if claims.is_anonymous:
        raise TokenVerificationError("Anonymous tokens are not stored.", reason="anonymous")
    if str(claims.client_id) != str(account.client_id):
        raise TokenVerificationError(
            "The token belongs to another client.", reason="client_mismatch"
        )
    check_business_profile(claims, account)
    now = timezone.now()
    expires_at = claims.expires_at
    if expires_at <= now:
        raise TokenVerificationError("The token has already expired.", reason="expired")
    cap = max_token_lifetime()
    if expires_at > now + cap:
        from .status import record_refusal

        logger.warning(
            "Refused a Synerise token of client %s: it lives %.0f s, more than "
            "MAX_TOKEN_LIFETIME (%.0f s); raise the setting if your workspace issues "
            "longer-lived tokens",
            account.client_id,
            (expires_at - now).total_seconds(),
            cap.total_seconds(),
        )
        record_refusal("lifetime")
        raise TokenVerificationError(
            "The token lives longer than MAX_TOKEN_LIFETIME.", reason="lifetime"
        )
    ciphertext = encrypt_token(token, account_id=account.pk, client_id=account.client_id)
    return PreparedToken(
        ciphertext=ciphertext,
        fingerprint=token_fingerprint(token),
        expires_at=expires_at,
        refresh_at=compute_refresh_at(expires_at),
        issued_at=claims.issued_at,
        origin=(claims.origin or "")[:32],
        claims=claims,
    )


def prepare_token(
    account: SyneriseAccount, result: AuthResult, *, client: SyneriseClient | None = None
) -> PreparedToken:
    """Verify a token Synerise returned for ``account`` and encrypt it for the account's row.

    Verifies with :func:`django_synerise.verification.claims_for`, then checks that the
    token is a client (not anonymous) token of ``account.client_id``, of the expected
    business profile, and expiring within ``(now, now + MAX_TOKEN_LIFETIME]`` (a longer
    lifetime is logged and counted in ``synerise_status`` as ``refused: lifetime``).

    :raises TokenVerificationError: when any check fails (nothing is stored).
    :raises UpstreamError: when ``claims_for`` needs Synerise (no signature verification) and
        that call fails.
    """
    from ..verification import claims_for

    claims = claims_for(result, client=client)
    return _prepare(account, result.token, claims)


def superseded_grace() -> timedelta:
    """How long a replaced token stays usable: ``SUPERSEDED_TOKEN_GRACE`` seconds, or when
    that is ``None`` (the default) ``REFRESH_MARGIN + REFRESH_JITTER``: the longest a token
    replaced by the background refresh can still live, so an app holding it can always fetch
    its successor from ``auth/token/`` before it expires."""
    value = synerise_settings.SUPERSEDED_TOKEN_GRACE
    if value is None:
        value = float(synerise_settings.REFRESH_MARGIN) + float(synerise_settings.REFRESH_JITTER)
    return timedelta(seconds=max(0.0, float(value)))


def supersede_values(row: ClientToken, now: datetime) -> dict[str, Any]:
    """Field values that retire the token ``row`` holds (as read) when a new one replaces it.

    The replaced token becomes the row's predecessor, accepted by Bearer authentication until
    ``now + SUPERSEDED_TOKEN_GRACE`` and never past its own expiry. Every writer that replaces
    a stored token under a version compare-and-swap merges these into its ``UPDATE`` (the
    compare-and-swap guarantees ``row`` still holds what was read).
    """
    if not row.fingerprint:
        return {"previous_fingerprint": "", "previous_valid_until": None}
    return {
        "previous_fingerprint": row.fingerprint,
        "previous_valid_until": min(row.expires_at, now + superseded_grace()),
    }


def _supersede_expressions(now: datetime) -> dict[str, Any]:
    """:func:`supersede_values` computed by the database, for an ``UPDATE`` of unread rows.

    Only a live token (active or refreshing) becomes the predecessor: one Synerise rejected,
    or that could not be decrypted, gets no grace. Listed first in the ``UPDATE`` so that they
    read the old ``status``, ``fingerprint`` and ``expires_at`` on every backend (MySQL
    assigns left to right).
    """
    _, _, TokenStatus = _models()
    live = Q(status__in=[TokenStatus.ACTIVE, TokenStatus.REFRESHING]) & ~Q(fingerprint="")
    return {
        "previous_fingerprint": Case(
            When(live, then=F("fingerprint")), default=Value(""), output_field=CharField()
        ),
        "previous_valid_until": Case(
            When(live, then=Least(F("expires_at"), Value(now + superseded_grace()))),
            default=Value(None, output_field=DateTimeField()),
            output_field=DateTimeField(),
        ),
    }


def check_presented_token(row: ClientToken, token: str, *, now: datetime | None = None) -> None:
    """Refuse a presented token that is not the stored token of ``row`` any more.

    Accepted: the stored token itself, or the token it replaced (by a refresh or a newer
    login) until ``previous_valid_until`` (``SUPERSEDED_TOKEN_GRACE`` after it was replaced,
    never past its own expiry). Logout and every revocation clear both fingerprints, so no
    token issued before them is ever accepted again, even after the user signs in anew.
    Costs no query: the row is already loaded. Digests are compared in constant time.

    :raises TokenVerificationError: ``reason="revoked"`` when the row holds no token,
        ``reason="superseded"`` for any other token.
    """
    from ..crypto import token_fingerprint

    if not row.fingerprint:
        raise TokenVerificationError("The stored token was revoked.", reason="revoked")
    presented = token_fingerprint(token)
    if hmac.compare_digest(presented, row.fingerprint):
        return
    previous = row.previous_fingerprint
    if (
        previous
        and row.previous_valid_until is not None
        and (now or timezone.now()) < row.previous_valid_until
        and hmac.compare_digest(presented, previous)
    ):
        return
    raise TokenVerificationError("The token was replaced by a newer one.", reason="superseded")


def _write_prepared(
    account: SyneriseAccount, prepared: PreparedToken, *, now: datetime | None = None
) -> ClientToken:
    """Upsert the row of ``account`` with ``prepared``: active, version + 1, lease cleared.

    The token the row held becomes its predecessor (see :func:`supersede_values`).
    """
    ClientToken, _, TokenStatus = _models()
    now = now or timezone.now()
    values = prepared.row_values() | {
        "status": TokenStatus.ACTIVE,
        "lease_until": None,
        "failure_count": 0,
        "last_error": "",
        "last_used_at": now,
    }
    # Inside a caller's transaction (login) this joins it without a savepoint of its own.
    with transaction.atomic(savepoint=False):
        updated = ClientToken.objects.filter(account=account).update(
            **_supersede_expressions(now), version=F("version") + 1, updated_at=now, **values
        )
        if not updated:
            try:
                with transaction.atomic():
                    ClientToken.objects.create(account=account, **values)
            except IntegrityError:
                ClientToken.objects.filter(account=account).update(
                    **_supersede_expressions(now),
                    version=F("version") + 1,
                    updated_at=now,
                    **values,
                )
    return ClientToken.objects.select_related("account").get(account=account)


@sensitive_variables("token")
def store_token(account: SyneriseAccount, token: str, claims: TokenClaims) -> ClientToken:
    """Store ``token`` (already verified into ``claims``) as the token of ``account``.

    Creates the row or updates it in place: status active, ``version`` + 1, lease, failure
    count and last error cleared, ``last_used_at`` now. Short transaction, no HTTP.

    :raises TokenVerificationError: when ``claims`` do not belong to ``account`` (client id,
        business profile), the token is anonymous, or its expiry is outside ``(now, now +
        MAX_TOKEN_LIFETIME]``.
    """
    return _write_prepared(account, _prepare(account, token, claims))


def get_token_for(user: Any) -> ClientToken | None:
    """Return the stored token row of ``user`` (with its account), or ``None``."""
    ClientToken, _, _ = _models()
    pk = getattr(user, "pk", None)
    if pk is None:
        return None
    return ClientToken.objects.select_related("account").filter(account__user_id=pk).first()


def mark_needs_login(token: ClientToken, *, reason: str) -> None:
    """Move ``token`` to ``needs_login`` and send ``token_expired`` (``reason`` passed on).

    Leaves revoked rows alone; the signal is sent only when the row actually changed, so a
    burst of callers sends it once.
    """
    ClientToken, _, TokenStatus = _models()
    changed = ClientToken.objects.filter(
        pk=token.pk, status__in=[TokenStatus.ACTIVE, TokenStatus.REFRESHING]
    ).update(
        status=TokenStatus.NEEDS_LOGIN,
        lease_until=None,
        last_error=str(reason)[:64],
        updated_at=timezone.now(),
    )
    token.status = TokenStatus.NEEDS_LOGIN
    token.lease_until = None
    token.last_error = str(reason)[:64]
    if changed:
        logger.info("Synerise token %s needs a new login (%s)", token.pk, reason)
        signals.token_expired.send(
            sender=ClientToken, token=token, account=token.account, reason=reason
        )


def _revoke_rows(rows: list[ClientToken], *, reason: str) -> int:
    ClientToken, _, TokenStatus = _models()
    if not rows:
        return 0
    now = timezone.now()
    pks = [row.pk for row in rows]
    with transaction.atomic():
        changed_pks = set(
            ClientToken.objects.filter(pk__in=pks)
            .exclude(status=TokenStatus.REVOKED)
            .values_list("pk", flat=True)
        )
        if not changed_pks:
            return 0
        ClientToken.objects.filter(pk__in=changed_pks).update(
            status=TokenStatus.REVOKED,
            encrypted_token="",  # nosec B106
            fingerprint="",
            previous_fingerprint="",
            previous_valid_until=None,
            lease_until=None,
            last_error=str(reason)[:64],
            updated_at=now,
        )
    for row in rows:
        if row.pk not in changed_pks:
            continue
        row.status = TokenStatus.REVOKED
        row.encrypted_token = ""  # nosec B105
        row.fingerprint = row.previous_fingerprint = ""
        row.previous_valid_until = None
        row.lease_until = None
        logger.info("Synerise token %s revoked (%s)", row.pk, reason)
        signals.token_revoked.send(
            sender=ClientToken, token=row, account=row.account, reason=reason
        )
    return len(changed_pks)


def logout(user: Any, *, reason: str = "logout", end_sessions: bool = True) -> bool:
    """End the Synerise sign-in of ``user`` for good.

    The stored token is revoked (status revoked, ciphertext and fingerprints erased,
    ``token_revoked`` sent), so no token issued before this call authenticates a Bearer
    request again, even after the user signs in anew. With ``end_sessions`` (the default)
    every Django session of the user ends too (see
    :func:`django_synerise.services.sessions.end_sessions` for the session engines this
    covers).

    Returns ``True`` when a token was revoked, ``False`` when there was none (or it was
    already revoked). A refresh in flight cannot bring it back (its compare-and-swap
    requires the row still to be refreshing).
    """
    from .sessions import end_sessions as end_user_sessions

    row = get_token_for(user)
    revoked = row is not None and _revoke_rows([row], reason=reason) > 0
    if end_sessions:
        end_user_sessions([user])
    return revoked


def revoke_tokens(
    queryset_or_ids: QuerySet[ClientToken] | Iterable[int],
    *,
    reason: str = "admin",
    end_sessions: bool = True,
) -> int:
    """Revoke many tokens (a ``ClientToken`` queryset or primary keys); return how many changed.

    Each revoked row gets ``token_revoked`` with ``reason``; rows already revoked are skipped.
    As with :func:`logout`, no token issued before this call authenticates again, and with
    ``end_sessions`` the Django sessions of the tokens' users end (one pass over the
    sessions for the whole batch).
    """
    from .sessions import end_sessions as end_user_sessions

    ClientToken, _, _ = _models()
    if hasattr(queryset_or_ids, "model") and hasattr(queryset_or_ids, "values_list"):
        ids = list(queryset_or_ids.values_list("pk", flat=True))  # type: ignore[union-attr]
    else:
        ids = [int(getattr(item, "pk", item)) for item in queryset_or_ids]
    if not ids:
        return 0
    rows = list(ClientToken.objects.select_related("account").filter(pk__in=ids))
    changed = _revoke_rows(rows, reason=reason)
    if end_sessions:
        end_user_sessions(row.account.user_id for row in rows)
    return changed


# --------------------------------------------------------------------------- single flight


def resolve_client(client: SyneriseClient | None) -> SyneriseClient:
    """Return ``client``, or the adapter's client when it is ``None``."""
    if client is not None:
        return client
    from ..adapter import get_adapter

    return get_adapter().get_client()


def _refuse_status(row: ClientToken) -> None:
    _, _, TokenStatus = _models()
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


def _load_row(user: Any) -> ClientToken:
    if not getattr(user, "is_active", False):
        raise LoginRequired(reason="inactive")
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
    from .refresh import refresh_single

    ClientToken, _, _ = _models()
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
    ClientToken, _, TokenStatus = _models()
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


def _obtain(user: Any, *, client: SyneriseClient | None, force: bool) -> tuple[ClientToken, str]:
    row = _load_row(user)
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


def get_valid_client_token(user: Any, *, client: SyneriseClient | None = None) -> ValidToken:
    """:func:`get_valid_token`, returning the token together with its expiry.

    Same refresh, activity and error behaviour as :func:`get_valid_token`.

    :raises LoginRequired: as :func:`get_valid_token`.
    """
    row, token = _obtain(user, client=client, force=False)
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


def refresh_user_token(user: Any, *, client: SyneriseClient | None = None) -> ClientToken:
    """Refresh the token of ``user`` now (single flight) and return the stored row.

    When a token was stored in the last 60 seconds (login or refresh) it is returned without
    an upstream call, so a burst of refresh requests costs one Synerise call.

    :raises LoginRequired: as :func:`get_valid_token`.
    """
    row, _ = _obtain(user, client=client, force=True)
    touch_token_activity(row.pk, last_used_at=row.last_used_at)
    return row


__all__ = [
    "MAX_TOKEN_LIFETIME",
    "PreparedToken",
    "check_business_profile",
    "check_presented_token",
    "ValidToken",
    "compute_refresh_at",
    "get_token_for",
    "get_valid_client_token",
    "get_valid_token",
    "logout",
    "max_token_lifetime",
    "mark_needs_login",
    "prepare_token",
    "refresh_user_token",
    "revoke_tokens",
    "store_token",
    "superseded_grace",
    "supersede_values",
]
