"""Reliability: refresh faults (X8, X9, X22, X27) and Hypothesis properties of refresh scheduling.

The properties drive the real scheduling code: ``compute_refresh_at`` (services/tokens.py) for
the first attempt, and the pipeline's retry computation (``backoff_delay`` + the outcome
classifier of services/refresh.py, the code ``refresh_batch`` runs) for every retry.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from email.utils import format_datetime
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from django_synerise import services, signals
from django_synerise.client import parse_retry_after
from django_synerise.exceptions import LoginRequired, RateLimited, SyneriseUnavailable
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.services import refresh as pipeline
from django_synerise.services.refresh import claim_due_tokens, claim_tokens, refresh_batch
from django_synerise.services.tokens import compute_refresh_at
from tests.fixtures_refresh import refresh_calls, seed_token
from tests.fixtures_services import capture, fresh_breaker, synerise_settings  # noqa: F401


@pytest.fixture
def fake(fake_synerise: Any, settings: Any) -> Any:
    synerise_settings(
        settings,
        TIMEOUT=(0.5, 1),
        TOTAL_TIMEOUT=2,
        REFRESH_CONCURRENCY=4,
        BREAKER_THRESHOLD=1000,
        RETRY_AFTER_MAX=300,
        LEASE_SECONDS=60,
    )
    return fake_synerise


def _reload(row: ClientToken) -> ClientToken:
    return ClientToken.objects.select_related("account").get(pk=row.pk)


# --------------------------------------------------------------------------- X8 / X9


@pytest.mark.django_db
@pytest.mark.parametrize("status", [401, 403, 400])
def test_x8_x9_rejected_refresh_needs_login_after_one_call_and_never_retries(
    fake: Any, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    row = seed_token(fake)
    fake.inject(status=status, path="refresh", times=None)
    with capture(signals.token_expired) as expired, capture(signals.token_refresh_failed) as failed:
        report = refresh_batch(claim_due_tokens())

    assert report.needs_login == [row.pk]
    assert report.retry_after is None and not report.failed_transient
    stored = _reload(row)
    assert stored.status == TokenStatus.NEEDS_LOGIN
    assert stored.lease_until is None
    assert stored.get_token() == row.plaintext, "the old ciphertext is not destroyed"
    assert [c["reason"] for c in expired] == ["rejected"]
    assert [c["will_retry"] for c in failed] == [False]
    # No retry: neither the scheduler nor a retry message can claim it again.
    assert not claim_due_tokens()
    assert not claim_tokens([row.pk])
    assert len(refresh_calls(fake)) == 1
    for fragment in row.plaintext.split("."):
        assert fragment not in caplog.text, "the token must never be logged"


@pytest.mark.django_db
@pytest.mark.parametrize("status", [401, 403])
def test_x8_rejected_refresh_through_get_valid_token(fake: Any, status: int) -> None:
    row = seed_token(fake, lifetime=600)
    fake.inject(status=status, path="refresh", times=None)
    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(row.account.user)
    assert info.value.reason == "rejected"
    with pytest.raises(LoginRequired):
        services.get_valid_token(row.account.user)  # no second call
    assert len(refresh_calls(fake)) == 1
    assert _reload(row).status == TokenStatus.NEEDS_LOGIN


# --------------------------------------------------------------------------- X27


@pytest.mark.timing
@pytest.mark.django_db
def test_x27_outage_until_expiry_ends_in_needs_login_without_late_calls(
    fake: Any, settings: Any
) -> None:
    """Synerise answers 503 until after ``exp``: retries stop before ``exp - EXPIRY_SAFETY``."""
    budget = 4  # seconds of retries before exp - EXPIRY_SAFETY
    row = seed_token(fake, lifetime=int(pipeline.EXPIRY_SAFETY.total_seconds()) + budget)
    fake.inject(status=503, path="refresh", times=None)
    deadline = row.expires_at - pipeline.EXPIRY_SAFETY
    with capture(signals.token_expired) as expired:
        batch = claim_due_tokens()
        attempt = 0
        started = time.monotonic()
        while True:
            report = refresh_batch(batch, attempt=attempt, backoff=0.5)
            attempt += 1
            if not report.failed_transient:
                break
            assert time.monotonic() - started < 15, "endless retry loop"
            time.sleep(report.retry_after + pipeline.RETRY_SLACK)  # the task's countdown
            batch = claim_tokens(report.failed_transient, due_only=True)

    calls = refresh_calls(fake)
    assert len(calls) >= 3, "it retried during the outage"
    # None started after the deadline; 1.5 s covers a call's way to the fake under load.
    assert max(call.at for call in calls) <= deadline.timestamp() + 1.5
    stored = _reload(row)
    assert stored.status == TokenStatus.NEEDS_LOGIN
    assert stored.failure_count == len(calls)
    assert stored.last_error == "synerise_unavailable"
    assert [(c["token"].pk, c["reason"]) for c in expired] == [(row.pk, "expired")]
    assert not claim_due_tokens() and not claim_tokens([row.pk])


# --------------------------------------------------------------------------- X22 clock skew


@pytest.fixture
def worker_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Skew this process's Django clock (``timezone.now``) by ``offset`` seconds; the database
    clock and the fake's clock stay true."""
    real_now = timezone.now

    def set_offset(offset: float) -> None:
        monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=offset))

    return set_offset


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [300, -300])
def test_x22_claims_and_leases_use_database_time(fake: Any, worker_clock: Any, skew: int) -> None:
    due = seed_token(fake)  # refresh_at 5 s ago (true time)
    soon = seed_token(fake, due=False)
    ClientToken.objects.filter(pk=soon.pk).update(
        refresh_at=timezone.now() + timedelta(seconds=120)
    )  # due in 2 min, true time
    worker_clock(skew)
    true_now = datetime.now(dt_timezone.utc)

    claim = claim_due_tokens()
    assert list(claim.ids) == [due.pk], "due-ness is decided by the database clock"
    lease_left = (claim.lease_until - true_now).total_seconds()
    assert 55 <= lease_left <= 65, lease_left

    report = refresh_batch(claim)
    assert report.refreshed == [due.pk]
    stored = _reload(due)
    assert stored.status == TokenStatus.ACTIVE and stored.version == 2
    assert fake.token_info(stored.get_token())["valid"]
    # the next target comes from the token's exp, not from the skewed clock
    left = (stored.refresh_at - true_now).total_seconds()
    assert 3600 - 900 - 300 - 5 <= left <= 3600 - 900 + 5
    assert _reload(soon).version == 1


