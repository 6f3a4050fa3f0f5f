"""Refresh pipeline services: claims, batches, compare-and-swap writes, retries, commands."""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.db.models import Model
from django.db.models.base import ModelState
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_synerise import signals
from django_synerise.models import ClientToken, RefreshOutcomeCount, TokenStatus
from django_synerise.services import refresh as pipeline
from django_synerise.services.refresh import (
    Claim,
    backoff_delay,
    claim_due_tokens,
    claim_tokens,
    purge_tokens,
    refresh_batch,
    refresh_due_tokens,
    refresh_now,
)
from django_synerise.verification import get_public_key
from tests.fixtures_refresh import calls_per_token, refresh_calls, seed_token
from tests.fixtures_services import capture, fresh_breaker, synerise_settings  # noqa: F401


@pytest.fixture
def fake(fake_synerise: Any, settings: Any) -> Any:
    """The fake with small, test-friendly pipeline settings."""
    synerise_settings(settings, REFRESH_CONCURRENCY=4, LEASE_SECONDS=60, TOTAL_TIMEOUT=5,
                      TIMEOUT=(1, 3), RETRY_AFTER_MAX=300)
    return fake_synerise


def _reload(row: ClientToken) -> ClientToken:
    return ClientToken.objects.select_related("account").get(pk=row.pk)


# --------------------------------------------------------------------------- claims


@pytest.mark.django_db
def test_claim_takes_only_due_tokens_of_active_recent_users(fake: Any) -> None:
    due = [seed_token(fake) for _ in range(3)]
    fresh = seed_token(fake, due=False)
    idle = seed_token(fake, idle=True)
    inactive = seed_token(fake, active_user=False)
    needs_login = seed_token(fake, status=TokenStatus.NEEDS_LOGIN)
    leased = seed_token(fake, lease_until=timezone.now() + timedelta(seconds=30))

    claim = claim_due_tokens(limit=50)

    assert sorted(claim.ids) == sorted(row.pk for row in due)
    for row in due:
        stored = _reload(row)
        assert stored.status == TokenStatus.REFRESHING
        assert stored.lease_until == claim.lease_until
        lease_left = (stored.lease_until - timezone.now()).total_seconds()
        assert 50 < lease_left <= 61
    for row in (fresh, idle, inactive, needs_login, leased):
        assert _reload(row).status == row.status
    assert not claim_due_tokens(limit=50), "claimed rows must not be claimed twice"


@pytest.mark.django_db
def test_claim_respects_limit_and_oldest_target_first(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(5)]
    for i, row in enumerate(rows):
        ClientToken.objects.filter(pk=row.pk).update(
            refresh_at=timezone.now() - timedelta(minutes=10 - i)
        )
    claim = claim_due_tokens(limit=2)
    assert list(claim.ids) == [rows[0].pk, rows[1].pk]


@pytest.mark.django_db
def test_refreshing_row_with_lapsed_lease_is_claimed_again(fake: Any) -> None:
    row = seed_token(fake, status=TokenStatus.REFRESHING,
                     lease_until=timezone.now() - timedelta(seconds=1))
    assert list(claim_due_tokens().ids) == [row.pk]


# --------------------------------------------------------------------------- refresh


@pytest.mark.django_db
def test_refresh_batch_stores_new_verified_tokens(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(6)]
    with capture(signals.token_refreshed) as refreshed:
        report = refresh_batch(claim_due_tokens())

    assert sorted(report.refreshed) == sorted(r.pk for r in rows)
    assert not (report.failed_transient or report.needs_login or report.skipped)
    assert len(refresh_calls(fake)) == 6
    assert calls_per_token(fake) == {r.plaintext: 1 for r in rows}
    for row in rows:
        stored = _reload(row)
        assert stored.status == TokenStatus.ACTIVE
        assert stored.version == row.version + 1
        assert stored.lease_until is None
        assert stored.refreshed_at is not None
        assert stored.refresh_at > timezone.now()
        new = stored.get_token()
        assert new != row.plaintext
        info = fake.token_info(new)
        assert info["valid"] and info["client_id"] == row.account.client_id
    assert sorted(call["token"].pk for call in refreshed) == sorted(r.pk for r in rows)


