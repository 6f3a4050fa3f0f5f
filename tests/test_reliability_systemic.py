"""Failures that hit the whole workspace at once: a rejected API key (no mass logout), retry
state that survives beats, answers stored as they arrive (SIGKILL), one engine for the lazy
and batch paths, and the token lifetime cap as a setting."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_synerise import services, signals, tasks
from django_synerise.exceptions import LoginRequired, TokenVerificationError
from django_synerise.models import ClientToken, RefreshHalt, TokenStatus
from django_synerise.services.refresh import (
    claim_due_tokens,
    claim_tokens,
    refresh_batch,
    refresh_due_tokens,
)
from django_synerise.testing import FakeSynerise
from tests.celery_worker import celery_worker, children
from tests.child_env import child_env
from tests.fixtures_refresh import calls_per_token, refresh_calls, seed_token
from tests.fixtures_services import (  # noqa: F401
    add_client,
    capture,
    fresh_breaker,
    login_email,
    synerise_settings,
)
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake(fake_synerise: Any, settings: Any) -> Any:
    synerise_settings(settings, REFRESH_CONCURRENCY=4, LEASE_SECONDS=60, TOTAL_TIMEOUT=5,
                      TIMEOUT=(1, 3), RETRY_AFTER_MAX=300, HALT_PROBE_MAX=30)
    return fake_synerise


def _rows(rows: list[ClientToken]) -> dict[int, ClientToken]:
    return {r.pk: r for r in ClientToken.objects.filter(pk__in=[row.pk for row in rows])}


def _probe_due() -> None:
    RefreshHalt.objects.update(probe_at=timezone.now() - timedelta(seconds=1))


# --------------------------------------------------------------------------- 1. dead workspace


@pytest.mark.django_db
def test_workspace_wide_403_halts_marks_no_row_and_resumes_when_the_key_works(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(6)]
    fake.inject(status=403, times=None)  # every call: refresh and the API key probe
    with capture(signals.refresh_halted) as halted, capture(signals.token_expired) as expired:
        report = refresh_due_tokens()

    assert (report.halted, report.needs_login, report.refreshed) == (6, 0, 0)
    assert report.halt is not None and report.halt["reason"] == "credentials_rejected"
    assert report.halt["detail"] == "403 credentials_rejected"
    for stored in _rows(rows).values():
        assert (stored.status, stored.version, stored.failure_count) == (TokenStatus.ACTIVE, 1, 0)
        assert stored.lease_until is None and stored.retry_at is None
    assert [c["halt"].reason for c in halted] == ["credentials_rejected"]
    assert expired == []
    assert fake.count("anonymous") == 1, "one probe for the whole batch"

    # Halted: before the next probe time nothing is sent at all.
    RefreshHalt.objects.update(probe_at=timezone.now() + timedelta(seconds=60))
    before = fake.count()
    assert refresh_due_tokens().claimed == 0
    assert tasks.refresh_expiring_tokens.run() == {"batches": 0, "tokens": 0, "halted": True}
    assert fake.count() == before

    # Probe due, key still rejected: one probe, still halted, the next probe later.
    _probe_due()
    with capture(signals.refresh_halted) as again:
        assert refresh_due_tokens().halt is not None
    assert fake.count() == before + 1 and fake.count("anonymous") == 2
    assert again == [], "refresh_halted is sent once per halt"
    state = RefreshHalt.objects.get()
    assert state.probes == 2 and state.probe_at > timezone.now()

    # Synerise accepts the key again: the next run resumes by itself and refreshes all.
    fake.reset_faults()
    _probe_due()
    with capture(signals.refresh_resumed) as resumed:
        report = refresh_due_tokens()
    assert report.refreshed == 6 and report.halt is None
    assert len(resumed) == 1 and resumed[0]["duration"] >= 0
    assert not RefreshHalt.objects.exists()
    assert {r.status for r in _rows(rows).values()} == {TokenStatus.ACTIVE}
    assert {r.version for r in _rows(rows).values()} == {2}


@pytest.mark.django_db
def test_one_clients_401_moves_only_that_row_to_needs_login(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(5)]
    fake.revoke_client(rows[0].account.client_id)
    with capture(signals.token_expired) as expired:
        report = refresh_due_tokens()

    assert (report.needs_login, report.refreshed, report.halted) == (1, 4, 0)
    stored = _rows(rows)
    assert stored[rows[0].pk].status == TokenStatus.NEEDS_LOGIN
    assert all(stored[r.pk].version == 2 for r in rows[1:])
    assert [(c["token"].pk, c["reason"]) for c in expired] == [(rows[0].pk, "rejected")]
    assert fake.count("anonymous") == 1, "the key was probed before the row was marked"
    assert not RefreshHalt.objects.exists()


@pytest.mark.django_db
def test_rejections_with_an_inconclusive_probe_are_retried_never_marked(fake: Any) -> None:
    rows = [seed_token(fake) for _ in range(3)]
    fake.inject(status=403, times=None, path="refresh")
    fake.inject(status=503, times=None, path="anonymous")
    report = refresh_due_tokens()

    assert (report.failed, report.needs_login, report.halted) == (3, 0, 0)
    for stored in _rows(rows).values():
        assert stored.status == TokenStatus.ACTIVE and stored.failure_count == 1
        assert stored.retry_at is not None and stored.retry_at > timezone.now()
    assert not RefreshHalt.objects.exists()


@pytest.mark.django_db
def test_lazy_refresh_serves_valid_tokens_while_the_workspace_is_rejected(fake: Any) -> None:
    row = seed_token(fake, lifetime=600)  # inside REFRESH_MARGIN: get_valid_token refreshes
    fake.inject(status=403, times=None)

    assert services.get_valid_token(row.account.user) == row.plaintext
    stored = ClientToken.objects.get(pk=row.pk)
    assert (stored.status, stored.version, stored.failure_count) == (TokenStatus.ACTIVE, 1, 0)
    assert RefreshHalt.objects.get().reason == "credentials_rejected"

    out = io.StringIO()
    call_command("synerise_status", stdout=out)
    assert "refresh: halted (credentials_rejected, 403 credentials_rejected)" in out.getvalue()
    out = io.StringIO()
    call_command("synerise_status", "--json", stdout=out)
    assert json.loads(out.getvalue())["halt"]["reason"] == "credentials_rejected"
    found = checks.run_checks(databases=["default"])
    assert "django_synerise.W080" in [m.id for m in found]
    assert "django_synerise.W080" not in [m.id for m in checks.run_checks()], (
        "the runtime check only runs when databases are checked"
    )


@pytest.mark.django_db
def test_admin_shows_the_halt(fake: Any, admin_client: Any) -> None:
    seed_token(fake)
    fake.inject(status=403, times=None)
    refresh_due_tokens()
    page = admin_client.get("/admin/django_synerise/clienttoken/", follow=True)
    text = page.content.decode()
    assert page.status_code == 200
    assert "Background refresh is halted" in text and "credentials_rejected" in text


# --------------------------------------------------------------------------- 2. retry state


@pytest.mark.timing
@pytest.mark.django_db
def test_a_row_failing_five_times_has_growing_gaps_across_beats(fake: Any, settings: Any) -> None:
    # The backoff alone: five 503s in a row would open the breaker (BREAKER_THRESHOLD 5) and
    # hold every beat for BREAKER_RESET_TIMEOUT (30 s), which test_breaker.py covers.
    synerise_settings(settings, BREAKER_THRESHOLD=10)
    row = seed_token(fake)
    fake.inject(status=503, times=5, path="refresh")
    base = 0.4
    delays: list[float] = []  # the retry delay each failed beat scheduled
    starts: list[float] = []  # when each of those beats started (wall clock, as the fake's)
    deadline = time.monotonic() + 90
    while ClientToken.objects.get(pk=row.pk).version == 1:
        assert time.monotonic() < deadline, "never refreshed"
        started = time.time()
        report = refresh_batch(claim_due_tokens(), backoff=base)  # one beat: a new batch
        if report.failed_transient:
            delays.append(report.retry_after)
            starts.append(started)
        time.sleep(0.05)

    calls = [r.at for r in refresh_calls(fake)]
    assert len(calls) == 6
    failures = delays[:5]  # the five 503s
    for attempt, delay in enumerate(failures):
        ceiling = base * 2**attempt
        # Equal jitter: between half the ceiling and the ceiling, never below 0.2 s.
        assert max(0.2, ceiling / 2) - 1e-6 <= delay <= ceiling + 1e-6, (attempt, failures)
    assert failures == sorted(failures), "the gaps never shrink"
    assert failures[-1] > 2 * failures[0], failures
    # Across beats: no claim came before the retry time. The retry time is the failed beat's
    # own time plus the delay (database clock, read after the beat started), so the next call
    # arrives no earlier than the failed beat's start plus its delay; a loaded machine only
    # makes it later. (The gap between the two calls can be a little shorter than the delay:
    # the failed call itself reached Synerise some time after its beat started.)
    for attempt, (start, delay) in enumerate(zip(starts[:5], failures, strict=True)):
        assert calls[attempt + 1] >= start + delay - 0.005, (attempt, calls, starts, failures)
    stored = ClientToken.objects.get(pk=row.pk)
    assert (stored.failure_count, stored.retry_at, stored.last_error) == (0, None, "")


# --------------------------------------------------------------------------- real worker

#: Settings of this module's worker and cron runs (tests/celery_settings.py + these).
OVERRIDES = {"REFRESH_BATCH_SIZE": 60, "REFRESH_CONCURRENCY": 4, "LEASE_SECONDS": 6,
             "HALT_PROBE_MAX": 0.5, "REFRESH_FLUSH_INTERVAL": 0.25}
FLUSH_WINDOW = OVERRIDES["REFRESH_FLUSH_INTERVAL"]
PERIOD = 1.0  # the compressed beat period


def _log_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, signal_log: Path) -> None:
        self.process, self.log, self.signal_log = process, log, signal_log

    def children(self) -> list[int]:
        return children(self.process.pid)

    def done(self, task: str) -> list[dict[str, Any]]:
        return [e for e in _log_entries(self.signal_log)
                if e["signal"] == "task_done" and e["task"] == task]


@pytest.fixture(scope="module")
def worker_fake() -> Iterator[FakeSynerise]:
    with FakeSynerise() as fake:
        yield fake


@pytest.fixture(scope="module")
def worker(django_db_setup: Any, django_db_blocker: Any,
           worker_fake: FakeSynerise) -> Iterator[Worker]:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("redis://", "amqp://")) or connection.vendor != "postgresql":
        pytest.fail("needs CELERY_BROKER_URL=redis://... and DATABASE_URL=postgres://...")
    from tests.celery_app import app

    queue = f"synerise-systemic-{os.getpid()}"
    app.conf.task_default_queue = queue
    signal_log = Path(tempfile.mkstemp(prefix="synerise-systemic-", suffix=".jsonl")[1])
    log = Path(tempfile.mkstemp(prefix="synerise-systemic-", suffix=".log")[1])
    env = child_env(worker_fake, SYNERISE_TEST_SIGNAL_LOG=str(signal_log),
                    SYNERISE_TEST_QUEUE=queue, SYNERISE_TEST_OVERRIDES=json.dumps(OVERRIDES))
    try:
        with celery_worker(
            app, queue=queue, name=f"synerise-systemic-{os.getpid()}", env=env, log=log
        ) as process:
            yield Worker(process, log, signal_log)
    finally:
        with app.connection_for_write() as conn, contextlib.suppress(Exception):
            conn.default_channel.queue_purge(queue)
        app.conf.task_default_queue = "celery"
        log.unlink(missing_ok=True)
        signal_log.unlink(missing_ok=True)


@pytest.fixture
def wfake(worker: Worker, worker_fake: FakeSynerise, require_postgres: None) -> Iterator[Any]:
    worker_fake.reset_faults()
    worker_fake.latency = 0.0
    worker_fake.on_request = worker_fake.on_response = None
    worker_fake.clear_requests()
    worker.signal_log.write_text("")
    yield worker_fake
    worker_fake.on_request = worker_fake.on_response = None
    worker_fake.reset_faults()
    worker_fake.latency = 0.0


def _beat(worker: Worker, timeout: float = 60.0) -> dict[str, Any]:
    """One beat: run the scheduler task on the worker and wait until it and every batch it
    enqueued have finished (conditions, generous bounds); returns the scheduler's result."""
    beats = len(worker.done("django_synerise.tasks.refresh_expiring_tokens"))
    batches = len(worker.done("django_synerise.tasks.refresh_tokens"))
    tasks.refresh_expiring_tokens.delay()
    wait_for(lambda: len(worker.done("django_synerise.tasks.refresh_expiring_tokens")) > beats,
              timeout=timeout, what="the beat")
    result = worker.done("django_synerise.tasks.refresh_expiring_tokens")[-1]["retval"]
    wait_for(lambda: len(worker.done("django_synerise.tasks.refresh_tokens"))
              >= batches + result["batches"], timeout=timeout, what="the beat's batches")
    return result


