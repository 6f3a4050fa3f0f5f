"""The global refresh rate limit (R-CEL-7): ``REFRESH_RATE_LIMIT`` holds across processes.

The slot arithmetic is checked with an injected clock; the pipeline against FakeSynerise over
loopback, first in this process (with a control run without the limit), then with three OS
processes sharing a real Redis cache. Rates are read from the fake's own request timestamps.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.cache import caches
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from django_synerise.models import ClientToken, TokenStatus
from django_synerise.ratelimit import RateLimiter, refresh_rate_limiter
from django_synerise.services.refresh import refresh_due_tokens
from tests.child_env import child_env
from tests.fixtures_refresh import calls_per_token, refresh_calls, seed_token
from tests.fixtures_services import synerise_settings

ROOT = Path(__file__).resolve().parent.parent
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of ``times`` inside any half-open window of ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_max_in_window_counts_a_sliding_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3  # [0.5, 1.5) holds 0.5, 0.99, 1.0
    assert max_in_window([0.0, 2.0, 4.0]) == 1


# --------------------------------------------------------------------------- slot arithmetic


class Clock:
    """A wall clock the test moves; ``sleep`` advances it and records the wait."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fresh_cache() -> Any:
    with override_settings(CACHES={"default": LOCMEM, "limits": {**LOCMEM, "LOCATION": "rl"}}):
        caches["limits"].clear()
        yield caches["limits"]


@pytest.mark.parametrize(
    ("rate", "quota", "slots"),
    [(3, 1, 1), (10, 1, 8), (20, 1, 18), (40, 2, 18), (50, 2, 23), (1000, 50, 18)],
)
def test_slot_sizes(rate: float, quota: int, slots: int) -> None:
    limiter = RateLimiter(rate)
    assert (limiter.quota, limiter.slots) == (quota, slots)


@given(st.floats(min_value=3, max_value=10_000))
def test_no_one_second_window_can_exceed_the_limit(rate: float) -> None:
    """A one-second window touches at most ``slots + 1`` slots; with one slot of headroom
    for jitter they hold at most ``rate``, and the sustained rate stays close to it."""
    limiter = RateLimiter(rate)
    assert (limiter.slots + 2) * limiter.quota <= rate
    assert limiter.slots * limiter.quota >= (0.85 if rate >= 20 else 0.3) * rate


def test_a_full_slot_waits_for_the_next_one(fresh_cache: Any) -> None:
    clock = Clock(now=1000.0)
    limiter = RateLimiter(40, "limits", clock=clock, sleep=clock.sleep)  # 2 per 1/18 s slot
    assert limiter.acquire() and limiter.acquire()
    assert clock.slept == []
    assert limiter.acquire()  # the third waits for the next slot
    assert len(clock.slept) == 1
    width = 1 / 18
    assert 0 < clock.slept[0] <= width * 1.1 + 1e-9
    assert math.floor(clock.now * 18) == math.floor(1000.0 * 18) + 1


def test_a_call_that_cannot_start_before_the_deadline_is_refused(fresh_cache: Any) -> None:
    clock = Clock(now=1000.0)
    limiter = RateLimiter(10, "limits", clock=clock, sleep=clock.sleep)  # 1 per 1/8 s slot
    assert limiter.acquire(deadline=time.monotonic() + 5)
    assert not limiter.acquire(deadline=time.monotonic() + 0.01)
    assert clock.slept == [], "refused at once, without waiting"


def test_a_failing_cache_never_stops_refreshes(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
    }
    caplog.set_level(logging.WARNING, "django_synerise.ratelimit")
    with override_settings(CACHES={"default": LOCMEM, "down": unreachable}):
        limiter = RateLimiter(3, "down")
        assert all(limiter.acquire() for _ in range(3))
    assert "refresh calls are not rate limited" in caplog.text