def _prepared_in(monkeypatch: Any) -> list[str]:
    """Record the name of the thread that verifies and encrypts each new token."""
    threads: list[str] = []
    prepare = pipeline.prepare_token

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare_token", recording)
    return threads


@pytest.mark.django_db
def test_new_tokens_are_verified_and_encrypted_by_the_collecting_thread(
    fake: Any, monkeypatch: Any
) -> None:
    """With the public key fetched, the pool threads only make the calls: each new token is
    verified and encrypted by the thread collecting the batch, one after another."""
    get_public_key()
    rows = [seed_token(fake) for _ in range(8)]
    threads = _prepared_in(monkeypatch)

    report = refresh_batch(claim_due_tokens())

    assert sorted(report.refreshed) == sorted(r.pk for r in rows)
    assert threads == [threading.current_thread().name] * len(rows)
    for row in rows:
        assert fake.token_info(_reload(row).get_token())["valid"]


@pytest.mark.django_db
def test_tokens_that_need_synerise_to_verify_are_verified_in_the_pool(
    fake: Any, settings: Any, monkeypatch: Any
) -> None:
    """Verification off (identity from personal information) costs a call per token: those
    tokens are prepared in the pool threads, so the collecting thread never waits for
    Synerise."""
    synerise_settings(settings, VERIFY_SIGNATURE=False)
    rows = [seed_token(fake) for _ in range(6)]
    threads = _prepared_in(monkeypatch)

    report = refresh_batch(claim_due_tokens())

    assert sorted(report.refreshed) == sorted(r.pk for r in rows)
    assert len(threads) == len(rows)
    assert all(name.startswith("synerise-refresh") for name in threads), threads
    assert fake.count(path_contains="personal-information") == len(rows)


@pytest.mark.django_db
def test_a_batch_checked_against_a_replaced_key_fetches_the_new_key_once(fake: Any) -> None:
    """Synerise signs with a new key after this process fetched the old one: the collecting
    thread's check fails on the signature, a pool thread fetches the key again (once) and
    verifies; every new token is stored."""
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    old_pem = old.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    fake.inject(status=200, path="public.pem", body=old_pem)
    get_public_key()
    rows = [seed_token(fake) for _ in range(8)]

    report = refresh_batch(claim_due_tokens())

    assert sorted(report.refreshed) == sorted(r.pk for r in rows)
    assert not (report.failed_transient or report.needs_login)
    assert fake.count(path_contains="public.pem") == 2
    assert get_public_key().strip() == fake.public_key_pem.strip()
    for row in rows:
        assert fake.token_info(_reload(row).get_token())["valid"]


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 40])
def test_refresh_batch_uses_at_most_six_queries(fake: Any, settings: Any, size: int) -> None:
    # One flush window covers the whole batch: the bulk writes, whatever the batch size.
    # Take (2), flush (1), halt check of the rejection probe (1), other outcomes (1) and the
    # hourly outcome counts of the dashboard (1 upsert).
    synerise_settings(settings, REFRESH_FLUSH_INTERVAL=5)
    rows = [seed_token(fake) for _ in range(size)]
    fake.inject(status=503, times=1, path="refresh")
    fake.inject(status=401, times=1, path="refresh")
    claim = claim_due_tokens(limit=size)
    message = Claim.from_message(list(claim.ids), claim.lease_iso())  # as a task receives it

    with CaptureQueriesContext(connection) as queries:
        report = refresh_batch(message)

    assert len(queries) <= 6, [q["sql"][:80] for q in queries]
    assert len(report.refreshed) == size - 2
    assert len(report.failed_transient) == 1 and len(report.needs_login) == 1
    assert len(rows) == size