def _statuses(rows: list[ClientToken]) -> set[str]:
    return set(ClientToken.objects.filter(pk__in=[r.pk for r in rows])
               .values_list("status", flat=True))


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_403_on_every_call_for_15_s_then_recovery_logs_nobody_out(
    wfake: Any, worker: Worker
) -> None:
    rows = [seed_token(wfake) for _ in range(30)]
    wfake.inject(status=403, times=None)  # the API key rotated away: every call answers 403
    started = time.monotonic()
    beats = 0
    while time.monotonic() - started < 15:
        tick = time.monotonic()
        _beat(worker)
        beats += 1
        assert TokenStatus.NEEDS_LOGIN not in _statuses(rows)
        time.sleep(max(0.0, PERIOD - (time.monotonic() - tick)))
    assert RefreshHalt.objects.get().reason == "credentials_rejected"
    assert wfake.count("refresh") == 30, "one batch saw the rejection; then nothing was claimed"
    assert beats >= 5

    wfake.reset_faults()  # Synerise accepts the key again
    time.sleep(PERIOD)
    after = 0
    while set(ClientToken.objects.filter(pk__in=[r.pk for r in rows])
              .values_list("version", flat=True)) != {2}:
        assert after < 2, "all tokens fresh within two beats after recovery"
        _beat(worker)
        after += 1
        time.sleep(PERIOD)
    assert _statuses(rows) == {TokenStatus.ACTIVE}
    assert not RefreshHalt.objects.exists()
    names = [e["signal"] for e in _log_entries(worker.signal_log)]
    assert names.count("refresh_halted") == 1 and names.count("refresh_resumed") == 1
    assert "token_expired" not in names


