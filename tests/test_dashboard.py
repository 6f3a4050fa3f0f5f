"""The admin's token dashboard: what it shows, its fixed query cost, its access rules."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_synerise.dashboard import bar_chart, dashboard_context
from django_synerise.models import ClientToken, RefreshHalt, RefreshOutcomeCount, TokenStatus
from django_synerise.services.outcomes import add_outcome_counts, record_run, refresh_work
from django_synerise.services.refresh import purge_tokens
from django_synerise.services.status import expiry_histogram
from tests.factories import make_account, make_token, make_user
from tests.fleet import CIPHERTEXT, expected_counts, seed_fleet

URL = reverse("admin:django_synerise_clienttoken_dashboard")
BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.fixture
def admin_client_(client, db):
    client.force_login(make_user("dash-root", is_staff=True, is_superuser=True),
                       backend=BACKEND)
    return client


def number(html: str, testid: str) -> int:
    return int(re.search(rf'data-testid="{testid}">(\d+)<', html).group(1))


@pytest.mark.slow
@pytest.mark.django_db
def test_dashboard_with_10000_rows_renders_in_under_ten_queries(admin_client_):
    seed_fleet(10_000)
    admin_client_.get(URL)  # warm up the session and activity middleware
    with CaptureQueriesContext(connection) as queries:
        response = admin_client_.get(URL)
    assert response.status_code == 200
    assert len(queries) < 10, [q["sql"][:100] for q in queries]
    html = response.content.decode()
    expected = expected_counts(10_000)
    for status in TokenStatus.values:
        assert number(html, f"count-{status}") == expected.get(status, 0), status
    assert number(html, "count-due") == 0
    # Live tokens expire 60 s to one hour from now, spread evenly: the bars hold those in
    # the next hour's 5-minute slots.
    live = ClientToken.objects.filter(
        status__in=[TokenStatus.ACTIVE, TokenStatus.REFRESHING])
    slots = expiry_histogram()
    end = slots[-1]["end"]
    assert sum(s["count"] for s in slots) == live.filter(expires_at__lt=end).count()
    assert html.count("<rect ") >= 11
    assert CIPHERTEXT not in html


@pytest.mark.django_db
def test_dashboard_shows_halt_breaker_outcomes_and_last_run(admin_client_):
    now = timezone.now()
    add_outcome_counts({"refreshed": 40, "transient": 3}, now=now - timedelta(hours=2))
    add_outcome_counts({"refreshed": 2, "needs_login": 1}, now=now)
    add_outcome_counts({"refreshed": 1000}, now=now - timedelta(hours=30))  # out of range
    record_run()
    RefreshHalt.objects.create(reason="credentials_rejected", detail="403 bad_key",
                               since=now, probe_at=now + timedelta(seconds=30))
    html = admin_client_.get(URL).content.decode()
    assert number(html, "total-refreshed") == 42
    assert number(html, "total-transient") == 3
    assert number(html, "total-needs_login") == 1
    assert number(html, "total-halted") == 0
    halt = re.search(r'data-testid="halt-state">(.*?)</td>', html, re.S).group(1)
    assert "halted" in halt and "credentials_rejected" in halt and "403 bad_key" in halt
    last_run = re.search(r'data-testid="last-run">(.*?)</td>', html, re.S).group(1)
    assert "never" not in last_run and "1 run in 24 hours" in last_run
    assert "closed" in re.search(r'data-testid="breaker-state">(.*?)</td>', html,
                                 re.S).group(1)


@pytest.mark.django_db
def test_outcome_counts_add_up_and_purge_prunes_old_hours():
    now = timezone.now()
    add_outcome_counts({"refreshed": 2}, now=now)
    add_outcome_counts({"refreshed": 3, "halted": 1}, now=now)
    add_outcome_counts({"refreshed": 7}, now=now - timedelta(hours=49))
    rows = dict(RefreshOutcomeCount.objects.filter(hour__gte=now - timedelta(hours=1))
                .values_list("outcome", "count"))
    assert rows == {"refreshed": 5, "halted": 1}
    assert RefreshOutcomeCount.objects.count() == 3
    purge_tokens(now=now)
    assert RefreshOutcomeCount.objects.count() == 2
    assert not RefreshOutcomeCount.objects.filter(count=7).exists()


@pytest.mark.django_db
def test_expiry_histogram_buckets_by_five_minutes():
    now = timezone.now().replace(minute=2, second=0, microsecond=0)
    for minutes in (1, 2, 4, 9, 58):
        make_token(make_account(), expires_in=minutes * 60, now=now)
    make_token(make_account(), expires_in=-60, now=now)                      # expired
    make_token(make_account(), expires_in=120, now=now, status=TokenStatus.REVOKED)
    slots = expiry_histogram(now=now)
    assert len(slots) == 12 and slots[0]["start"] == now.replace(minute=0)
    # :03 and :04 | :06 | :11; the revoked and the expired one never count.
    assert [s["count"] for s in slots] == [2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    # 58 minutes from 00:02 is 01:00, the first slot after the hour shown.
    assert slots[-1]["end"] == now.replace(minute=0) + timedelta(hours=1)


def test_bar_chart_geometry_scales_to_the_tallest_column():
    chart = bar_chart([[(10, "red", "a")], [(5, "red", "b"), (5, "blue", "c")], [(0, "red", "d")]],
                      ["x", "y", "z"], label_every=2)
    heights = [bar.height for bar in chart["bars"]]
    assert len(heights) == 3                      # zero-height segments are not drawn
    assert heights[0] == pytest.approx(heights[1] + heights[2])
    assert [text for _x, _y, text in chart["labels"]] == ["x", "z"]
    assert all(bar.y + bar.height <= chart["axis_y"] + 0.1 for bar in chart["bars"])


@pytest.mark.django_db
def test_dashboard_needs_the_view_permission(client):
    nobody = make_user("dash-staff", is_staff=True)
    client.force_login(nobody, backend=BACKEND)
    assert client.get(URL).status_code == 403
    nobody.user_permissions.add(Permission.objects.get(codename="view_clienttoken"))
    assert client.get(URL).status_code == 200
    client.logout()
    assert client.get(URL).status_code == 302   # to the admin login


@pytest.mark.django_db
def test_dashboard_context_is_consistent_with_the_database():
    make_token(make_account(), expires_in=600)
    make_token(make_account(), status=TokenStatus.NEEDS_LOGIN)
    context = dashboard_context()
    counts = {value: count for value, _label, count in context["status_counts"]}
    assert counts == {"active": 1, "refreshing": 0, "needs_login": 1, "revoked": 0}
    assert context["total"] == 2 and context["halt"] is None
    # Only the active token expiring in 10 minutes: the other one is not live (and would
    # expire in an hour, after the last bar).
    assert context["expiry_total"] == 1


@pytest.mark.django_db
def test_refresh_work_counts_only_the_tokens_batches_refreshed():
    """An hour where every batch failed while requests refreshed their own tokens: the
    batches refreshed nothing, whatever the dashboard's ``refreshed`` says."""
    now = timezone.now()
    add_outcome_counts({"refreshed": 2}, now=now)  # two requests' own refreshes: no batch
    add_outcome_counts(
        {"transient": 5, "batch": 1, "batch_refreshed": 0, "busy_us": 9000, "cpu_us": 4000},
        now=now,
    )
    work = refresh_work(now=now)
    assert work is not None
    assert (work["batches"], work["refreshed"]) == (1, 0)
    assert work["tokens_per_second"] is None and work["cpu_ms_per_token"] is None


@pytest.mark.django_db
def test_refresh_work_reads_an_hour_written_before_batches_counted_their_tokens():
    now = timezone.now()
    add_outcome_counts({"refreshed": 40, "batch": 2, "busy_us": 2_000_000, "cpu_us": 40_000},
                       now=now)
    work = refresh_work(now=now)
    assert work is not None
    assert work["refreshed"] == 40 and work["tokens_per_second"] == pytest.approx(20.0)
