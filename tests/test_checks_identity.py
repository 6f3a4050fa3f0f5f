"""System checks of the identity-provider settings (ids E090-E097, W090, W091)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.test import override_settings

from django_synerise import checks

from .fixtures_identity import pem, public_pem
from .test_checks import SECRET, ids, synerise

RSA_2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - E092
EC_P256 = ec.generate_private_key(ec.SECP256R1())
EC_P384 = ec.generate_private_key(ec.SECP384R1())
ENCRYPTED = RSA_2048.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(b"passphrase"),
).decode()

GOOD = {
    "OAUTH_SIGNING_KEYS": [pem(RSA_2048), pem(EC_P256)],
    "OAUTH_ISSUER": "https://shop.example.com",
    "OAUTH_AUDIENCE": "shop-workspace",
}


@pytest.fixture(autouse=True)
def _shared_default_cache(settings: Any) -> None:
    """A production-like project: a shared (Redis) default cache, never contacted."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
        }
    }


def settings_ids(**overrides: Any) -> set[str]:
    with override_settings(SYNERISE=synerise(**overrides), SECRET_KEY=SECRET):
        return ids(checks.check_settings())


def deploy_ids(**overrides: Any) -> set[str]:
    with override_settings(SYNERISE=synerise(**overrides), SECRET_KEY=SECRET):
        return ids(checks.check_deploy())


def test_defaults_and_a_good_configuration_pass() -> None:
    assert settings_ids() == set()
    assert settings_ids(**GOOD) == set()
    assert settings_ids(**GOOD, CONNECT_ON_LOGIN=True, OAUTH_TOKEN_LIFETIME=30) == set()
    assert deploy_ids(**GOOD) == set()


@pytest.mark.parametrize("value", ["-----BEGIN PRIVATE KEY-----", {"key": "x"}, None])
def test_e090_keys_not_a_list(value: Any) -> None:
    assert settings_ids(**{**GOOD, "OAUTH_SIGNING_KEYS": value}) == {"E090"}


@pytest.mark.parametrize(
    ("key", "code", "reason"),
    [
        ("not a key", "E091", "could not be parsed"),
        (ENCRYPTED, "E091", "encrypted"),
        (b"\xff\xfe", "E091", "could not be parsed"),
        (42, "E091", "not a PEM string"),
        (pem(RSA_1024), "E092", "1024 bits"),
        (pem(EC_P384), "E092", "P-256"),
        (public_pem(RSA_2048), "E093", "public key"),
        (public_pem(EC_P256), "E093", "public key"),
    ],
)
def test_unusable_keys_name_the_index_and_reason(key: Any, code: str, reason: str) -> None:
    keys = [pem(RSA_2048), key]
    with override_settings(SYNERISE=synerise(**{**GOOD, "OAUTH_SIGNING_KEYS": keys})):
        (message,) = checks.check_settings()
    assert message.id == f"django_synerise.{code}"
    assert "OAUTH_SIGNING_KEYS'][1]" in message.msg and reason in message.msg
    assert "PRIVATE KEY" not in message.msg and "PUBLIC KEY" not in message.msg


@pytest.mark.parametrize("value", [None, "", "  ", 1])
def test_e094_e095_issuer_and_audience_required_with_keys(value: Any) -> None:
    assert settings_ids(**{**GOOD, "OAUTH_ISSUER": value}) == {"E094"}
    assert settings_ids(**{**GOOD, "OAUTH_AUDIENCE": value}) == {"E095"}
    # Without keys the identity provider is off: nothing to require.
    assert settings_ids(OAUTH_ISSUER=value, OAUTH_AUDIENCE=value) == set()


@pytest.mark.parametrize("value", [0, 29, 3601, "300", 300.0, None, True])
def test_e096_lifetime_out_of_range(value: Any) -> None:
    assert settings_ids(**GOOD, OAUTH_TOKEN_LIFETIME=value) == {"E096"}


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_e097_connect_on_login_not_bool(value: Any) -> None:
    assert settings_ids(**GOOD, CONNECT_ON_LOGIN=value) == {"E097"}


def test_w090_connect_on_login_without_identity_provider() -> None:
    assert settings_ids(CONNECT_ON_LOGIN=True) == {"W090"}
    assert settings_ids(**GOOD, CONNECT_ON_LOGIN=True) == set()


def test_w091_http_issuer_only_at_deploy() -> None:
    http = {**GOOD, "OAUTH_ISSUER": "http://shop.example.com"}
    assert deploy_ids(**http) == {"W091"}
    assert settings_ids(**http) == set()
    assert deploy_ids(OAUTH_ISSUER="http://shop.example.com") == set()  # keys unset: off
