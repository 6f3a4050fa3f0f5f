"""Background refresh of stored client tokens: claim due rows, refresh them in batches, purge.

The database decides who refreshes what. A *claim* is one short transaction that selects due
rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` and marks them ``refreshing`` with a lease
computed from the database clock. Synerise is then called with no transaction or lock held,
and the results are written back with compare-and-swap ``UPDATE`` statements that only touch
rows still carrying the caller's lease and version. Duplicate schedulers and duplicate task
deliveries therefore never refresh a token twice, and nothing ever overwrites a newer token;
a lease that is never released simply runs out and the next run picks the row up.

A killed worker (SIGKILL, OOM, power loss) loses only the answers it had not yet stored: new
tokens are written while the batch runs, at most ``REFRESH_FLUSH_INTERVAL`` seconds after
they arrive (or as soon as :data:`FLUSH_ANSWERS` wait). So at a kill, at most the answers of
the last flush window plus the calls still open are lost, and only those tokens are refreshed
a second time once the lease runs out (if Synerise invalidated the old token on refresh,
those few rows end ``needs_login``; no other row is affected).

Rejections (401/403/4xx) never mark a row before the API key is probed
(:mod:`django_synerise.services.halt`): a rejected key halts background refresh instead.
The lazy path (:func:`~django_synerise.services.get_valid_token`) is a batch of one through
the same engine (:func:`refresh_single`).

Celery is not imported here: :mod:`django_synerise.tasks` and the ``synerise_refresh_tokens``
management command both call these functions.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections, router, transaction
from django.db.models import F, IntegerField, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .. import process_state, signals
from ..compiled import CompiledSQL, Values, field_of, update_sql
from ..conf import synerise_settings
from ..exceptions import (
    SyneriseError,
    TokenDecryptionError,
    TokenVerificationError,
    TransientUpstreamError,
)
from ..expressions import ArraySlot, CaseByPk, PkIn
from ..models import ClientToken, TokenStatus
from ..querysets import lease_free_q, retry_free_q
from ..ratelimit import RateLimiter, refresh_rate_limiter
from ..token_status import CLAIMABLE
from ..verification import offline_public_key
from . import halt
from .outcomes import RefreshOutcome, prune_outcome_counts, record_refresh_batch, record_run
from .take import (
    claim_returning,
    claim_selected,
    drop_back_references,
    supports_take_returning,
    take_returning,
)
from .tokens import (
    TOKEN_FIELDS,
    PreparedToken,
    prepare_token,
    resolve_client,
    supersede_values,
)

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from ..client import AuthResult, SyneriseClient

logger = logging.getLogger(__name__)

__all__ = [
    "EXPIRY_SAFETY",
    "FLUSH_ANSWERS",
    "RETRY_SLACK",
    "BatchReport",
    "Claim",
    "RefreshReport",
    "backoff_delay",
    "claim_due_tokens",
    "claim_tokens",
    "count_due_tokens",
    "due_tokens",
    "purge_tokens",
    "refresh_batch",
    "refresh_due_tokens",
    "refresh_now",
    "refresh_single",
    "split",
]

#: No retry is scheduled later than this before a token's expiry (X22 in docs/reliability.rst:
#: retries stop at ``exp - 2 min``, which also absorbs clock skew between Synerise and the
#: database); past it the row moves to ``needs_login`` (Synerise refreshes only a token that
#: is still valid).
EXPIRY_SAFETY = timedelta(seconds=120)
#: Base and cap (seconds) of the exponential backoff used when no other value is given.
DEFAULT_BACKOFF = 2.0
#: Shortest delay before a retry, whatever the jitter draws.
MIN_RETRY_DELAY = 0.2
#: Seconds a retry message is scheduled after the rows' retry time (so the time has passed
#: when the retry claims them); the expiry deadline accounts for it.
RETRY_SLACK = 0.5
#: A batch stores its new tokens once this many answers wait, even inside the flush window
#: (``REFRESH_FLUSH_INTERVAL``): the default ``REFRESH_BATCH_SIZE``, so a default batch whose
#: answers arrive within one window is stored with one statement.
FLUSH_ANSWERS = 100

_CLAIMABLE = CLAIMABLE


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Claim:
    """Token rows leased to the caller: their primary keys and the lease (database time).

    ``lease_until`` is also the fencing ticket of the claim: :func:`refresh_batch` only
    touches rows whose lease still equals it, so a duplicated task delivery finds nothing
    to do. ``rows`` holds the loaded instances when the claim was made in this process
    (never serialised). Iterating, ``len()`` and truthiness work on ``ids``.
    """

    ids: tuple[int, ...]
    lease_until: datetime | None
    rows: tuple[ClientToken, ...] | None = field(default=None, repr=False, compare=False)

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __bool__(self) -> bool:
        return bool(self.ids)

    def lease_iso(self) -> str | None:
        """The lease as an ISO 8601 string (what a task message carries)."""
        return self.lease_until.isoformat() if self.lease_until is not None else None

    @classmethod
    def from_message(cls, ids: Iterable[int], lease: str | datetime) -> Claim:
        """Rebuild a claim received in a task message (``rows`` not loaded).

        :raises ValueError: ``lease`` is not an ISO 8601 datetime.
        """
        lease_until = lease if isinstance(lease, datetime) else parse_datetime(str(lease))
        if lease_until is None:
            raise ValueError("lease must be an ISO 8601 datetime")
        if timezone.is_naive(lease_until):
            lease_until = timezone.make_aware(lease_until, dt_timezone.utc)
        return cls(ids=tuple(int(pk) for pk in ids), lease_until=lease_until)


@dataclass
class BatchReport:
    """What :func:`refresh_batch` did with each row (lists of primary keys).

    ``refreshed``: new token stored. ``failed_transient``: Synerise failed transiently; the
    row is back to ``active`` with ``retry_at`` set (no claim takes it earlier); the latest
    of those times is ``retry_after`` seconds from now (schedule a retry :data:`RETRY_SLACK`
    seconds later). ``needs_login``: moved to ``needs_login`` (a rejection once the API key
    is known to work, expiry near, undecryptable); ``reasons`` maps each to its reason.
    ``halted``: rejected while Synerise rejects the workspace's API key; back to ``active``
    untouched (background refresh halts, see :mod:`~django_synerise.services.halt`).
    ``skipped``: not refreshed by this call and left for a later run (held by someone else,
    changed meanwhile, or not attempted before the batch deadline).

    ``busy_seconds`` is the wall-clock time the batch ran and ``cpu_seconds`` the CPU time it
    cost: the process's (all threads) for a background batch, the calling thread's for a
    batch of one refreshed in place; a merged report holds the sums.
    """

    refreshed: list[int] = field(default_factory=list)
    failed_transient: list[int] = field(default_factory=list)
    needs_login: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    halted: list[int] = field(default_factory=list)
    retry_after: float | None = None
    reasons: dict[int, str] = field(default_factory=dict)
    busy_seconds: float = 0.0
    cpu_seconds: float = 0.0

    def pks(self, outcome: RefreshOutcome) -> list[int]:
        """The rows listed under ``outcome`` (the list itself, not a copy)."""
        rows: list[int] = getattr(self, outcome.report_field)
        return rows

    def add(self, pk: int, outcome: RefreshOutcome) -> None:
        """List row ``pk`` under ``outcome``."""
        self.pks(outcome).append(pk)

    def merge(self, other: BatchReport) -> None:
        """Add ``other``'s rows to this report (``retry_after`` keeps the larger value)."""
        self.refreshed.extend(other.refreshed)
        self.failed_transient.extend(other.failed_transient)
        self.needs_login.extend(other.needs_login)
        self.skipped.extend(other.skipped)
        self.halted.extend(other.halted)
        self.reasons.update(other.reasons)
        self.busy_seconds += other.busy_seconds
        self.cpu_seconds += other.cpu_seconds
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)

    def as_counts(self) -> dict[str, int]:
        """Return the number of rows per outcome: ``refreshed``, ``failed_transient``,
        ``needs_login``, ``skipped`` and ``halted``."""
        return {
            "refreshed": len(self.refreshed),
            "failed_transient": len(self.failed_transient),
            "needs_login": len(self.needs_login),
            "skipped": len(self.skipped),
            "halted": len(self.halted),
        }