def test_limiter_follows_the_settings(settings: Any) -> None:
    synerise_settings(settings, REFRESH_RATE_LIMIT=None)
    assert refresh_rate_limiter() is None
    synerise_settings(settings, REFRESH_RATE_LIMIT=25, REFRESH_RATE_LIMIT_CACHE="limits")
    assert refresh_rate_limiter() == RateLimiter(25.0, "limits")


# --------------------------------------------------------------------------- one process


@pytest.fixture
def fake(fake_synerise: Any, settings: Any) -> Any:
    synerise_settings(
        settings, REFRESH_CONCURRENCY=16, REFRESH_BATCH_SIZE=50, LEASE_SECONDS=60, TOTAL_TIMEOUT=5
    )
    return fake_synerise


@pytest.mark.django_db
def test_pipeline_keeps_under_the_limit_and_refreshes_everything(
    fake: Any, settings: Any, fresh_cache: Any
) -> None:
    for _ in range(200):
        seed_token(fake)

    # Control: without a limit this pipeline runs far above 40 calls a second.
    synerise_settings(settings, REFRESH_RATE_LIMIT=None)
    assert refresh_due_tokens(limit=100).refreshed == 100
    unlimited = max_in_window([r.at for r in refresh_calls(fake)])
    assert unlimited > 60, unlimited
    fake.clear_requests()

    synerise_settings(settings, REFRESH_RATE_LIMIT=40, REFRESH_RATE_LIMIT_CACHE="limits")
    started = time.monotonic()
    report = refresh_due_tokens()
    elapsed = time.monotonic() - started

    assert report.refreshed == 100
    assert set(ClientToken.objects.values_list("status", "version")) == {(TokenStatus.ACTIVE, 2)}
    times = [r.at for r in refresh_calls(fake)]
    assert len(times) == 100
    assert max_in_window(times) <= 40, max_in_window(times)
    assert 100 / 40 <= elapsed <= 100 / 36 + 3, elapsed  # 36/s sustained: the limit's 90 %


# --------------------------------------------------------------------------- three processes


def redis_cache_url(broker_url: str) -> str:
    """The test Redis server, database 7 (never the broker's database)."""
    parts = urlsplit(broker_url)
    return urlunsplit((parts.scheme, parts.netloc, "/7", "", ""))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_three_processes_share_one_limit_through_redis(
    fake: Any, broker_url: str, require_postgres: None
) -> None:
    rate, count, processes = 40, 240, 3
    rows = [seed_token(fake) for _ in range(count)]
    env = child_env(
        fake,
        SYNERISE_TEST_RATE_LIMIT=str(rate),
        SYNERISE_TEST_CACHE_URL=redis_cache_url(broker_url),
        SYNERISE_TEST_CACHE_PREFIX=f"ratelimit-{os.getpid()}-{time.time_ns()}",
    )
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "django", "synerise_refresh_tokens"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [child.communicate(timeout=120)[0] for child in children]
    elapsed = time.monotonic() - started
    assert [child.returncode for child in children] == [0] * processes, outputs

    assert calls_per_token(fake) == {row.plaintext: 1 for row in rows}
    assert set(ClientToken.objects.values_list("status", "version")) == {(TokenStatus.ACTIVE, 2)}
    times = [r.at for r in refresh_calls(fake)]
    # The limiter bounds when calls start; the fake sees when they arrive. Three cold
    # processes opening 48 connections at once can bunch a few arrivals, hence the 10 %.
    assert max_in_window(times) <= rate * 1.1, max_in_window(times)
    steady = sorted(times)[len(times) // 4 :]  # connections warm: the limit holds exactly
    assert max_in_window(steady) <= rate, max_in_window(steady)
    assert elapsed >= count / rate - 0.5, "the three processes together kept to the limit"
    refreshed = sum(int(out.split("refreshed=")[1].split()[0]) for out in outputs)
    assert refreshed == count
    assert sum(1 for out in outputs if not out.startswith("claimed=0 ")) >= 2, outputs
