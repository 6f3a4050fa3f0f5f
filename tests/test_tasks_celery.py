"""The Celery tasks end to end: a real worker on the Redis broker, PostgreSQL, FakeSynerise.

The worker runs as a subprocess (``celery -A tests.celery_app worker``, prefork, two
children) against the test database pytest-django created, with the settings of
``tests/celery_settings.py`` (3 s leases, batches of 10, backoff base 0.5 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_synerise import tasks
from django_synerise.conf import synerise_settings
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.schedule import BEAT_SCHEDULE
from django_synerise.services.refresh import EXPIRY_SAFETY, claim_due_tokens
from django_synerise.testing import FakeSynerise
from tests.celery_worker import celery_worker, children
from tests.child_env import child_env
from tests.fixtures_refresh import calls_per_token, refresh_calls, seed_token
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
WORKER_LEASE = 3  # LEASE_SECONDS of tests/celery_settings.py


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def worker_fake() -> Iterator[FakeSynerise]:
    with FakeSynerise() as fake:
        yield fake


@pytest.fixture(scope="module")
def signal_log() -> Iterator[Path]:
    handle, name = tempfile.mkstemp(prefix="synerise-signals-", suffix=".jsonl")
    os.close(handle)
    path = Path(name)
    yield path
    path.unlink(missing_ok=True)


def _purge(app: Any, queue: str, *, forget: bool = False) -> None:
    """Drop the messages of the test queue (nothing else on the broker is touched); with
    ``forget``, also the queue's bindings (Redis)."""
    with app.connection_for_write() as conn, contextlib.suppress(Exception):
        channel = conn.default_channel
        channel.queue_purge(queue)
        client = getattr(channel, "client", None)
        if forget and client is not None:
            for key in client.scan_iter(match=f"_kombu.binding*{queue}*"):
                client.delete(key)


class Worker:
    """A running ``celery worker`` subprocess."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def children(self) -> list[int]:
        return children(self.process.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def worker(django_db_setup: Any, django_db_blocker: Any, worker_fake: FakeSynerise,
           signal_log: Path) -> Iterator[Worker]:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("redis://", "amqp://")):
        pytest.fail("The Celery tests need CELERY_BROKER_URL=redis://127.0.0.1:6379/5")
    if connection.vendor != "postgresql":
        pytest.fail("The Celery tests need DATABASE_URL=postgres://postgres@127.0.0.1:5432/test")
    from tests.celery_app import app

    queue = f"synerise-tests-{os.getpid()}"
    app.conf.task_default_queue = queue  # this process sends to the worker's own queue
    _purge(app, queue)
    env = child_env(
        worker_fake, SYNERISE_TEST_SIGNAL_LOG=str(signal_log), SYNERISE_TEST_QUEUE=queue
    )
    log = Path(tempfile.mkstemp(prefix="synerise-worker-", suffix=".log")[1])
    try:
        with celery_worker(
            app, queue=queue, name=f"synerise-{os.getpid()}", env=env, log=log, concurrency=2
        ) as process:
            yield Worker(process, log)
    finally:
        _purge(app, queue, forget=True)
        app.conf.task_default_queue = "celery"
        log.unlink(missing_ok=True)


@pytest.fixture
def fake(worker: Worker, worker_fake: FakeSynerise, signal_log: Path,
         broker_url: str, require_postgres: None) -> Iterator[FakeSynerise]:
    """The worker's fake, with a clean request log, faults and signal log for each test."""
    worker_fake.reset_faults()
    worker_fake.latency = 0.0
    worker_fake.on_request = None
    worker_fake.clear_requests()
    signal_log.write_text("")
    yield worker_fake
    worker_fake.on_request = None
    worker_fake.reset_faults()


