"""Tiny client for FakeSynerise's control API (``/__fake__/...``), used only by the demo.

The demo asks the fake for identity-provider tokens (what Google, Apple or Facebook would give a
browser) and creates demo clients. Nothing here is used when a real Synerise API key is set.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings

logger = logging.getLogger(__name__)

#: Identity providers with a demo button: URL slug -> (Synerise name, demo subject, demo email,
#: first name, last name) of the provider account the fake pretends to have signed in.
DEMO_PROVIDERS: dict[str, tuple[str, str, str, str, str]] = {
    "google": ("GOOGLE", "demo-google-subject", "grace.google@example.com", "Grace", "Google"),
    "apple": ("APPLE", "demo-apple-subject", "adam.apple@example.com", "Adam", "Apple"),
    "facebook": ("FACEBOOK", "demo-facebook-subject", "fiona.fb@example.com", "Fiona", "Facebook"),
}


class FakeControlError(Exception):
    """The fake's control API could not be reached or refused the request."""


def control(path: str, payload: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """POST ``payload`` to the fake's control endpoint ``/__fake__/<path>`` and return its JSON.

    :raises FakeControlError: when the fake is not used, unreachable, or answers non-2xx.
    """
    if not settings.USE_FAKE_SYNERISE:
        raise FakeControlError("FakeSynerise is not used (SYNERISE_API_KEY is set).")
    url = f"{settings.FAKE_SYNERISE_URL}/__fake__/{path.strip('/')}"
    try:
        response = requests.post(url, json=payload, timeout=timeout)
    except requests.RequestException as exc:
        logger.warning("FakeSynerise control API unreachable at %s: %s", url, type(exc).__name__)
        raise FakeControlError(f"FakeSynerise is not reachable at {url}.") from exc
    if response.status_code >= 300:
        raise FakeControlError(f"FakeSynerise answered {response.status_code} for {path}.")
    try:
        body = response.json()
    except ValueError as exc:
        raise FakeControlError(f"FakeSynerise sent invalid JSON for {path}.") from exc
    if not isinstance(body, dict):
        raise FakeControlError(f"FakeSynerise sent an unexpected body for {path}.")
    return body


def provider_token(provider: str) -> str:
    """Return a token the fake accepts as the demo user's ``provider`` sign-in.

    :param provider: URL slug, one of :data:`DEMO_PROVIDERS`.
    :raises KeyError: for an unknown provider; :raises FakeControlError: as :func:`control`.
    """
    name, subject, email, first_name, last_name = DEMO_PROVIDERS[provider]
    body = control(
        "provider-tokens",
        {
            "provider": name,
            "subject": subject,
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
        },
    )
    token = body.get("identity_provider_token")
    if not isinstance(token, str) or not token:
        raise FakeControlError("FakeSynerise returned no identity_provider_token.")
    return token


def create_client(
    *,
    email: str,
    password: str,
    first_name: str = "",
    last_name: str = "",
    condition: str | None = None,
) -> dict[str, Any]:
    """Create a Synerise client with an email and password in the fake; return its JSON.

    ``condition`` holds it in a conditional-login status (``TERMS_ACCEPTANCE_REQUIRED``...).
    """
    payload: dict[str, Any] = {
        "email": email,
        "password": password,
        "first_name": first_name,
        "last_name": last_name,
    }
    if condition:
        payload["condition"] = condition
    return control("clients", payload)
