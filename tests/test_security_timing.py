"""No timing oracle: through ``authenticate()`` a right and a wrong Synerise password cost the
same (one Synerise call each); before, a wrong one also paid ModelBackend's dummy hash."""

from __future__ import annotations

import statistics
import time
from typing import Any, ClassVar

import pytest
from django.conf import global_settings
from django.contrib.auth import authenticate, user_login_failed
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import RequestFactory

from tests.fixtures_services import PASSWORD, add_client, capture, synerise_settings

pytestmark = pytest.mark.django_db

EMAIL = "ann@example.com"
SYNERISE_BACKEND = "django_synerise.backends.SyneriseBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
NO_THROTTLE = {"ip": None, "account_ip": None, "account": None}

#: Fixed latency of every FakeSynerise answer in the timing test (seconds).
LATENCY = 0.4
TRIES = 20


class CountingHasher(MD5PasswordHasher):
    """MD5 (fast) that counts how often a password is hashed."""

    encodes: ClassVar[int] = 0

    def encode(self, password: str, salt: str) -> str:
        type(self).encodes += 1
        return super().encode(password, salt)


class RecordingBackend:
    """A later backend that is not a ModelBackend (an LDAP backend, say)."""

    calls: ClassVar[list[Any]] = []

    def authenticate(self, request: Any, username: Any = None, password: Any = None, **kw: Any):
        type(self).calls.append(username)
        return None

    def get_user(self, user_id: Any) -> None:
        return None


@pytest.fixture
def counting_hasher(settings):
    settings.PASSWORD_HASHERS = ["tests.test_security_timing.CountingHasher"]
    CountingHasher.encodes = 0
    return CountingHasher


def test_a_wrong_password_ends_the_chain_without_a_dummy_hash(fake_synerise, counting_hasher):
    """With the documented order (SyneriseBackend, ModelBackend) a rejected password ends the
    chain: ModelBackend's dummy hash, which made wrong passwords slow, never runs; Django still
    sends ``user_login_failed``."""
    add_client(fake_synerise, EMAIL)
    request = RequestFactory().post("/admin/login/")
    assert authenticate(request, username=EMAIL, password=PASSWORD) is not None
    before = counting_hasher.encodes
    with capture(user_login_failed) as failed:
        assert authenticate(request, username=EMAIL, password="wrong") is None
        assert authenticate(request, username="nobody@example.com", password="wrong") is None
    assert counting_hasher.encodes == before
    assert len(failed) == 2
    assert authenticate(request, username=EMAIL, password=PASSWORD) is not None
    assert counting_hasher.encodes == before


def test_another_backend_after_it_still_gets_its_turn(fake_synerise, counting_hasher, settings):
    settings.AUTHENTICATION_BACKENDS = [
        SYNERISE_BACKEND, "tests.test_security_timing.RecordingBackend", MODEL_BACKEND,
    ]
    RecordingBackend.calls = []
    add_client(fake_synerise, EMAIL)
    assert authenticate(None, username=EMAIL, password="wrong") is None
    assert RecordingBackend.calls == [EMAIL]


def test_an_outage_is_not_final(fake_synerise, counting_hasher):
    """Only a rejection ends the chain; when Synerise fails, ModelBackend still runs (a local
    user whose password the backend would never send is not affected either way)."""
    add_client(fake_synerise, EMAIL)
    fake_synerise.inject(times=5, status=503)
    before = counting_hasher.encodes
    assert authenticate(None, username=EMAIL, password=PASSWORD) is None
    assert counting_hasher.encodes == before + 1  # ModelBackend's dummy hash


@pytest.mark.timing
def test_right_and_wrong_passwords_take_the_same_time(fake_synerise, settings):
    """Observation 2: with Django's real default hasher, a right password took ~one Synerise
    call and a wrong one that plus a PBKDF2 dummy hash. Interleaved tries at a fixed upstream
    latency: medians within 25 %."""
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    synerise_settings(settings, LOGIN_THROTTLE_RATES=NO_THROTTLE)
    add_client(fake_synerise, EMAIL)
    request = RequestFactory().post("/admin/login/")
    assert authenticate(request, username=EMAIL, password=PASSWORD) is not None  # creates user
    fake_synerise.latency = LATENCY
    samples: dict[str, list[float]] = {"right": [], "wrong": []}
    for i in range(TRIES):
        order = ("right", "wrong") if i % 2 == 0 else ("wrong", "right")
        for kind in order:
            password = PASSWORD if kind == "right" else f"wrong-{i}"
            start = time.perf_counter()
            user = authenticate(request, username=EMAIL, password=password)
            samples[kind].append(time.perf_counter() - start)
            assert (user is not None) == (kind == "right")
    right, wrong = statistics.median(samples["right"]), statistics.median(samples["wrong"])
    assert abs(right - wrong) <= 0.25 * min(right, wrong), (right, wrong)
    assert min(right, wrong) >= LATENCY  # every try made its one Synerise call