@pytest.mark.django_db
def test_a_batch_of_100_from_a_message_costs_three_queries_on_postgresql(
    fake: Any, settings: Any
) -> None:
    """A full default batch that all succeeds, as a worker receives it: take over the rows
    (one statement on PostgreSQL: lock, renew the lease, read rows and accounts), store the
    100 answers (one compare-and-swap ``UPDATE``: they all arrive within the window) and add
    the hourly counts (one upsert)."""
    synerise_settings(settings, REFRESH_FLUSH_INTERVAL=5, REFRESH_CONCURRENCY=16)
    rows = [seed_token(fake) for _ in range(100)]
    claim = claim_due_tokens(limit=100)
    message = Claim.from_message(list(claim.ids), claim.lease_iso())

    with CaptureQueriesContext(connection) as queries:
        report = refresh_batch(message)

    assert len(report.refreshed) == 100 == len(rows)
    take = 1 if connection.vendor == "postgresql" else 2
    assert len(queries) == take + 2, [q["sql"][:80] for q in queries]
    assert {_reload(r).version for r in rows} == {2}


@pytest.mark.django_db
def test_the_cron_command_costs_at_most_four_queries_per_batch(
    fake: Any, settings: Any, require_postgres: None
) -> None:
    """Per batch of the cron path on PostgreSQL: the claim (one statement), one write of the
    answers and the hourly counts; the run itself adds its start record, the halt check and
    the claim that finds nothing due. The next batch is claimed while this one's calls are
    in flight: before this one's answers are written."""
    synerise_settings(settings, REFRESH_FLUSH_INTERVAL=5, REFRESH_CONCURRENCY=16)
    for _ in range(150):
        seed_token(fake)
    statements: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    out = io.StringIO()
    with connection.execute_wrapper(count):
        call_command("synerise_refresh_tokens", "--batch-size", "100", stdout=out)

    assert "refreshed=150" in out.getvalue()
    claims = [i for i, sql in enumerate(statements) if "SKIP LOCKED" in sql]
    writes = [i for i, sql in enumerate(statements) if "encrypted_token" in sql and "CASE" in sql]
    table = RefreshOutcomeCount._meta.db_table
    counts = [i for i, sql in enumerate(statements) if table in sql and i > claims[0]]
    assert len(claims) == 3 and len(writes) == 2 and len(counts) == 2, statements
    assert claims[0] < claims[1] < writes[0] < counts[0] < claims[2] < writes[1] < counts[1]
    run = statements[: claims[0]]
    # three claims (one statement each; the last finds nothing), two batches of two
    assert len(statements) - len(run) == 3 + 2 * 2, statements
    assert len(run) <= 2, run