@dataclass(frozen=True)
class RefreshReport:
    """Summary of :func:`refresh_now` / :func:`refresh_due_tokens` (counts of rows)."""

    requested: int
    claimed: int
    refreshed: int
    failed: int
    needs_login: int
    skipped: int
    halted: int = 0
    #: The refresh halt in force when the run stopped (``RefreshHalt.as_dict()``), or None.
    halt: dict[str, Any] | None = None
    #: Wall-clock seconds of the run, and the CPU seconds its batches cost.
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens refreshed per second of the run (``None`` for an empty run)."""
        return self.refreshed / self.seconds if self.refreshed and self.seconds > 0 else None

    @property
    def cpu_ms_per_token(self) -> float | None:
        """CPU milliseconds per refreshed token (``None`` when none was refreshed)."""
        return self.cpu_seconds * 1000 / self.refreshed if self.refreshed else None

    def __str__(self) -> str:
        text = (
            f"{self.refreshed} refreshed, {self.failed} failed (will retry), "
            f"{self.needs_login} need login, {self.skipped} skipped"
        )
        if self.halt is not None:
            text += f"; background refresh halted ({self.halt['reason']}, {self.halt['detail']})"
        return text


# --------------------------------------------------------------------------- helpers


def _lease_seconds() -> float:
    return max(1.0, synerise_settings.LEASE_SECONDS)


def _batch_size(limit: int | None) -> int:
    size = synerise_settings.REFRESH_BATCH_SIZE if limit is None else int(limit)
    return max(0, size)


def due_tokens(*, now: datetime | None = None) -> QuerySet[ClientToken]:
    """Queryset of the rows the pipeline should refresh now (nothing is locked).

    :meth:`ClientToken.objects.due() <django_synerise.querysets.ClientTokenQuerySet.due>`,
    the one definition of "due" (database clock unless ``now`` is given).
    """
    return ClientToken.objects.due(now)


def count_due_tokens() -> int:
    """Return how many rows are due now (one ``COUNT`` query; claims nothing)."""
    return due_tokens().count()


def _claim(queryset: Any, limit: int | None) -> Claim:
    """Lock, lease and mark ``refreshing`` the rows of ``queryset`` (two queries; one
    statement on PostgreSQL, :func:`~django_synerise.services.take.claim_returning`).

    The lease is ``database now() + LEASE_SECONDS``: the first query reads the database
    clock along with the rows, the second writes the lease as a literal so that the same
    value can fence later writes.
    """
    if supports_take_returning():
        return _claimed(*claim_returning(queryset, limit, _lease_seconds()))
    with transaction.atomic(savepoint=False):
        locked = (
            queryset.select_for_update(skip_locked=True, of=("self",))
            .select_related("account")
            .annotate(db_now=Now())
        )
        if limit is not None:
            locked = locked.order_by("refresh_at")[:limit]
        rows = list(locked)
        if not rows:
            return Claim(ids=(), lease_until=None, rows=())
        drop_back_references(rows)
        lease_until = rows[0].db_now + timedelta(seconds=_lease_seconds())
        offset = rows[0].db_now - timezone.now()
        ids = [row.pk for row in rows]
        ClientToken.objects.filter(pk__in=ids).update(
            status=TokenStatus.REFRESHING, lease_until=lease_until
        )
    for row in rows:
        row.status = TokenStatus.REFRESHING
        row.lease_until = lease_until
        row.db_offset = offset
    return Claim(ids=tuple(ids), lease_until=lease_until, rows=tuple(rows))


def _claimed(taken: list[ClientToken], lease: datetime | None) -> Claim:
    """The :class:`Claim` of rows taken in one statement (empty when none was)."""
    if not taken or lease is None:
        return Claim(ids=(), lease_until=None, rows=())
    return Claim(ids=tuple(row.pk for row in taken), lease_until=lease, rows=tuple(taken))


def _claimable_row(pk: Any, version: Any) -> QuerySet[ClientToken]:
    """The row ``pk`` if it still has ``version`` and is claimable now (lease free, past any
    ``retry_at``, not expired)."""
    return ClientToken.objects.filter(
        lease_free_q(),
        retry_free_q(),
        pk=pk,
        version=version,
        status__in=_CLAIMABLE,
        expires_at__gt=Now(),
    )


def _claimable_row_keys(db: str, v: Values) -> tuple[str, list[Any]]:
    sql, params = _claimable_row(v["pk"], v["version"]).values("pk").query.get_compiler(db).as_sql()
    return sql, list(params)


#: The primary key query of :func:`_claimable_row`, compiled once per database.
_CLAIMABLE_ROW_KEYS = CompiledSQL(
    _claimable_row_keys,
    {
        "pk": (field_of(ClientToken, "id"), False),
        "version": (field_of(ClientToken, "version"), False),
    },
)


def claim_due_tokens(*, limit: int | None = None) -> Claim:
    """Claim up to ``limit`` (default ``REFRESH_BATCH_SIZE``) due rows, oldest target first.

    One short transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` over :func:`due_tokens`,
    then ``UPDATE`` to status ``refreshing`` with ``lease_until = database now +
    LEASE_SECONDS``. Concurrent callers get disjoint rows. Two queries (one statement on
    PostgreSQL); no HTTP.

    :returns: a :class:`Claim` (empty when nothing is due).
    """
    size = _batch_size(limit)
    if size <= 0:
        return Claim(ids=(), lease_until=None, rows=())
    return _claim(due_tokens(), size)


def claim_tokens(ids: Iterable[int], *, due_only: bool = False) -> Claim:
    """Claim exactly the rows of ``ids`` whose lease is free (two queries; one statement on
    PostgreSQL).

    Rows must be ``active`` (or ``refreshing`` with a lapsed lease), past any ``retry_at``
    and not expired;
    ``due_only`` also requires ``refresh_at`` to have passed (task retries use it so a row
    refreshed meanwhile is left alone). Rows held by someone else are silently left out.
    """
    pks = sorted({int(pk) for pk in ids})
    if not pks:
        return Claim(ids=(), lease_until=None, rows=())
    queryset = ClientToken.objects.filter(
        lease_free_q(), retry_free_q(), pk__in=pks, status__in=_CLAIMABLE, expires_at__gt=Now()
    )
    if due_only:
        queryset = queryset.filter(refresh_at__lte=Now())
    return _claim(queryset.order_by("pk"), None)


def _take(claim: Claim) -> tuple[list[ClientToken], datetime | None]:
    """Take over the rows of a claim received in a message, renewing the lease (two queries,
    one on PostgreSQL).

    Only rows still ``refreshing`` under ``claim.lease_until`` are taken; the new lease
    differs from the old one, so a second delivery of the same message takes nothing. Locked
    rows are waited for, not skipped: a concurrent claim may hold them for a moment (it then
    leaves them alone), and a concurrent duplicate delivery commits a new lease first. On
    PostgreSQL the same is one statement (:func:`~django_synerise.services.take.
    take_returning`).
    """
    if claim.lease_until is None:
        return [], None
    if supports_take_returning():
        return take_returning(list(claim.ids), claim.lease_until, _lease_seconds())
    with transaction.atomic(savepoint=False):
        rows = list(
            ClientToken.objects.select_for_update(of=("self",))
            .select_related("account")
            .filter(
                pk__in=list(claim.ids), status=TokenStatus.REFRESHING, lease_until=claim.lease_until
            )
            .annotate(db_now=Now())
            .order_by("pk")
        )
        if not rows:
            return [], None
        drop_back_references(rows)
        # The plugin loses the annotate() above on a custom queryset's select_for_update().
        db_now: datetime = rows[0].db_now  # type: ignore[attr-defined]
        lease_until = db_now + timedelta(seconds=_lease_seconds())
        offset = db_now - timezone.now()
        if lease_until == claim.lease_until:
            lease_until += timedelta(microseconds=1)
        ClientToken.objects.filter(pk__in=[row.pk for row in rows]).update(lease_until=lease_until)
    for row in rows:
        row.lease_until = lease_until
        row.db_offset = offset
    return rows, lease_until


def backoff_delay(
    attempt: int, *, base: float = DEFAULT_BACKOFF, cap: float | None = None
) -> float:
    """Exponential backoff with equal jitter: ``c/2 + uniform(0, c/2)``, ``c = min(cap, base *
    2**attempt)``.

    Half of each delay is random (retries of tokens that failed together spread out) and
    half is fixed, so the delays of consecutive attempts never shrink: attempt ``n + 1``
    waits at least as long as the most attempt ``n`` can wait, until ``cap``. ``cap``
    defaults to ``RETRY_AFTER_MAX``; the result is never below ``min(base, 0.2)``.
    """
    cap = synerise_settings.RETRY_AFTER_MAX if cap is None else float(cap)
    ceiling = min(cap, base * 2.0 ** min(64, max(0, int(attempt))))
    floor = min(base, MIN_RETRY_DELAY)
    return max(floor, ceiling / 2 + random.uniform(0, ceiling / 2))


# --------------------------------------------------------------------------- executor

_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
#: (process generation, pool size) of ``_executor``.
_executor_key: tuple[int, int] | None = None


def _pool_size() -> int:
    return max(1, int(synerise_settings.REFRESH_CONCURRENCY))


def _get_executor() -> ThreadPoolExecutor:
    """The process's refresh thread pool (``REFRESH_CONCURRENCY`` threads, recreated after
    ``fork`` or when the setting changes). Threads live on, so each keeps its pooled HTTP
    session between batches."""
    global _executor, _executor_key
    size = _pool_size()
    generation = process_state.generation()
    key = (generation, size)
    with _executor_lock:
        if _executor is None or _executor_key != key:
            old = _executor if _executor_key and _executor_key[0] == generation else None
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="synerise-refresh")
            _executor_key = key
            if old is not None:
                old.shutdown(wait=False)
        return _executor


def _drop_executor_after_fork() -> None:
    """Forget the parent's pool without shutting it down (its threads are not in the child)."""
    global _executor, _executor_key, _executor_lock
    _executor_lock = threading.Lock()
    _executor, _executor_key = None, None


def _shut_down_executor() -> None:
    """Shut this process's pool down (not waiting); the next batch starts a new one."""
    global _executor, _executor_key
    generation = process_state.generation()
    with _executor_lock:
        old = _executor if _executor_key and _executor_key[0] == generation else None
        _executor, _executor_key = None, None
    if old is not None:
        old.shutdown(wait=False)


process_state.register(
    "refresh.executor", after_fork=_drop_executor_after_fork, reset=_shut_down_executor
)


@dataclass
class _CallResult:
    """What one refresh call produced for its row: a new token (``prepared``), an ``error``,
    or neither (``attempted=False``: the call was not made and the row is released).

    A pool thread may leave the new token to the collecting thread to verify and encrypt:
    ``answer`` is then Synerise's answer and ``key`` the public key that verifies it without
    calling Synerise (see :func:`_collect`).
    """

    row: ClientToken
    prepared: PreparedToken | None = None
    error: BaseException | None = None
    attempted: bool = True
    answer: AuthResult | None = None
    key: str | None = None

    @property
    def answered(self) -> bool:
        """A new token: verified (``prepared``) or still to verify (``answer``)."""
        return self.prepared is not None or self.answer is not None


def _failed(row: ClientToken, exc: Exception) -> _CallResult:
    """The outcome of a call or a verification that raised ``exc`` (classified later)."""
    row.call_status = getattr(exc, "status", None)
    if not isinstance(exc, SyneriseError):
        logger.error("Unexpected error refreshing Synerise token %s", row.pk, exc_info=exc)
    return _CallResult(row, error=exc)


def _call(
    row: ClientToken,
    token: str,
    client: SyneriseClient,
    start_deadline: float,
    limiter: RateLimiter | None = None,
    *,
    defer: bool = False,
) -> _CallResult:
    """Refresh one token in a pool thread (no database access).

    Not attempted (the row is released) when the call cannot start before ``start_deadline``,
    including while waiting for the global rate limit. With ``defer``, a new token that can
    be verified without calling Synerise is left to the collecting thread (``answer``):
    verification and encryption then run there, one after another, instead of in 32 threads
    taking turns at the interpreter.
    """
    if time.monotonic() > start_deadline:
        return _CallResult(row, attempted=False)
    if limiter is not None and not limiter.acquire(start_deadline):
        return _CallResult(row, attempted=False)
    started = time.monotonic()
    try:
        result = client.refresh(token)
        row.call_status = 200
        key = offline_public_key(result.token, client=client) if defer else None
        if key is not None:
            return _CallResult(row, answer=result, key=key)
        return _CallResult(row, prepared=prepare_token(row.account, result, client=client))
    except Exception as exc:  # every failure is classified by the caller
        return _failed(row, exc)
    finally:
        # Read by services.outcomes.record_refresh_batch (the structured event).
        row.call_seconds = time.monotonic() - started


# --------------------------------------------------------------------------- refresh


def _reason_suffix(exc: BaseException | None) -> str:
    reason = getattr(exc, "reason", None)
    return f": {reason}" if isinstance(reason, str) and reason else ""


def _error_code(exc: BaseException | None) -> str:
    code = getattr(exc, "code", None)
    return str(code)[:64] if code else "internal_error"


def refresh_batch(
    batch: Claim | Iterable[int],
    *,
    client: SyneriseClient | None = None,
    attempt: int = 0,
    backoff: float = DEFAULT_BACKOFF,
) -> BatchReport:
    """Refresh one batch of claimed rows: the one refresh engine (the lazy path uses it too).

    ``batch`` is a :class:`Claim`: made in this process (rows already loaded), or rebuilt from
    a task message with :meth:`Claim.from_message` (rows taken over first, which fences off a
    duplicate delivery). Plain primary keys are claimed here first (lease free only).

    Each token is decrypted (failure: ``needs_login``, nothing sent upstream) and refreshed
    concurrently over ``REFRESH_CONCURRENCY`` pool threads, each with its own pooled HTTP
    session; new tokens are verified (:func:`~django_synerise.services.prepare_token`).
    With ``REFRESH_RATE_LIMIT`` set, each call first waits for its place under the limit
    shared by every worker (:mod:`django_synerise.ratelimit`). Calls not started before the
    lease nears its end are not made (the rows are released).

    **Durability.** New tokens are stored *while the batch runs*: a compare-and-swap
    ``UPDATE`` (pk, version, status ``refreshing`` and our lease) for the answers that
    arrived, at the latest ``REFRESH_FLUSH_INTERVAL`` seconds after the oldest of them
    arrived, or as soon as :data:`FLUSH_ANSWERS` wait. A process killed mid-batch therefore
    loses only the answers of the last flush window and the calls still open; their rows
    keep the old token and are refreshed again once the lease runs out (so those, and only
    those, may be refreshed twice). Every other outcome is written with one more ``UPDATE``
    at the end. Queries: 2 per claim, one per flush window that saw answers, one for the
    other outcomes, one for the dashboard's hourly outcome counts (see :doc:`/scheduling`
    for measured figures).

    **Classification** (the same for both paths; see the table in :doc:`/reliability`):

    * a *rejection* (401/403, or another 4xx but 429): first the API key is probed once for
      the batch (:func:`~django_synerise.services.halt.judge_rejections`). Key accepted: the
      row moves to ``needs_login``, ``token_expired`` (reason ``rejected``), no retry. Key
      rejected: no row is marked (``halted``), background refresh halts. Probe failed
      transiently: the row is treated as a transient failure;
    * transient (5xx, timeouts, resets, 429, bad answers, breaker open, an unusable token):
      back to ``active`` with ``failure_count + 1`` and ``retry_at = now + max(backoff_delay(
      failure_count), Retry-After)`` so no claim takes it earlier; when that time is later
      than ``expires_at - 120 s`` the row moves to ``needs_login`` (reason ``expired``)
      instead. Deadlines use the database clock, like leases. ``attempt`` is a floor for the
      row's own failure count.

    Signals: ``token_refreshed`` (after each flush), ``token_refresh_failed``
    (``will_retry``), ``token_expired`` (after the final write). Never raises for upstream
    failures.
    """
    return _refresh_claim(batch, client=client, attempt=attempt, backoff=backoff)


def _refresh_claim(
    batch: Claim | Iterable[int],
    *,
    client: SyneriseClient | None,
    attempt: int = 0,
    backoff: float = DEFAULT_BACKOFF,
    meanwhile: Callable[[], None] | None = None,
    claimed_at: float | None = None,
) -> BatchReport:
    """:func:`refresh_batch`, with the hooks of :func:`_refresh_rows` (``meanwhile``,
    ``claimed_at``) for the cron loop."""
    if isinstance(batch, Claim):
        if batch.rows is not None:
            rows, lease_until = list(batch.rows), batch.lease_until
        elif batch.ids and batch.lease_until is not None:
            rows, lease_until = _take(batch)
        else:
            rows, lease_until = [], None
        requested = list(batch.ids)
    else:
        claim = claim_tokens(batch)
        requested = list(claim.ids)
        rows, lease_until = list(claim.rows or ()), claim.lease_until

    report = BatchReport()
    taken = {row.pk for row in rows}
    report.skipped.extend(pk for pk in requested if pk not in taken)
    if not rows or lease_until is None:
        return report
    return _refresh_rows(
        rows,
        lease_until,
        client=resolve_client(client),
        attempt=attempt,
        backoff=backoff,
        report=report,
        meanwhile=meanwhile,
        claimed_at=claimed_at,
    )


def refresh_single(row: ClientToken, *, client: SyneriseClient | None = None) -> BatchReport | None:
    """Refresh one row now, as a batch of one through :func:`refresh_batch`'s engine.

    The lazy single-flight path of :func:`~django_synerise.services.get_valid_token`: claims
    the row only if it still has the caller's ``version`` and is claimable (lease free, past
    any ``retry_at``, not expired; ``SKIP LOCKED``, never waiting for a row lock). The call
    is made in this thread, without the background rate limit. When it was claimed, ``row``
    takes the state written (new token, or failure count, ``retry_at``, status). Costs the
    claim (two queries, one statement on PostgreSQL) and one write.

    :returns: the report, or ``None`` when the row could not be claimed (someone else holds
        it, or it changed).
    """
    if supports_take_returning():
        sql, params = _CLAIMABLE_ROW_KEYS.sql(
            router.db_for_write(ClientToken), pk=row.pk, version=row.version
        )
        claim = _claimed(*claim_selected(sql, params, _lease_seconds()))
    else:
        claim = _claim(_claimable_row(row.pk, row.version), None)
    if not claim or claim.rows is None or claim.lease_until is None:
        return None
    report = _refresh_rows(
        list(claim.rows),
        claim.lease_until,
        client=resolve_client(client),
        attempt=0,
        backoff=DEFAULT_BACKOFF,
        report=BatchReport(),
        inline=True,
    )
    fresh = claim.rows[0]
    for name in (
        "encrypted_token",
        "fingerprint",
        "previous_fingerprint",
        "previous_valid_until",
        "expires_at",
        "refresh_at",
        "issued_at",
        "origin",
        "version",
        "status",
        "lease_until",
        "retry_at",
        "failure_count",
        "last_error",
        "refreshed_at",
    ):
        setattr(row, name, getattr(fresh, name))
    return report


def _db_now(row: ClientToken, now: datetime) -> datetime:
    """``now`` moved onto the database clock (offset measured when ``row`` was claimed)."""
    return now + getattr(row, "db_offset", timedelta(0))


def _flush_interval() -> float:
    return max(0.0, synerise_settings.REFRESH_FLUSH_INTERVAL)


def _refresh_rows(
    rows: list[ClientToken],
    lease_until: datetime,
    *,
    client: SyneriseClient,
    attempt: int,
    backoff: float,
    report: BatchReport,
    inline: bool = False,
    meanwhile: Callable[[], None] | None = None,
    claimed_at: float | None = None,
) -> BatchReport:
    """Refresh the claimed ``rows`` (see :func:`refresh_batch`).

    ``meanwhile`` runs in this thread once the calls are handed to the pool, while they are
    in flight (the cron loop claims its next batch there). ``claimed_at`` is the
    ``time.monotonic()`` reading taken before the rows were claimed, when that was earlier
    than now: the lease counts from it, so no call starts after the lease's end.
    """
    cpu_clock = time.thread_time if inline else time.process_time
    cpu_started = cpu_clock()
    now = timezone.now()
    lease = _lease_seconds()
    total = synerise_settings.TOTAL_TIMEOUT
    started = time.monotonic()
    leased = started if claimed_at is None else min(started, claimed_at)
    start_deadline = leased + max(lease - total - min(5.0, lease * 0.1), lease * 0.5)

    others: list[_CallResult] = []
    calls: list[tuple[ClientToken, str]] = []
    for row in rows:
        row.claimed_refresh_at = row.refresh_at  # the claim lag (writes move refresh_at on)
        if row.expires_at <= _db_now(row, now) + timedelta(seconds=1):
            others.append(
                _CallResult(
                    row,
                    error=TokenVerificationError("Token expired.", reason="expired"),
                    attempted=False,
                )
            )
            continue
        try:
            calls.append((row, row.get_token()))
        except TokenDecryptionError as exc:
            logger.error("Stored Synerise token %s could not be decrypted", row.pk)
            others.append(_CallResult(row, error=exc, attempted=False))

    if inline:
        for row, token in calls:
            outcome = _call(row, token, client, start_deadline)
            if outcome.prepared is not None:
                _flush([outcome], lease_until, report=report, lease_seconds=lease, started=leased)
            else:
                others.append(outcome)
        calls.clear()
    else:
        limiter = refresh_rate_limiter()
        executor = _get_executor()
        client = client.frozen()  # the batch's calls share one reading of the settings
        work: SimpleQueue[tuple[ClientToken, str]] = SimpleQueue()
        done = _Inbox(len(calls))
        for call in calls:
            work.put(call)
        count = len(calls)
        calls.clear()
        # One task per pool thread, each making calls until none is left: a hand-off per
        # thread and one per answer, rather than a future per token.
        for _ in range(min(count, _pool_size())):
            executor.submit(_call_until_done, work, done, client, start_deadline, limiter)
        if meanwhile is not None:
            meanwhile()
        others.extend(
            _collect(
                done,
                count,
                client,
                lease_until,
                report=report,
                lease_seconds=lease,
                started=leased,
            )
        )
    report = _write_outcomes(
        others, lease_until, attempt=attempt, backoff=backoff, report=report, client=client
    )
    report.busy_seconds = time.monotonic() - started
    report.cpu_seconds = max(0.0, cpu_clock() - cpu_started)
    # Events, metrics, hourly counts: the one place. A request's single refresh is no batch.
    record_refresh_batch(rows, report, work=not inline)
    return report


class _Inbox:
    """Outcomes handed from the pool threads to the thread collecting a batch.

    The collector is woken only when it has something to do, not on every outcome: for the
    first new token since its last flush (which starts the flush window's clock), once
    :data:`FLUSH_ANSWERS` new tokens wait, and for the batch's last outcome. In between it
    sleeps until the flush window ends. Each wake-up of a thread costs CPU (a context switch
    and the GIL changing hands), so this saves most of one per token.
    """

    def __init__(self, expected: int) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._outcomes: list[_CallResult] = []
        self._left = expected
        self._unflushed = 0  # new tokens handed in and not yet stored
        self._wake = False

    def put(self, outcome: _CallResult) -> None:
        """Hand in one outcome (pool threads)."""
        with self._ready:
            self._outcomes.append(outcome)
            self._left -= 1
            if outcome.answered:
                self._unflushed += 1
                if self._unflushed == 1 or self._unflushed >= FLUSH_ANSWERS:
                    self._wake = True
            if self._left <= 0:
                self._wake = True
            if self._wake:
                self._ready.notify()

    def take(self, timeout: float | None) -> list[_CallResult]:
        """Wait until there is something to do or ``timeout`` seconds pass (``None``: no
        limit); return every outcome handed in since the last call."""
        with self._ready:
            if not self._wake:
                self._ready.wait(timeout)
            self._wake = False
            outcomes, self._outcomes = self._outcomes, []
            return outcomes

    def flushed(self, stored: int) -> None:
        """``stored`` new tokens handed in are no longer waiting: written, found unusable, or
        handed back to a pool thread. New tokens handed in meanwhile start the next flush
        window at once."""
        with self._ready:
            self._unflushed -= stored
            if self._unflushed > 0:
                self._wake = True

    def expect(self, more: int) -> None:
        """``more`` outcomes are to come on top of those expected (handed back to the pool)."""
        with self._ready:
            self._left += more


def _call_until_done(
    work: SimpleQueue[tuple[ClientToken, str]],
    done: _Inbox,
    client: SyneriseClient,
    start_deadline: float,
    limiter: RateLimiter | None,
) -> None:
    """Pool thread: make the calls waiting in ``work`` until it is empty, putting each
    outcome on ``done`` as it is known (every row taken from ``work`` gets one)."""
    while True:
        try:
            row, token = work.get_nowait()
        except Empty:
            return
        try:
            outcome = _call(row, token, client, start_deadline, limiter, defer=True)
        except BaseException as exc:  # never leave the collector waiting for this row
            done.put(_CallResult(row, error=exc))
            raise
        done.put(outcome)


def _prepare(outcome: _CallResult, client: SyneriseClient, *, offline: bool) -> _CallResult:
    """Verify and encrypt the new token of ``outcome`` (an ``answer``); return the outcome
    with ``prepared`` or ``error`` set. ``offline`` verifies with ``outcome.key`` and calls
    nobody: the collecting thread's way."""
    row, answer = outcome.row, outcome.answer
    assert answer is not None
    try:
        prepared = prepare_token(
            row.account, answer, client=client, public_key=outcome.key if offline else None
        )
    except Exception as exc:
        return _failed(row, exc)
    return _CallResult(row, prepared=prepared)


def _prepare_in_pool(outcome: _CallResult, done: _Inbox, client: SyneriseClient) -> None:
    """Pool thread: verify an answer that may need the public key fetched again."""
    try:
        result = _prepare(outcome, client, offline=False)
    except BaseException as exc:  # never leave the collector waiting for this row
        done.put(_CallResult(outcome.row, error=exc))
        raise
    done.put(result)


def _key_changed(result: _CallResult) -> bool:
    """The offline verification failed on the signature, and a fetched key may have been
    replaced by a new one (``PUBLIC_KEY`` is never fetched)."""
    error = result.error
    return (
        isinstance(error, TokenVerificationError)
        and error.reason == "signature"
        and not synerise_settings.PUBLIC_KEY
    )


def _collect(
    done: _Inbox,
    count: int,
    client: SyneriseClient,
    lease_until: datetime,
    *,
    report: BatchReport,
    lease_seconds: float,
    started: float,
) -> list[_CallResult]:
    """Wait for the outcomes of the ``count`` calls, which arrive on ``done`` as they are
    known; store new tokens as they arrive (the flush window); return the other outcomes.

    Each outcome is handed over once (an :class:`_Inbox`, not a scan of pending futures), so
    collecting a batch costs time in proportion to its size, and this thread wakes a few times
    per flush window rather than once per answer.

    New tokens the pool threads left unverified (``answer``) are verified and encrypted here
    with the key they were checked against, calling nobody. One whose signature fails that
    key, when the key was fetched, goes back to a pool thread, which verifies it again and
    may fetch the key once more (Synerise changed it): this thread never waits for Synerise.
    """
    window = _flush_interval()
    waiting: list[_CallResult] = []
    oldest: float | None = None
    others: list[_CallResult] = []
    while count:
        timeout = None if oldest is None else max(0.0, oldest + window - time.monotonic())
        finished = done.take(timeout)
        count -= len(finished)
        left_window = 0  # answers handed in that will not be stored in this window
        for outcome in finished:
            if outcome.answer is not None:
                prepared = _prepare(outcome, client, offline=True)
                if _key_changed(prepared):
                    left_window += 1
                    count += 1
                    done.expect(1)
                    _get_executor().submit(_prepare_in_pool, outcome, done, client)
                    continue
                left_window += prepared.prepared is None
                outcome = prepared
            if outcome.prepared is None:
                others.append(outcome)
                continue
            waiting.append(outcome)
            if oldest is None:
                oldest = time.monotonic()
        if left_window:
            done.flushed(left_window)
        if waiting and (
            not count
            or len(waiting) >= FLUSH_ANSWERS
            or (oldest is not None and time.monotonic() - oldest >= window)
        ):
            _flush(
                waiting, lease_until, report=report, lease_seconds=lease_seconds, started=started
            )
            done.flushed(len(waiting))
            waiting, oldest = [], None
    return others


def _flush(
    ok: list[_CallResult],
    lease_until: datetime,
    *,
    report: BatchReport,
    lease_seconds: float,
    started: float,
) -> None:
    """Store these new tokens (one compare-and-swap ``UPDATE``) and send ``token_refreshed``."""
    if time.monotonic() - started > lease_seconds:
        # The lease ran out while the calls were made: the write is fenced off anyway.
        logger.warning("Refresh batch outlived its lease; %s answers may be refused", len(ok))
    stored = _store_successes(ok, lease_until)
    if stored < len(ok):
        ok_pks, _ = _reconcile(ok, [])
    else:
        ok_pks = {o.row.pk for o in ok}
    for outcome in ok:
        row = outcome.row
        if row.pk not in ok_pks:
            logger.info("Refresh of Synerise token %s lost the race (stale_version)", row.pk)
            report.skipped.append(row.pk)
            continue
        report.refreshed.append(row.pk)
        signals.token_refreshed.send(sender=ClientToken, token=row, account=row.account)


@dataclass(frozen=True)
class _Decision:
    """How the final write ends one row that got no new token.

    ``outcome`` is never ``REFRESHED``; its :class:`RefreshOutcome` properties say what is
    written. ``code`` is the error code stored in ``last_error`` when the outcome counts a
    failure; ``retry_delay`` the seconds from now to ``retry_at`` (``TRANSIENT`` only);
    ``reason`` why the row needs a login (``NEEDS_LOGIN`` only: ``expired``, ``rejected`` or
    ``decryption_failed``).
    """

    result: _CallResult
    outcome: RefreshOutcome
    code: str = ""
    retry_delay: float | None = None
    reason: str = ""

    @property
    def row(self) -> ClientToken:
        """The claimed row."""
        return self.result.row

    def retry_at(self, now: datetime) -> datetime | None:
        """The ``retry_at`` to write: database time (``now`` plus the row's clock offset,
        measured when it was claimed) plus the delay; ``None`` unless ``TRANSIENT``."""
        if self.outcome is not RefreshOutcome.TRANSIENT:
            return None
        offset = getattr(self.row, "db_offset", timedelta(0))
        return now + offset + timedelta(seconds=self.retry_delay or 0.0)


def _classify(result: _CallResult, now: datetime, delay: float, verdict: str | None) -> _Decision:
    """Decide how a row without a new token ends; ``now`` is database time.

    ``verdict`` is the batch's :func:`~django_synerise.services.halt.judge_rejections` answer
    (``None``: no rejection). Not attempted: ``SKIPPED`` (released); undecryptable or about to
    expire: ``NEEDS_LOGIN``; a rejection: ``HALTED`` (the workspace's key is rejected) or
    ``NEEDS_LOGIN`` (the key works); anything else: see :func:`_retry_or_expire`.
    """
    exc = result.error
    if exc is None:
        return _Decision(result, RefreshOutcome.SKIPPED)
    if isinstance(exc, TokenDecryptionError):
        return _Decision(
            result, RefreshOutcome.NEEDS_LOGIN, "decryption_failed", reason="decryption_failed"
        )
    if isinstance(exc, TokenVerificationError) and not result.attempted:
        return _Decision(result, RefreshOutcome.NEEDS_LOGIN, "expired", reason="expired")
    code = _error_code(exc)
    if halt.is_rejection(exc):
        if verdict == halt.WORKSPACE:
            return _Decision(result, RefreshOutcome.HALTED, code)
        if verdict == halt.TOKEN:
            return _Decision(result, RefreshOutcome.NEEDS_LOGIN, code, reason="rejected")
    return _retry_or_expire(result, code, now, delay)


def _retry_or_expire(result: _CallResult, code: str, now: datetime, delay: float) -> _Decision:
    """``TRANSIENT`` with ``max(delay, Retry-After)`` (capped at ``RETRY_AFTER_MAX``), moved
    back to the last retry time before the expiry safety margin; ``NEEDS_LOGIN`` (``expired``)
    when Retry-After asks to wait past that time or no retry fits before it."""
    exc = result.error
    retry_after = (
        getattr(exc, "retry_after", None) if isinstance(exc, TransientUpstreamError) else None
    )
    cap = synerise_settings.RETRY_AFTER_MAX
    asked = None if retry_after is None else min(float(retry_after), cap)
    wanted = delay if asked is None else max(delay, asked)
    latest = (result.row.expires_at - EXPIRY_SAFETY - now).total_seconds() - RETRY_SLACK
    if wanted > latest:
        if (asked is not None and asked > latest) or latest < MIN_RETRY_DELAY:
            return _Decision(result, RefreshOutcome.NEEDS_LOGIN, code, reason="expired")
        wanted = latest
    return _Decision(result, RefreshOutcome.TRANSIENT, code, retry_delay=wanted)


def _decide(
    results: list[_CallResult], *, attempt: int, backoff: float, client: SyneriseClient
) -> list[_Decision]:
    """Classify every result; rejections first probe the API key, once for the batch."""
    verdict = None
    rejected = [result for result in results if halt.is_rejection(result.error)]
    if rejected:
        verdict = halt.judge_rejections(client, reason=_error_code(rejected[0].error))
    now = timezone.now()
    decisions = []
    for result in results:
        row = result.row
        delay = backoff_delay(max(int(attempt), int(row.failure_count or 0)), base=backoff)
        decisions.append(_classify(result, _db_now(row, now), delay, verdict))
    return decisions


def _write_outcomes(
    results: list[_CallResult],
    lease_until: datetime,
    *,
    attempt: int,
    backoff: float,
    report: BatchReport,
    client: SyneriseClient,
) -> BatchReport:
    """Classify and write every outcome but new tokens (one ``UPDATE``), then signal.

    A row the write did not reach (no longer ours) is ``skipped``.
    """
    if not results:
        return report
    decisions = _decide(results, attempt=attempt, backoff=backoff, client=client)
    written = _store_failures(decisions, lease_until)
    if written < len(decisions):
        _, kept = _reconcile([], decisions)
    else:
        kept = {decision.row.pk for decision in decisions}
    for decision in decisions:
        if decision.row.pk in kept:
            _announce(decision, report)
        else:
            report.add(decision.row.pk, RefreshOutcome.SKIPPED)
    return report


def _announce(decision: _Decision, report: BatchReport) -> None:
    """List a written row in ``report`` under its outcome; log and signal it."""
    report.add(decision.row.pk, decision.outcome)
    if decision.outcome is RefreshOutcome.TRANSIENT:
        _announce_retry(decision, report)
    elif decision.outcome is RefreshOutcome.NEEDS_LOGIN:
        _announce_needs_login(decision, report)


def _signalled_error(decision: _Decision) -> SyneriseError:
    exc = decision.result.error
    return exc if isinstance(exc, SyneriseError) else SyneriseError(code=decision.code)


def _send_refresh_failed(decision: _Decision, *, will_retry: bool) -> None:
    """Send ``token_refresh_failed`` for the decision's row."""
    row = decision.row
    signals.token_refresh_failed.send(
        sender=ClientToken,
        token=row,
        account=row.account,
        error=_signalled_error(decision),
        will_retry=will_retry,
    )


def _announce_retry(decision: _Decision, report: BatchReport) -> None:
    """``TRANSIENT``: ``retry_after`` grows to the delay; ``token_refresh_failed`` (will retry)."""
    row, delay = decision.row, decision.retry_delay or 0.0
    report.retry_after = max(report.retry_after or 0.0, delay)
    logger.warning(
        "Refresh of Synerise token %s failed (%s%s); retry in %.1f s",
        row.pk,
        decision.code,
        _reason_suffix(decision.result.error),
        delay,
    )
    _send_refresh_failed(decision, will_retry=True)


def _announce_needs_login(decision: _Decision, report: BatchReport) -> None:
    """``NEEDS_LOGIN``: the reason in ``report.reasons``; ``token_refresh_failed`` (no retry,
    when a call failed or the token was undecryptable), then ``token_expired``."""
    row, result = decision.row, decision.result
    report.reasons[row.pk] = decision.reason
    logger.info("Synerise token %s needs a new login (%s)", row.pk, decision.reason)
    if result.attempted or isinstance(result.error, TokenDecryptionError):
        _send_refresh_failed(decision, will_retry=False)
    signals.token_expired.send(
        sender=ClientToken, token=row, account=row.account, reason=decision.reason
    )


#: Columns a new token sets, each with its own value per row. The predecessor columns come
#: first: the compare-and-swap guarantees they hold what the row read, and MySQL assigns left
#: to right.
_TOKEN_COLUMNS = ("previous_fingerprint", "previous_valid_until", *TOKEN_FIELDS)


def _refreshed_fields(now: datetime) -> dict[str, Any]:
    """The columns a successful refresh sets on every row besides the new token's own
    (:data:`_TOKEN_COLUMNS`): active again, version bumped, lease, retry and failures cleared."""
    return {
        "refreshed_at": now,
        "updated_at": now,
        "status": TokenStatus.ACTIVE,
        "version": F("version") + 1,
        "lease_until": None,
        "retry_at": None,
        "failure_count": 0,
        "last_error": "",
    }


def _per_row(name: str, values: dict[int, Any], *, keep: bool = True) -> CaseByPk:
    """Column ``name`` set to ``values[pk]`` on each listed row; other rows keep the column
    (``keep``) or get ``NULL``."""
    return CaseByPk(
        values, default=F(name) if keep else None, output_field=field_of(ClientToken, name)
    )


def _ours(pks: list[int] | ArraySlot, lease_until: Any) -> Any:
    """The rows of ``pks`` still ``refreshing`` under this batch's lease (the fence)."""
    return ClientToken.objects.filter(
        PkIn(pks), status=TokenStatus.REFRESHING, lease_until=lease_until
    )


def _successes_update(db: str, v: Values) -> tuple[str, list[Any]]:
    """:func:`_store_successes`'s statement: row ``pks[i]`` gets ``<column>[i]`` for each of
    :data:`_TOKEN_COLUMNS` if its version is still ``versions[i]`` and the lease ours."""
    pks = v["pks"]
    versions = CaseByPk.arrays_of(
        pks, v["versions"], default=None, output_field=field_of(ClientToken, "version")
    )
    columns = {
        name: CaseByPk.arrays_of(
            pks, v[name], default=F(name), output_field=field_of(ClientToken, name)
        )
        for name in _TOKEN_COLUMNS
    }
    queryset = _ours(pks, v["lease_until"]).filter(version=versions).using(db)
    sql, params = update_sql(queryset, {**columns, **_refreshed_fields(v["now"])})
    return sql, list(params)


#: :func:`_store_successes`'s compare-and-swap ``UPDATE``, compiled once per database (on
#: PostgreSQL, where every per-row list is one array parameter).
_SUCCESSES_UPDATE = CompiledSQL(
    _successes_update,
    {
        "pks": ArraySlot("pks", field_of(ClientToken, "id")),
        "versions": ArraySlot("versions", field_of(ClientToken, "version"), for_save=True),
        "lease_until": (field_of(ClientToken, "lease_until"), False),
        "now": (field_of(ClientToken, "updated_at"), True),
        **{
            name: ArraySlot(name, field_of(ClientToken, name), for_save=True)
            for name in _TOKEN_COLUMNS
        },
    },
)


def _store_successes(ok: list[_CallResult], lease_until: datetime) -> int:
    """One compare-and-swap ``UPDATE`` for every new token; returns the rows written.

    ``WHERE id IN (...) AND version = CASE id WHEN ... END AND status = 'refreshing' AND
    lease_until = <our lease>``: a row revoked, re-stored or re-claimed meanwhile is left
    alone. Every row of ``ok`` holds a new token (``prepared``).
    """
    if not ok:
        return 0
    now = timezone.now()
    written = [
        (o.row, supersede_values(o.row, now) | o.prepared.row_values())
        for o in ok
        if o.prepared is not None
    ]
    db = router.db_for_write(ClientToken)
    sql, params = _SUCCESSES_UPDATE.sql(
        db,
        pks=[row.pk for row, _ in written],
        versions=[row.version for row, _ in written],
        lease_until=lease_until,
        now=now,
        **{name: [values[name] for _, values in written] for name in _TOKEN_COLUMNS},
    )
    with transaction.mark_for_rollback_on_error(using=db), connections[db].cursor() as cursor:
        cursor.execute(sql, params)
        count: int = cursor.rowcount
    for row, values in written:
        for name, value in values.items():
            setattr(row, name, value)
        row.version += 1
        row.status = TokenStatus.ACTIVE
        row.lease_until = None
        row.retry_at = None
        row.failure_count = 0
        row.last_error = ""
        row.refreshed_at = now
    return count


def _store_failures(decisions: list[_Decision], lease_until: datetime) -> int:
    """One ``UPDATE`` for every other outcome (needs_login, retry time, halt, release).

    Every row's lease is cleared. Retry times are database time (:meth:`_Decision.retry_at`).
    ``halt`` and ``release`` rows go back to ``active`` with nothing counted.
    """
    if not decisions:
        return 0
    now = timezone.now()
    statuses, retries, errors = {}, {}, {}
    for decision in decisions:
        pk, outcome = decision.row.pk, decision.outcome
        statuses[pk] = outcome.status.value
        retry_at = decision.retry_at(now)
        if retry_at is not None:
            retries[pk] = retry_at
        if outcome.counts_failure:
            errors[pk] = decision.code[:64]
    counted = CaseByPk(dict.fromkeys(errors, 1), default=0, output_field=IntegerField())
    count: int = _ours([decision.row.pk for decision in decisions], lease_until).update(
        status=_per_row("status", statuses),
        lease_until=None,
        retry_at=_per_row("retry_at", retries, keep=False),
        last_error=_per_row("last_error", errors),
        failure_count=F("failure_count") + counted,
        updated_at=now,
    )
    for decision in decisions:
        row, outcome = decision.row, decision.outcome
        row.status = outcome.status
        row.lease_until = None
        row.retry_at = decision.retry_at(now)
        if outcome.counts_failure:
            row.failure_count += 1
            row.last_error = decision.code
    return count


def _reconcile(ok: list[_CallResult], decisions: list[_Decision]) -> tuple[set[int], set[int]]:
    """After a partial write, find which rows carry what this batch wrote (one query)."""
    pks = [o.row.pk for o in ok] + [decision.row.pk for decision in decisions]
    current = {
        pk: (ciphertext, status, lease)
        for pk, ciphertext, status, lease in ClientToken.objects.filter(pk__in=pks).values_list(
            "pk", "encrypted_token", "status", "lease_until"
        )
    }
    ok_pks = {
        o.row.pk
        for o in ok
        if o.prepared is not None and current.get(o.row.pk, ("",))[0] == o.prepared.ciphertext
    }
    fail_pks = set()
    for decision in decisions:
        row = decision.row
        state = current.get(row.pk)
        if state is None:
            continue
        if state[1] == decision.outcome.status and state[0] == row.encrypted_token:
            fail_pks.add(row.pk)
    return ok_pks, fail_pks


# --------------------------------------------------------------------------- entry points


def _summarise(
    requested: int,
    claimed: int,
    report: BatchReport,
    *,
    halted: bool = False,
    started: float | None = None,
) -> RefreshReport:
    stop = halt.current_halt() if halted or report.halted else None
    return RefreshReport(
        seconds=0.0 if started is None else time.monotonic() - started,
        cpu_seconds=report.cpu_seconds,
        requested=requested,
        claimed=claimed,
        refreshed=len(report.refreshed),
        failed=len(report.failed_transient),
        needs_login=len(report.needs_login),
        skipped=len(report.skipped),
        halted=len(report.halted),
        halt=stop.as_dict() if stop is not None else None,
    )


def refresh_now(token_ids: Iterable[int], *, client: SyneriseClient | None = None) -> RefreshReport:
    """Refresh exactly these tokens now, whatever their ``refresh_at`` (the admin action).

    Rows whose lease is held (a refresh in flight, or a retry pending) and rows that are not
    ``active`` or already expired are skipped. Runs in batches of ``REFRESH_BATCH_SIZE``;
    transient failures are left to the next scheduled run. Never raises for upstream errors.
    """
    pks = sorted({int(getattr(item, "pk", item)) for item in token_ids})
    report = BatchReport()
    claimed = 0
    size = max(1, _batch_size(None))
    for start in range(0, len(pks), size):
        chunk = pks[start : start + size]
        claim = claim_tokens(chunk)
        claimed += len(claim)
        report.skipped.extend(pk for pk in chunk if pk not in set(claim.ids))
        if claim:
            report.merge(refresh_batch(claim, client=client))
    return _summarise(len(pks), claimed, report)


def refresh_due_tokens(
    *, limit: int | None = None, client: SyneriseClient | None = None, batch_size: int | None = None
) -> RefreshReport:
    """Claim and refresh due tokens in this process until none is due (the cron path).

    Does nothing while background refresh is halted (:func:`~django_synerise.services.halt.
    refresh_allowed`, which probes the API key once the next probe is due). Stops after
    ``limit`` tokens when given, when a batch makes no progress, or when a batch halts
    refresh. Transient failures carry their retry time and are picked up by a later run.

    Each batch's calls are in flight while the next batch is claimed, so the pool never waits
    for a claim between batches; the next batch's lease, and its deadline for starting calls,
    count from that claim, and it never takes the run past ``limit``. When the run stops early
    (halt, a batch without progress, an error), rows claimed ahead are handed back at once, as
    a batch hands back rows it had no time to call for. A failed claim ahead is logged and
    made again after the batch.
    """
    started = time.monotonic()
    size = max(1, _batch_size(batch_size))
    report = BatchReport()
    claimed = 0
    record_run()
    if not halt.refresh_allowed(client):
        return _summarise(0, 0, report, halted=True)
    # The next batch is claimed while this one's calls are in flight, so that the pool does
    # not wait for the claim between batches.
    ahead: list[tuple[Claim, float]] = []

    def claim_next() -> None:
        want = size if limit is None else min(size, limit - claimed)
        if want > 0:
            before = time.monotonic()
            ahead.append((claim_due_tokens(limit=want), before))

    def claim_ahead() -> None:  # must not fail the batch whose calls are in flight
        try:
            claim_next()
        except DatabaseError:
            logger.warning("Could not claim the next refresh batch ahead", exc_info=True)

    try:
        claim_next()
        while ahead:
            claim, claimed_at = ahead.pop()
            if not claim:
                break
            claimed += len(claim)
            batch = _refresh_claim(
                claim, client=client, meanwhile=claim_ahead, claimed_at=claimed_at
            )
            report.merge(batch)
            if batch.halted or not (batch.refreshed or batch.failed_transient or batch.needs_login):
                break
            if not ahead:  # the claim ahead failed (logged): claim now
                claim_next()
    finally:
        for claim, _ in ahead:  # claimed ahead but not refreshed: hand the rows back
            _release(claim)
    return _summarise(claimed, claimed, report, started=started)


def _release(claim: Claim) -> int:
    """Hand the rows of ``claim`` back without refreshing them (one ``UPDATE``).

    Rows still leased by ``claim`` go back to ``active`` with their lease cleared and nothing
    counted, as a batch releases the rows it had no time to call for; a row another worker
    took meanwhile is left alone. Best effort: a database error is logged (the lease then
    simply runs out). Returns how many rows were released.
    """
    if not claim.rows or claim.lease_until is None:
        return 0
    rows = claim.rows
    try:
        return _store_failures(
            [_Decision(_CallResult(row, attempted=False), RefreshOutcome.SKIPPED) for row in rows],
            claim.lease_until,
        )
    except DatabaseError:
        logger.warning("Could not release %s claimed Synerise tokens", len(rows), exc_info=True)
        return 0


def purge_tokens(*, now: datetime | None = None, batch_size: int = 1000) -> int:
    """Delete revoked rows and rows expired for longer than ``PURGE_AFTER``; return the count.

    Also deletes the dashboard's hourly outcome counts older than
    :data:`~django_synerise.services.outcomes.RETENTION` (not counted in the result).
    Revoked rows go once they have not changed for ``PURGE_AFTER`` seconds. Deletes in
    batches of ``batch_size`` primary keys so no statement locks the whole table.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=synerise_settings.PURGE_AFTER)
    stale = Q(status=TokenStatus.REVOKED, updated_at__lt=cutoff) | Q(expires_at__lt=cutoff)
    deleted = 0
    while True:
        pks = list(
            ClientToken.objects.filter(stale)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not pks:
            break
        count, _ = ClientToken.objects.filter(pk__in=pks).filter(stale).delete()
        deleted += count
        if len(pks) < batch_size:
            break
    if deleted:
        logger.info("Purged %s Synerise token rows", deleted)
    prune_outcome_counts(now=now)
    return deleted


def split(ids: Sequence[int], size: int) -> list[list[int]]:
    """Split ``ids`` into lists of at most ``size`` items (order kept)."""
    size = max(1, int(size))
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]
