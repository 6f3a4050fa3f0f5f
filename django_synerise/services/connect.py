"""Connect site users to Synerise through the OAUTH identity provider: one, pending, or all.

:func:`connect` signs one user in with an identity token this site minted (interactive: it
takes a slot of the ``INTERACTIVE_CONCURRENCY`` bulkhead). :func:`connect_users` provisions
many users in concurrent batches under ``REFRESH_RATE_LIMIT`` (the command
``synerise_connect_users``, the task ``connect_users`` and the beat entry that retries
pending connections). Every connection ends in :func:`~django_synerise.services.login.
complete_login`, so tokens are linked, stored, signalled and refreshed like any other login.

A *pending* connection (``IdentitySubject.connect_requested_at`` set) is one asked for by
``CONNECT_ON_LOGIN`` or by a token of an OAUTH-connected user that ended ``needs_login``;
:func:`request_connection` records it and hands it to a Celery worker, and the beat entry
retries what the worker could not do (no broker, Synerise down) with the refresh backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import signals
from ..adapter_loader import get_adapter
from ..bulkhead import interactive_call
from ..conf import synerise_settings
from ..exceptions import (
    AccountInactive,
    SyneriseConfigurationError,
    SyneriseError,
    TransientUpstreamError,
)
from ..models import ClientToken, IdentitySubject, SyneriseAccount, TokenStatus
from ..ratelimit import RateLimiter, refresh_rate_limiter
from .identity import identity_provider_enabled, mint_identity_token, subjects_for
from .login import LoginResult, account_values, call_login, complete_login
from .refresh import backoff_delay
from .tokens import _prepare

if TYPE_CHECKING:
    from django.http import HttpRequest

    from ..client import SyneriseClient

logger = logging.getLogger(__name__)

__all__ = [
    "PROVIDER",
    "ConnectReport",
    "connect",
    "connect_users",
    "request_connection",
    "users_to_connect",
]

#: The ``identityProvider`` of every connection.
PROVIDER = "OAUTH"
#: Base (seconds) of the backoff between attempts of a pending connection.
BACKOFF_BASE = 2.0


@dataclass
class ConnectReport:
    """What :func:`connect_users` did: counts of users, and the ids per outcome.

    ``connected``: a token is stored. ``retry``: Synerise failed transiently (pending, retried
    after a backoff). ``failed``: refused for good (rejected identity token, account
    conflict, unusable token); the error code is in ``errors``. ``skipped``: inactive, or
    not attempted (``dry_run``).
    """

    selected: int = 0
    connected: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    retry_after: float | None = None

    def as_counts(self) -> dict[str, int]:
        """Return ``{"selected", "connected", "retry", "failed", "skipped"}`` counts."""
        return {
            "selected": self.selected,
            "connected": len(self.connected),
            "retry": len(self.retry),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
        }

    def __str__(self) -> str:
        counts = self.as_counts()
        return (
            f"{counts['selected']} selected, {counts['connected']} connected, "
            f"{counts['retry']} will retry, {counts['failed']} failed, "
            f"{counts['skipped']} skipped"
        )


# --------------------------------------------------------------------------- one user


def _subject_model() -> Any:
    return IdentitySubject


def _mark_connected(user_ids: Iterable[int]) -> None:
    ids = list(user_ids)
    if ids:
        _subject_model().objects.filter(user_id__in=ids).update(
            connect_requested_at=None,
            connect_retry_at=None,
            connect_failures=0,
            last_connect_error="",
            connected_at=timezone.now(),
        )


def _mark_failed(user_id: int, code: str, *, retry_in: float | None) -> None:
    """Record a failed attempt: pending with a retry time when transient, else done."""
    values: dict[str, Any] = {"last_connect_error": code[:64]}
    if retry_in is None:
        values["connect_requested_at"] = None
        values["connect_retry_at"] = None
    else:
        now = timezone.now()
        # Pending from now on (if it was not): the beat entry retries it after the backoff.
        values["connect_requested_at"] = Coalesce(
            F("connect_requested_at"), Value(now, output_field=DateTimeField())
        )
        values["connect_failures"] = F("connect_failures") + 1
        values["connect_retry_at"] = now + timedelta(seconds=retry_in)
    _subject_model().objects.filter(user_id=user_id).update(**values)


def _retry_delay(user_id: int, exc: BaseException) -> float:
    failures = (
        _subject_model()
        .objects.filter(user_id=user_id)
        .values_list("connect_failures", flat=True)
        .first()
    )
    delay = backoff_delay(int(failures or 0), base=BACKOFF_BASE)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        cap = synerise_settings.RETRY_AFTER_MAX
        delay = max(delay, min(float(retry_after), cap))
    return delay


@sensitive_variables("token")
def _sign_in(user: Any, client: SyneriseClient, claims: dict[str, Any]) -> tuple[Any, Any]:
    """Mint an identity token for ``user`` and sign it in at Synerise (no database access)."""
    token = mint_identity_token(user, claims=claims)
    return call_login(client, provider=PROVIDER, identity_provider_token=token)


def _claims(user: Any) -> dict[str, Any]:
    return get_adapter().identity_claims(user)


def connect(
    user: Any, *, request: HttpRequest | None = None, client: SyneriseClient | None = None
) -> LoginResult:
    """Sign ``user`` into Synerise with ``identityProvider: OAUTH`` and a freshly minted token.

    The returned client token is linked to ``user`` (never to another user), stored
    encrypted, signalled (``client_logged_in``) and kept alive by the refresh pipeline exactly
    like any other login. A pending connection of the user is cleared. Takes a slot of the
    interactive bulkhead; makes one Synerise call (two when the token cannot be verified
    locally). Never call it inside ``transaction.atomic()``.

    :raises AccountInactive: ``user`` is inactive (nothing is sent).
    :raises SyneriseConfigurationError: the identity provider is not configured.
    :raises CredentialsRejected: Synerise refused the identity token (its OAUTH
        configuration does not trust this site, or the JWKS / user-info URL failed).
    :raises TransientUpstreamError: Synerise is unavailable, rate limiting or busy.
    :raises AccountConflict: the Synerise client is linked to another user, or ``user`` is
        linked to another Synerise client.
    :raises TokenVerificationError: the returned token cannot be accepted.
    """
    if not getattr(user, "is_active", False):
        raise AccountInactive()
    adapter = get_adapter(request)
    client = client or adapter.get_client()
    with interactive_call():
        result, claims = _sign_in(user, client, _claims(user))
        outcome = complete_login(
            adapter, client, result, claims, request=request, provider=PROVIDER, link_user=user
        )
    _mark_connected([user.pk])
    return outcome


# --------------------------------------------------------------------------- pending


def request_connection(user_ids: Iterable[int], *, reason: str) -> int:
    """Record a pending connection for these users and hand each to a Celery worker.

    Sets ``connect_requested_at`` (creating the subjects as needed; a backoff in progress is
    kept) in one short transaction, then, after commit, enqueues
    :func:`django_synerise.tasks.connect_user` for each user. Publishing never raises: without
    Celery or with the broker down the beat entry (``connect_users`` with ``pending=True``)
    picks the users up. Returns how many users are pending.
    """
    ids = sorted({int(pk) for pk in user_ids})
    if not ids:
        return 0
    subjects_for(ids)
    now = timezone.now()
    _subject_model().objects.filter(user_id__in=ids, connect_requested_at__isnull=True).update(
        connect_requested_at=now, last_connect_error=""
    )
    logger.info("Synerise connection requested for %s users (%s)", len(ids), reason)
    transaction.on_commit(lambda: _enqueue(ids))
    return len(ids)


def _enqueue(ids: list[int]) -> None:
    try:
        from .. import tasks
    except ImportError:  # Celery not installed: the cron command or beat does it
        return
    for user_id in ids:
        try:
            tasks.connect_user.apply_async(args=(user_id,), retry=False, expires=3600)
        except Exception as exc:  # broker down: the beat entry retries the pending users
            logger.warning(
                "Could not enqueue the Synerise connection of user %s (%s); the next "
                "connect_users run will do it",
                user_id,
                type(exc).__name__,
            )
            return


def _pending_q(now: Any) -> Q:
    return Q(
        synerise_identity__connect_requested_at__isnull=False,
    ) & (
        Q(synerise_identity__connect_retry_at__isnull=True)
        | Q(synerise_identity__connect_retry_at__lte=now)
    )


# --------------------------------------------------------------------------- many users


def users_to_connect(*, only_missing: bool = False, pending: bool = False, after: int = 0) -> Any:
    """Queryset of the active users :func:`connect_users` would connect, by primary key.

    ``only_missing``: users with no stored token or a token that needs a new login (a
    revoked token is respected: the user or an admin ended it). ``pending``: users whose
    connection is pending and not backing off. ``after``: primary keys above this only.
    """
    users = get_user_model().objects.filter(is_active=True, pk__gt=after)
    if only_missing:
        has_token = Q(
            synerise_account__token__status__in=[
                TokenStatus.ACTIVE,
                TokenStatus.REFRESHING,
                TokenStatus.REVOKED,
            ]
        )
        users = users.exclude(has_token)
    if pending:
        users = users.filter(_pending_q(timezone.now()))
    return users.order_by("pk")


@dataclass
class _Attempt:
    user: Any
    result: Any = None
    claims: Any = None
    error: BaseException | None = None


def _attempt(
    user: Any, claims: dict[str, Any], client: SyneriseClient, limiter: RateLimiter | None
) -> _Attempt:
    """Sign one user in from a pool thread (no database access)."""
    if limiter is not None:
        limiter.acquire(None)
    try:
        result, claims = _sign_in(user, client, claims)
        return _Attempt(user, result=result, claims=claims)
    except Exception as exc:  # classified by the caller
        if not isinstance(exc, SyneriseError):
            logger.exception("Unexpected error connecting user %s to Synerise", user.pk)
        return _Attempt(user, error=exc)


def _finish(attempt: _Attempt, adapter: Any, client: SyneriseClient, report: ConnectReport) -> None:
    """Store one answer (or record its failure) in this thread."""
    user_id = attempt.user.pk
    exc = attempt.error
    if exc is None:
        try:
            complete_login(
                adapter,
                client,
                attempt.result,
                attempt.claims,
                request=None,
                provider=PROVIDER,
                link_user=attempt.user,
            )
        except Exception as error:  # classified below
            exc = error
    if exc is None:
        report.connected.append(user_id)
        return
    code = str(getattr(exc, "code", "") or "internal_error")
    report.errors[user_id] = code
    if isinstance(exc, TransientUpstreamError):
        delay = _retry_delay(user_id, exc)
        _mark_failed(user_id, code, retry_in=delay)
        report.retry.append(user_id)
        report.retry_after = max(report.retry_after or 0.0, delay)
        logger.warning("Connection of user %s to Synerise failed (%s); will retry", user_id, code)
    else:
        _mark_failed(user_id, code, retry_in=None)
        report.failed.append(user_id)
        logger.warning("Connection of user %s to Synerise refused (%s)", user_id, code)


def _connect_batch(
    users: list[Any],
    *,
    client: SyneriseClient,
    executor: ThreadPoolExecutor,
    limiter: RateLimiter | None,
    report: ConnectReport,
) -> None:
    adapter = get_adapter()
    subjects = subjects_for(user.pk for user in users)
    pending: set[Future[_Attempt]] = set()
    for user in users:
        user._synerise_subject = subjects[user.pk]
        try:
            claims = adapter.identity_claims(user)
        except Exception as exc:  # a failing hook fails this user only
            logger.exception("identity_claims() failed for user %s", user.pk)
            _finish(_Attempt(user, error=exc), adapter, client, report)
            continue
        pending.add(executor.submit(_attempt, user, claims, client, limiter))
    attempts: list[_Attempt] = []
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        attempts.extend(future.result() for future in done)
    connected_before = len(report.connected)
    _store_batch(attempts, adapter, client, report)
    _mark_connected(report.connected[connected_before:])


def _store_batch(
    attempts: list[_Attempt], adapter: Any, client: SyneriseClient, report: ConnectReport
) -> None:
    """Store a batch's answers: new accounts and tokens in bulk, everything else one by one.

    Users seen by Synerise for the first time (no account for them or for the client id) get
    their accounts and encrypted tokens in two bulk ``INSERT`` statements in one transaction; if any
    check or constraint fails there, the whole batch goes through
    :func:`~django_synerise.services.login.complete_login` one user at a time instead, which
    links, refuses or records each exactly as :func:`connect` does.
    """
    stored: set[int] = set()
    fresh = [a for a in attempts if a.error is None]
    if fresh:
        try:
            stored = _bulk_store(fresh)
        except Exception as exc:  # a conflict or a refused token: one by one below
            logger.info(
                "Bulk store of %s connections fell back (%s)", len(fresh), exc.__class__.__name__
            )
            stored = set()
    for attempt in attempts:
        if attempt.user.pk in stored:
            report.connected.append(attempt.user.pk)
        else:
            _finish(attempt, adapter, client, report)


@sensitive_variables("prepared")
def _first_connections(attempts: list[_Attempt]) -> list[_Attempt]:
    """The attempts of active users where neither the user nor the client id has an account.

    :raises ValueError: one client id answered for two users.
    """
    client_ids = [str(a.claims.client_id) for a in attempts]
    user_ids = [a.user.pk for a in attempts]
    taken = SyneriseAccount.objects.filter(
        Q(client_id__in=client_ids) | Q(user_id__in=user_ids)
    ).values_list("user_id", "client_id")
    taken_users = {user_id for user_id, _ in taken}
    taken_clients = {client_id for _, client_id in taken}
    fresh = [
        a
        for a in attempts
        if a.user.pk not in taken_users
        and str(a.claims.client_id) not in taken_clients
        and a.user.is_active
    ]
    if len({str(a.claims.client_id) for a in fresh}) != len(fresh):
        raise ValueError("one client id answered for two users")
    return fresh


def _new_account(attempt: _Attempt, now: datetime) -> SyneriseAccount:
    """The (unsaved) account of a first connection, from the login's claims."""
    return SyneriseAccount(
        user=attempt.user, last_login_at=now, **account_values(attempt.claims, PROVIDER)
    )


