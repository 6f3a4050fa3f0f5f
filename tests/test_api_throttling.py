"""Unit tests of the login throttles' building blocks."""

from __future__ import annotations

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from django_synerise.api.throttling import (
    LoginAccountThrottle,
    LoginIPThrottle,
    account_key,
    client_ip,
    parse_rate,
)

pytest_plugins = ["tests.fixtures_api"]
pytestmark = pytest.mark.usefixtures("api_clean_state")


@pytest.mark.parametrize("rate,expected", [
    ("30/min", (30, 60)), ("10/m", (10, 60)), ("5/s", (5, 1)), ("100/hour", (100, 3600)),
    ("1/day", (1, 86400)), (None, None),
])
def test_parse_rate(rate, expected) -> None:
    assert parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["", "x/min", "10", "10/fortnight", "-1/min"])
def test_parse_rate_rejects_garbage(rate) -> None:
    with pytest.raises(ValueError):
        parse_rate(rate)


def _request(xff: str | None = None, remote: str = "192.0.2.10", data=None) -> Request:
    extra = {"REMOTE_ADDR": remote}
    if xff is not None:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    request = Request(APIRequestFactory().post("/", data or {}, format="json", **extra))
    from rest_framework.parsers import JSONParser

    request.parsers = [JSONParser()]
    return request


def test_client_ip_ignores_xff_without_trusted_proxies(settings) -> None:
    settings.REST_FRAMEWORK = {}
    assert client_ip(_request("203.0.113.9")) == "192.0.2.10"
    settings.REST_FRAMEWORK = {"NUM_PROXIES": 0}
    assert client_ip(_request("203.0.113.9")) == "192.0.2.10"


def test_client_ip_with_trusted_proxies(settings) -> None:
    settings.REST_FRAMEWORK = {"NUM_PROXIES": 1}
    assert client_ip(_request("spoof, 203.0.113.9")) == "203.0.113.9"
    settings.REST_FRAMEWORK = {"NUM_PROXIES": 2}
    assert client_ip(_request("spoof, 203.0.113.9, 10.0.0.1")) == "203.0.113.9"
    assert client_ip(_request(None)) == "192.0.2.10"


@pytest.mark.parametrize("data,expected", [
    ({"email": " Alice@Example.COM "}, "alice@example.com"),
    ({"email": "ALICE@EXAMPLE.COM"}, "alice@example.com"),
    ({"email": "\uff41lice@example.com"}, "alice@example.com"),   # fullwidth a (NFKC)
    ({"custom_id": " C-1 "}, "c-1"),
    # No kind in the key: the same identifier as e-mail or custom id is one account.
    ({"custom_id": "Alice@example.com"}, "alice@example.com"),
    ({"email": ["x"]}, None),
    ({"email": ""}, None),
    ([], None),
    ("email", None),
])
def test_account_key(data, expected) -> None:
    assert account_key(data) == expected


def test_throttles_count_atomically_and_report_wait(settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": "2/min", "account": "3/min"}}
    ip, account = LoginIPThrottle(), LoginAccountThrottle()
    results = [ip.allow_request(_request(), None) for _ in range(3)]
    assert results == [True, True, False]
    assert 1 <= ip.wait() <= 66  # a minute and one bucket at most
    body = {"email": "a@example.com"}
    results = [account.allow_request(_request(data=body), None) for _ in range(4)]
    assert results == [True, True, True, False]
    # Another address for another account is not affected.
    assert LoginIPThrottle().allow_request(_request(remote="192.0.2.11"), None)


def test_disabled_scope_allows_everything(settings) -> None:
    settings.SYNERISE = {**settings.SYNERISE,
                         "LOGIN_THROTTLE_RATES": {"ip": None, "account": None}}
    assert all(LoginIPThrottle().allow_request(_request(), None) for _ in range(100))


def test_cache_keys_do_not_contain_the_email(settings) -> None:
    from django.core.cache import cache

    LoginAccountThrottle().allow_request(_request(data={"email": "secret@example.com"}), None)
    keys = list(cache._cache.keys())  # LocMemCache internals, tests only
    assert keys and not any("secret" in key for key in keys)
