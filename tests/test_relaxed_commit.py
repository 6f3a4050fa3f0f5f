"""Leases and hourly counts commit without waiting for the disk; nothing else does.

On PostgreSQL the claim, the take-over and the counts upsert, each run as its own transaction,
set ``synchronous_commit = off`` for that transaction only (see
:mod:`django_synerise.relaxed_commit`). These tests read the setting back inside a
transaction opened around the statement at the database level (Django still in autocommit,
as in a request), so the setting the statement's commit would use is visible; then they check
that the session's setting and a site's own ``transaction.atomic`` block are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from django_synerise.models import ClientToken, RefreshOutcomeCount, TokenStatus
from django_synerise.services.outcomes import add_outcome_counts
from django_synerise.services.take import claim_returning, take_returning
from tests.factories import make_account, make_token

pytestmark = pytest.mark.django_db(transaction=True)


def _commit_setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        value: str = cursor.fetchone()[0]
    return value


@contextmanager
def _database_transaction() -> Iterator[None]:
    """A transaction opened by hand at the database level: Django stays in autocommit, as it
    is when a statement runs on its own, and the statement's transaction stays open to look
    into. Rolled back at the end."""
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK")


def _due_token() -> ClientToken:
    account = make_account(client_id="4242", email="lease@example.com")
    return make_token(account, refresh_at=timezone.now() - timedelta(seconds=5))


def _claim() -> list[ClientToken]:
    rows, lease = claim_returning(ClientToken.objects.filter(status=TokenStatus.ACTIVE), 10, 60)
    assert lease is not None
    return rows


def _count() -> None:
    add_outcome_counts({"refreshed": 2})


WRITES: dict[str, Callable[[], object]] = {"claim": _claim, "counts": _count}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_lease_or_count_on_its_own_commits_without_waiting_for_the_disk(
    write, require_postgres
):
    _due_token()
    assert _commit_setting() == "on"
    with _database_transaction():
        WRITES[write]()
        assert _commit_setting() == "off"
    assert _commit_setting() == "on", "the session's own setting must be untouched"


def test_the_claim_still_returns_its_rows_and_accounts(require_postgres):
    token = _due_token()
    (row,) = _claim()
    assert row.pk == token.pk
    assert row.status == TokenStatus.REFRESHING
    assert row.account.client_id == "4242"
    assert row.account.email == "lease@example.com"
    assert row.get_token() == token.plaintext
    stored = ClientToken.objects.get(pk=token.pk)
    assert stored.status == TokenStatus.REFRESHING
    assert stored.lease_until == row.lease_until


def test_a_take_over_commits_without_waiting_for_the_disk(require_postgres):
    token = _due_token()
    (claimed,) = _claim()
    assert claimed.lease_until is not None
    with _database_transaction():
        rows, renewed = take_returning([token.pk], claimed.lease_until, 60)
        assert [row.pk for row in rows] == [token.pk]
        assert rows[0].account.client_id == "4242"
        assert renewed is not None and renewed > claimed.lease_until
        assert _commit_setting() == "off"


@pytest.mark.parametrize("write", list(WRITES))
def test_inside_a_sites_transaction_every_write_waits_for_the_disk(write, require_postgres):
    _due_token()
    with transaction.atomic():
        WRITES[write]()
        assert _commit_setting() == "on"
    assert RefreshOutcomeCount.objects.exists() or write == "claim"
    assert ClientToken.objects.filter(status=TokenStatus.REFRESHING).exists() or write == "counts"


def test_counts_still_add_up(require_postgres):
    _count()
    _count()
    (row,) = RefreshOutcomeCount.objects.filter(outcome="refreshed")
    assert row.count == 4
