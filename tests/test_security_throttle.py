"""One login throttle for every way in: the admin form, Django's LoginView, the API, code.

Against FakeSynerise over real HTTP; counters in the test cache (local memory) and, for the
concurrency test, in a real Redis through Django's ``RedisCache``.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time

import pytest
from django.contrib.auth import authenticate, user_login_failed
from django.core.cache import caches
from django.test import RequestFactory
from rest_framework.test import APIClient

from django_synerise import throttle
from tests.fixtures_services import PASSWORD, add_client, capture, synerise_settings

pytestmark = pytest.mark.django_db

EMAIL = "ann@example.com"
ADMIN_LOGIN = "/admin/login/"
DJANGO_LOGIN = "/accounts/login/"
API_LOGIN = "/synerise/auth/login/"


def _rates(settings, **rates) -> None:
    synerise_settings(settings, LOGIN_THROTTLE_RATES=rates)


def _admin_post(client, username, password, remote="127.0.0.1"):
    return client.post(ADMIN_LOGIN, {"username": username, "password": password},
                       REMOTE_ADDR=remote)


# --------------------------------------------------------------------------- observation 2


def test_admin_login_form_is_throttled(fake_synerise, client):
    """25 wrong passwords posted to /admin/login/ reach Synerise at most 10 times (the
    default ``account_ip`` rate), and the right one is refused while the window is full."""
    add_client(fake_synerise, EMAIL)
    for _ in range(25):
        response = _admin_post(client, EMAIL, "wrong")
        assert response.status_code == 200
    assert fake_synerise.count("login") == 10
    with capture(user_login_failed) as failed:
        response = _admin_post(client, EMAIL, PASSWORD)
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    assert fake_synerise.count("login") == 10
    assert len(failed) == 1


def test_django_login_view_is_throttled(fake_synerise, client):
    add_client(fake_synerise, EMAIL)
    for _ in range(12):
        response = client.post(DJANGO_LOGIN, {"username": EMAIL, "password": "wrong"})
        assert response.status_code == 200
    assert fake_synerise.count("login") == 10


def test_every_entry_point_draws_on_one_budget(fake_synerise, client, settings):
    """Admin form, Django's LoginView, the API and a direct ``authenticate()`` call share one
    per-account budget; a throttled ``authenticate()`` makes no call and sends
    ``user_login_failed``; the API answers 429 with ``Retry-After``."""
    _rates(settings, account_ip="6/min")
    add_client(fake_synerise, EMAIL)
    api = APIClient()
    for _ in range(2):
        assert _admin_post(client, EMAIL, "wrong").status_code == 200
        assert client.post(DJANGO_LOGIN, {"username": EMAIL, "password": "x"}).status_code == 200
        response = api.post(API_LOGIN, {"email": EMAIL, "password": "wrong"}, format="json")
        assert response.status_code == 401
    assert fake_synerise.count("login") == 6

    response = api.post(API_LOGIN, {"email": EMAIL, "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 66  # a minute and one bucket at most

    request = RequestFactory().post("/login/")  # REMOTE_ADDR 127.0.0.1, as the clients above
    with capture(user_login_failed) as failed:
        assert authenticate(request, email=EMAIL, password=PASSWORD) is None
    assert len(failed) == 1
    assert failed[0]["credentials"]["password"] != PASSWORD  # Django masks it
    assert fake_synerise.count("login") == 6


def test_email_custom_id_and_username_share_the_account_key(fake_synerise, settings):
    _rates(settings, ip=None, account_ip="3/min")
    add_client(fake_synerise, EMAIL)
    assert authenticate(None, email="Ann@Example.com", password="x") is None
    assert authenticate(None, custom_id=" ANN@EXAMPLE.COM", password="x") is None
    assert authenticate(None, username="\uff41nn@example.com", password="x") is None  # NFKC
    assert fake_synerise.count("login") == 3
    assert authenticate(None, email=EMAIL, password=PASSWORD) is None
    assert fake_synerise.count("login") == 3


# --------------------------------------------------------------------------- no lock-out


def test_an_attacker_elsewhere_does_not_lock_the_real_user_out(fake_synerise):
    """The per-account limit is per client address: 30 guesses from one address do not stop
    the real user signing in from theirs (today's global account counter did)."""
    add_client(fake_synerise, EMAIL)
    attacker, user = APIClient(REMOTE_ADDR="203.0.113.5"), APIClient(REMOTE_ADDR="198.51.100.7")
    statuses = [
        attacker.post(API_LOGIN, {"email": EMAIL, "password": f"guess {i}"},
                      format="json").status_code
        for i in range(30)
    ]
    assert statuses == [401] * 10 + [429] * 20
    response = user.post(API_LOGIN, {"email": EMAIL, "password": PASSWORD}, format="json")
    assert response.status_code == 200


def test_the_account_ceiling_spares_clients_that_signed_in_before(fake_synerise, settings):
    """Guesses spread over many addresses fill the per-account ceiling: a new address is then
    refused, but an address the user signed in from before still gets in."""
    _rates(settings, account="5/hour")
    add_client(fake_synerise, EMAIL)
    home = APIClient(REMOTE_ADDR="198.51.100.7")
    assert home.post(API_LOGIN, {"email": EMAIL, "password": PASSWORD},
                     format="json").status_code == 200
    for i in range(4):  # 1 success + 4 guesses = the ceiling
        response = APIClient(REMOTE_ADDR=f"203.0.113.{i}").post(
            API_LOGIN, {"email": EMAIL, "password": "guess"}, format="json")
        assert response.status_code == 401
    response = APIClient(REMOTE_ADDR="192.0.2.99").post(
        API_LOGIN, {"email": EMAIL, "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 60  # the ceiling's window is an hour
    calls = fake_synerise.count("login")
    assert home.post(API_LOGIN, {"email": EMAIL, "password": PASSWORD},
                     format="json").status_code == 200
    assert fake_synerise.count("login") == calls + 1
    # The admin form shares the ceiling: a new address gets nothing upstream.
    request = RequestFactory().post("/login/", REMOTE_ADDR="192.0.2.100")
    assert authenticate(request, username=EMAIL, password=PASSWORD) is None
    assert fake_synerise.count("login") == calls + 1


def test_the_ip_scope_counts_every_account(fake_synerise, client, settings):
    _rates(settings, ip="4/min")
    for i in range(6):
        _admin_post(client, f"u{i}@example.com", "x")
    assert fake_synerise.count("login") == 4


# --------------------------------------------------------------------------- sliding window


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_no_burst_at_a_window_boundary(settings):
    """A fixed one-minute window admitted 10 guesses just before the minute and 10 just after;
    the sliding window admits 10 in any 60 seconds."""
    _rates(settings, ip=None, account=None, account_ip="10/min")
    clock = Clock(1_800_000_000 - 0.1)  # 0.1 s before a minute boundary
    verdicts = [throttle.check_attempt(None, EMAIL, clock=clock) for _ in range(10)]
    assert all(v.allowed for v in verdicts)
    clock.now += 0.2  # the next minute
    refused = throttle.check_attempt(None, EMAIL, clock=clock)
    assert not refused.allowed and refused.scope == "account_ip"
    assert refused.retry_after == pytest.approx(59.9, abs=0.01)
    clock.now += 59.8  # still inside 60 s of the burst
    assert not throttle.check_attempt(None, EMAIL, clock=clock).allowed
    clock.now += 6.1  # one bucket past: the first ten have left the window
    assert throttle.check_attempt(None, EMAIL, clock=clock).allowed


def test_an_attempt_counted_in_the_next_bucket_is_seen_by_a_late_one(settings):
    """Two attempts straddling a bucket boundary each see the other.

    A process whose clock is a little behind (or a thread delayed between reading the clock
    and counting) counts its attempt in bucket k after another has already counted one in
    bucket k + 1. Before, an attempt read only the buckets up to its own, so the late one
    missed the other and 11 of 10 passed within a second.
    """
    _rates(settings, ip=None, account=None, account_ip="10/min")
    boundary = 1_800_000_000.0  # a multiple of the six-second bucket
    behind = Clock(boundary - 0.5)
    ahead = Clock(boundary + 0.5)
    verdicts = [throttle.check_attempt(None, EMAIL, clock=behind) for _ in range(9)]
    verdicts.append(throttle.check_attempt(None, EMAIL, clock=ahead))
    assert all(v.allowed for v in verdicts)
    late = throttle.check_attempt(None, EMAIL, clock=behind)
    assert not late.allowed and late.scope == "account_ip"
    assert not throttle.check_attempt(None, EMAIL, clock=ahead).allowed


@pytest.mark.parametrize("seed", range(5))
def test_no_interval_of_one_period_admits_more_than_the_limit(settings, seed):
    """Random arrival times over ten minutes: every 60-second interval holds at most 7
    admitted attempts (refused attempts count too), and a client waiting ``retry_after`` is
    admitted."""
    _rates(settings, ip=None, account=None, account_ip="7/min")
    rng = random.Random(seed)
    clock = Clock(1_700_000_000.0)
    admitted: list[float] = []
    for _ in range(400):
        clock.now += rng.expovariate(1 / 1.5)
        verdict = throttle.check_attempt(None, "x@example.com", clock=clock)
        if verdict.allowed:
            admitted.append(clock.now)
        else:
            assert 0 < verdict.retry_after <= 66
    for i, start in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t < start + 60) <= 7
    assert len(admitted) >= 7
    caches["default"].clear()
    clock.now += 120
    verdicts = [throttle.check_attempt(None, "y@example.com", clock=clock) for _ in range(8)]
    clock.now += verdicts[-1].retry_after
    assert throttle.check_attempt(None, "y@example.com", clock=clock).allowed


# --------------------------------------------------------------------------- shared cache


@pytest.fixture
def redis_throttle_cache(broker_url, settings):
    """LOGIN_THROTTLE_CACHE on a real Redis (this suite's Redis database) via RedisCache."""
    if not broker_url.startswith("redis://"):
        pytest.fail("This test needs Redis: set CELERY_BROKER_URL=redis://127.0.0.1:6379/<db>")
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": broker_url,
            "KEY_PREFIX": f"test-throttle-{os.getpid()}",
        },
    }
    synerise_settings(settings, LOGIN_THROTTLE_CACHE="throttle")
    yield caches["throttle"]
    caches["throttle"].clear()


