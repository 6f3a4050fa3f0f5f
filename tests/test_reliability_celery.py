"""Reliability with a real Celery worker: the broker (a private redis-server this module starts
on a free port; the machine's Redis is never touched) down for ten beat periods, then back
(X20), and stale scheduler messages discarded instead of piling up (R-CEL-5)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_synerise import tasks
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.schedule import REFRESH_EXPIRES, REFRESH_INTERVAL
from django_synerise.testing import FakeSynerise
from tests.child_env import child_env
from tests.fixtures_refresh import calls_per_token, seed_token
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
PERIOD = 0.3  # a compressed beat period


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Redis:
    """A private ``redis-server`` (no persistence) that the test can stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        pytest.fail("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    server = Redis(_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker_fake() -> Iterator[FakeSynerise]:
    with FakeSynerise() as fake:
        yield fake


@pytest.fixture(scope="module")
def worker(
    django_db_setup: Any, django_db_blocker: Any, redis: Redis, worker_fake: FakeSynerise
) -> Iterator[subprocess.Popen[bytes]]:
    if connection.vendor != "postgresql":
        pytest.fail("needs DATABASE_URL=postgres://postgres@127.0.0.1:5432/test")
    env = child_env(worker_fake, CELERY_BROKER_URL=redis.url)
    log = Path(tempfile.mkstemp(prefix="synerise-h9-worker-", suffix=".log")[1])
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celery_app",
                "worker",
                "-P",
                "solo",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"synerise-h9-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    process.log = log  # type: ignore[attr-defined]
    try:
        wait_for(
            lambda: "ready." in log.read_text(errors="replace"),
            timeout=120,
            what="the worker to start",
            detail=lambda: log.read_text(errors="replace")[-3000:],
        )
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.unlink(missing_ok=True)


def send_beat(redis: Redis, *, expires: Any) -> None:
    """Publish one scheduler message the way beat does (with ``expires``), no retries."""
    from tests.celery_app import app

    with app.connection_for_write(redis.url, transport_options={"max_retries": 0}) as conn:
        tasks.refresh_expiring_tokens.apply_async(connection=conn, expires=expires, retry=False)


def test_beat_messages_expire_within_the_period() -> None:
    assert 0 < REFRESH_EXPIRES < REFRESH_INTERVAL
    assert 0 < tasks.BATCH_EXPIRES < REFRESH_INTERVAL


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_x20_broker_down_for_ten_beat_periods_then_back(
    redis: Redis, worker: Any, worker_fake: FakeSynerise, require_postgres: None
) -> None:
    fake = worker_fake
    fake.clear_requests()
    rows = [seed_token(fake) for _ in range(20)]
    redis.stop()

    failed_sends = 0
    for _ in range(10):  # ten beat periods with the broker down
        try:
            send_beat(redis, expires=PERIOD * 0.8)
        except Exception:  # noqa: BLE001 - kombu/redis connection errors
            failed_sends += 1
        time.sleep(PERIOD)
    assert failed_sends == 10
    # Nothing was claimed into a black hole: claims happen only when a scheduler runs.
    assert set(ClientToken.objects.values_list("status", "version", "lease_until")) == {
        (TokenStatus.ACTIVE, 1, None)
    }
    assert fake.requests == []

    redis.start()  # same port: the worker reconnects
    # Stale scheduler messages (already past their expiry) are discarded, not run.
    for _ in range(10):
        send_beat(redis, expires=timezone.now() - timedelta(seconds=1))
    send_beat(redis, expires=REFRESH_EXPIRES)  # the next real beat

    def all_refreshed() -> bool:
        return set(ClientToken.objects.values_list("status", "version")) == {
            (TokenStatus.ACTIVE, 2)
        }

    wait_for(
        all_refreshed,
        timeout=120,
        what="every due row refreshed after the outage",
        detail=lambda: worker.log.read_text(errors="replace")[-3000:],
    )
    time.sleep(0.5)
    assert calls_per_token(fake) == {row.plaintext: 1 for row in rows}
    log = worker.log.read_text(errors="replace")
    scheduler = "django_synerise.tasks.refresh_expiring_tokens["
    discarded = log.count(f"Discarding revoked task: {scheduler}")
    ran = len(
        re.findall(
            r"Task django_synerise\.tasks\.refresh_expiring_tokens\[[^\]]+\] "
            r"succeeded",
            log,
        )
    )
    assert (discarded, ran) == (10, 1), log[-3000:]
