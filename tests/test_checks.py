"""Tests of the system checks: every check id passes on good settings and fires on bad ones."""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth.backends import ModelBackend
from django.core.checks import Error, Warning
from django.core.checks.registry import registry
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from django_synerise import checks
from django_synerise.backends import SyneriseBackend
from django_synerise.conf import DEFAULTS
from django_synerise.crypto import derive_key
from tests.web_sdk_keys import (
    ec_private_pem,
    encrypted_rsa_pem,
    rsa_private_pem,
    rsa_public_pem,
)

ROOT = Path(__file__).resolve().parents[1]
KEY_A = "yM9vYSrVqH5-6cA3n0r3dWhQ3Xb5Oj2iY8FhX1zT0aA="
KEY_B = Fernet.generate_key().decode()
SECRET = "tests-only-secret-key-not-for-production-use-0123456789abcdef"

GOOD: dict[str, Any] = {
    "API_KEY": "profile-api-key",
    "BASE_URL": "https://api.synerise.com",
    "TOKEN_ENCRYPTION_KEYS": [KEY_A],
}
DELETE = object()


class CustomAdapter:
    """Importable stand-in for a user's adapter class."""


class SubclassedBackend(SyneriseBackend):
    """A project's own subclass of the Synerise backend."""


def _pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


_RSA_2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - weak on purpose
RSA_PEM = _pem(_RSA_2048)
RSA_1024_PEM = _pem(_RSA_1024)
EC_PEM = _pem(ec.generate_private_key(ec.SECP256R1()))
PRIVATE_PEM = _RSA_2048.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()


def synerise(extra: dict[Any, Any] | None = None, /, **overrides: Any) -> dict[Any, Any]:
    conf = {**GOOD, **(extra or {}), **overrides}
    return {key: value for key, value in conf.items() if value is not DELETE}


def ids(messages: list[Any]) -> set[str]:
    return {message.id.removeprefix("django_synerise.") for message in messages}


def settings_ids(extra: dict[Any, Any] | None = None, /, **overrides: Any) -> set[str]:
    with override_settings(SYNERISE=synerise(extra, **overrides)):
        return ids(checks.check_settings())