def _cyclic_models(run: Any) -> list[str]:
    """The model instances (and their states) that ``run()`` leaves for the cyclic garbage
    collector: objects in reference cycles, which reference counting never frees."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        return [type(o).__name__ for o in gc.garbage if isinstance(o, (Model, ModelState))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.django_db
def test_refreshed_rows_are_freed_without_the_cyclic_collector(fake: Any, settings: Any) -> None:
    """A claimed row and its account do not refer to each other both ways: each batch's
    rows are freed as soon as the batch is done, so a worker's memory stays flat between
    full collections (benchmarks/README.md, memory at scale), on both paths and on every
    database (one statement on PostgreSQL, the ORM's ``select_related`` elsewhere)."""
    synerise_settings(settings, REFRESH_FLUSH_INTERVAL=5, REFRESH_CONCURRENCY=8)
    rows = [seed_token(fake) for _ in range(40)]

    def celery_path() -> None:
        claim = claim_due_tokens(limit=20)
        report = refresh_batch(Claim.from_message(list(claim.ids), claim.lease_iso()))
        assert len(report.refreshed) == 20

    def cron_path() -> None:
        out = io.StringIO()
        call_command("synerise_refresh_tokens", "--batch-size", "10", stdout=out)
        assert "refreshed=20" in out.getvalue()

    assert _cyclic_models(celery_path) == []
    assert _cyclic_models(cron_path) == []
    assert {_reload(r).version for r in rows} == {2}


@pytest.mark.timing
@pytest.mark.django_db
def test_answers_are_stored_within_the_flush_window_while_later_calls_run(
    fake: Any, settings: Any
) -> None:
    """One call at a time, 0.6 s each: the first answer is stored within its flush window
    (0.1 s), before the third call even starts, not when the batch ends."""
    synerise_settings(settings, REFRESH_CONCURRENCY=1, REFRESH_FLUSH_INTERVAL=0.1)
    for _ in range(4):
        seed_token(fake)
    fake.latency = 0.6
    stored: list[float] = []

    def on_refreshed(sender: Any, **kwargs: Any) -> None:
        stored.append(time.time())

    signals.token_refreshed.connect(on_refreshed, weak=False)
    try:
        report = refresh_batch(claim_due_tokens())
    finally:
        signals.token_refreshed.disconnect(on_refreshed)

    assert len(report.refreshed) == 4
    calls = [request.at for request in refresh_calls(fake)]
    assert len(calls) == 4 and len(stored) == 4
    assert stored[0] < calls[2], (stored, calls)


def _untouched(row: ClientToken) -> bool:
    stored = _reload(row)
    return (stored.status, stored.version, stored.lease_until, stored.failure_count) == (
        TokenStatus.ACTIVE, 1, None, 0
    )


@pytest.mark.django_db
def test_a_batch_claimed_ahead_is_handed_back_when_refresh_halts(fake: Any) -> None:
    """The cron loop claims its next batch while a batch's calls are in flight; when that
    batch halts refresh (the API key is rejected), the rows claimed ahead go back untouched."""
    rows = [seed_token(fake) for _ in range(6)]
    fake.inject(status=403, times=None)  # every call: refresh and the API key probe

    report = refresh_due_tokens(batch_size=2)

    assert (report.claimed, report.halted, report.refreshed) == (2, 2, 0)
    assert len(refresh_calls(fake)) == 2
    assert all(_untouched(row) for row in rows), "halted rows and rows claimed ahead: free"


@pytest.mark.django_db
def test_the_cron_loop_claims_ahead_no_more_than_its_limit(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(6)]

    report = refresh_due_tokens(limit=3, batch_size=2)

    assert (report.claimed, report.refreshed) == (3, 3)
    assert len(refresh_calls(fake)) == 3
    assert sum(_untouched(row) for row in rows) == 3


@pytest.mark.django_db
def test_a_failed_claim_ahead_does_not_fail_the_batch_in_flight(
    fake: Any, caplog: pytest.LogCaptureFixture, require_postgres: None
) -> None:
    """The claim made while calls are in flight fails (the database refuses it): the batch
    still stores its answers, and the loop claims the next batch afterwards."""
    for _ in range(4):
        seed_token(fake)
    claims = [0]

    def second_claim_fails(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "SKIP LOCKED" in sql:
            claims[0] += 1
            if claims[0] == 2:
                raise OperationalError("connection to the database was lost")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(second_claim_fails):
        report = refresh_due_tokens(batch_size=2)

    assert (report.claimed, report.refreshed) == (4, 4)
    assert claims[0] == 4, "claim, the failed claim ahead, claim, the claim finding nothing"
    assert "Could not claim the next refresh batch ahead" in caplog.text


@pytest.mark.django_db
def test_a_batch_claimed_earlier_counts_its_lease_from_the_claim(fake: Any) -> None:
    """A batch claimed ahead starts later than its lease: no call starts once the lease,
    counted from the claim, nears its end; the rows are handed back."""
    rows = [seed_token(fake) for _ in range(3)]
    claim = claim_due_tokens()

    report = pipeline._refresh_claim(claim, client=None, claimed_at=time.monotonic() - 60)

    assert sorted(report.skipped) == sorted(row.pk for row in rows)
    assert refresh_calls(fake) == []
    assert all(_untouched(row) for row in rows)


def _clear_of_the_hour(margin: float = 10.0) -> None:
    """Wait until the clock is more than ``margin`` seconds away from the next full hour.

    The hourly counts of a test that reads them back must all land in one hour; a test
    that started seconds before the hour would split them in two.
    """
    now = timezone.now()
    to_the_hour = 3600 - (now.minute * 60 + now.second + now.microsecond / 1e6)
    if to_the_hour < margin:
        time.sleep(to_the_hour + 0.5)


@pytest.mark.django_db
def test_the_cron_command_and_status_report_rate_and_cpu_per_token(fake: Any) -> None:
    """The command prints what its run achieved; ``synerise_status`` prints what the batches
    of the latest hour cost (from the hourly counts every process writes)."""
    _clear_of_the_hour()
    for _ in range(6):
        seed_token(fake)
    out = io.StringIO()
    call_command("synerise_refresh_tokens", "--batch-size", "4", stdout=out)
    figures = dict(part.split("=") for part in out.getvalue().split())
    assert figures["refreshed"] == "6"
    assert float(figures["seconds"]) > 0
    assert float(figures["tokens_per_s"]) == pytest.approx(6 / float(figures["seconds"]), rel=0.05)
    assert float(figures["cpu_ms_per_token"]) > 0

    out = io.StringIO()
    call_command("synerise_status", stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("refresh work"))
    assert "batches=2 refreshed=6 " in line and "last run 20" in line
    assert "tokens_per_s=n/a" not in line and "cpu_ms_per_token=n/a" not in line

    out = io.StringIO()
    call_command("synerise_status", "--json", stdout=out)
    work = json.loads(out.getvalue())["work"]
    assert work["batches"] == 2 and work["refreshed"] == 6
    assert work["cpu_seconds"] > 0 and work["busy_seconds"] > 0
    assert work["tokens_per_second"] == pytest.approx(6 / work["busy_seconds"])
    assert work["cpu_ms_per_token"] == pytest.approx(work["cpu_seconds"] * 1000 / 6)


@pytest.mark.django_db
def test_a_request_waiting_for_one_token_is_not_counted_as_a_batch(fake: Any) -> None:
    """The refresh a request waits for (the lazy single-flight path) counts as a refreshed
    token on the dashboard, but not in the batches' work: a request's wait for Synerise in a
    batch of one would drag down the rate operators size their workers by."""
    from django_synerise import services
    from django_synerise.services.outcomes import outcome_history, refresh_work

    _clear_of_the_hour()
    for _ in range(6):
        seed_token(fake)
    call_command("synerise_refresh_tokens", "--batch-size", "4", stdout=io.StringIO())
    before = refresh_work()
    assert before is not None and before["batches"] == 2 and before["refreshed"] == 6

    waited_for = seed_token(fake, due=False)
    past = timezone.now() - timedelta(minutes=5)  # not refreshed within the last minute
    ClientToken.objects.filter(pk=waited_for.pk).update(issued_at=past, refreshed_at=past)
    stored, _ = services.refresh_client_token(waited_for.account.user)
    assert stored.version == waited_for.version + 1  # refreshed now, in this request

    after = refresh_work()
    assert after == before
    assert sum(outcome_history(hours=1)["series"]["refreshed"]) == 7


@pytest.mark.django_db
def test_status_says_when_no_batch_ran(fake: Any) -> None:
    out = io.StringIO()
    call_command("synerise_status", stdout=out)
    assert "refresh work: no batch in the last 48 hours (no run recorded)" in out.getvalue()


@pytest.mark.django_db
def test_duplicate_delivery_of_a_batch_refreshes_nothing_twice(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(4)]
    claim = claim_due_tokens()
    first = refresh_batch(Claim.from_message(list(claim.ids), claim.lease_iso()))
    second = refresh_batch(Claim.from_message(list(claim.ids), claim.lease_iso()))

    assert len(first.refreshed) == 4
    assert second.refreshed == [] and sorted(second.skipped) == sorted(r.pk for r in rows)
    assert len(refresh_calls(fake)) == 4
    assert {_reload(r).version for r in rows} == {2}


@pytest.mark.django_db
def test_401_moves_row_to_needs_login_after_one_call(fake: Any) -> None:
    row = seed_token(fake)
    fake.inject(status=401, times=None, path="refresh")
    with capture(signals.token_expired) as expired, \
            capture(signals.token_refresh_failed) as failed:
        report = refresh_batch(claim_due_tokens())

    assert report.needs_login == [row.pk] and report.retry_after is None
    assert len(refresh_calls(fake)) == 1
    stored = _reload(row)
    assert stored.status == TokenStatus.NEEDS_LOGIN
    assert stored.lease_until is None
    assert stored.last_error == "credentials_rejected"
    assert stored.failure_count == 1
    assert [c["reason"] for c in expired] == ["rejected"]
    assert [c["will_retry"] for c in failed] == [False]
    assert not claim_due_tokens()


@pytest.mark.django_db
def test_transient_failure_sets_the_retry_time_no_claim_takes_it_before(fake: Any) -> None:
    row = seed_token(fake)
    fake.inject(status=503, times=1, path="refresh")
    with capture(signals.token_refresh_failed) as failed:
        report = refresh_batch(claim_due_tokens(), attempt=2, backoff=2.0)

    assert report.failed_transient == [row.pk]
    assert 0.2 <= report.retry_after <= 8.0
    stored = _reload(row)
    assert stored.status == TokenStatus.ACTIVE
    assert stored.failure_count == 1
    assert stored.last_error == "synerise_unavailable"
    assert stored.version == row.version
    assert stored.get_token() == row.plaintext
    assert stored.lease_until is None
    assert stored.retry_at > timezone.now()
    assert [c["will_retry"] for c in failed] == [True]
    assert not claim_due_tokens(), "the scheduler must not claim it before the retry time"


@pytest.mark.django_db
def test_retry_after_of_a_429_is_honoured(fake: Any) -> None:
    row = seed_token(fake)
    fake.inject(status=429, times=1, path="refresh", retry_after="120")
    before = timezone.now()
    report = refresh_batch(claim_due_tokens(), backoff=0.5)

    assert report.failed_transient == [row.pk]
    assert report.retry_after >= 120
    assert _reload(row).retry_at >= before + timedelta(seconds=119)


@pytest.mark.django_db
def test_no_retry_is_scheduled_past_expiry_minus_the_safety_margin(fake: Any) -> None:
    soon = seed_token(fake, lifetime=150)
    later = seed_token(fake, lifetime=3600)
    fake.inject(status=429, times=2, path="refresh", retry_after="120")
    with capture(signals.token_expired) as expired:
        report = refresh_batch(claim_due_tokens())

    assert report.needs_login == [soon.pk]
    assert report.failed_transient == [later.pk]
    assert _reload(soon).status == TokenStatus.NEEDS_LOGIN
    assert [(c["token"].pk, c["reason"]) for c in expired] == [(soon.pk, "expired")]


@pytest.mark.django_db
def test_last_retry_is_clamped_to_the_deadline(fake: Any) -> None:
    row = seed_token(fake, lifetime=124)
    fake.inject(status=503, times=1, path="refresh")
    report = refresh_batch(claim_due_tokens(), attempt=8, backoff=2.0)
    assert report.failed_transient == [row.pk]
    deadline = row.expires_at - pipeline.EXPIRY_SAFETY
    assert _reload(row).retry_at <= deadline + timedelta(seconds=1)


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [300, -300])
def test_retry_deadline_uses_the_database_clock(fake: Any, monkeypatch: Any, skew: int) -> None:
    keep = seed_token(fake, lifetime=300)  # 180 s before exp - 120 s: a 60 s retry fits
    give_up = seed_token(fake, lifetime=150)  # 30 s before exp - 120 s: it does not
    fake.inject(status=429, times=2, path="refresh", retry_after="60")
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=skew))
    report = refresh_batch(claim_due_tokens())
    monkeypatch.setattr(timezone, "now", real_now)

    assert report.failed_transient == [keep.pk]
    assert report.needs_login == [give_up.pk]
    lease = _reload(keep).retry_at
    assert real_now() + timedelta(seconds=58) <= lease <= keep.expires_at - pipeline.EXPIRY_SAFETY


