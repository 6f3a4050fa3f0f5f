"""Fixtures of the identity-provider tests: signing keys, a live site, a fake in either mode.

Registered by the root conftest; ``idp_site`` also needs ``tests.fixtures_api``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth import get_user_model

from django_synerise.testing import FakeSynerise

AUDIENCE = "synerise-test-workspace"
PASSWORD = "site password 123"


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: Any) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="session")
def rsa_pem() -> str:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def rsa_pem_2() -> str:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def ec_pem() -> str:
    return pem(ec.generate_private_key(ec.SECP256R1()))


@dataclass
class Site:
    """The site under test as an identity provider: its URL and the fake that trusts it."""

    url: str
    fake: FakeSynerise
    mode: str

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/synerise/oauth/jwks.json"

    @property
    def userinfo_url(self) -> str:
        return f"{self.url}/synerise/oauth/userinfo/"


def configure(settings: Any, site_url: str, keys: list[str], **extra: Any) -> None:
    settings.SYNERISE = {
        **settings.SYNERISE,
        "OAUTH_SIGNING_KEYS": keys,
        "OAUTH_ISSUER": site_url,
        "OAUTH_AUDIENCE": AUDIENCE,
        **extra,
    }


def trust(fake: FakeSynerise, site_url: str, mode: str) -> None:
    """Configure ``fake`` as a Synerise workspace whose OAuth settings trust the site."""
    fake.configure_oauth(
        mode,
        jwks_url=f"{site_url}/synerise/oauth/jwks.json",
        userinfo_url=f"{site_url}/synerise/oauth/userinfo/",
        issuer=site_url,
        audience=AUDIENCE,
    )


@pytest.fixture(params=["jwt", "server"])
def idp_site(request, settings, fake_synerise, api_live_server, rsa_pem) -> Iterator[Site]:
    """The live site signing with an RSA key, trusted by the fake in each mode."""
    configure(settings, api_live_server, [rsa_pem])
    trust(fake_synerise, api_live_server, request.param)
    yield Site(api_live_server, fake_synerise, request.param)


def make_site_user(username: str = "dora", **fields: Any) -> Any:
    fields.setdefault("email", f"{username}@example.com")
    fields.setdefault("first_name", "Dora")
    fields.setdefault("last_name", "Explorer")
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **fields)
