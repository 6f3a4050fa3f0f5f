"""Stored client tokens: verify and store, single-flight refresh, logout and revocation."""

from __future__ import annotations

import functools
import hmac
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connections, router, transaction
from django.db.models import (
    BooleanField,
    CharField,
    DateTimeField,
    ExpressionWrapper,
    F,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Least, Now
from django.db.models.signals import post_save, pre_save
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import signals
from ..adapter_loader import resolve_client
from ..compiled import CompiledSQL, Values, field_of, update_sql
from ..conf import synerise_settings
from ..crypto import encrypt_token, token_fingerprint
from ..exceptions import (
    TokenVerificationError,
)
from ..expressions import IfStatusIn
from ..models import ClientToken, SyneriseAccount, TokenStatus
from ..verification import claims_for
from .sessions import end_sessions as end_user_sessions
from .status import record_refusal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from django.db.models import QuerySet
    from django.db.models.expressions import CombinedExpression

    from ..client import AuthResult, SyneriseClient
    from ..verification import TokenClaims

logger = logging.getLogger(__name__)

#: Default of the ``MAX_TOKEN_LIFETIME`` setting: the longest accepted lifetime of a token
#: Synerise hands us. Use :func:`max_token_lifetime` for the configured value.
MAX_TOKEN_LIFETIME = timedelta(hours=24)


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


#: The ``ClientToken`` fields a new token sets (the keys of :meth:`PreparedToken.row_values`).
TOKEN_FIELDS = (
    "encrypted_token",
    "fingerprint",
    "expires_at",
    "refresh_at",
    "issued_at",
    "origin",
)


# --------------------------------------------------------------------------- helpers


def _lease_expression() -> ExpressionWrapper[CombinedExpression]:
    """``now() + LEASE_SECONDS`` evaluated by the database (one clock for every worker)."""
    seconds = synerise_settings.LEASE_SECONDS
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def max_token_lifetime() -> timedelta:
    """The configured ``MAX_TOKEN_LIFETIME`` (seconds or a ``timedelta``) as a ``timedelta``."""
    return timedelta(seconds=synerise_settings.MAX_TOKEN_LIFETIME)


def _expected_business_profile(account: SyneriseAccount | None) -> str | None:
    configured = synerise_settings.BUSINESS_PROFILE_ID
    if configured is not None:
        return configured
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
    margin = synerise_settings.REFRESH_MARGIN
    jitter = synerise_settings.REFRESH_JITTER
    spread = random.uniform(0, jitter) if jitter > 0 else 0.0
    return expires_at - timedelta(seconds=margin + spread)


@sensitive_variables("token")
def _prepare(account: SyneriseAccount, token: str, claims: TokenClaims) -> PreparedToken:
    """Check ``claims`` against ``account`` and encrypt ``token`` for its row."""
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
    account: SyneriseAccount,
    result: AuthResult,
    *,
    client: SyneriseClient | None = None,
    public_key: str | None = None,
) -> PreparedToken:
    """Verify a token Synerise returned for ``account`` and encrypt it for the account's row.

    Verifies with :func:`django_synerise.verification.claims_for`, then checks that the
    token is a client (not anonymous) token of ``account.client_id``, of the expected
    business profile, and expiring within ``(now, now + MAX_TOKEN_LIFETIME]`` (a longer
    lifetime is logged and counted in ``synerise_status`` as ``refused: lifetime``).

    ``public_key`` is passed on to ``claims_for``: verify with that key, never fetch one.

    :raises TokenVerificationError: when any check fails (nothing is stored).
    :raises UpstreamError: when ``claims_for`` needs Synerise (no signature verification) and
        that call fails.
    """
    claims = claims_for(result, client=client, public_key=public_key)
    return _prepare(account, result.token, claims)


def superseded_grace() -> timedelta:
    """How long a replaced token stays usable: ``SUPERSEDED_TOKEN_GRACE`` seconds, or when
    that is ``None`` (the default) ``REFRESH_MARGIN + REFRESH_JITTER``: the longest a token
    replaced by the background refresh can still live, so an app holding it can always fetch
    its successor from ``auth/token/`` before it expires."""
    value = synerise_settings.SUPERSEDED_TOKEN_GRACE
    if value is None:
        value = synerise_settings.REFRESH_MARGIN + synerise_settings.REFRESH_JITTER
    return timedelta(seconds=max(0.0, value))


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