def _race_on_redis(clocks: list[Clock]) -> list[bool]:
    """One attempt per clock, each in its own thread, all released at once; the verdicts."""
    barrier = threading.Barrier(len(clocks))
    results: list[bool] = []
    lock = threading.Lock()

    def attempt(clock: Clock) -> None:
        barrier.wait()
        allowed = throttle.check_attempt(None, EMAIL, clock=clock).allowed
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=attempt, args=(clock,)) for clock in clocks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == len(clocks)
    return results


def _bucket_start(period: int = 60) -> float:
    """The start of a bucket of a ``period``-second rate, two buckets from now (near real
    time, so the keys expire as in production)."""
    width = period / throttle.BUCKETS
    return (math.floor(time.time() / width) + 2) * width


def test_concurrent_attempts_on_redis_admit_exactly_the_limit(redis_throttle_cache, settings):
    """40 threads racing on one account through Redis, inside one bucket: exactly 10 pass
    (the atomic increment orders them)."""
    _rates(settings, ip=None, account=None, account_ip="10/min")
    redis_throttle_cache.clear()
    middle = _bucket_start() + 3.0
    results = _race_on_redis([Clock(middle) for _ in range(40)])
    assert results.count(True) == 10


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_attempts_across_a_bucket_boundary_admit_at_most_the_limit(
        redis_throttle_cache, settings, round_):
    """40 threads racing through Redis, half counting just before a bucket boundary and half
    just after: never more than 10 pass. (Before, an attempt in the earlier bucket did not
    read the later one, and more than 10 passed in most rounds.) Fewer than 10 may pass: in
    such a race an attempt can also count one incremented after it."""
    _rates(settings, ip=None, account=None, account_ip="10/min")
    redis_throttle_cache.clear()
    boundary = _bucket_start()
    clocks = [Clock(boundary - 0.01) if i % 2 else Clock(boundary + 0.01) for i in range(40)]
    results = _race_on_redis(clocks)
    assert results.count(True) <= 10