@pytest.mark.django_db
def test_x22_leeway_keeps_verification_stable_under_skew(fake: Any, settings: Any) -> None:
    """Synerise's clock 20 s behind ours: a fresh token's ``iat`` is in the past, its ``exp``
    slightly short; within JWT_LEEWAY it verifies and is stored."""
    from django_synerise.verification import verify_token

    token = fake.issue_token(
        fake.add_client(email="s@example.com", password="x").client_id, lifetime=25
    )
    claims = verify_token(token)
    assert claims.verified and claims.expires_at > timezone.now()
    expired = fake.issue_token(
        fake.add_client(email="t@example.com", password="x").client_id, lifetime=-20
    )  # 20 s past, inside the 30 s leeway
    assert verify_token(expired).client_id


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [300, -300])
def test_x22_retry_deadline_uses_database_time(fake: Any, worker_clock: Any, skew: int) -> None:
    keep = seed_token(fake, lifetime=400)  # 340 s before exp - 60: a 60 s retry fits
    give_up = seed_token(fake, lifetime=100)  # 40 s before exp - 60: a 60 s retry does not
    fake.inject(status=429, path="refresh", times=2, retry_after="60")
    worker_clock(skew)
    report = refresh_batch(claim_due_tokens())

    assert report.failed_transient == [keep.pk]
    assert report.needs_login == [give_up.pk]
    lease = _reload(keep).retry_at
    assert lease <= keep.expires_at - pipeline.EXPIRY_SAFETY


# --------------------------------------------------------------------------- properties