def _supersede_expressions(grace_until: Any) -> dict[str, Any]:
    """:func:`supersede_values` computed by the database, for an ``UPDATE`` of unread rows.

    ``grace_until`` is the end of the grace (``now + SUPERSEDED_TOKEN_GRACE``; a datetime, or
    a :class:`~django_synerise.compiled.Slot` for a compiled statement). Only a live token
    (active or refreshing) becomes the predecessor: one Synerise rejected, or that could not
    be decrypted, gets no grace. Listed first in the ``UPDATE`` so that they read the old
    ``status``, ``fingerprint`` and ``expires_at`` on every backend (MySQL assigns left to
    right).
    """
    live = (TokenStatus.ACTIVE, TokenStatus.REFRESHING)
    if not hasattr(grace_until, "resolve_expression"):
        grace_until = Value(grace_until)
    return {
        "previous_fingerprint": IfStatusIn(
            live, then=F("fingerprint"), default=Value(""), output_field=CharField()
        ),
        "previous_valid_until": IfStatusIn(
            live,
            then=Least(F("expires_at"), grace_until),
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


def _row_write_values(token_values: Mapping[str, Any], now: Any) -> dict[str, Any]:
    """The plain column values every write of a token sets: ``token_values`` (those of
    :meth:`PreparedToken.row_values`), active, lease cleared, used ``now``."""
    return {
        **token_values,
        "status": TokenStatus.ACTIVE,
        "lease_until": None,
        "failure_count": 0,
        "last_error": "",
        "last_used_at": now,
    }


def _token_update(token_values: Mapping[str, Any], now: Any, grace_until: Any) -> dict[str, Any]:
    """The ``UPDATE`` of an existing row with a new token: the old token becomes the
    predecessor (expressions first, see :func:`_supersede_expressions`), version + 1.

    Values or :class:`~django_synerise.compiled.Slot` expressions, for a compiled statement.
    """
    return {
        **_supersede_expressions(grace_until),
        "version": F("version") + 1,
        "updated_at": now,
        **_row_write_values(token_values, now),
    }


def _row_update_values(prepared: PreparedToken, now: datetime) -> dict[str, Any]:
    """:func:`_token_update` of ``prepared`` at ``now``."""
    return _token_update(prepared.row_values(), now, now + superseded_grace())


def _update_returns_rows(db: str) -> bool:
    """Whether ``UPDATE ... RETURNING`` works on database ``db`` (PostgreSQL, SQLite 3.35+)."""
    connection = connections[db]
    return connection.vendor == "postgresql" or (
        connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert
    )


def _returning_pk(db: str, sql: str, params: Any) -> int | None:
    """Run ``sql`` (an ``UPDATE``) with ``RETURNING`` the token's primary key; return it, or
    ``None`` when no row was updated."""
    connection = connections[db]
    pk = connection.ops.quote_name(ClientToken._meta.pk.column)
    with transaction.mark_for_rollback_on_error(using=db), connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING {pk}", params)
        found = cursor.fetchone()
    return None if found is None else int(found[0])


def _update_row(account: SyneriseAccount, values: dict[str, Any], db: str) -> int | None:
    """``UPDATE`` the token row of ``account``; return its primary key (``None``: no row).

    One statement where ``UPDATE ... RETURNING`` works, else the update and a read of the key.
    """
    queryset = ClientToken.objects.using(db).filter(account=account)
    if _update_returns_rows(db):
        return _returning_pk(db, *update_sql(queryset, values))
    if not queryset.update(**values):
        return None
    pk: int | None = queryset.values_list("pk", flat=True).first()
    return pk


def _upsert_prepared(account: SyneriseAccount, prepared: PreparedToken, now: datetime) -> int:
    """Upsert the row of ``account`` with ``prepared``; return the row's primary key."""
    db = router.db_for_write(ClientToken)
    # Inside a caller's transaction this joins it without a savepoint of its own.
    with transaction.atomic(using=db, savepoint=False):
        pk = _update_row(account, _row_update_values(prepared, now), db)
        if pk is None:
            try:
                with transaction.atomic(using=db):
                    row = ClientToken.objects.using(db).create(
                        account=account, **_row_write_values(prepared.row_values(), now)
                    )
                return row.pk
            except IntegrityError:
                pk = _update_row(account, _row_update_values(prepared, now), db)
    if pk is None:
        raise ClientToken.DoesNotExist("The token row was deleted while it was written.")
    return pk


def _write_prepared(
    account: SyneriseAccount, prepared: PreparedToken, *, now: datetime | None = None
) -> ClientToken:
    """Upsert the row of ``account`` with ``prepared``: active, version + 1, lease cleared.

    The token the row held becomes its predecessor (see :func:`supersede_values`).
    """
    pk = _upsert_prepared(account, prepared, now or timezone.now())
    return ClientToken.objects.select_related("account").get(pk=pk)


#: Name of the ``WITH`` query of :func:`store_with_account`'s one statement.
_ACCOUNT_CTE = "synerise_account_saved"


def store_with_account(
    account: SyneriseAccount,
    prepared: PreparedToken,
    *,
    fields: Sequence[str],
    now: datetime | None = None,
) -> int:
    """Save ``fields`` of ``account`` and store ``prepared`` as its token, atomically; return
    the token row's primary key (what a login does once Synerise has answered).

    The row is written as :func:`store_token` writes it. On PostgreSQL, when the row exists,
    this is one statement: the account's ``UPDATE`` in a ``WITH`` query, the token's
    ``UPDATE ... RETURNING`` applied only if the account row was updated. It is not used when
    receivers of the account model's ``pre_save`` or ``post_save`` are connected (they would
    not see the save), nor when the row does not exist yet (the account may already be saved
    then; it is saved again, with the same values). Otherwise: ``account.save(update_fields=
    fields)`` and the upsert in one transaction. ``fields`` should include ``updated_at``.
    """
    now = now or timezone.now()
    db = router.db_for_write(type(account), instance=account)
    if _one_statement(account, db):
        account.updated_at = now
        pk = _store_in_one_statement(account, prepared, fields, db, now)
        if pk is not None:
            return pk
    with transaction.atomic(using=db):
        account.save(using=db, update_fields=list(fields))
        return _upsert_prepared(account, prepared, now)


def _one_statement(account: SyneriseAccount, db: str) -> bool:
    model = type(account)
    return (
        connections[db].vendor == "postgresql"
        and db == router.db_for_write(ClientToken)
        and not pre_save.has_listeners(model)
        and not post_save.has_listeners(model)
    )


def _store_in_one_statement(
    account: SyneriseAccount,
    prepared: PreparedToken,
    fields: Sequence[str],
    db: str,
    now: datetime,
) -> int | None:
    statement = _store_statement(type(account), tuple(fields))
    values = {f"account.{name}": getattr(account, name) for name in fields}
    sql, params = statement.sql(
        db,
        account=account.pk,
        now=now,
        grace_until=now + superseded_grace(),
        **values,
        **{f"token.{name}": value for name, value in prepared.row_values().items()},
    )
    return _returning_pk(db, sql, params)


@functools.lru_cache(maxsize=32)
def _store_statement(model: type[SyneriseAccount], fields: tuple[str, ...]) -> CompiledSQL:
    """:func:`store_with_account`'s one statement saving ``fields`` of a ``model`` row,
    compiled once per database."""

    def build(db: str, v: Values) -> tuple[str, list[Any]]:
        account_sql, account_params = update_sql(
            model._base_manager.using(db).filter(pk=v["account"]),
            {name: v[f"account.{name}"] for name in fields},
        )
        quote = connections[db].ops.quote_name
        # A constant: the name of the WITH query above, no outside input.
        saved = RawSQL(  # nosec B611 # noqa: S611
            f"EXISTS (SELECT 1 FROM {quote(_ACCOUNT_CTE)})",  # nosec B608 # noqa: S608
            (),
            BooleanField(),
        )
        token_sql, token_params = update_sql(
            ClientToken.objects.using(db).filter(saved, account_id=v["account"]),
            _token_update(
                {name: v[f"token.{name}"] for name in TOKEN_FIELDS},
                v["now"],
                v["grace_until"],
            ),
        )
        sql = f"WITH {quote(_ACCOUNT_CTE)} AS ({account_sql} RETURNING 1) {token_sql}"
        return sql, [*account_params, *token_params]

    return CompiledSQL(
        build,
        {
            "account": (field_of(model, model._meta.pk.name), False),
            "now": (field_of(ClientToken, "updated_at"), True),
            "grace_until": (field_of(ClientToken, "previous_valid_until"), True),
            **{f"account.{name}": (field_of(model, name), True) for name in fields},
            **{f"token.{name}": (field_of(ClientToken, name), True) for name in TOKEN_FIELDS},
        },
    )


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
    pk = getattr(user, "pk", None)
    if pk is None:
        return None
    return ClientToken.objects.select_related("account").filter(account__user_id=pk).first()


def mark_needs_login(token: ClientToken, *, reason: str) -> None:
    """Move ``token`` to ``needs_login`` and send ``token_expired`` (``reason`` passed on).

    Leaves revoked rows alone; the signal is sent only when the row actually changed, so a
    burst of callers sends it once.
    """
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
    if hasattr(queryset_or_ids, "model") and hasattr(queryset_or_ids, "values_list"):
        ids = list(queryset_or_ids.values_list("pk", flat=True))
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


__all__ = [
    "MAX_TOKEN_LIFETIME",
    "PreparedToken",
    "check_business_profile",
    "check_presented_token",
    "compute_refresh_at",
    "get_token_for",
    "logout",
    "max_token_lifetime",
    "mark_needs_login",
    "prepare_token",
    "resolve_client",
    "revoke_tokens",
    "store_token",
    "store_with_account",
    "superseded_grace",
    "supersede_values",
]
