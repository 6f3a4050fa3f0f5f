"""Circuit breaker: unit behaviour with a fake clock, and end to end against FakeSynerise."""

from __future__ import annotations

import threading
import time

import pytest

from django_synerise.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    CircuitBreaker,
    all_breakers,
    get_breaker,
    reset_breakers,
)
from django_synerise.client import SyneriseClient
from django_synerise.exceptions import (
    BadRequest,
    BadResponse,
    CircuitOpen,
    CredentialsRejected,
    RateLimited,
    SyneriseUnavailable,
)
from tests.waiting import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(exc: Exception):
    def run():
        raise exc

    return run


def ok():
    return "ok"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock) -> CircuitBreaker:
    return CircuitBreaker("test", threshold=3, reset_timeout=30, clock=clock)


@pytest.fixture(autouse=True)
def _fresh_default_breaker():
    reset_breakers()
    yield
    reset_breakers()


def trip(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(SyneriseUnavailable):
            breaker.call(fail(SyneriseUnavailable(status=503)))


def test_opens_after_threshold_consecutive_failures(breaker):
    trip(breaker, 2)
    assert breaker.state == CLOSED
    trip(breaker, 1)
    assert breaker.state == OPEN
    calls = []
    with pytest.raises(CircuitOpen) as info:
        breaker.call(lambda: calls.append(1))
    assert calls == []
    assert info.value.retry_after == pytest.approx(30)


def test_bad_response_counts_as_failure(breaker):
    for _ in range(3):
        with pytest.raises(BadResponse):
            breaker.call(fail(BadResponse(status=200)))
    assert breaker.state == OPEN


@pytest.mark.parametrize(
    "exc",
    [CredentialsRejected(status=401), BadRequest(status=400), RateLimited(status=429)],
)
def test_answers_from_synerise_reset_the_count(breaker, exc):
    trip(breaker, 2)
    with pytest.raises(type(exc)):
        breaker.call(fail(exc))
    trip(breaker, 2)
    assert breaker.state == CLOSED
    assert breaker.snapshot().failure_count == 2


def test_success_resets_the_count(breaker):
    trip(breaker, 2)
    assert breaker.call(ok) == "ok"
    trip(breaker, 2)
    assert breaker.state == CLOSED


def test_unexpected_errors_are_neutral(breaker):
    trip(breaker, 2)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    assert breaker.snapshot().failure_count == 2
    assert breaker.state == CLOSED


def test_half_open_allows_one_probe_and_success_closes(breaker, clock):
    trip(breaker, 3)
    clock.now += 29.9
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    clock.now += 0.2
    assert breaker.state == HALF_OPEN

    started = threading.Event()
    release = threading.Event()
    results = []

    def probe():
        started.set()
        release.wait(5)
        return "probe"

    thread = threading.Thread(target=lambda: results.append(breaker.call(probe)))
    thread.start()
    assert started.wait(5)
    with pytest.raises(CircuitOpen):  # only one probe at a time
        breaker.call(ok)
    release.set()
    thread.join(5)
    assert results == ["probe"]
    assert breaker.state == CLOSED
    assert breaker.call(ok) == "ok"


def test_failed_probe_reopens_for_another_reset_timeout(breaker, clock):
    trip(breaker, 3)
    clock.now += 31
    trip(breaker, 1)
    assert breaker.state == OPEN
    snapshot = breaker.snapshot()
    assert snapshot.retry_in == pytest.approx(30)
    assert snapshot.total_opens == 2


def test_released_probe_slot_lets_the_next_call_probe(breaker, clock):
    trip(breaker, 3)
    clock.now += 31
    with pytest.raises(KeyError):
        breaker.call(fail(KeyError("bug")))
    assert breaker.state == HALF_OPEN  # still past the reset timeout: next call probes
    assert breaker.call(ok) == "ok"
    assert breaker.state == CLOSED


def test_threshold_zero_never_opens(clock):
    breaker = CircuitBreaker("off", threshold=0, reset_timeout=30, clock=clock)
    trip(breaker, 20)
    assert breaker.state == CLOSED


def test_snapshot_and_reset(breaker):
    trip(breaker, 3)
    snap = breaker.snapshot()
    assert (snap.name, snap.state, snap.failure_count, snap.threshold) == ("test", OPEN, 3, 3)
    assert snap.as_dict()["state"] == "open"
    breaker.reset()
    assert breaker.snapshot().as_dict() == {
        "name": "test", "state": "closed", "failure_count": 0, "threshold": 3,
        "reset_timeout": 30.0, "retry_in": None, "total_failures": 0, "total_opens": 0,
    }


def test_settings_are_read_live(settings):
    settings.SYNERISE = {**settings.SYNERISE, "BREAKER_THRESHOLD": 2, "BREAKER_RESET_TIMEOUT": 7}
    breaker = CircuitBreaker("live")
    assert (breaker.threshold, breaker.reset_timeout) == (2, 7.0)
    trip(breaker, 2)
    assert breaker.state == OPEN


def test_concurrent_failures_are_counted_exactly(clock):
    breaker = CircuitBreaker("threads", threshold=10_000, reset_timeout=30, clock=clock)

    def work():
        for _ in range(500):
            with pytest.raises(SyneriseUnavailable):
                breaker.call(fail(SyneriseUnavailable()))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.snapshot().failure_count == 4000


def test_get_breaker_is_one_per_base_url(settings):
    assert get_breaker() is get_breaker()
    assert SyneriseClient().breaker is get_breaker()
    assert get_breaker().name == settings.SYNERISE["BASE_URL"]
    other = get_breaker("https://api.geb.synerise.com/")
    assert other is get_breaker("https://api.geb.synerise.com")
    assert other is not get_breaker()
    assert SyneriseClient(base_url="https://api.geb.synerise.com").breaker is other
    assert {get_breaker(), other} <= set(all_breakers())


def test_an_open_circuit_on_one_host_leaves_others_alone(fake_synerise):
    from django_synerise.testing import FakeSynerise

    with FakeSynerise(api_key=fake_synerise.api_key) as healthy:
        fake_synerise.inject(status=503, times=None)
        broken = SyneriseClient()
        for _ in range(5):
            with pytest.raises(SyneriseUnavailable):
                broken.public_key()
        assert broken.breaker.state == OPEN
        assert SyneriseClient(base_url=healthy.url).public_key()
        assert get_breaker(healthy.url).state == CLOSED
        reset_breakers()
        assert broken.breaker.state == CLOSED


# --------------------------------------------------------------------------- end to end


@pytest.mark.timing
def test_five_timeouts_open_the_circuit_and_no_request_is_sent(settings, fake_synerise, clock):
    settings.SYNERISE = {**settings.SYNERISE, "TIMEOUT": (1.0, 0.1), "BREAKER_THRESHOLD": 5,
                         "BREAKER_RESET_TIMEOUT": 0.5}
    fake_synerise.add_client(email="b@example.com", password="pw")
    # The breaker's time moves only when the test says: a loaded machine cannot let the
    # reset timeout run out while the 100 calls are refused.
    client = SyneriseClient(breaker=CircuitBreaker("e2e", clock=clock))
    fake_synerise.inject(fault="latency", delay=0.5, times=5)

    for _ in range(5):
        with pytest.raises(SyneriseUnavailable):
            client.login(email="b@example.com", password="pw")
    assert client.breaker.state == OPEN
    # The client gave up after 0.1 s; on a loaded machine the fake may record a timed-out call
    # later than that. Wait for all five before counting what comes next.
    wait_for(lambda: fake_synerise.count() == 5, timeout=30, what="the five timed-out calls")
    fake_synerise.clear_requests()

    started = time.monotonic()
    for _ in range(100):
        with pytest.raises(CircuitOpen) as info:
            client.login(email="b@example.com", password="pw")
    # Refused at once: waiting out the 0.1 s read timeout each would take 10 s.
    assert time.monotonic() - started < 8
    assert info.value.status is None
    assert info.value.retry_after == 0.5
    assert fake_synerise.count() == 0

    clock.now += 0.5
    # The probe meets a healthy Synerise: a read timeout a loaded machine cannot miss.
    settings.SYNERISE = {**settings.SYNERISE, "TIMEOUT": (5.0, 10.0)}
    result = client.login(email="b@example.com", password="pw")  # the probe
    assert result.token
    assert fake_synerise.count() == 1
    assert client.breaker.state == CLOSED


def test_rejected_credentials_never_open_the_circuit(settings, fake_synerise):
    settings.SYNERISE = {**settings.SYNERISE, "BREAKER_THRESHOLD": 2}
    client = SyneriseClient()
    for _ in range(5):
        with pytest.raises(CredentialsRejected):
            client.login(email="nobody@example.com", password="pw")
    assert get_breaker().state == CLOSED
    assert fake_synerise.count() == 5


def test_client_uses_its_own_breaker(fake_synerise, clock):
    own = CircuitBreaker("own", threshold=1, reset_timeout=60, clock=clock)
    client = SyneriseClient(breaker=own)
    fake_synerise.inject(status=502)
    with pytest.raises(SyneriseUnavailable):
        client.public_key()
    assert own.state == OPEN
    assert get_breaker().state == CLOSED
    with pytest.raises(CircuitOpen):
        client.public_key()
    assert SyneriseClient().public_key()  # the default breaker is unaffected
