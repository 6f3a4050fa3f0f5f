"""Helpers shared by the service-layer tests (login, backend, get_valid_token, log scans)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.dispatch import Signal

PASSWORD = "S3cret-passw0rd!"


def synerise_settings(settings: Any, **overrides: Any) -> None:
    """Merge ``overrides`` into ``settings.SYNERISE`` (pytest-django ``settings`` fixture)."""
    settings.SYNERISE = {**settings.SYNERISE, **overrides}


@contextmanager
def capture(signal: Signal) -> Iterator[list[dict[str, Any]]]:
    """Collect the kwargs of every ``signal`` sent inside the block."""
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append({"sender": sender, **kwargs})

    signal.connect(receiver, weak=False)
    try:
        yield calls
    finally:
        signal.disconnect(receiver)


def add_client(fake: Any, email: str = "ann@example.com", **kwargs: Any) -> Any:
    """Register a SYNERISE client with :data:`PASSWORD` on ``fake``."""
    kwargs.setdefault("password", PASSWORD)
    kwargs.setdefault("first_name", "Ann")
    kwargs.setdefault("last_name", "Example")
    return fake.add_client(email=email, **kwargs)


def login_email(fake: Any, email: str = "ann@example.com", **kwargs: Any) -> Any:
    """Register (if needed) and sign in a SYNERISE client by email; returns the LoginResult."""
    from django_synerise import services

    if not any(c.email == email for c in fake.clients):
        add_client(fake, email)
    return services.login(email=email, password=PASSWORD, **kwargs)


def jwt_fragments(token: str) -> list[str]:
    """Every segment of a JWT (header, payload, signature) that is long enough to matter."""
    return [part for part in token.split(".") if len(part) >= 8]


@pytest.fixture(autouse=True)
def fresh_breaker() -> Iterator[None]:
    """Reset the process-wide circuit breaker around a test that makes Synerise fail."""
    from django_synerise.breaker import get_breaker

    get_breaker().reset()
    yield
    get_breaker().reset()
