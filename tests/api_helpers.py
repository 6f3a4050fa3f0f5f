"""Helpers shared by the ``tests/test_api_*.py`` modules (fixtures: ``fixtures_api``)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.test.testcases import LiveServerThread
from rest_framework.test import APIClient

from django_synerise.testing import FakeSynerise

LOGIN_URL = "/synerise/auth/login/"
REFRESH_URL = "/synerise/auth/refresh/"
TOKEN_URL = "/synerise/auth/token/"
LOGOUT_URL = "/synerise/auth/logout/"
PASSWORD = "correct horse battery staple"
GENERIC_401 = {"detail": "Invalid credentials.", "code": "invalid_credentials"}


def provider_url(provider: str) -> str:
    return f"/synerise/auth/login/{provider}/"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_shaped(header: dict[str, Any] | None = None, payload: dict[str, Any] | None = None,
               signature: str = "c2lnbmF0dXJl") -> str:
    """A three-segment token with the given header and payload (not validly signed)."""
    header = {"alg": "RS256", "typ": "JWT"} if header is None else header
    payload = {"sub": uuid.uuid4().hex} if payload is None else payload
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()),
                     signature])


def provider_token(fake: FakeSynerise, provider: str, subject: str | None = None,
                   email: str | None = None) -> str:
    """A provider token the fake accepts (a JWT-shaped ID token for Google and Apple)."""
    return fake.provider_token(provider, subject=subject, email=email)


def upstream_calls(fake: FakeSynerise) -> list[str]:
    """``METHOD path`` of every request the fake received."""
    return [f"{r.method} {r.path}" for r in fake.requests]


@dataclass
class SignedIn:
    """A user signed in through the login endpoint."""

    email: str
    client_id: str
    user_id: str
    token: str
    body: dict[str, Any]

    def bearer(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")
        return client

    @property
    def user(self) -> Any:
        from django.contrib.auth import get_user_model

        return get_user_model().objects.get(pk=self.user_id)


def sign_in(fake: FakeSynerise, email: str = "alice@example.com", *,
            client: APIClient | None = None) -> SignedIn:
    """Register ``email`` at the fake (if new) and sign in through ``POST auth/login/``."""
    if fake.client_for("SYNERISE", email) is None and not any(
            c.email == email for c in fake.clients):
        fake.add_client(email=email, password=PASSWORD)
    response = (client or APIClient()).post(LOGIN_URL, {"email": email, "password": PASSWORD},
                                            format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    return SignedIn(email=email, client_id=body["client_id"], user_id=body["user_id"],
                    token=body["token"], body=body)






_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT",
                        "ROLLBACK TO SAVEPOINT")


def is_statement(sql: str) -> bool:
    """``False`` for transaction control (BEGIN/COMMIT/SAVEPOINT...), ``True`` otherwise."""
    head = sql.lstrip().upper()
    return not any(head == word or head.startswith(word + " ") for word in _TRANSACTION_CONTROL)


@contextmanager
def max_statements(limit: int) -> Iterator[list[str]]:
    """Assert at most ``limit`` SQL statements ran in the block, transaction control excluded.

    SQLite logs ``BEGIN``/``COMMIT`` and every backend logs savepoints; the budgets of the
    API count the statements that do work. The full log is in the failure message.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    statements: list[str] = []
    with CaptureQueriesContext(connection) as context:
        yield statements
    everything = [q["sql"] for q in context.captured_queries]
    statements.extend(sql for sql in everything if is_statement(sql))
    assert len(statements) <= limit, (
        f"{len(statements)} statements (budget {limit}); all queries:\n" + "\n".join(everything))


@contextmanager
def round_trips(expected: int) -> Iterator[list[str]]:
    """Assert exactly ``expected`` database round trips ran in the block, ``BEGIN`` and
    ``COMMIT`` included: each is a request to the server on PostgreSQL. Use in a
    ``transaction=True`` test, where transactions are the ones production has."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    queries: list[str] = []
    with CaptureQueriesContext(connection) as context:
        yield queries
    queries.extend(q["sql"] for q in context.captured_queries)
    assert len(queries) == expected, (
        f"{len(queries)} round trips (expected {expected}):\n" + "\n".join(queries))


@contextmanager
def live_server_thread(thread_class: type[LiveServerThread] = LiveServerThread) -> Iterator[str]:
    """Serve the test project from a ``thread_class`` on a free port; yield its base URL.

    Django's ``LiveServerThread`` (as pytest-django's ``live_server`` uses) without the
    static-files wrapper, which needs ``STATIC_URL`` (unset in tests/settings.py). An
    in-memory SQLite database is shared with the server thread, as Django does.
    """
    from django.db import connections

    overrides = {}
    for conn in connections.all():
        if conn.vendor == "sqlite" and conn.is_in_memory_db():
            overrides[conn.alias] = conn
            conn.inc_thread_sharing()
    thread = thread_class("127.0.0.1", static_handler=lambda app: app,
                          connections_override=overrides, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()
        for conn in overrides.values():
            conn.dec_thread_sharing()