#: The shipped defaults and beat period (django_synerise.schedule.REFRESH_INTERVAL).
MARGIN, JITTER, PERIOD = 900, 300, 60
LIFETIMES = st.integers(min_value=55 * 60, max_value=65 * 60)
#: Clock skew between Synerise (which sets ``exp``) and the database clock, seconds.
SKEWS = st.floats(min_value=-120, max_value=120, allow_nan=False)
ISSUED = st.datetimes(
    min_value=datetime(2026, 1, 1),
    max_value=datetime(2030, 1, 1),
    timezones=st.just(dt_timezone.utc),
)


def first_attempt(refresh_at: datetime, period: float, phase: float) -> datetime:
    """The first beat tick (every ``period`` s, offset ``phase``) at or after ``refresh_at``:
    that run's claim (``refresh_at <= now()``) picks the row up."""
    epoch = datetime(2026, 1, 1, tzinfo=dt_timezone.utc)
    elapsed = (refresh_at - epoch).total_seconds() - phase
    ticks = -(-elapsed // period)  # ceil
    return epoch + timedelta(seconds=phase + ticks * period)


@given(
    issued=ISSUED,
    lifetime=LIFETIMES,
    skew=SKEWS,
    period=st.sampled_from([30.0, 60.0]),
    phase=st.floats(0, 29.999),
)
@hyp_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_property_first_attempt_is_at_least_ten_minutes_before_expiry(
    settings: Any, issued: datetime, lifetime: int, skew: float, period: float, phase: float
) -> None:
    """R-CONC-4 with the shipped settings: the first attempt comes at least
    ``REFRESH_MARGIN - REFRESH_JITTER`` (10 min) before the token really expires, and never
    after it, whatever the skew (±120 s) and the beat phase."""
    synerise_settings(settings, REFRESH_MARGIN=MARGIN, REFRESH_JITTER=JITTER)
    exp = issued + timedelta(seconds=lifetime)  # as Synerise's clock says
    true_exp = exp - timedelta(seconds=skew)  # in database time
    refresh_at = compute_refresh_at(exp)
    assert exp - timedelta(seconds=MARGIN + JITTER) <= refresh_at <= exp - timedelta(seconds=MARGIN)
    attempt = first_attempt(refresh_at, period, phase)
    before = (true_exp - attempt).total_seconds()
    assert before >= MARGIN - JITTER, before
    assert before >= MARGIN - period - abs(skew)
    assert attempt > issued - timedelta(seconds=skew), "not before the token exists"


@given(
    margin=st.integers(300, 1800),
    jitter=st.integers(0, 600),
    lifetime=LIFETIMES,
    skew=SKEWS,
    period=st.sampled_from([30.0, 60.0, 120.0]),
)
@hyp_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_property_first_attempt_for_any_sane_settings(
    settings: Any, margin: int, jitter: int, lifetime: int, skew: float, period: float
) -> None:
    """For any margin >= 300 s (no W002) and jitter <= 600 s, the first attempt lands between
    ``margin + jitter + |skew|`` and ``margin - period - |skew|`` seconds before the real
    expiry: never after it."""
    synerise_settings(settings, REFRESH_MARGIN=margin, REFRESH_JITTER=jitter)
    issued = datetime(2027, 6, 1, tzinfo=dt_timezone.utc)
    exp = issued + timedelta(seconds=lifetime)
    true_exp = exp - timedelta(seconds=skew)
    attempt = first_attempt(compute_refresh_at(exp), period, 0.0)
    before = (true_exp - attempt).total_seconds()
    slack = 0.01  # datetime microsecond rounding
    assert margin - period - abs(skew) - slack <= before <= margin + jitter + abs(skew) + slack
    assert before > 0


RETRY_AFTER_HEADERS = st.one_of(
    st.none(),
    st.integers(0, 10**9).map(str),
    st.integers(-1000, -1).map(str),
    st.sampled_from(["banana", "", "1.5", "0x10", "  "]),
    st.integers(-300, 3000).map(
        lambda s: format_datetime(
            datetime(2027, 6, 1, tzinfo=dt_timezone.utc) + timedelta(seconds=s), usegmt=True
        )
    ),
)


def simulate_outage(
    exp: datetime, start: datetime, headers: list[str | None], base: float
) -> tuple[list[datetime], list[float | None]]:
    """Run the pipeline's retry computation through an outage that never ends.

    Attempt ``n`` fails (429 with ``headers[n]`` as Retry-After, or a 503 when ``None``);
    the next attempt is scheduled where ``refresh_batch`` leases the row and ``refresh_tokens``
    sets its countdown: ``retry_after + RETRY_SLACK`` later. Returns the attempt times and the
    valid Retry-After (seconds) each failed attempt carried.
    """
    row = pipeline.ClientToken(expires_at=exp)
    now, attempts, waits = start, [], []
    for n in range(200):
        attempts.append(now)
        header = headers[n % len(headers)]
        seconds = parse_retry_after(header, now=now) if header is not None else None
        error = (
            RateLimited(retry_after=seconds, status=429)
            if header is not None
            else SyneriseUnavailable(status=503)
        )
        waits.append(seconds)
        result = pipeline._CallResult(row, error=error)  # noqa: SLF001 - the code under test
        decision = pipeline._classify(  # noqa: SLF001
            result, now, pipeline.backoff_delay(n, base=base), None
        )
        delay = decision.retry_delay
        if decision.outcome != "transient":
            assert (decision.outcome, decision.reason) == ("needs_login", "expired")
            return attempts, waits
        assert delay is not None
        now = now + timedelta(seconds=delay + pipeline.RETRY_SLACK)
    raise AssertionError("the retries never stop")


@given(
    lifetime=LIFETIMES,
    # Whole milliseconds: a float skew within a microsecond of 120 s rounds onto the boundary.
    skew=st.integers(min_value=-120_000, max_value=119_999).map(lambda ms: ms / 1000),
    headers=st.lists(RETRY_AFTER_HEADERS, min_size=1, max_size=6),
    base=st.sampled_from([0.5, 2.0, 10.0]),
    late=st.integers(0, 1800),
)
@hyp_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_property_retries_honour_retry_after_and_stop_before_expiry(
    settings: Any, lifetime: int, skew: float, headers: list[str | None], base: float, late: int
) -> None:
    """Whatever Retry-After says (seconds, HTTP-date, huge, negative, garbage): each retry
    waits at least the valid Retry-After (capped at RETRY_AFTER_MAX), no attempt is scheduled
    after ``exp - EXPIRY_SAFETY`` nor after the real expiry under a Synerise clock skew of
    ±120 s (R-CONC-4), and the outage ends in needs_login instead of an endless loop."""
    synerise_settings(settings, RETRY_AFTER_MAX=300)
    issued = datetime(2027, 6, 1, tzinfo=dt_timezone.utc)
    exp = issued + timedelta(seconds=lifetime)
    true_exp = exp - timedelta(seconds=skew)
    start = exp - timedelta(seconds=MARGIN + JITTER) + timedelta(seconds=late)
    attempts, waits = simulate_outage(exp, start, headers, base)

    for previous, following, wait in zip(attempts, attempts[1:], waits, strict=False):
        gap = (following - previous).total_seconds()
        assert gap > 0
        if wait is not None:
            assert gap >= min(wait, 300)
    for attempt in attempts[1:]:
        assert attempt <= exp - pipeline.EXPIRY_SAFETY + timedelta(seconds=1)
        assert attempt < true_exp


@given(margin=st.integers(60, 3000), jitter=st.integers(0, 3000))
@hyp_settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_property_settings_that_pass_the_checks_never_make_a_fresh_token_due(
    settings: Any, margin: int, jitter: int
) -> None:
    from django_synerise import checks

    synerise_settings(settings, REFRESH_MARGIN=margin, REFRESH_JITTER=jitter)
    if any(m.id.endswith(("E019", "E020")) for m in checks.check_settings()):
        return
    issued = datetime(2027, 6, 1, tzinfo=dt_timezone.utc)
    for _ in range(20):
        assert compute_refresh_at(issued + timedelta(hours=1)) > issued