def test_backend_and_api_share_the_redis_budget(fake_synerise, redis_throttle_cache, settings,
                                                client):
    _rates(settings, account_ip="4/min")
    redis_throttle_cache.clear()
    add_client(fake_synerise, EMAIL)
    for _ in range(2):
        _admin_post(client, EMAIL, "wrong")
        APIClient().post(API_LOGIN, {"email": EMAIL, "password": "wrong"}, format="json")
    response = APIClient().post(API_LOGIN, {"email": EMAIL, "password": PASSWORD},
                                format="json")
    assert response.status_code == 429
    assert fake_synerise.count("login") == 4
    assert not any(EMAIL in key.decode() for key in
                   redis_throttle_cache._cache.get_client().keys("*"))


def test_a_failing_cache_lets_logins_through(fake_synerise, settings, caplog):
    settings.CACHES = {
        **settings.CACHES,
        "down": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                 "LOCATION": "redis://127.0.0.1:9/0"},
    }
    synerise_settings(settings, LOGIN_THROTTLE_CACHE="down")
    add_client(fake_synerise, EMAIL)
    throttle._warnings.forget()  # noqa: SLF001
    assert authenticate(None, email=EMAIL, password=PASSWORD) is not None
    assert any("not throttled" in r.getMessage() for r in caplog.records)


def test_threat_table_names_existing_tests():
    """Every ``module::test`` the threat table of docs/security.rst cites exists."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "security.rst").read_text()
    cited = set(re.findall(r"``(test_\w+\.py)::(test_\w+)``", text))
    assert len(cited) >= 30
    for module, name in sorted(cited):
        source = (root / "tests" / module).read_text()
        assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{module}::{name}"