@pytest.mark.django_db
def test_undecryptable_token_needs_login_and_is_never_sent(fake: Any) -> None:
    row = seed_token(fake)
    ClientToken.objects.filter(pk=row.pk).update(encrypted_token="gAAAAAnot-a-real-token")
    with capture(signals.token_expired) as expired:
        report = refresh_batch(claim_due_tokens())
    assert report.needs_login == [row.pk]
    assert refresh_calls(fake) == []
    assert _reload(row).status == TokenStatus.NEEDS_LOGIN
    assert [c["reason"] for c in expired] == ["decryption_failed"]


@pytest.mark.timing
@pytest.mark.django_db
def test_calls_not_started_before_the_lease_nears_its_end_are_released(
    fake: Any, settings: Any
) -> None:
    # Calls may start until 6 - 2 - 0.6 = 3.4 s into the batch; one at a time, each taking
    # at least 0.9 s: at most 4 start (at 0, 0.9, 1.8, 2.7 s at the earliest), and the first
    # has 3.4 s to start even on a loaded machine.
    synerise_settings(settings, LEASE_SECONDS=6, TOTAL_TIMEOUT=2, TIMEOUT=(1, 2),
                      REFRESH_CONCURRENCY=1)
    rows = [seed_token(fake) for _ in range(8)]
    fake.latency = 0.9
    report = refresh_batch(claim_due_tokens())

    assert 1 <= len(report.refreshed) <= 4
    assert len(report.refreshed) + len(report.skipped) == 8
    assert len(refresh_calls(fake)) == len(report.refreshed)
    for pk in report.skipped:
        stored = ClientToken.objects.get(pk=pk)
        assert stored.status == TokenStatus.ACTIVE and stored.lease_until is None
        assert stored.failure_count == 0
    assert len(rows) == 8


