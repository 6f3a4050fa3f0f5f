"""Structured log events: one record per refresh outcome and per login outcome.

Every event goes to the logger :data:`LOGGER_NAME` (``django_synerise.events``) with the
fields of :data:`FIELDS` as attributes of the log record (``extra``), so a JSON formatter
(:class:`JsonFormatter`, or any that copies record attributes) emits them as keys. The
message repeats them as text for plain logs. Events never carry a token, a password, an API
key or a provider token: only row ids, client ids, codes, HTTP statuses and durations.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "FIELDS",
    "LOGGER_NAME",
    "JsonFormatter",
    "log_login",
    "log_refresh",
]

#: The one logger every event goes to.
LOGGER_NAME = "django_synerise.events"

#: Attributes an event sets on its log record (absent ones are ``None``):
#:
#: ``event``: ``refresh`` or ``login``; ``outcome``: for refresh ``refreshed``,
#: ``transient``, ``needs_login``, ``halted`` or ``skipped``; for login ``logged_in`` or the
#: error code (``credentials_rejected``, ``synerise_unavailable``, ...); ``token_id``: the
#: ``ClientToken`` primary key; ``client_id``: the Synerise client id; ``provider``: identity
#: provider of a login; ``upstream_status``: HTTP status Synerise answered (``None`` when no
#: answer, e.g. a timeout or nothing sent); ``duration_ms``: time of the Synerise call (for a
#: login, the whole sign-in); ``error``: error code (``last_error`` for refresh).
FIELDS = (
    "event",
    "outcome",
    "token_id",
    "client_id",
    "provider",
    "upstream_status",
    "duration_ms",
    "error",
)

logger = logging.getLogger(LOGGER_NAME)

_LEVELS = {
    "refreshed": logging.INFO,
    "skipped": logging.INFO,
    "logged_in": logging.INFO,
    "halted": logging.ERROR,
}


def _emit(fields: dict[str, Any]) -> None:
    level = _LEVELS.get(str(fields["outcome"]), logging.WARNING)
    if not logger.isEnabledFor(level):
        return
    record = {name: fields.get(name) for name in FIELDS}
    text = " ".join(f"{name}={value}" for name, value in record.items() if value is not None)
    logger.log(level, "%s", text, extra=record)


def log_refresh(
    *,
    outcome: str,
    token_id: int,
    client_id: str | None,
    upstream_status: int | None = None,
    duration_ms: float | None = None,
    error: str | None = None,
) -> None:
    """Log one refresh outcome of one token row (``event="refresh"``)."""
    _emit(
        {
            "event": "refresh",
            "outcome": outcome,
            "token_id": token_id,
            "client_id": client_id,
            "upstream_status": upstream_status,
            "duration_ms": None if duration_ms is None else round(duration_ms, 1),
            "error": error or None,
        }
    )


def log_login(
    *,
    outcome: str,
    provider: str,
    client_id: str | None = None,
    token_id: int | None = None,
    upstream_status: int | None = None,
    duration_ms: float | None = None,
) -> None:
    """Log one login outcome (``event="login"``); ``outcome`` is ``logged_in`` or an error
    code."""
    _emit(
        {
            "event": "login",
            "outcome": outcome,
            "provider": provider,
            "client_id": client_id,
            "token_id": token_id,
            "upstream_status": upstream_status,
            "duration_ms": None if duration_ms is None else round(duration_ms, 1),
            "error": None if outcome == "logged_in" else outcome,
        }
    )


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message`` and, for events, every field of :data:`FIELDS` that is set.

    Use it in ``LOGGING`` (see :doc:`/operations`); any other JSON formatter that copies
    record attributes works too.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
