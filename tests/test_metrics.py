"""Prometheus metrics: the fleet query (one indexed statement), the process metrics, and a
real Celery worker scraped over HTTP after real refreshes against FakeSynerise."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from django_synerise import metrics, tasks
from django_synerise.metrics import FleetCollector
from django_synerise.models import ClientToken, RefreshHalt, TokenStatus
from django_synerise.services.refresh import claim_due_tokens, count_due_tokens, refresh_batch
from django_synerise.services.status import fleet_counts, fleet_counts_sql
from django_synerise.testing import FakeSynerise
from tests.celery_worker import celery_worker
from tests.child_env import child_env
from tests.fixtures_refresh import refresh_calls, seed_token
from tests.fixtures_services import login_email, synerise_settings  # noqa: F401
from tests.fleet import expected_counts, seed_fleet_sql
from tests.waiting import log_tail, wait_for


def sample(name: str, **labels: str) -> float:
    """A sample of the default registry (0 when the series does not exist yet)."""
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse an exposition into ``{(sample name, sorted labels): value}``."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


# --------------------------------------------------------------------------- fleet query


@pytest.mark.django_db
def test_fleet_counts_are_one_query_and_match_the_database(fake_synerise: Any) -> None:
    due = [seed_token(fake_synerise) for _ in range(3)]
    seed_token(fake_synerise, due=False)
    seed_token(fake_synerise, idle=True)                       # due but idle: not claimed
    seed_token(fake_synerise, status=TokenStatus.NEEDS_LOGIN)
    with CaptureQueriesContext(connection) as queries:
        counts = fleet_counts()
    assert len(queries) == 1
    assert counts == {"active": 5, "refreshing": 0, "needs_login": 1, "revoked": 0,
                      "due": count_due_tokens(), "halted": 0}
    assert counts["due"] == len(due)
    RefreshHalt.objects.create(reason="credentials_rejected", since=due[0].created_at,
                               probe_at=due[0].created_at)
    assert fleet_counts()["halted"] == 1


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fleet_query_never_scans_the_token_table_at_100000_rows(require_postgres: None) -> None:
    seed_fleet_sql(100_000, due=40)
    alias, sql, params = fleet_counts_sql()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    tokens = ClientToken._meta.db_table
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes
             if "Scan" in n["Node Type"]]
    assert not [s for s in scans if s[0] == "Seq Scan" and s[1] in (tokens, None)], scans
    token_scans = [s for s in scans if s[1] == tokens]
    assert token_scans and all(s[2] for s in token_scans), scans
    # The per-status counts read an index alone (no table access at all).
    assert any(s[0] == "Index Only Scan" for s in token_scans), scans
    # And the numbers are right.
    counts = fleet_counts()
    assert {k: counts[k] for k in TokenStatus.values} == {
        k: expected_counts(100_000).get(k, 0) for k in TokenStatus.values}
    assert counts["due"] == 40 == count_due_tokens()


@pytest.mark.django_db
def test_fleet_collector_reads_once_per_cache_window(fake_synerise: Any) -> None:
    seed_token(fake_synerise)
    cached = FleetCollector(cache_seconds=60)
    with CaptureQueriesContext(connection) as queries:
        first = list(cached.collect())
        list(cached.collect())
    assert len(queries) == 1
    values = {s.name: s.value for family in first for s in family.samples
              if not s.labels}
    assert values == {"synerise_tokens_due": 1, "synerise_refresh_halted": 0}
    uncached = FleetCollector(cache_seconds=0)
    with CaptureQueriesContext(connection) as queries:
        list(uncached.collect())
        list(uncached.collect())
    assert len(queries) == 2


# --------------------------------------------------------------------------- in process


@pytest.mark.django_db
def test_refresh_outcomes_latency_and_claim_lag_are_recorded(fake_synerise: Any,
                                                             settings: Any) -> None:
    synerise_settings(settings, REFRESH_CONCURRENCY=2, LEASE_SECONDS=60, TOTAL_TIMEOUT=5)
    rows = [seed_token(fake_synerise) for _ in range(4)]
    fake_synerise.inject(status=503, times=1, path="refresh")
    before = {o: sample("synerise_refresh_outcomes_total", outcome=o)
              for o in ("refreshed", "transient")}
    calls = sample("synerise_upstream_request_duration_seconds_count", operation="refresh")
    lags = sample("synerise_refresh_claim_lag_seconds_count")
    report = refresh_batch(claim_due_tokens())
    assert len(report.refreshed) == 3 and len(report.failed_transient) == 1
    assert sample("synerise_refresh_outcomes_total", outcome="refreshed") == \
        before["refreshed"] + 3
    assert sample("synerise_refresh_outcomes_total", outcome="transient") == \
        before["transient"] + 1
    assert sample("synerise_upstream_request_duration_seconds_count",
                  operation="refresh") == calls + 4 == calls + len(refresh_calls(fake_synerise))
    assert sample("synerise_refresh_claim_lag_seconds_count") == lags + len(rows)
    assert sample("synerise_breaker_state", upstream=fake_synerise.url) == 0


@pytest.mark.django_db
def test_login_outcomes_are_counted(fake_synerise: Any) -> None:
    ok = sample("synerise_login_outcomes_total", outcome="logged_in")
    rejected = sample("synerise_login_outcomes_total", outcome="credentials_rejected")
    logins = sample("synerise_upstream_request_duration_seconds_count", operation="login")
    login_email(fake_synerise)
    with pytest.raises(Exception):  # noqa: B017  (CredentialsRejected)
        from django_synerise import services

        services.login(email="ann@example.com", password="wrong")
    assert sample("synerise_login_outcomes_total", outcome="logged_in") == ok + 1
    assert sample("synerise_login_outcomes_total", outcome="credentials_rejected") == \
        rejected + 1
    assert sample("synerise_upstream_request_duration_seconds_count",
                  operation="login") == logins + 2


@pytest.mark.django_db
def test_metrics_view_exposes_process_and_fleet_metrics(client, fake_synerise: Any) -> None:
    seed_token(fake_synerise)
    seed_token(fake_synerise, status=TokenStatus.REVOKED)
    metrics.observe_login("logged_in")
    response = client.get("/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = scrape(response.content.decode())
    assert found[("synerise_tokens", (("status", "active"),))] == 1
    assert found[("synerise_tokens", (("status", "revoked"),))] == 1
    assert found[("synerise_tokens_due", ())] == 1
    assert found[("synerise_refresh_halted", ())] == 0
    # Process metrics of this (single-process) server come from the default registry.
    assert found[("synerise_login_outcomes_total", (("outcome", "logged_in"),))] == sample(
        "synerise_login_outcomes_total", outcome="logged_in") >= 1


def test_operation_labels_are_bounded() -> None:
    assert metrics.operation_of("/sauth/v3/auth/refresh/client") == "refresh"
    assert metrics.operation_of("/sauth/v3/auth/login/client") == "login"
    assert metrics.operation_of("/sauth/v2/auth/login/client/conditional") == "login"
    assert metrics.operation_of("/sauth/v3/auth/login/client/anonymous") == "api_key_probe"
    assert metrics.operation_of("/anything/else?token=abc") == "other"


# --------------------------------------------------------------------------- real worker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def metrics_worker(django_db_setup: Any, broker_url: str, require_postgres: None,
                   tmp_path: Path) -> Iterator[tuple[FakeSynerise, str, Path]]:
    """A prefork worker (two children) in Prometheus multiprocess mode serving its metrics
    over HTTP from its main process; yields the fake, the metrics URL and the worker log."""
    from tests.celery_app import app

    queue = f"synerise-metrics-{os.getpid()}"
    app.conf.task_default_queue = queue
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    port = _free_port()
    log = Path(tempfile.mkstemp(prefix="synerise-metrics-worker-", suffix=".log")[1])
    with FakeSynerise() as fake:
        env = child_env(fake, SYNERISE_TEST_QUEUE=queue, PROMETHEUS_MULTIPROC_DIR=str(multiproc),
                        SYNERISE_TEST_METRICS_PORT=str(port))
        try:
            with celery_worker(app, queue=queue, name=f"metrics-{os.getpid()}", env=env,
                               log=log, concurrency=2):
                url = f"http://127.0.0.1:{port}/metrics"
                wait_for(lambda: _reachable(url), timeout=60, what="the metrics server",
                         detail=log_tail(log))
                yield fake, url, log
        finally:
            app.conf.task_default_queue = "celery"
            log.unlink(missing_ok=True)


def _reachable(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.timing
@pytest.mark.celery
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_metrics_scraped_over_http_match_the_database(
    metrics_worker: tuple[FakeSynerise, str, Path],
) -> None:
    fake, url, log = metrics_worker
    rows = [seed_token(fake) for _ in range(7)]
    seed_token(fake, due=False)
    seed_token(fake, status=TokenStatus.REVOKED)
    fake.inject(status=401, times=1, path="refresh")   # one token rejected: needs login

    def settled() -> bool:
        states = list(ClientToken.objects.filter(pk__in=[r.pk for r in rows])
                      .values_list("status", "version"))
        return all(s == TokenStatus.NEEDS_LOGIN or v == 2 for s, v in states)

    tasks.refresh_expiring_tokens.delay()
    wait_for(settled, timeout=90, what="the due tokens refreshed", detail=log_tail(log))

    refreshed = ClientToken.objects.filter(pk__in=[r.pk for r in rows], version=2).count()
    needs_login = ClientToken.objects.filter(status=TokenStatus.NEEDS_LOGIN).count()
    assert (refreshed, needs_login) == (6, 1)

    def counters_match() -> bool:
        found = scrape(requests.get(url, timeout=10).text)
        return (found.get(("synerise_refresh_outcomes_total", (("outcome", "refreshed"),)))
                == refreshed and
                found.get(("synerise_refresh_outcomes_total", (("outcome", "needs_login"),)))
                == needs_login)

    # The outcomes are written by the pool child right after its database write.
    wait_for(counters_match, timeout=30, what="the scraped counters", detail=log_tail(log))
    database = {status: ClientToken.objects.filter(status=status).count()
                for status in TokenStatus.values}

    def fleet_matches() -> bool:
        # The scraping process caches its fleet query for FLEET_CACHE_SECONDS.
        found = scrape(requests.get(url, timeout=10).text)
        return all(found[("synerise_tokens", (("status", status),))] == count
                   for status, count in database.items())

    wait_for(fleet_matches, timeout=30, what="the fleet gauges to match the database",
             detail=log_tail(log))
    found = scrape(requests.get(url, timeout=10).text)
    assert database[TokenStatus.ACTIVE] == 7 and database[TokenStatus.REVOKED] == 1
    assert found[("synerise_tokens_due", ())] == count_due_tokens() == 0
    assert found[("synerise_refresh_halted", ())] == 0
    assert found[("synerise_upstream_request_duration_seconds_count",
                  (("operation", "refresh"),))] == len(refresh_calls(fake)) == 7
    assert found[("synerise_refresh_claim_lag_seconds_count", ())] == 7
    assert found[("synerise_breaker_state", (("upstream", fake.url),))] == 0
    assert found.get(("synerise_refresh_outcomes_total", (("outcome", "transient"),)), 0) == 0
    text = requests.get(url, timeout=10).text
    for row in rows:
        assert row.plaintext not in text and row.encrypted_token not in text