@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_one_clients_401_moves_only_that_row(wfake: Any, worker: Worker) -> None:
    rows = [seed_token(wfake) for _ in range(10)]
    wfake.revoke_client(rows[0].account.client_id)
    _beat(worker)
    stored = {r.pk: r for r in ClientToken.objects.filter(pk__in=[r.pk for r in rows])}
    assert stored[rows[0].pk].status == TokenStatus.NEEDS_LOGIN
    assert {stored[r.pk].status for r in rows[1:]} == {TokenStatus.ACTIVE}
    assert {stored[r.pk].version for r in rows[1:]} == {2}
    assert not RefreshHalt.objects.exists()


#: How late a loaded machine may run the flushing thread (see ``_kill_mid_batch``).
SCHEDULING_SLACK = 1.5


def _kill_mid_batch(fake: Any, rows: list[ClientToken], start: Callable[[], int],
                    restart: Callable[[], None]) -> None:
    """60 due tokens, 300 ms latency: SIGKILL the refreshing process once 36 answers were
    sent; then check what was stored and how many tokens were refreshed twice.

    An answer counts as old (it must have been stored) when it was sent more than one flush
    window plus ``SCHEDULING_SLACK`` before the kill: on a loaded machine the flushing thread
    may run that much later than its interval says."""
    target: dict[str, int] = {}
    by_token = {row.plaintext: row for row in rows}
    answered: list[tuple[float, str]] = []
    killed: list[float] = []
    lock = threading.Lock()

    def on_response(request: Any, status: int) -> None:
        if "refresh" not in request.path or status != 200:
            return
        with lock:
            if killed:
                return
            answered.append((time.time(), request.bearer))
            if len(answered) == 36:
                os.kill(target["pid"], signal.SIGKILL)
                killed.append(time.time())

    fake.latency = 0.3
    fake.on_response = on_response
    target["pid"] = start()
    wait_for(lambda: bool(killed), timeout=60, what="the kill")
    fake.on_response = None
    kill_at = killed[0]
    time.sleep(0.5)  # the killed process is gone; nothing more can be written

    versions = dict(ClientToken.objects.filter(pk__in=[r.pk for r in rows])
                    .values_list("pk", "version"))
    cutoff = kill_at - FLUSH_WINDOW - SCHEDULING_SLACK
    old = [by_token[bearer] for at, bearer in answered if at < cutoff]
    recent = [by_token[bearer] for at, bearer in answered if at >= cutoff]
    assert len(old) >= 8, "the kill came well after the first answers"
    assert [r.pk for r in old if versions[r.pk] != 2] == [], "answers older than the window"

    fake.latency = 0.0
    restart()
    wait_for(lambda: set(ClientToken.objects.filter(pk__in=[r.pk for r in rows])
                          .values_list("version", flat=True)) == {2},
             timeout=60, what="the rest refreshed")
    calls = calls_per_token(fake)
    twice = [token for token, n in calls.items() if n == 2]
    assert max(calls.values()) <= 2
    open_calls = OVERRIDES["REFRESH_CONCURRENCY"]
    assert len(twice) <= open_calls + len(recent), (len(twice), len(recent))
    print(f"kill: {len(answered)} answers sent, {len(old)} older than the window+slack all "
          f"stored, {len(recent)} recent, {len(twice)} tokens refreshed twice")
    for row in ClientToken.objects.select_related("account").filter(pk__in=[r.pk for r in rows]):
        assert fake.token_info(row.get_token())["valid"]