def _bulk_store(attempts: list[_Attempt]) -> set[int]:
    """Create the accounts and tokens of first connections in bulk; return their user ids.

    Attempts whose user or client id already has an account are left to the caller.
    """
    fresh = _first_connections(attempts)
    if not fresh:
        return set()
    now = timezone.now()
    with transaction.atomic():
        accounts = SyneriseAccount.objects.bulk_create([_new_account(a, now) for a in fresh])
        rows = []
        for account, attempt in zip(accounts, fresh, strict=True):
            prepared = _prepare(account, attempt.result.token, attempt.claims)
            rows.append(
                ClientToken(
                    account=account,
                    status=TokenStatus.ACTIVE,
                    lease_until=None,
                    failure_count=0,
                    last_error="",
                    last_used_at=now,
                    **prepared.row_values(),
                )
            )
        ClientToken.objects.bulk_create(rows)
    logger.info("Connected %s users to Synerise through OAUTH", len(fresh))
    for account, attempt in zip(accounts, fresh, strict=True):
        signals.client_logged_in.send(
            sender=SyneriseAccount, user=attempt.user, account=account, request=None, created=False
        )
    return {a.user.pk for a in fresh}


def connect_users(
    *,
    only_missing: bool = False,
    pending: bool = False,
    batch_size: int | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    user_ids: Iterable[int] | None = None,
    client: SyneriseClient | None = None,
    progress: Callable[[ConnectReport], None] | None = None,
) -> ConnectReport:
    """Connect many active users to Synerise, batch by batch, concurrently; return the report.

    Users come from :func:`users_to_connect` (``only_missing``, ``pending``), or are the
    active ones among ``user_ids``, in primary-key order, at most ``limit``. Each batch of
    ``batch_size`` (default ``REFRESH_BATCH_SIZE``) signs in over ``REFRESH_CONCURRENCY``
    threads, each call first taking its place under ``REFRESH_RATE_LIMIT`` (shared by every
    worker), and each answer is stored as soon as it arrives: a run killed half-way loses
    at most the calls in flight, and ``only_missing`` resumes where it stopped. Transient
    failures stay pending with a backoff (``connect_retry_at``); refusals are recorded in
    ``last_connect_error`` and not retried. ``progress`` is called after each batch.
    ``dry_run`` counts the users without calling anybody.

    :raises SyneriseConfigurationError: the identity provider is not configured.
    """
    if not identity_provider_enabled() and not dry_run:
        raise SyneriseConfigurationError(
            "Set SYNERISE['OAUTH_SIGNING_KEYS'], ['OAUTH_ISSUER'] and ['OAUTH_AUDIENCE'] first."
        )
    size = max(1, int(batch_size or synerise_settings.REFRESH_BATCH_SIZE))
    report = ConnectReport()
    base = users_to_connect(only_missing=only_missing, pending=pending)
    if user_ids is not None:
        base = base.filter(pk__in=list(user_ids))
    if dry_run:
        report.selected = base.count() if limit is None else min(base.count(), int(limit))
        return report
    client = client or get_adapter().get_client()
    limiter = refresh_rate_limiter()
    workers = max(1, synerise_settings.REFRESH_CONCURRENCY)
    after = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synerise-connect") as pool:
        while limit is None or report.selected < limit:
            want = size if limit is None else min(size, int(limit) - report.selected)
            users = list(base.filter(pk__gt=after)[:want])
            if not users:
                break
            after = users[-1].pk
            report.selected += len(users)
            _connect_batch(users, client=client, executor=pool, limiter=limiter, report=report)
            if progress is not None:
                progress(report)
    return report