@pytest.mark.django_db
def test_backoff_is_exponential_with_equal_jitter_and_never_shrinks() -> None:
    previous_max = 0.0
    for attempt in range(12):
        ceiling = min(300, 2.0 * 2**attempt)
        values = [backoff_delay(attempt, base=2.0, cap=300) for _ in range(200)]
        assert all(max(0.2, ceiling / 2) <= v <= ceiling for v in values)
        assert min(values) >= previous_max - 1e-9 or ceiling == 300
        assert max(values) - min(values) > ceiling / 4, "half of each delay is random"
        previous_max = max(values)
    assert min(backoff_delay(12, base=2.0, cap=300) for _ in range(200)) >= 150


# --------------------------------------------------------------------------- entry points


@pytest.mark.django_db
def test_refresh_now_refreshes_exactly_the_given_free_tokens(fake: Any) -> None:
    fresh = seed_token(fake, due=False)
    other = seed_token(fake, due=False)
    held = seed_token(fake, lease_until=timezone.now() + timedelta(seconds=30))
    report = refresh_now([fresh.pk, held.pk])

    assert (report.requested, report.claimed, report.refreshed, report.skipped) == (2, 1, 1, 1)
    assert _reload(fresh).version == fresh.version + 1
    assert _reload(other).version == other.version
    assert _reload(held).version == held.version
    assert "1 refreshed" in str(report)