@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sigkill_of_a_cron_run_loses_only_the_last_flush_window(wfake: Any) -> None:
    rows = [seed_token(wfake) for _ in range(60)]
    env = child_env(wfake, SYNERISE_TEST_OVERRIDES=json.dumps(OVERRIDES))
    command = [sys.executable, "-m", "django", "synerise_refresh_tokens"]
    runs: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        runs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL))
        return runs[-1].pid

    def restart() -> None:
        runs[0].wait(10)
        assert runs[0].returncode == -signal.SIGKILL
        time.sleep(OVERRIDES["LEASE_SECONDS"] + 0.5)  # the killed run's lease runs out
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)

    _kill_mid_batch(wfake, rows, start, restart)


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sigkill_of_a_worker_loses_only_the_last_flush_window(
    wfake: Any, worker: Worker
) -> None:
    rows = [seed_token(wfake) for _ in range(60)]

    def start() -> int:
        tasks.refresh_expiring_tokens.delay()
        wait_for(lambda: bool(worker.children()), timeout=30, what="the worker child")
        return worker.children()[0]

    def restart() -> None:
        wait_for(lambda: len(worker.children()) == 1, timeout=30, what="a new worker child")
        time.sleep(OVERRIDES["LEASE_SECONDS"] + 0.5)  # the killed batch's lease runs out
        _beat(worker)

    _kill_mid_batch(wfake, rows, start, restart)