def _signals(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _versions(rows: list[ClientToken]) -> dict[int, int]:
    return dict(ClientToken.objects.filter(pk__in=[r.pk for r in rows])
                .values_list("pk", "version"))


def _statuses(rows: list[ClientToken]) -> dict[int, str]:
    return dict(ClientToken.objects.filter(pk__in=[r.pk for r in rows])
                .values_list("pk", "status"))


def _all_refreshed(rows: list[ClientToken]) -> Callable[[], bool]:
    def check() -> bool:
        return set(_versions(rows).values()) == {2} and set(_statuses(rows).values()) == {
            TokenStatus.ACTIVE}
    return check


# --------------------------------------------------------------------------- configuration


def test_task_options_make_redelivery_safe_and_bounded() -> None:
    for task in (tasks.refresh_expiring_tokens, tasks.refresh_tokens, tasks.purge_tokens):
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert task.time_limit > task.soft_time_limit
    total = float(synerise_settings.TOTAL_TIMEOUT)
    lease = float(synerise_settings.LEASE_SECONDS)
    assert tasks.refresh_tokens.soft_time_limit > total + lease
    soft, hard = tasks.batch_time_limits()
    assert soft > total + lease and hard > soft
    period = BEAT_SCHEDULE["django-synerise-refresh-expiring-tokens"]["schedule"]
    assert period > tasks.BATCH_EXPIRES
    from tests.celery_settings import CELERY_BROKER_TRANSPORT_OPTIONS

    visibility = CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility > hard and visibility > float(synerise_settings.RETRY_AFTER_MAX)


# --------------------------------------------------------------------------- end to end


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_due_tokens_refreshed_end_to_end_others_untouched(fake: FakeSynerise,
                                                          worker: Worker, signal_log: Path) -> None:
    due = [seed_token(fake) for _ in range(14)]
    fresh = [seed_token(fake, due=False) for _ in range(3)]
    idle = [seed_token(fake, idle=True) for _ in range(3)]
    inactive = [seed_token(fake, active_user=False) for _ in range(2)]

    tasks.refresh_expiring_tokens.delay()
    wait_for(_all_refreshed(due), what="due tokens refreshed", detail=worker.output)

    assert calls_per_token(fake) == {row.plaintext: 1 for row in due}
    for row in due:
        stored = ClientToken.objects.select_related("account").get(pk=row.pk)
        assert stored.refresh_at > timezone.now() and stored.lease_until is None
        assert fake.token_info(stored.get_token())["valid"]
    untouched = fresh + idle + inactive
    assert set(_versions(untouched).values()) == {1}
    assert set(_statuses(untouched).values()) == {TokenStatus.ACTIVE}
    refreshed = [s["token"] for s in _signals(signal_log)
                 if s["signal"] == "token_refreshed"]
    assert sorted(refreshed) == sorted(row.pk for row in due)


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_schedulers_and_a_duplicated_delivery_refresh_each_token_once(
    fake: FakeSynerise, worker: Worker
) -> None:
    fake.latency = 0.02
    first = [seed_token(fake) for _ in range(40)]
    tasks.refresh_expiring_tokens.delay()
    tasks.refresh_expiring_tokens.delay()
    wait_for(_all_refreshed(first), what="first set refreshed", detail=worker.output)

    second = [seed_token(fake) for _ in range(10)]
    claim = claim_due_tokens(limit=10)
    assert sorted(claim.ids) == sorted(r.pk for r in second)
    deliveries = [  # the same message delivered twice
        tasks.refresh_tokens.apply_async(args=(list(claim.ids),),
                                         kwargs={"lease": claim.lease_iso()})
        for _ in range(2)
    ]
    wait_for(_all_refreshed(second), what="second set refreshed", detail=worker.output)
    wait_for(lambda: all(f"[{d.id}] succeeded" in worker.log.read_text(errors="replace")
                         for d in deliveries),
             what="both deliveries finished", detail=worker.output)

    assert calls_per_token(fake) == {row.plaintext: 1 for row in first + second}


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_batch_loses_nothing(fake: FakeSynerise, worker: Worker) -> None:
    rows = [seed_token(fake) for _ in range(30)]
    fake.latency = 0.15
    killed: list[int] = []

    def kill_children(request: Any) -> None:
        if "refresh" in request.path and not killed and fake.count("refresh") >= 6:
            for pid in worker.children():
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)

    fake.on_request = kill_children
    tasks.refresh_expiring_tokens.delay()
    wait_for(lambda: bool(killed), what="the kill", detail=worker.output)
    fake.on_request = None
    fake.latency = 0.0
    wait_for(lambda: len(worker.children()) == 2, what="respawned children", detail=worker.output)
    time.sleep(WORKER_LEASE + 0.5)  # leases of the killed batches run out
    stuck = [pk for pk, version in _versions(rows).items() if version == 1]
    assert stuck, "the kill interrupted a batch"
    assert set(_statuses(rows).values()) <= {TokenStatus.ACTIVE, TokenStatus.REFRESHING}
    tasks.refresh_expiring_tokens.delay()  # the next beat
    wait_for(_all_refreshed(rows), what="every token refreshed after the kill",
             detail=worker.output)

    by_token = calls_per_token(fake)
    assert set(by_token) == {row.plaintext for row in rows}
    assert max(by_token.values()) <= 2
    for row in rows:
        stored = ClientToken.objects.select_related("account").get(pk=row.pk)
        info = fake.token_info(stored.get_token())
        assert info["valid"] and info["client_id"] == stored.account.client_id


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_503_three_times_then_200_is_refreshed(
    fake: FakeSynerise, worker: Worker, signal_log: Path
) -> None:
    row = seed_token(fake)
    fake.inject(status=503, times=3, path="refresh")
    tasks.refresh_expiring_tokens.delay()
    wait_for(_all_refreshed([row]), what="refresh after three 503", detail=worker.output)

    calls = refresh_calls(fake)
    assert len(calls) == 4
    assert all(b.at > a.at for a, b in zip(calls, calls[1:], strict=False))
    failed = [s for s in _signals(signal_log) if s["signal"] == "token_refresh_failed"]
    assert [s["will_retry"] for s in failed] == [True, True, True]


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_429_retry_after_delays_the_next_try(fake: FakeSynerise, worker: Worker) -> None:
    row = seed_token(fake)
    fake.inject(status=429, times=1, path="refresh", retry_after="2")
    tasks.refresh_expiring_tokens.delay()
    wait_for(_all_refreshed([row]), what="refresh after a 429", detail=worker.output)

    first, second = refresh_calls(fake)
    assert second.at - first.at >= 2.0


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_401_moves_to_needs_login_after_one_call(
    fake: FakeSynerise, worker: Worker, signal_log: Path
) -> None:
    row = seed_token(fake)
    fake.inject(status=401, times=None, path="refresh")
    tasks.refresh_expiring_tokens.delay()
    wait_for(lambda: _statuses([row])[row.pk] == TokenStatus.NEEDS_LOGIN,
             what="needs_login", detail=worker.output)
    wait_for(lambda: any(s["signal"] == "token_expired"
                         for s in _signals(signal_log)), what="token_expired")
    time.sleep(1.0)  # no retry may follow

    assert len(refresh_calls(fake)) == 1
    expired = [s for s in _signals(signal_log) if s["signal"] == "token_expired"]
    assert expired == [{"signal": "token_expired", "token": row.pk, "reason": "rejected",
                        "pid": expired[0]["pid"]}]


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_outage_until_expiry_ends_in_needs_login_without_late_retries(
    fake: FakeSynerise, worker: Worker, signal_log: Path
) -> None:
    row = seed_token(fake, lifetime=125)
    fake.inject(status=503, times=None, path="refresh")
    tasks.refresh_expiring_tokens.delay()
    wait_for(lambda: _statuses([row])[row.pk] == TokenStatus.NEEDS_LOGIN, timeout=60,
             what="needs_login after the outage", detail=worker.output)
    time.sleep(1.5)

    calls = refresh_calls(fake)
    assert len(calls) >= 3, "retries happen during the outage"
    deadline = (row.expires_at - EXPIRY_SAFETY).timestamp()
    # None started after the deadline; 2 s covers a call's way to the fake under load.
    assert max(call.at for call in calls) <= deadline + 2.0
    expired = [s for s in _signals(signal_log) if s["signal"] == "token_expired"]
    assert [(s["token"], s["reason"]) for s in expired] == [(row.pk, "expired")]
    stored = ClientToken.objects.get(pk=row.pk)
    assert stored.last_error == "synerise_unavailable"
    assert stored.failure_count == len(calls)