@pytest.fixture(autouse=True)
def _shared_default_cache(settings: Any) -> None:
    """Check a production-like project: a shared (Redis) default cache, never contacted."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }


# --------------------------------------------------------------------------- settings keys

# (check id, overrides that pass, overrides that fail). Failing overrides must produce exactly
# that id; passing ones produce nothing at all from check_settings.
SETTINGS_CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    (
        "E001",
        [{"API_KEY": "k"}, {"API_KEY": " key-with-spaces-inside "}],
        [
            {"API_KEY": DELETE},
            {"API_KEY": None},
            {"API_KEY": ""},
            {"API_KEY": "  \n"},
            {"API_KEY": 123},
        ],
    ),
    (
        "E002",
        [{"JWT_LEEWAY": 30, "ADAPTER": "x.y"}],
        [{"API_KEYS": "x"}, {"TIMEOUTS": 3}, {"COMPLETELY_UNRELATED": 1}, {1: "int key"}],
    ),
    (
        "E004",
        [
            {"BASE_URL": "https://api.synerise.com"},
            {"BASE_URL": "https://api.azu.synerise.com/"},
            {"BASE_URL": "https://api.geb.synerise.com:443"},
            {"BASE_URL": "http://127.0.0.1:8000"},
            {"BASE_URL": "https://[::1]:8443"},
        ],
        [
            {"BASE_URL": "api.synerise.com"},
            {"BASE_URL": "ftp://api.synerise.com"},
            {"BASE_URL": "https://"},
            {"BASE_URL": "https://api.synerise.com/v4"},
            {"BASE_URL": "https://api.synerise.com?x=1"},
            {"BASE_URL": "https://api.synerise.com?"},
            {"BASE_URL": "https://api.synerise.com#top"},
            {"BASE_URL": "https://user:pw@api.synerise.com"},
            {"BASE_URL": "https://api.synerise.com:99999"},
            {"BASE_URL": None},
            {"BASE_URL": " https://api.synerise.com"},
            {"BASE_URL": b"https://api.synerise.com"},
        ],
    ),
    (
        "E005",
        [
            {"BASE_URL": "http://localhost:8000"},
            {"BASE_URL": "http://[::1]:1"},
            {"BASE_URL": "http://127.0.0.1:9"},
            {"BASE_URL": "http://LOCALHOST"},
        ],
        [
            {"BASE_URL": "http://api.synerise.com"},
            {"BASE_URL": "http://10.0.0.1:8000"},
            {"BASE_URL": "http://localhost.evil.example"},
        ],
    ),
    (
        "E006",
        [{"API_VERSION": "4.4"}, {"API_VERSION": "5"}],
        [
            {"API_VERSION": 4.4},
            {"API_VERSION": ""},
            {"API_VERSION": "4.4\r\nX-Evil: 1"},
            {"API_VERSION": None},
            {"API_VERSION": " 4.4"},
        ],
    ),
    (
        "E007",
        [{"AUTH_API": "v2"}, {"AUTH_API": "v3"}],
        [{"AUTH_API": "v4"}, {"AUTH_API": "V3"}, {"AUTH_API": None}, {"AUTH_API": ["v3"]}],
    ),
    (
        "E008",
        [
            {"TIMEOUT": 5, "TOTAL_TIMEOUT": 5},
            {"TIMEOUT": 2.5},
            {"TIMEOUT": (3.05, 10)},
            {"TIMEOUT": [1, 2]},
        ],
        [
            {"TIMEOUT": None},
            {"TIMEOUT": 0},
            {"TIMEOUT": -1},
            {"TIMEOUT": (1,)},
            {"TIMEOUT": (1, 2, 3)},
            {"TIMEOUT": (0, 10)},
            {"TIMEOUT": ("3", 10)},
            {"TIMEOUT": (3, None)},
            {"TIMEOUT": True},
            {"TIMEOUT": float("inf")},
            {"TIMEOUT": float("nan")},
            {"TIMEOUT": "10"},
        ],
    ),
    (
        "E009",
        [{"TOTAL_TIMEOUT": 12}, {"TOTAL_TIMEOUT": 10}, {"TOTAL_TIMEOUT": 10.5}],
        [
            {"TOTAL_TIMEOUT": 0},
            {"TOTAL_TIMEOUT": -1},
            {"TOTAL_TIMEOUT": None},
            {"TOTAL_TIMEOUT": "12"},
            {"TOTAL_TIMEOUT": 9.9},
            {"TIMEOUT": 20, "TOTAL_TIMEOUT": 15},
        ],
    ),
    (
        "E010",
        [
            {"MAX_RESPONSE_BYTES": 4096},
            {"MAX_RESPONSE_BYTES": 65536},
            {"MAX_RESPONSE_BYTES": 16 * 1024 * 1024},
        ],
        [
            {"MAX_RESPONSE_BYTES": 0},
            {"MAX_RESPONSE_BYTES": 4095},
            {"MAX_RESPONSE_BYTES": 10**9},
            {"MAX_RESPONSE_BYTES": 65536.0},
            {"MAX_RESPONSE_BYTES": True},
            {"MAX_RESPONSE_BYTES": "65536"},
            {"MAX_RESPONSE_BYTES": None},
        ],
    ),
    (
        "E011",
        [{"PUBLIC_KEY": None}, {"PUBLIC_KEY": RSA_PEM}, {"PUBLIC_KEY": RSA_PEM.encode()}],
        [
            {"PUBLIC_KEY": "not a pem"},
            {"PUBLIC_KEY": ""},
            {"PUBLIC_KEY": EC_PEM},
            {"PUBLIC_KEY": RSA_1024_PEM},
            {"PUBLIC_KEY": PRIVATE_PEM},
            {"PUBLIC_KEY": 123},
            {"PUBLIC_KEY": RSA_PEM[:200]},
        ],
    ),
    (
        "E012",
        [{"VERIFY_SIGNATURE": True}],
        [{"VERIFY_SIGNATURE": "yes"}, {"VERIFY_SIGNATURE": 1}, {"VERIFY_SIGNATURE": None}],
    ),
    (
        "E013",
        [
            {"JWT_ALGORITHMS": ["RS512"]},
            {"JWT_ALGORITHMS": ("RS256", "RS512")},
            {"JWT_ALGORITHMS": ["PS512"]},
            {"JWT_ALGORITHMS": ["RS512", "PS256"]},
        ],
        [
            {"JWT_ALGORITHMS": "RS512"},
            {"JWT_ALGORITHMS": []},
            {"JWT_ALGORITHMS": None},
            {"JWT_ALGORITHMS": [1]},
            {"JWT_ALGORITHMS": ["RS521"]},
            {"JWT_ALGORITHMS": ["rs512"]},
        ],
    ),
    (
        "E014",
        [{"JWT_ALGORITHMS": ["RS512"]}],
        [
            {"JWT_ALGORITHMS": ["none"]},
            {"JWT_ALGORITHMS": ["RS512", "none"]},
            {"JWT_ALGORITHMS": ["NONE"]},
            {"JWT_ALGORITHMS": ["HS256"]},
            {"JWT_ALGORITHMS": ["HS256", "RS256"]},
            {"JWT_ALGORITHMS": ["RS512", "HS512"]},
            {"JWT_ALGORITHMS": ["RS256", "ES256"]},
            {"JWT_ALGORITHMS": ["ES256"]},
            {"JWT_ALGORITHMS": ["EdDSA"]},
        ],
    ),
    (
        "E015",
        [{"JWT_ISSUER": "Synerise"}, {"JWT_ISSUER": None}],
        [{"JWT_ISSUER": ""}, {"JWT_ISSUER": "   "}, {"JWT_ISSUER": 1}, {"JWT_ISSUER": ["a"]}],
    ),
    (
        "E016",
        [{"JWT_LEEWAY": 0}, {"JWT_LEEWAY": 30}, {"JWT_LEEWAY": 300}, {"JWT_LEEWAY": 1.5}],
        [
            {"JWT_LEEWAY": -1},
            {"JWT_LEEWAY": 301},
            {"JWT_LEEWAY": None},
            {"JWT_LEEWAY": "30"},
            {"JWT_LEEWAY": True},
        ],
    ),
    (
        "E017",
        [{"MAX_TOKEN_BYTES": 1024}, {"MAX_TOKEN_BYTES": 8192}, {"MAX_TOKEN_BYTES": 65536}],
        [
            {"MAX_TOKEN_BYTES": 0},
            {"MAX_TOKEN_BYTES": 512},
            {"MAX_TOKEN_BYTES": 10**6},
            {"MAX_TOKEN_BYTES": 8192.0},
            {"MAX_TOKEN_BYTES": None},
        ],
    ),
    (
        "E018",
        [
            {"BUSINESS_PROFILE_ID": None},
            {"BUSINESS_PROFILE_ID": "1234"},
            {"BUSINESS_PROFILE_ID": 1234},
            {"BUSINESS_PROFILE_ID": "x" * 32},
        ],
        [
            {"BUSINESS_PROFILE_ID": ""},
            {"BUSINESS_PROFILE_ID": " 12"},
            {"BUSINESS_PROFILE_ID": "x" * 33},
            {"BUSINESS_PROFILE_ID": -1},
            {"BUSINESS_PROFILE_ID": 1.5},
            {"BUSINESS_PROFILE_ID": []},
            {"BUSINESS_PROFILE_ID": True},
        ],
    ),
    (
        "E019",
        [
            {"REFRESH_MARGIN": 300, "REFRESH_JITTER": 0},
            {"REFRESH_MARGIN": 900},
            {"REFRESH_MARGIN": 3000, "REFRESH_JITTER": 0},
        ],
        [
            {"REFRESH_MARGIN": 59, "REFRESH_JITTER": 0},
            {"REFRESH_MARGIN": 3001},
            {"REFRESH_MARGIN": 3600},
            {"REFRESH_MARGIN": 900.0},
            {"REFRESH_MARGIN": "900"},
            {"REFRESH_MARGIN": None},
            {"REFRESH_MARGIN": True},
            {"REFRESH_MARGIN": -900},
        ],
    ),
    (
        "E020",
        [
            {"REFRESH_JITTER": 0},
            {"REFRESH_JITTER": 300},
            {"REFRESH_JITTER": 2100},
            {"REFRESH_JITTER": 12.5},
        ],
        [
            {"REFRESH_JITTER": -1},
            {"REFRESH_JITTER": 2101},
            {"REFRESH_JITTER": None},
            {"REFRESH_JITTER": "300"},
            {"REFRESH_MARGIN": 3000, "REFRESH_JITTER": 1},
        ],
    ),
    (
        "E021",
        [{"KEEPALIVE_IDLE": 1}, {"KEEPALIVE_IDLE": 14 * 24 * 3600}],
        [
            {"KEEPALIVE_IDLE": 0},
            {"KEEPALIVE_IDLE": -1},
            {"KEEPALIVE_IDLE": None},
            {"KEEPALIVE_IDLE": "14d"},
        ],
    ),
    (
        "E022",
        [{"LEASE_SECONDS": 60}, {"LEASE_SECONDS": 12.5}],
        [
            {"LEASE_SECONDS": 0},
            {"LEASE_SECONDS": 12},
            {"LEASE_SECONDS": 5},
            {"LEASE_SECONDS": None},
            {"LEASE_SECONDS": 50, "TOTAL_TIMEOUT": 50},
        ],
    ),
    (
        "E023",
        [{"SINGLE_FLIGHT_WAIT": 0}, {"SINGLE_FLIGHT_WAIT": 5.0}],
        [{"SINGLE_FLIGHT_WAIT": -0.1}, {"SINGLE_FLIGHT_WAIT": None}, {"SINGLE_FLIGHT_WAIT": "5"}],
    ),
    (
        "E024",
        [{"ACTIVITY_INTERVAL": 0}, {"ACTIVITY_INTERVAL": 60}],
        [{"ACTIVITY_INTERVAL": -1}, {"ACTIVITY_INTERVAL": None}],
    ),
    (
        "E025",
        [{"REFRESH_BATCH_SIZE": 1}, {"REFRESH_BATCH_SIZE": 1000}],
        [
            {"REFRESH_BATCH_SIZE": 0},
            {"REFRESH_BATCH_SIZE": 1001},
            {"REFRESH_BATCH_SIZE": 10.0},
            {"REFRESH_BATCH_SIZE": None},
        ],
    ),
    (
        "E026",
        [{"REFRESH_CONCURRENCY": 1}, {"REFRESH_CONCURRENCY": 64}],
        [{"REFRESH_CONCURRENCY": 0}, {"REFRESH_CONCURRENCY": 65}, {"REFRESH_CONCURRENCY": None}],
    ),
    (
        "E027",
        [{"RETRY_AFTER_MAX": 1}, {"RETRY_AFTER_MAX": 300}],
        [{"RETRY_AFTER_MAX": 0}, {"RETRY_AFTER_MAX": -5}, {"RETRY_AFTER_MAX": None}],
    ),
    (
        "E028",
        [{"PURGE_AFTER": 1}, {"PURGE_AFTER": 7 * 24 * 3600}],
        [{"PURGE_AFTER": 0}, {"PURGE_AFTER": None}],
    ),
    (
        "E029",
        [
            {"TOKEN_ENCRYPTION_KEYS": [KEY_A]},
            {"TOKEN_ENCRYPTION_KEYS": [KEY_B, KEY_A]},
            {"TOKEN_ENCRYPTION_KEYS": (KEY_A.encode(),)},
        ],
        [
            {"TOKEN_ENCRYPTION_KEYS": KEY_A},
            {"TOKEN_ENCRYPTION_KEYS": None},
            {"TOKEN_ENCRYPTION_KEYS": ["short"]},
            {"TOKEN_ENCRYPTION_KEYS": [123]},
            {"TOKEN_ENCRYPTION_KEYS": [KEY_A, KEY_A]},
            {"TOKEN_ENCRYPTION_KEYS": [KEY_A[:-2] + "*="]},
            {"TOKEN_ENCRYPTION_KEYS": [base64.urlsafe_b64encode(b"x" * 16).decode()]},
            {"TOKEN_ENCRYPTION_KEYS": [b"\xff" * 44]},
        ],
    ),
    (
        "E030",
        [{"TOKEN_ENCRYPTION_KEYS": [KEY_B]}],
        [
            {"TOKEN_ENCRYPTION_KEYS": [SECRET]},
            {"TOKEN_ENCRYPTION_KEYS": [base64.urlsafe_b64encode(SECRET.encode()[:32]).decode()]},
            {"TOKEN_ENCRYPTION_KEYS": [derive_key(SECRET)]},
            {"TOKEN_ENCRYPTION_KEYS": [KEY_B, derive_key(SECRET).encode()]},
        ],
    ),
    (
        "E031",
        [{"LINK_BY_EMAIL": False}],
        [{"LINK_BY_EMAIL": "no"}, {"LINK_BY_EMAIL": 0}, {"LINK_BY_EMAIL": None}],
    ),
    (
        "E032",
        [{"BREAKER_THRESHOLD": 1}, {"BREAKER_THRESHOLD": 5}],
        [{"BREAKER_THRESHOLD": 0}, {"BREAKER_THRESHOLD": 1.5}, {"BREAKER_THRESHOLD": None}],
    ),
    (
        "E033",
        [{"BREAKER_RESET_TIMEOUT": 1}, {"BREAKER_RESET_TIMEOUT": 30}],
        [
            {"BREAKER_RESET_TIMEOUT": 0},
            {"BREAKER_RESET_TIMEOUT": 2.5},
            {"BREAKER_RESET_TIMEOUT": "30"},
        ],
    ),
    (
        "E034",
        [{"LOGIN_STARTS_SESSION": True}, {"LOGIN_STARTS_SESSION": False}],
        [{"LOGIN_STARTS_SESSION": "true"}, {"LOGIN_STARTS_SESSION": 1}],
    ),
    (
        "E035",
        [
            {"LOGIN_THROTTLE_RATES": {}},
            {"LOGIN_THROTTLE_RATES": {"ip": None}},
            {"LOGIN_THROTTLE_RATES": {"ip": "1/sec", "account": "10/min"}},
            {"LOGIN_THROTTLE_RATES": {"ip": "5/hour", "account": "100/day"}},
            {"LOGIN_THROTTLE_RATES": {"ip": "30/m", "account": "3/s"}},
            {"LOGIN_THROTTLE_RATES": {"ip": "3/h", "account": "3/d"}},
            {"LOGIN_THROTTLE_RATES": {"account_ip": "5/min", "account": None}},
        ],
        [
            {"LOGIN_THROTTLE_RATES": None},
            {"LOGIN_THROTTLE_RATES": "30/min"},
            {"LOGIN_THROTTLE_RATES": {"user": "1/min"}},
            {"LOGIN_THROTTLE_RATES": {"ip": "0/min"}},
            {"LOGIN_THROTTLE_RATES": {"ip": "abc"}},
            {"LOGIN_THROTTLE_RATES": {"ip": 30}},
            {"LOGIN_THROTTLE_RATES": {"ip": "30/week"}},
            {"LOGIN_THROTTLE_RATES": {"account": "30 / min"}},
            {"LOGIN_THROTTLE_RATES": {"account_ip": "ten/min"}},
        ],
    ),
    (
        "E070",
        [{"UPSTREAM_PASSWORDS": value} for value in ("linked", "non_local", "non_staff")],
        [
            {"UPSTREAM_PASSWORDS": None},
            {"UPSTREAM_PASSWORDS": "never"},
            {"UPSTREAM_PASSWORDS": True},
            {"UPSTREAM_PASSWORDS": "NON_LOCAL"},
        ],
    ),
    (
        "E071",
        [{"LOGIN_THROTTLE_CACHE": "default"}],
        [
            {"LOGIN_THROTTLE_CACHE": "missing"},
            {"LOGIN_THROTTLE_CACHE": None},
            {"LOGIN_THROTTLE_CACHE": ["default"]},
        ],
    ),
    ("W001", [{"VERIFY_SIGNATURE": True}], [{"VERIFY_SIGNATURE": False}]),
    (
        "W002",
        [{"REFRESH_MARGIN": 300, "REFRESH_JITTER": 0}],
        [{"REFRESH_MARGIN": 299, "REFRESH_JITTER": 0}, {"REFRESH_MARGIN": 60, "REFRESH_JITTER": 0}],
    ),
    ("W003", [{"TOKEN_ENCRYPTION_KEYS": [KEY_A]}], [{"TOKEN_ENCRYPTION_KEYS": []}]),
    ("W004", [{"LINK_BY_EMAIL": False}], [{"LINK_BY_EMAIL": True}]),
    (
        "E042",
        [{"REFRESH_RATE_LIMIT": None}],
        [
            {"REFRESH_RATE_LIMIT": 0},
            {"REFRESH_RATE_LIMIT": -5},
            {"REFRESH_RATE_LIMIT": 2.9},
            {"REFRESH_RATE_LIMIT": 10_001},
            {"REFRESH_RATE_LIMIT": "50"},
            {"REFRESH_RATE_LIMIT": True},
            {"REFRESH_RATE_LIMIT": float("nan")},
        ],
    ),
    (
        "E043",
        [{"REFRESH_RATE_LIMIT": None, "REFRESH_RATE_LIMIT_CACHE": "missing"}],
        [
            {"REFRESH_RATE_LIMIT": 50, "REFRESH_RATE_LIMIT_CACHE": "missing"},
            {"REFRESH_RATE_LIMIT": 50, "REFRESH_RATE_LIMIT_CACHE": None},
        ],
    ),
    (
        "E060",
        [{"SUPERSEDED_TOKEN_GRACE": None}, {"SUPERSEDED_TOKEN_GRACE": 1200},
         {"SUPERSEDED_TOKEN_GRACE": 3600.5}],
        [{"SUPERSEDED_TOKEN_GRACE": -1}, {"SUPERSEDED_TOKEN_GRACE": "1200"},
         {"SUPERSEDED_TOKEN_GRACE": True}, {"SUPERSEDED_TOKEN_GRACE": float("inf")}],
    ),
    (
        "W060",
        [{"SUPERSEDED_TOKEN_GRACE": 1200, "REFRESH_MARGIN": 900, "REFRESH_JITTER": 300}],
        [{"SUPERSEDED_TOKEN_GRACE": 0}, {"SUPERSEDED_TOKEN_GRACE": 1199}],
    ),
    (
        "E061",
        [{"INTERACTIVE_CONCURRENCY": 1}, {"INTERACTIVE_CONCURRENCY": 64}],
        [{"INTERACTIVE_CONCURRENCY": 0}, {"INTERACTIVE_CONCURRENCY": 2.0},
         {"INTERACTIVE_CONCURRENCY": None}, {"INTERACTIVE_CONCURRENCY": True},
         {"INTERACTIVE_CONCURRENCY": 1025}],
    ),
    (
        "E062",
        [{"BREAKER_SLOW_CALL_THRESHOLD": None}, {"BREAKER_SLOW_CALL_THRESHOLD": 0.5}],
        [{"BREAKER_SLOW_CALL_THRESHOLD": 0}, {"BREAKER_SLOW_CALL_THRESHOLD": -1},
         {"BREAKER_SLOW_CALL_THRESHOLD": "5"}],
    ),
    (
        "E080",
        [{"MAX_TOKEN_LIFETIME": 86400}, {"MAX_TOKEN_LIFETIME": timedelta(hours=48)},
         {"MAX_TOKEN_LIFETIME": 60}],
        [
            {"MAX_TOKEN_LIFETIME": 0},
            {"MAX_TOKEN_LIFETIME": 59},
            {"MAX_TOKEN_LIFETIME": 31 * 24 * 3600},
            {"MAX_TOKEN_LIFETIME": "86400"},
            {"MAX_TOKEN_LIFETIME": None},
            {"MAX_TOKEN_LIFETIME": timedelta(seconds=-1)},
        ],
    ),
    (
        "E081",
        [{"REFRESH_FLUSH_INTERVAL": 0}, {"REFRESH_FLUSH_INTERVAL": 0.05},
         {"REFRESH_FLUSH_INTERVAL": 5}],
        [
            {"REFRESH_FLUSH_INTERVAL": -0.1},
            {"REFRESH_FLUSH_INTERVAL": 5.1},
            {"REFRESH_FLUSH_INTERVAL": "0.25"},
            {"REFRESH_FLUSH_INTERVAL": None},
        ],
    ),
    (
        "E082",
        [{"HALT_PROBE_MAX": 30}, {"HALT_PROBE_MAX": 0.5}],
        [{"HALT_PROBE_MAX": 0}, {"HALT_PROBE_MAX": -1}, {"HALT_PROBE_MAX": "30"}],
    ),
    (
        "E100",
        [{"CONDITIONAL_LOGIN": True}, {"CONDITIONAL_LOGIN": False}],
        [{"CONDITIONAL_LOGIN": 1}, {"CONDITIONAL_LOGIN": "yes"}, {"CONDITIONAL_LOGIN": None}],
    ),
    (
        "E101",
        [{"TRACKER_KEY": None}, {"TRACKER_KEY": "7d97fd94-647a-489c-8be6-4d40b4c0eca2"}],
        [{"TRACKER_KEY": ""}, {"TRACKER_KEY": "key with spaces"}, {"TRACKER_KEY": 42},
         {"TRACKER_KEY": "x" * 129}, {"TRACKER_KEY": "k';alert(1)//"}],
    ),
    (
        "E102",
        [{"TRACKER_DOMAIN": "https://web.geb.snrbox.com"},
         {"TRACKER_DOMAIN": "http://127.0.0.1:8765"}],
        [{"TRACKER_DOMAIN": "http://web.snrbox.com"}, {"TRACKER_DOMAIN": "web.snrbox.com"},
         {"TRACKER_DOMAIN": "https://web.snrbox.com/js"}, {"TRACKER_DOMAIN": None}],
    ),
    (
        "E103",
        [{"TRACKER_UUID_COOKIE": False}],
        [{"TRACKER_UUID_COOKIE": "off"}, {"TRACKER_UUID_COOKIE": 0}],
    ),
    (
        "E104",
        [{"WEB_SDK_SIGNING_KEY": None},
         {"WEB_SDK_SIGNING_KEY": rsa_private_pem(), "TRACKER_KEY": "tk"},
         {"WEB_SDK_SIGNING_KEY": rsa_private_pem(3072).encode(), "TRACKER_KEY": "tk"}],
        [{"WEB_SDK_SIGNING_KEY": rsa_public_pem(), "TRACKER_KEY": "tk"},
         {"WEB_SDK_SIGNING_KEY": rsa_private_pem(1024), "TRACKER_KEY": "tk"},
         {"WEB_SDK_SIGNING_KEY": ec_private_pem(), "TRACKER_KEY": "tk"},
         {"WEB_SDK_SIGNING_KEY": encrypted_rsa_pem(), "TRACKER_KEY": "tk"},
         {"WEB_SDK_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----",
          "TRACKER_KEY": "tk"},
         {"WEB_SDK_SIGNING_KEY": 12, "TRACKER_KEY": "tk"}],
    ),
    (
        "E105",
        [{"WEB_SDK_TOKEN_LIFETIME": 60}, {"WEB_SDK_TOKEN_LIFETIME": 3600}],
        [{"WEB_SDK_TOKEN_LIFETIME": 59}, {"WEB_SDK_TOKEN_LIFETIME": 3601},
         {"WEB_SDK_TOKEN_LIFETIME": "600"}, {"WEB_SDK_TOKEN_LIFETIME": 600.0}],
    ),
    (
        "W100",
        [{"WEB_SDK_SIGNING_KEY": rsa_private_pem(), "TRACKER_KEY": "tk"}],
        [{"WEB_SDK_SIGNING_KEY": rsa_private_pem()}],
    ),
]


def _flatten(kind: int) -> list[Any]:
    return [
        pytest.param(code, overrides, id=f"{code}-{index}")
        for code, *cases in SETTINGS_CASES
        for index, overrides in enumerate(cases[kind])
    ]


@pytest.mark.parametrize(("code", "overrides"), _flatten(0))
def test_settings_check_passes(code: str, overrides: dict[str, Any]) -> None:
    with override_settings(SECRET_KEY=SECRET):
        assert settings_ids(overrides) == set()


@pytest.mark.parametrize(("code", "overrides"), _flatten(1))
def test_settings_check_fails(code: str, overrides: dict[str, Any]) -> None:
    with override_settings(SECRET_KEY=SECRET):
        assert settings_ids(overrides) == {code}


@pytest.mark.parametrize(
    ("algorithms", "code", "reason"),
    [
        (["none"], "E014", "'none' accepts unsigned tokens"),
        (["RS512", "None"], "E014", "'none' accepts unsigned tokens"),
        (["HS256"], "E014", "HS256 is symmetric"),
        (["RS512", "HS512"], "E014", "HS512 is symmetric"),
        (["RS256", "ES256"], "E014", "mixes key families (EC, RSA)"),
        (["PS256", "EdDSA"], "E014", "mixes key families (OKP, RSA)"),
        (["ES256", "ES384"], "E014", "Synerise signs client tokens with an RSA key"),
        (["RS521"], "E013", "unknown algorithm 'RS521'"),
        ("RS512", "E013", "expected a non-empty list"),
        ([b"RS512"], "E013", "every entry must be a string"),
    ],
)
def test_algorithm_messages_name_the_reason(algorithms: Any, code: str, reason: str) -> None:
    with override_settings(SYNERISE=synerise(JWT_ALGORITHMS=algorithms)):
        (message,) = checks.check_settings()
    assert message.id == f"django_synerise.{code}"
    assert reason in message.msg


def test_default_settings_with_api_key_pass() -> None:
    with override_settings(SYNERISE={"API_KEY": "k", "TOKEN_ENCRYPTION_KEYS": [KEY_A]}):
        assert checks.check_settings() == []


def test_levels_match_ids() -> None:
    for code, spec in checks.MESSAGES.items():
        assert spec.level is (Error if code.startswith("E") else Warning), code
        assert spec.hint.strip(), code
    with override_settings(SYNERISE=synerise(API_KEY=None, LINK_BY_EMAIL=True)):
        by_id = {m.id: m for m in checks.check_settings()}
    assert isinstance(by_id["django_synerise.E001"], Error)
    assert type(by_id["django_synerise.W004"]) is Warning
    assert by_id["django_synerise.E001"].hint.startswith("Set SYNERISE['API_KEY']")


def test_unknown_key_hint_suggests_the_closest_key() -> None:
    with override_settings(SYNERISE=synerise(REFRESH_MARGN=900, WHATEVER=1)):
        hints = {m.msg: m.hint for m in checks.check_settings()}
    assert (
        "Did you mean 'REFRESH_MARGIN'?"
        in hints["SYNERISE contains an unknown key 'REFRESH_MARGN'."]
    )
    assert "Did you mean" not in hints["SYNERISE contains an unknown key 'WHATEVER'."]


@pytest.mark.parametrize("value", [["API_KEY", "x"], "API_KEY=x", 42])
def test_synerise_not_a_dict_reports_only_e003(value: Any) -> None:
    with override_settings(SYNERISE=value):
        messages = checks.check_settings()
        deploy = checks.check_deploy()
    assert ids(messages) == {"E003"}
    assert type(value).__name__ in messages[0].msg
    assert "E037" not in ids(deploy) and "E038" not in ids(deploy)


def test_missing_synerise_setting_is_e001_not_e003() -> None:
    with override_settings(SYNERISE=None):
        assert "E001" in ids(checks.check_settings())
    with override_settings():
        from django.conf import settings

        del settings.SYNERISE
        assert ids(checks.check_settings()) == {"E001", "W003"}


def test_http_allowed_for_any_host_with_debug() -> None:
    with override_settings(DEBUG=True):
        assert settings_ids(BASE_URL="http://api.synerise.com") == set()
    with override_settings(DEBUG=False):
        assert settings_ids(BASE_URL="http://api.synerise.com") == {"E005"}


def test_key_equal_to_a_fallback_secret_is_e030() -> None:
    fallback = Fernet.generate_key().decode()
    with override_settings(SECRET_KEY=SECRET, SECRET_KEY_FALLBACKS=[fallback]):
        assert settings_ids(TOKEN_ENCRYPTION_KEYS=[KEY_A, fallback]) == {"E030"}
        with override_settings(SYNERISE=synerise(TOKEN_ENCRYPTION_KEYS=[fallback])):
            (message,) = checks.check_settings()
    assert "SECRET_KEY_FALLBACKS" in message.msg


def test_key_equal_to_secret_key_is_e030_even_when_a_valid_fernet_key() -> None:
    secret = Fernet.generate_key().decode()
    with override_settings(SECRET_KEY=secret):
        assert settings_ids(TOKEN_ENCRYPTION_KEYS=[secret]) == {"E030"}
        assert settings_ids(TOKEN_ENCRYPTION_KEYS=[KEY_A]) == set()


def test_messages_never_contain_the_api_key_or_encryption_keys() -> None:
    with override_settings(
        SYNERISE=synerise(API_KEY="sekret-api-key", TOKEN_ENCRYPTION_KEYS=[SECRET, "bad-key"]),
        SECRET_KEY=SECRET,
    ):
        messages = checks.check_settings() + checks.check_deploy()
    text = " ".join(f"{m.msg} {m.hint}" for m in messages)
    assert {"E029", "E030"} <= ids(messages)
    assert "sekret-api-key" not in text and SECRET not in text and "bad-key" not in text


# --------------------------------------------------------------------------- integration


def test_adapter_e036() -> None:
    for good in (
        "django_synerise.adapter.DefaultSyneriseAdapter",
        "tests.test_checks.CustomAdapter",
        CustomAdapter,
    ):
        with override_settings(SYNERISE=synerise(ADAPTER=good)):
            assert "E036" not in ids(checks.check_integration()), good
    for bad in ("django_synerise.nope.Adapter", "tests.test_checks.Missing", "nodots", None, ""):
        with override_settings(SYNERISE=synerise(ADAPTER=bad)):
            messages = [m for m in checks.check_integration() if m.id.endswith("E036")]
        assert len(messages) == 1, bad
        assert "SYNERISE['ADAPTER']" in messages[0].msg


BACKEND = "django_synerise.backends.SyneriseBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        ([BACKEND, MODEL_BACKEND], set()),
        ([MODEL_BACKEND, BACKEND], set()),
        (["tests.test_checks.SubclassedBackend"], set()),
        ([MODEL_BACKEND], {"W005"}),
        ([MODEL_BACKEND, "not.importable.Backend"], {"W005"}),
        ([], {"W005"}),
    ],
)
def test_backend_w005(backends: list[str], expected: set[str]) -> None:
    with override_settings(AUTHENTICATION_BACKENDS=backends, CELERY_BROKER_URL=None):
        assert ids(checks.check_integration()) == expected


REFRESH_ENTRY = {"task": checks.REFRESH_TASK, "schedule": 60.0}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"CELERY_BROKER_URL": None}, set()),
        ({"CELERY_BROKER_URL": ""}, set()),
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "CELERY_BEAT_SCHEDULE": None}, {"W006"}),
        ({"CELERY_BROKER_URL": "redis://x", "CELERY_BEAT_SCHEDULE": {}}, {"W006"}),
        (
            {
                "CELERY_BROKER_URL": "redis://x",
                "CELERY_BEAT_SCHEDULE": {"other": {"task": "app.tasks.other"}, "bad": None},
            },
            {"W006"},
        ),
        (
            {"CELERY_BROKER_URL": "redis://x", "CELERY_BEAT_SCHEDULE": {"r": REFRESH_ENTRY}},
            set(),
        ),
    ],
)
def test_refresh_schedule_w006(overrides: dict[str, Any], expected: set[str]) -> None:
    with override_settings(**overrides):
        assert ids(checks.check_integration()) == expected


def test_w006_silent_with_django_celery_beat_database_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = checks.apps.is_installed
    monkeypatch.setattr(
        checks.apps, "is_installed", lambda name: name == "django_celery_beat" or real(name)
    )
    scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
    with override_settings(CELERY_BROKER_URL="redis://x", CELERY_BEAT_SCHEDULER=scheduler):
        assert ids(checks.check_integration()) == set()
    # Installed but beat runs Celery's own scheduler: the rows are not read, W006 stays.
    with override_settings(CELERY_BROKER_URL="redis://x", CELERY_BEAT_SCHEDULER=None,
                           CELERY_BEAT_SCHEDULE=None):
        assert ids(checks.check_integration()) == {"W006"}
    assert "synerise_setup_beat" in checks.MESSAGES["W006"].hint


def test_schedule_fragment_satisfies_w006() -> None:
    schedule = pytest.importorskip("django_synerise.schedule")
    with override_settings(
        CELERY_BROKER_URL="redis://x", CELERY_BEAT_SCHEDULE=dict(schedule.BEAT_SCHEDULE)
    ):
        assert "W006" not in ids(checks.check_integration())


# --------------------------------------------------------------------------- deploy


def deploy_ids(**overrides: Any) -> set[str]:
    with override_settings(SYNERISE=synerise(**overrides), SECRET_KEY=SECRET):
        return ids(checks.check_deploy())


def test_deploy_passes_with_good_settings() -> None:
    assert deploy_ids() == set()


def test_e037_empty_keys_fail_only_at_deploy() -> None:
    assert deploy_ids(TOKEN_ENCRYPTION_KEYS=[]) == {"E037"}
    assert settings_ids(TOKEN_ENCRYPTION_KEYS=[]) == {"W003"}
    assert deploy_ids(TOKEN_ENCRYPTION_KEYS=[KEY_A]) == set()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.synerise.com", set()),
        ("https://api.azu.synerise.com", set()),
        ("http://127.0.0.1:9", {"E038"}),
        ("http://localhost", {"E038"}),
        ("http://api.synerise.com", {"E038"}),
    ],
)
def test_e038_deploy_requires_https(url: str, expected: set[str]) -> None:
    assert deploy_ids(BASE_URL=url) == expected


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ({"PyJWT": "2.15.1", "urllib3": "2.8.0"}, set()),
        ({"PyJWT": "2.13.0", "urllib3": "2.7.0"}, set()),
        ({"PyJWT": "2.13.0rc1", "urllib3": "3.0"}, set()),
        ({"PyJWT": "2.12.1", "urllib3": "2.8.0"}, {"E039"}),
        ({"PyJWT": "1.7.1", "urllib3": "2.8.0"}, {"E039"}),
        ({"PyJWT": "2.15.1", "urllib3": "2.6.3"}, {"E040"}),
        ({"PyJWT": "2.4.0", "urllib3": "1.26.20"}, {"E039", "E040"}),
        ({"PyJWT": None, "urllib3": "weird"}, set()),
    ],
)
def test_e039_e040_version_floors(
    monkeypatch: pytest.MonkeyPatch, versions: dict[str, str | None], expected: set[str]
) -> None:
    monkeypatch.setattr(checks, "_installed_version", versions.get)
    assert deploy_ids() == expected


def test_installed_versions_meet_the_floors() -> None:
    assert checks._installed_version("PyJWT") is not None
    assert checks._installed_version("urllib3") is not None
    assert checks._installed_version("surely-not-installed-dist-xyz") is None
    assert deploy_ids() == set()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, set()),
        ({"CELERY_BROKER_TRANSPORT_OPTIONS": {}}, set()),
        ({"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 3600}}, set()),
        (
            {
                "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 3600},
                "CELERY_TASK_TIME_LIMIT": 600,
            },
            set(),
        ),
        (
            {
                "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 600},
                "CELERY_TASK_TIME_LIMIT": 600,
            },
            {"E041"},
        ),
        (
            {
                "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 120},
                "CELERY_TASK_TIME_LIMIT": 600,
            },
            {"E041"},
        ),
        # No time limit: still has to outlive the longest retry countdown (RETRY_AFTER_MAX).
        ({"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 300}}, {"E041"}),
        ({"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": None}}, {"E041"}),
        ({"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": "3600"}}, {"E041"}),
    ],
)
def test_e041_visibility_timeout(overrides: dict[str, Any], expected: set[str]) -> None:
    with override_settings(**overrides):
        assert deploy_ids() == expected


# --------------------------------------------------------------------------- call_command

PROD = {
    "DEBUG": False,
    "SECRET_KEY": SECRET,
    "SYNERISE": GOOD,
    "AUTHENTICATION_BACKENDS": [BACKEND, MODEL_BACKEND],
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "CELERY_BEAT_SCHEDULE": {"synerise-refresh": REFRESH_ENTRY},
    "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 3600},
    "CELERY_TASK_TIME_LIMIT": 600,
}


# Since Django 6.1, ``check --tag`` also runs database-tagged checks (W080) on every alias,
# so the tests that select the package's tag need the test database.
tagged_check = pytest.mark.django_db


def run_check(*args: str) -> str:
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command("check", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


@tagged_check
def test_check_command_passes_with_good_settings() -> None:
    with override_settings(**PROD):
        assert "no issues" in run_check("--tag", checks.TAG, "--fail-level", "WARNING")
        assert "no issues" in run_check("--deploy", "--tag", checks.TAG, "--fail-level", "WARNING")


def test_check_command_reports_errors_by_id() -> None:
    bad = {**PROD, "SYNERISE": synerise(API_KEY=None, TIMEOUT=None)}
    with override_settings(**bad), pytest.raises(SystemCheckError) as excinfo:
        run_check()
    text = str(excinfo.value)
    assert "django_synerise.E001" in text and "django_synerise.E008" in text
    assert "HINT:" in text


@tagged_check
@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"SYNERISE": synerise(TOKEN_ENCRYPTION_KEYS=[])}, "E037"),
        ({"SYNERISE": synerise(BASE_URL="http://127.0.0.1:9")}, "E038"),
        ({"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 60}}, "E041"),
    ],
)
def test_deploy_errors_only_with_deploy_flag(overrides: dict[str, Any], code: str) -> None:
    with override_settings(**{**PROD, **overrides}):
        run_check("--tag", checks.TAG)  # no deploy: no error raised
        with pytest.raises(SystemCheckError, match=f"django_synerise.{code}"):
            run_check("--deploy", "--tag", checks.TAG)


@tagged_check
def test_empty_keys_warn_in_normal_check_and_fail_at_warning_level() -> None:
    with override_settings(**{**PROD, "SYNERISE": synerise(TOKEN_ENCRYPTION_KEYS=[])}):
        assert "django_synerise.W003" in run_check("--tag", checks.TAG)
        with pytest.raises(SystemCheckError, match="django_synerise.W003"):
            run_check("--tag", checks.TAG, "--fail-level", "WARNING")


def test_checks_are_registered_with_tags() -> None:
    funcs = {f.__name__: f for f in registry.get_checks(include_deployment_checks=True)}
    assert {"check_settings", "check_integration", "check_deploy"} <= set(funcs)
    assert "security" in funcs["check_settings"].tags and checks.TAG in funcs["check_settings"].tags
    assert funcs["check_deploy"] not in registry.get_checks(include_deployment_checks=False)
    assert "database" in funcs["check_refresh_halt"].tags
    checks.register_checks()  # idempotent: ready() may run it again
    assert "database" in funcs["check_beat_tasks"].tags
    assert len([f for f in registry.get_checks(True) if f.__module__ == checks.__name__]) == 5


# --------------------------------------------------------------------------- robustness

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=60)
    | st.binary(max_size=60),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)
_keys = st.sampled_from(sorted(set(DEFAULTS) - {"ADAPTER"}) + ["UNKNOWN_KEY"])


@hyp_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(_keys, _values, max_size=8))
def test_checks_never_crash_on_arbitrary_values(conf: dict[str, Any]) -> None:
    with override_settings(
        SYNERISE=conf,
        CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": conf.get("RETRY_AFTER_MAX")},
    ):
        messages = checks.check_settings() + checks.check_integration() + checks.check_deploy()
    for message in messages:
        assert message.id.removeprefix("django_synerise.") in checks.MESSAGES


def test_checks_touch_neither_network_nor_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``django_db`` mark: any query would raise. Sockets are disabled too."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("system checks must not open sockets")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with override_settings(**{**PROD, "SYNERISE": synerise(PUBLIC_KEY=None)}):
        assert checks.check_settings() == []
        assert checks.check_integration() == []
        assert checks.check_deploy() == []


def test_running_checks_does_not_import_celery() -> None:
    code = (
        "import sys, django; django.setup();"
        "from django.core.management import call_command;"
        "call_command('check', '--deploy', '--tag', 'django_synerise', '--fail-level', 'CRITICAL');"
        "print('celery' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PATH": "/usr/bin:/bin",
            "SYNERISE_TEST_WITHOUT_BEAT": "1",  # django-celery-beat itself imports Celery
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


# --------------------------------------------------------------------------- meta


def _tested_ids() -> set[str]:
    tested = {code for code, _, _ in SETTINGS_CASES}
    here = Path(__file__).parent
    for path in [*here.glob("test_checks*.py"), here / "test_beat_setup.py"]:
        tested |= set(re.findall(r'"([EW][01]\d\d)"', path.read_text()))
    return tested


def test_every_check_id_is_tested() -> None:
    assert set(checks.MESSAGES) <= _tested_ids()
    for code, passing, failing in SETTINGS_CASES:
        assert passing and failing, code


@pytest.mark.parametrize(
    ("overrides", "middleware", "expected"),
    [
        ({"TRACKER_KEY": "tk"}, [], {"W101"}),
        ({"TRACKER_KEY": "tk"}, ["django_synerise.middleware.SyneriseTrackerMiddleware"], set()),
        ({"TRACKER_KEY": "tk", "TRACKER_UUID_COOKIE": False}, [], set()),
        ({}, [], set()),
    ],
)
def test_tracker_middleware_w101(overrides: dict[str, Any], middleware: list[str],
                                 expected: set[str]) -> None:
    with override_settings(SYNERISE=synerise(**overrides), MIDDLEWARE=middleware):
        found = {m.id.removeprefix("django_synerise.") for m in checks.check_integration()}
    assert found & {"W101"} == expected


def test_signing_key_messages_never_contain_the_key() -> None:
    for value in (rsa_private_pem(1024), encrypted_rsa_pem(), rsa_public_pem()):
        with override_settings(SYNERISE=synerise(WEB_SDK_SIGNING_KEY=value, TRACKER_KEY="tk")):
            (message,) = checks.check_settings()
        assert message.id == "django_synerise.E104"
        body = value.splitlines()[1]
        assert body not in message.msg and body not in message.hint


def test_docs_table_lists_every_check_id() -> None:
    text = (ROOT / "docs" / "checks.rst").read_text()
    documented = re.findall(r"``django_synerise\.([EW]\d{3})``", text)
    assert sorted(documented) == sorted(checks.MESSAGES)
    for code, spec in checks.MESSAGES.items():
        row = (
            text[text.index(f"``django_synerise.{code}``") :].split("\n   * -")[0].split("\n\n")[0]
        )
        level = "Error" if spec.level is Error else "Warning"
        assert level in row, code
        assert ("deploy only" in row) is spec.deploy, code


def test_configuration_docs_cover_every_key() -> None:
    text = (ROOT / "docs" / "configuration.rst").read_text()
    for key in DEFAULTS:
        assert re.search(rf"^``{key}``$", text, re.MULTILINE), key
    for code in re.findall(r"django_synerise\.([EW]\d{3})", text):
        assert code in checks.MESSAGES, code


# --------------------------------------------------------------------------- rate limit cache

SHARED_CACHES = {
    "redis": "django.core.cache.backends.redis.RedisCache",
    "memcached": "django.core.cache.backends.memcached.PyMemcacheCache",
}
UNSHARED_CACHES = {
    "locmem": ("django.core.cache.backends.locmem.LocMemCache", "per process only"),
    "dummy": ("django.core.cache.backends.dummy.DummyCache", "there is no limit"),
    "db": ("django.core.cache.backends.db.DatabaseCache", "can exceed the limit"),
    "file": ("django.core.cache.backends.filebased.FileBasedCache", "can exceed the limit"),
}


@pytest.mark.parametrize("backend", SHARED_CACHES.values(), ids=SHARED_CACHES)
@pytest.mark.parametrize("rate", [3, 3.5, 50, 10_000])
def test_rate_limit_on_a_shared_cache_passes(backend: str, rate: float) -> None:
    caches = {"default": {"BACKEND": backend, "LOCATION": "127.0.0.1:1"}}
    with override_settings(SECRET_KEY=SECRET, CACHES=caches):
        assert settings_ids({"REFRESH_RATE_LIMIT": rate}) == set()


@pytest.mark.parametrize(("backend", "problem"), UNSHARED_CACHES.values(), ids=UNSHARED_CACHES)
def test_rate_limit_on_an_unshared_cache_warns_w007(backend: str, problem: str) -> None:
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"},
        "limits": {"BACKEND": backend, "LOCATION": "x"},
    }
    overrides = {"REFRESH_RATE_LIMIT": 50, "REFRESH_RATE_LIMIT_CACHE": "limits"}
    with override_settings(SECRET_KEY=SECRET, CACHES=caches, SYNERISE=synerise(**overrides)):
        (message,) = checks.check_settings()
    assert ids([message]) == {"W007"}
    assert isinstance(message, Warning)
    assert "'limits'" in message.msg and problem in message.msg



# --------------------------------------------------------------------------- login throttle cache


@pytest.mark.parametrize(("backend", "problem"), UNSHARED_CACHES.values(), ids=UNSHARED_CACHES)
def test_login_throttle_cache_w072_w073(backend: str, problem: str) -> None:
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"},
        "logins": {"BACKEND": backend, "LOCATION": "x"},
    }
    with override_settings(
        SECRET_KEY=SECRET, CACHES=caches, SYNERISE=synerise(LOGIN_THROTTLE_CACHE="logins")
    ):
        messages = checks.check_settings()
        deploy = ids(checks.check_deploy())
    if backend.endswith("LocMemCache"):
        # Fine for development and tests; `check --deploy` reports it when DEBUG is off.
        assert messages == []
        assert deploy == {"W073"}
        with override_settings(SECRET_KEY=SECRET, CACHES=caches, DEBUG=True,
                               SYNERISE=synerise(LOGIN_THROTTLE_CACHE="logins")):
            assert ids(checks.check_deploy()) == set()
        return
    (message,) = messages
    assert ids([message]) == {"W072"} and "'logins'" in message.msg
    assert problem.split(",")[0] in message.msg or problem in message.msg
    assert deploy == set()


# --------------------------------------------------------------------------- backend order


class OtherPasswordBackend:
    """Stands for an LDAP-style backend that checks passwords elsewhere."""

    def authenticate(self, request: Any, username: Any = None, password: Any = None) -> None:
        return None


class SubclassedModelBackend(ModelBackend):
    pass


OTHER = "tests.test_checks.OtherPasswordBackend"
SUB_MODEL = "tests.test_checks.SubclassedModelBackend"


@pytest.mark.parametrize(
    ("backends", "policy", "expected"),
    [
        ([BACKEND, MODEL_BACKEND], "non_local", set()),
        ([MODEL_BACKEND, BACKEND], "non_local", set()),
        ([BACKEND, SUB_MODEL], "non_staff", set()),
        ([BACKEND, MODEL_BACKEND], "all", {"W070"}),
        ([MODEL_BACKEND, BACKEND], "all", {"W070"}),
        ([BACKEND, OTHER, MODEL_BACKEND], "non_local", {"W071"}),
        ([BACKEND, OTHER], "non_staff", {"W071"}),
        ([BACKEND, OTHER], "all", {"W070", "W071"}),
        ([OTHER, BACKEND, MODEL_BACKEND], "non_local", set()),
        ([BACKEND, OTHER], "linked", set()),
        ([MODEL_BACKEND], "all", {"W005"}),
    ],
)
def test_backend_order_w070_w071(backends: list[str], policy: str, expected: set[str]) -> None:
    with override_settings(
        AUTHENTICATION_BACKENDS=backends,
        CELERY_BROKER_URL=None,
        SYNERISE=synerise(UPSTREAM_PASSWORDS=policy),
    ):
        messages = checks.check_integration()
    assert ids(messages) == expected
    for message in messages:
        assert isinstance(message, Warning)
        if message.id.endswith("W071"):
            assert OTHER in message.msg
        if message.id.endswith("W070"):
            model_after = MODEL_BACKEND in backends[backends.index(BACKEND) :]
            assert ("before ModelBackend" in message.msg) is model_after


@pytest.mark.django_db
def test_w080_reports_a_refresh_halt_only_when_databases_are_checked() -> None:
    from django.utils import timezone

    from django_synerise.models import RefreshHalt

    assert checks.check_refresh_halt(databases=["default"]) == []
    now = timezone.now()
    RefreshHalt.objects.create(reason="credentials_rejected", detail="403 credentials_rejected",
                               since=now, probe_at=now + timedelta(seconds=30))
    found = checks.check_refresh_halt(databases=["default"])
    assert ids(found) == {"W080"}
    assert "403 credentials_rejected" in found[0].msg
    assert checks.check_refresh_halt() == []