# --------------------------------------------------------------------------- 4. one engine

ANSWERS: dict[str, dict[str, Any]] = {
    "200": {},
    "400": {"status": 400},
    "401": {"status": 401},
    "403": {"status": 403},
    "404": {"status": 404},
    "409": {"status": 409},
    "412": {"status": 412},
    "429": {"status": 429, "retry_after": "30"},
    "500": {"status": 500},
    "503": {"status": 503},
    "timeout": {"fault": "latency", "delay": 1.5},
    "reset": {"fault": "reset"},
    "garbage": {"fault": "garbage"},
    "workspace": {"status": 403, "times": None, "path": None},
}


def _state(pk: int) -> tuple[Any, ...]:
    row = ClientToken.objects.get(pk=pk)
    return (row.status, row.version, row.failure_count, row.last_error,
            row.retry_at is not None, row.lease_until is None)


@pytest.mark.django_db
@pytest.mark.parametrize("answer", list(ANSWERS))
def test_lazy_and_batch_paths_leave_the_same_row_state(
    fake: Any, settings: Any, answer: str
) -> None:
    synerise_settings(settings, TIMEOUT=(1, 0.5), TOTAL_TIMEOUT=1)
    lazy = seed_token(fake, lifetime=600)  # inside REFRESH_MARGIN: get_valid_token refreshes
    batch = seed_token(fake, lifetime=600)
    fault = {"times": 1, "path": "refresh", **ANSWERS[answer]}

    def inject() -> None:
        fake.reset_faults()
        if answer != "200":
            fake.inject(**fault)

    inject()
    try:
        served = services.get_valid_token(lazy.account.user)
    except LoginRequired as exc:
        served = f"login:{exc.reason}"
    inject()
    report = refresh_batch(claim_tokens([batch.pk]))

    assert _state(lazy.pk) == _state(batch.pk), answer
    status = _state(batch.pk)[0]
    if answer == "200":
        assert report.refreshed == [batch.pk] and served != lazy.plaintext
    elif answer in ("400", "401", "403", "404", "409", "412"):
        assert status == TokenStatus.NEEDS_LOGIN and served == "login:rejected"
    elif answer == "workspace":
        assert report.halted == [batch.pk] and served == lazy.plaintext
        assert _state(batch.pk)[:3] == (TokenStatus.ACTIVE, 1, 0)
    else:
        assert report.failed_transient == [batch.pk] and served == lazy.plaintext
        assert _state(batch.pk)[2] == 1 and _state(batch.pk)[4], "failure counted, retry set"


# --------------------------------------------------------------------------- 5. lifetime cap


@pytest.mark.django_db
def test_token_over_max_token_lifetime_is_refused_logged_and_counted(
    fake: Any, settings: Any, caplog: Any
) -> None:
    from django.core.cache import cache

    cache.clear()
    fake.token_lifetime = 48 * 3600  # the workspace issues two-day tokens
    add_client(fake)
    with (caplog.at_level("WARNING", logger="django_synerise"),
          pytest.raises(TokenVerificationError) as info):
        login_email(fake)
    assert info.value.reason == "lifetime"
    assert "more than MAX_TOKEN_LIFETIME (86400 s)" in caplog.text
    assert "lives 172800 s" in caplog.text or "lives 17279" in caplog.text
    out = io.StringIO()
    call_command("synerise_status", stdout=out)
    assert "refused: lifetime=1" in out.getvalue()
    assert not ClientToken.objects.exists()

    synerise_settings(settings, MAX_TOKEN_LIFETIME=timedelta(days=3))
    result = login_email(fake)
    assert ClientToken.objects.get(account=result.account).expires_in > 47 * 3600