@pytest.mark.django_db
def test_refresh_batch_with_plain_ids_claims_them_first(fake: Any) -> None:
    row = seed_token(fake, due=False)
    report = refresh_batch([row.pk])
    assert report.refreshed == [row.pk]
    assert refresh_batch([row.pk]).refreshed == [row.pk]  # lease was released again


@pytest.mark.django_db
def test_claim_tokens_due_only_skips_rows_refreshed_meanwhile(fake: Any) -> None:
    row = seed_token(fake, due=False)
    assert not claim_tokens([row.pk], due_only=True)
    assert list(claim_tokens([row.pk]).ids) == [row.pk]


@pytest.mark.django_db
def test_purge_deletes_revoked_and_long_expired_rows(fake: Any) -> None:
    keep = seed_token(fake)
    old_revoked = seed_token(fake, status=TokenStatus.REVOKED)
    new_revoked = seed_token(fake, status=TokenStatus.REVOKED)
    long_expired = seed_token(fake, lifetime=-8 * 24 * 3600, status=TokenStatus.NEEDS_LOGIN)
    ClientToken.objects.filter(pk=old_revoked.pk).update(
        updated_at=timezone.now() - timedelta(days=8)
    )
    assert purge_tokens(batch_size=1) == 2
    remaining = set(ClientToken.objects.values_list("pk", flat=True))
    assert remaining == {keep.pk, new_revoked.pk}
    assert long_expired.pk not in remaining


