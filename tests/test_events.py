"""Structured events: one record per refresh and login outcome, documented fields, no
secrets, and the JSON formatter."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from django_synerise import services
from django_synerise.events import FIELDS, LOGGER_NAME, JsonFormatter
from django_synerise.exceptions import CredentialsRejected
from django_synerise.services.refresh import claim_due_tokens, refresh_batch
from tests.fixtures_refresh import seed_token
from tests.fixtures_services import PASSWORD, add_client, synerise_settings  # noqa: F401


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER_NAME]


@pytest.mark.django_db
def test_each_refresh_outcome_is_one_event_with_its_fields(fake_synerise: Any, settings: Any,
                                                           caplog: pytest.LogCaptureFixture):
    synerise_settings(settings, REFRESH_CONCURRENCY=2, LEASE_SECONDS=60, TOTAL_TIMEOUT=5)
    rows = [seed_token(fake_synerise) for _ in range(3)]
    fake_synerise.inject(status=503, times=1, path="refresh")
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    refresh_batch(claim_due_tokens())
    records = events(caplog)
    assert sorted(r.token_id for r in records) == sorted(r.pk for r in rows)
    by_outcome = sorted((r.outcome, r.upstream_status, r.error) for r in records)
    assert by_outcome == [("refreshed", 200, None), ("refreshed", 200, None),
                          ("transient", 503, "synerise_unavailable")]
    for record in records:
        assert record.event == "refresh"
        assert record.client_id == next(r.account.client_id for r in rows
                                        if r.pk == record.token_id)
        assert record.duration_ms > 0
        text = JsonFormatter().format(record)
        for row in rows:
            assert row.plaintext not in text and row.encrypted_token not in text
    failed = next(r for r in records if r.outcome == "transient")
    assert failed.levelno == logging.WARNING


@pytest.mark.django_db
def test_login_events_for_success_and_rejection(fake_synerise: Any,
                                                caplog: pytest.LogCaptureFixture):
    add_client(fake_synerise, "eve@example.com")
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    result = services.login(email="eve@example.com", password=PASSWORD)
    with pytest.raises(CredentialsRejected):
        services.login(email="eve@example.com", password="not-" + PASSWORD)
    ok, rejected = events(caplog)
    assert (ok.event, ok.outcome, ok.provider, ok.client_id, ok.upstream_status) == (
        "login", "logged_in", "SYNERISE", result.account.client_id, 200)
    assert ok.token_id == result.account.token.pk and ok.duration_ms > 0
    assert (rejected.outcome, rejected.error, rejected.upstream_status) == (
        "credentials_rejected", "credentials_rejected", 401)
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert PASSWORD not in everything and result.token not in everything
    assert fake_synerise.api_key not in everything


def test_json_formatter_emits_the_documented_fields():
    record = logging.LogRecord(LOGGER_NAME, logging.INFO, __file__, 1, "%s", ("text",), None)
    for name, value in {"event": "refresh", "outcome": "refreshed", "token_id": 7,
                        "client_id": "123", "upstream_status": 200, "duration_ms": 12.5}.items():
        setattr(record, name, value)
    payload = json.loads(JsonFormatter().format(record))
    assert payload["logger"] == LOGGER_NAME and payload["level"] == "INFO"
    assert payload["message"] == "text" and payload["time"].endswith("+00:00")
    assert {k: payload[k] for k in ("event", "outcome", "token_id", "client_id",
                                    "upstream_status", "duration_ms")} == {
        "event": "refresh", "outcome": "refreshed", "token_id": 7, "client_id": "123",
        "upstream_status": 200, "duration_ms": 12.5}
    assert "error" not in payload                     # unset fields are left out
    assert set(FIELDS) >= {"event", "outcome", "token_id", "client_id", "upstream_status",
                           "duration_ms", "error", "provider"}
