"""The global refresh rate limit (R-CEL-7): ``REFRESH_RATE_LIMIT`` holds across processes.

The contract (docs/configuration.rst, :mod:`django_synerise.ratelimit`): calls start inside
the slot that counted them, and Synerise receives at most ``rate`` calls in any one-second
window while the delays from worker to Synerise differ by at most ``JITTER_BUDGET``, at most
``rate * (1 + J)`` when they differ by ``J`` more than that.

The worker side is checked exactly with an injected clock, including a cache that answers
late. The pipeline runs against FakeSynerise over loopback, first in this process (with a
control run without the limit), then with three cold OS processes sharing a real Redis
cache; rates are read from the fake's own arrival timestamps.

The margin at Synerise is measured, not guessed: each call's start is logged
(tests/call_log.py) and paired with its arrival at the fake, and the test asserts the bound
the docs give for the spread ``J`` of those delays in this very run. On a loaded two-core
machine (another process spinning) ``J`` ranged from 0.01 to 0.16 s over a dozen runs, and
the busiest one-second window held 36 calls at a limit of 40, which is
``(slots + 1) * quota``, the most the workers may start in a second. Before places were
checked against their slot, windows held up to 46 with ``J`` under 0.05 s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from django_synerise import ratelimit
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.ratelimit import JITTER_BUDGET, RateLimiter, refresh_rate_limiter, window_slots
from django_synerise.services.refresh import refresh_due_tokens
from tests.call_log import ENV as CALL_LOG
from tests.call_log import CallLogClient, digest, read_starts
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
    [(3, 1, 1), (10, 1, 8), (20, 1, 17), (40, 2, 17), (50, 2, 21), (1000, 50, 17)],
)
def test_slot_sizes(rate: float, quota: int, slots: int) -> None:
    limiter = RateLimiter(rate)
    assert (limiter.quota, limiter.slots) == (quota, slots)


def test_window_slots_rounds_away_float_noise() -> None:
    assert window_slots(10, 1.1) == 11  # 1.1 * 10 == 11.000000000000002
    assert window_slots(17, 1.1) == 19  # 18.7
    assert window_slots(18, 1.0) == 18


@given(st.floats(min_value=3, max_value=10_000), st.floats(min_value=0, max_value=5))
def test_no_one_second_window_at_synerise_can_exceed_the_statement(rate: float, jitter: float):
    """Calls arriving in a one-second window started within ``1 + J`` seconds, which touch at
    most ``window_slots(slots, 1 + J) + 1`` slots of ``quota`` calls: that is at most ``rate``
    while ``J <= JITTER_BUDGET`` and at most ``rate * (1 + J)`` beyond; and the sustained
    rate stays close to the limit."""
    limiter = RateLimiter(rate)
    quota, slots = limiter.quota, limiter.slots
    arriving = (window_slots(slots, 1 + jitter) + 1) * quota
    assert arriving <= (rate if jitter <= JITTER_BUDGET else rate * (1 + jitter))
    assert (window_slots(slots, 1 + JITTER_BUDGET) + 1) * quota <= rate
    assert slots * quota >= (0.8 if rate >= 20 else 0.25) * rate
    if rate >= 20 and rate % 20 == 0:
        assert slots * quota >= 0.85 * rate


def test_a_full_slot_waits_for_the_next_one(fresh_cache: Any) -> None:
    clock = Clock(now=1000.0)
    limiter = RateLimiter(40, "limits", clock=clock, sleep=clock.sleep)  # 2 per 1/17 s slot
    assert limiter.acquire() and limiter.acquire()
    assert clock.slept == []
    assert limiter.acquire()  # the third waits for the next slot
    assert len(clock.slept) == 1
    width = 1 / 17
    assert 0 < clock.slept[0] <= width * 1.1 + 1e-9
    assert math.floor(clock.now * 17) == math.floor(1000.0 * 17) + 1


class SlowLocMemCache(LocMemCache):
    """A local-memory cache whose increments take time on the clock of ``SlowLocMemCache.clock``
    (a cache round trip, or the thread being descheduled meanwhile)."""

    clock: SlowClock | None = None

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        value = super().incr(key, delta, version)
        if SlowLocMemCache.clock is not None:
            SlowLocMemCache.clock.advance()
        return value


class SlowClock(Clock):
    """A Clock that :meth:`advance` moves on by the next of ``delays`` (cycled)."""

    def __init__(self, now: float, delays: list[float]) -> None:
        super().__init__(now)
        self.delays = delays
        self.advanced = 0

    def advance(self) -> None:
        self.now += self.delays[self.advanced % len(self.delays)]
        self.advanced += 1


@contextmanager
def slow_cache(clock: SlowClock) -> Iterator[Any]:
    """A fresh SlowLocMemCache under the alias ``slow``, its increments moving ``clock``."""
    slow = {"BACKEND": f"{__name__}.SlowLocMemCache", "LOCATION": "slow"}
    with override_settings(CACHES={"default": LOCMEM, "slow": slow}):
        caches["slow"].clear()
        SlowLocMemCache.clock = clock
        try:
            yield caches["slow"]
        finally:
            SlowLocMemCache.clock = None


def slot_key(limiter: RateLimiter, slot: int) -> str:
    return f"{ratelimit.KEY_PREFIX}:{limiter.slots}x{limiter.quota}:{slot}"


def test_a_place_counted_in_a_slot_that_ended_is_not_used() -> None:
    """The cache answers after the slot ended: the call takes a place in the current slot
    instead of starting uncounted there (which let windows at Synerise exceed the limit)."""
    width = 1 / 17
    clock = SlowClock(1000.0, [1.5 * width, 0.0])  # the first increment comes back late
    with slow_cache(clock) as cache:
        limiter = RateLimiter(40, "slow", clock=clock, sleep=clock.sleep)
        first = math.floor(1000.0 * 17)
        assert limiter.acquire()
        started = math.floor(clock.now * 17)
        assert started == first + 1
        assert cache.get(slot_key(limiter, first)) == 1, "the late place stays counted"
        assert cache.get(slot_key(limiter, started)) == 1, "the call was counted where it starts"
    assert clock.slept == []


def test_a_cache_slower_than_a_slot_never_stops_refreshes(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratelimit._warnings.forget()  # noqa: SLF001
    caplog.set_level(logging.WARNING, "django_synerise.ratelimit")
    clock = SlowClock(1000.0, [1.01 / 17])  # every place comes back after its slot
    with slow_cache(clock):
        limiter = RateLimiter(40, "slow", clock=clock, sleep=clock.sleep)
        assert limiter.acquire(deadline=time.monotonic() + 60)
    assert clock.advanced == ratelimit.LATE_PLACES
    assert "answers slower than a slot (59 ms)" in caplog.text


@hypothesis_settings(max_examples=80, deadline=None)
@given(
    rate=st.floats(min_value=3, max_value=400),
    delays=st.lists(st.floats(min_value=0, max_value=0.45), min_size=1, max_size=12),
    calls=st.integers(min_value=1, max_value=60),
)
def test_every_call_starts_inside_the_slot_that_counted_it(
    rate: float, delays: list[float], calls: int
) -> None:
    """The exact guarantee at the workers, whatever the cache's round trips (here up to
    0.45 slot each): at most ``quota`` calls start in any slot, so at most
    ``(slots + 1) * quota`` in any one-second window."""
    limiter = RateLimiter(rate)
    width = 1 / limiter.slots
    clock = SlowClock(1000.0, [delay * width for delay in delays])
    starts = []
    with slow_cache(clock), mock.patch.object(ratelimit, "LATE_PLACES", 10**6):
        limiter = RateLimiter(rate, "slow", clock=clock, sleep=clock.sleep)
        for _ in range(calls):
            assert limiter.acquire()
            starts.append(clock.now)
    per_slot = Counter(math.floor(at * limiter.slots) for at in starts)
    assert max(per_slot.values()) <= limiter.quota, per_slot
    assert max_in_window(starts) <= (limiter.slots + 1) * limiter.quota


def test_a_call_that_cannot_start_before_the_deadline_is_refused(fresh_cache: Any) -> None:
    clock = Clock(now=1000.0)
    limiter = RateLimiter(10, "limits", clock=clock, sleep=clock.sleep)  # 1 per 1/8 s slot
    assert limiter.acquire(deadline=time.monotonic() + 5)
    assert not limiter.acquire(deadline=time.monotonic() + 0.01)
    assert clock.slept == [], "refused at once, without waiting"


def test_a_failing_cache_never_stops_refreshes(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratelimit._warnings.forget()  # noqa: SLF001  # another test may have warned
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


# --------------------------------------------------------------------------- at Synerise


def promised(rate: float, jitter: float) -> float:
    """The most calls the docs let arrive at Synerise in a one-second window when the delays
    from worker to Synerise differ by ``jitter`` seconds."""
    return rate if jitter <= JITTER_BUDGET else rate * (1 + jitter)


def jitter_of(fake: Any, starts: dict[str, float]) -> float:
    """The spread of the delays from each call's start (``starts``, by token digest) to its
    arrival at ``fake``; every refresh call must have a start."""
    delays = [r.at - starts[digest(r.bearer or "")] for r in refresh_calls(fake)]
    assert len(delays) == len(starts)
    return max(delays) - min(delays)


@pytest.fixture
def fake(fake_synerise: Any, settings: Any) -> Any:
    synerise_settings(
        settings, REFRESH_CONCURRENCY=16, REFRESH_BATCH_SIZE=50, LEASE_SECONDS=60, TOTAL_TIMEOUT=5
    )
    return fake_synerise


@pytest.mark.timing
@pytest.mark.django_db
def test_pipeline_keeps_under_the_limit_and_refreshes_everything(
    fake: Any, settings: Any, fresh_cache: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(160):
        seed_token(fake)

    # Control: without a limit this pipeline runs well above 20 calls a second (70 to 100 in
    # the busiest second on a loaded two-core machine).
    synerise_settings(settings, REFRESH_RATE_LIMIT=None)
    assert refresh_due_tokens(limit=100).refreshed == 100
    unlimited = max_in_window([r.at for r in refresh_calls(fake)])
    assert unlimited > 30, unlimited
    fake.clear_requests()

    monkeypatch.setenv(CALL_LOG, str(tmp_path / "calls.log"))
    synerise_settings(settings, REFRESH_RATE_LIMIT=20, REFRESH_RATE_LIMIT_CACHE="limits")
    started = time.monotonic()
    report = refresh_due_tokens(client=CallLogClient())
    elapsed = time.monotonic() - started

    assert report.refreshed == 60
    assert set(ClientToken.objects.values_list("status", "version")) == {(TokenStatus.ACTIVE, 2)}
    times = [r.at for r in refresh_calls(fake)]
    assert len(times) == 60
    jitter = jitter_of(fake, read_starts(str(tmp_path / "calls.log")))
    assert max_in_window(times) <= promised(20, jitter), (max_in_window(times), jitter)
    # 60 starts fill at least 60 slots of 1, the first and the last 58 whole slots apart:
    # at least 58/17 s. At 17/s sustained (the limit's 85 %) they take about 3.5 s; the upper
    # bound leaves a loaded machine 10 s more and still fails a limiter that lets one call
    # through per second.
    assert 58 / 17 <= elapsed <= 60 / 17 + 10, elapsed


# --------------------------------------------------------------------------- three processes


def redis_cache_url(broker_url: str) -> str:
    """The test Redis server, database 7 (never the broker's database)."""
    parts = urlsplit(broker_url)
    return urlunsplit((parts.scheme, parts.netloc, "/7", "", ""))


@pytest.mark.timing
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_three_processes_share_one_limit_through_redis(
    fake: Any, broker_url: str, require_postgres: None, tmp_path: Path
) -> None:
    """Three cold processes (each opening its Redis and HTTP connections at once) keep to
    the statement at Synerise, given the spread of delays measured in this very run."""
    rate, count, processes = 40, 240, 3
    rows = [seed_token(fake) for _ in range(count)]
    log = tmp_path / "calls.log"
    env = child_env(
        fake,
        SYNERISE_TEST_RATE_LIMIT=str(rate),
        SYNERISE_TEST_CACHE_URL=redis_cache_url(broker_url),
        SYNERISE_TEST_CACHE_PREFIX=f"ratelimit-{os.getpid()}-{time.time_ns()}",
        SYNERISE_TEST_CALL_LOG=str(log),
        # A lease and timeouts far beyond what a loaded machine takes: a lapsed lease or a
        # timed-out call is retried by design, a second call this test would count.
        SYNERISE_TEST_OVERRIDES=json.dumps(
            {"LEASE_SECONDS": 600, "TIMEOUT": [30, 60], "TOTAL_TIMEOUT": 90}
        ),
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
    jitter = jitter_of(fake, read_starts(str(log)))
    assert max_in_window(times) <= promised(rate, jitter), (max_in_window(times), jitter)
    # 240 starts fill at least 120 slots of 2, the first and the last 118 whole slots apart.
    limiter = RateLimiter(rate)
    assert elapsed >= (count / limiter.quota - 2) / limiter.slots, elapsed
    refreshed = sum(int(out.split("refreshed=")[1].split()[0]) for out in outputs)
    assert refreshed == count
    assert sum(1 for out in outputs if not out.startswith("claimed=0 ")) >= 2, outputs