@pytest.mark.django_db
def test_refresh_command_dry_run_then_run(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(3)]
    seed_token(fake, due=False)
    out = io.StringIO()
    call_command("synerise_refresh_tokens", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "3 tokens due"
    assert refresh_calls(fake) == []

    out = io.StringIO()
    call_command("synerise_refresh_tokens", "--batch-size", "2", stdout=out)
    assert "refreshed=3" in out.getvalue() and "claimed=3" in out.getvalue()
    assert {_reload(r).version for r in rows} == {2}

    out = io.StringIO()
    call_command("synerise_refresh_tokens", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "0 tokens due"


@pytest.mark.django_db
def test_refresh_command_limit(fake: Any) -> None:
    for _ in range(3):
        seed_token(fake)
    out = io.StringIO()
    call_command("synerise_refresh_tokens", "--limit", "2", stdout=out)
    assert "refreshed=2" in out.getvalue()
    assert len(refresh_calls(fake)) == 2


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--limit", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_refresh_command_rejects_counts_below_one(fake: Any, option: str, value: str) -> None:
    seed_token(fake)
    with pytest.raises(CommandError, match=f"{option} must be at least 1"):
        call_command("synerise_refresh_tokens", option, value, stdout=io.StringIO())
    assert refresh_calls(fake) == []


@pytest.mark.django_db
def test_purge_command(fake: Any) -> None:
    row = seed_token(fake, lifetime=-8 * 24 * 3600, status=TokenStatus.NEEDS_LOGIN)
    out = io.StringIO()
    call_command("synerise_purge_tokens", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "1 token rows would be purged"
    call_command("synerise_purge_tokens", stdout=io.StringIO())
    assert not ClientToken.objects.filter(pk=row.pk).exists()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_refresh_does_not_resurrect_a_token_revoked_in_flight(
    fake: Any, require_postgres: None
) -> None:
    from django_synerise.services import revoke_tokens

    row = seed_token(fake)

    def revoke(request: Any) -> None:
        if "refresh" in request.path:
            revoke_tokens([row.pk], reason="admin")
            connection.close()

    fake.on_request = revoke
    report = refresh_batch(claim_due_tokens())

    assert report.skipped == [row.pk] and report.refreshed == []
    stored = _reload(row)
    assert stored.status == TokenStatus.REVOKED
    assert stored.encrypted_token == ""


def _run_threads(count: int, target: Any) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_schedulers_refresh_each_token_exactly_once(
    fake: Any, require_postgres: None
) -> None:
    rows = [seed_token(fake) for _ in range(120)]
    fake.latency = 0.005

    def scheduler() -> None:
        while True:
            claim = claim_due_tokens(limit=10)
            if not claim:
                return
            refresh_batch(claim)

    assert _run_threads(4, scheduler) == []
    assert calls_per_token(fake) == {r.plaintext: 1 for r in rows}
    assert set(ClientToken.objects.values_list("version", "status")) == {
        (2, TokenStatus.ACTIVE)
    }


@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_deliveries_refresh_each_token_once(
    fake: Any, require_postgres: None
) -> None:
    rows = [seed_token(fake) for _ in range(30)]
    claim = claim_due_tokens(limit=30)
    fake.latency = 0.01

    def deliver() -> None:
        refresh_batch(Claim.from_message(list(claim.ids), claim.lease_iso()))

    assert _run_threads(3, deliver) == []
    assert calls_per_token(fake) == {r.plaintext: 1 for r in rows}
    assert set(ClientToken.objects.values_list("version", flat=True)) == {2}


# --------------------------------------------------------------------------- packaging


def test_schedule_fragment_targets_the_refresh_task() -> None:
    from django_synerise.schedule import BEAT_SCHEDULE, REFRESH_TASK

    entry = next(e for e in BEAT_SCHEDULE.values() if e["task"] == REFRESH_TASK)
    assert entry["schedule"] == 60
    assert 0 < entry["options"]["expires"] < entry["schedule"]
    purge = next(e for e in BEAT_SCHEDULE.values() if e["task"].endswith("purge_tokens"))
    assert purge["schedule"] == 24 * 3600


def test_django_setup_and_pipeline_imports_never_import_celery() -> None:
    code = (
        "import sys, django; django.setup();"
        "import django_synerise.services, django_synerise.services.refresh,"
        " django_synerise.schedule;"
        "from django.core.management import call_command;"
        "from django_synerise.management.commands import synerise_refresh_tokens;"
        "assert 'celery' not in sys.modules, 'celery imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PATH": "",
            "SYNERISE_TEST_WITHOUT_BEAT": "1",  # django-celery-beat itself imports Celery
        },
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
