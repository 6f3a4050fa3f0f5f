"""Tests of ``django_synerise.conf``: the live view of ``settings.SYNERISE``."""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_synerise.conf import DEFAULTS, IMPORT_STRINGS, SyneriseSettings, synerise_settings


class Adapter:
    """Importable target for import_setting tests."""


def test_every_default_is_readable_and_api_key_has_none() -> None:
    with override_settings(SYNERISE={}):
        for key, default in DEFAULTS.items():
            value = getattr(synerise_settings, key)
            if key == "BASE_URL":
                assert value == default.rstrip("/")
            else:
                assert value == default, key
        assert synerise_settings.API_KEY is None


def test_reads_are_live() -> None:
    with override_settings(SYNERISE={"API_KEY": "one", "REFRESH_MARGIN": 600}):
        assert synerise_settings.API_KEY == "one"
        assert synerise_settings.REFRESH_MARGIN == 600
        with override_settings(SYNERISE={"API_KEY": "two"}):
            assert synerise_settings.API_KEY == "two"
            assert DEFAULTS["REFRESH_MARGIN"] == synerise_settings.REFRESH_MARGIN
        assert synerise_settings.API_KEY == "one"


def test_pytest_django_settings_fixture_is_seen(settings: Any) -> None:
    settings.SYNERISE = {**settings.SYNERISE, "JWT_LEEWAY": 5}
    assert synerise_settings.JWT_LEEWAY == 5
    settings.SYNERISE = {"API_KEY": "x"}
    assert DEFAULTS["JWT_LEEWAY"] == synerise_settings.JWT_LEEWAY


def test_separate_instances_agree() -> None:
    with override_settings(SYNERISE={"API_KEY": "k", "AUTH_API": "v2"}):
        assert SyneriseSettings().AUTH_API == synerise_settings.AUTH_API == "v2"


@pytest.mark.parametrize("name", ["NOT_A_SETTING", "api_key", "REFRESH_MARGN", "DEFAULTS"])
def test_unknown_attribute_raises_attribute_error(name: str) -> None:
    with pytest.raises(AttributeError, match=name):
        getattr(synerise_settings, name)
    assert not hasattr(synerise_settings, name)


def test_unknown_keys_in_the_user_dict_are_not_exposed() -> None:
    with override_settings(SYNERISE={"API_KEY": "k", "TYPO_KEY": 1}):
        with pytest.raises(AttributeError):
            synerise_settings.TYPO_KEY  # noqa: B018
        assert synerise_settings.user_settings()["TYPO_KEY"] == 1


@pytest.mark.parametrize("value", [None, ["API_KEY"], "API_KEY=x", 3])
def test_non_mapping_synerise_behaves_as_empty(value: Any) -> None:
    with override_settings(SYNERISE=value):
        assert dict(synerise_settings.user_settings()) == {}
        assert synerise_settings.API_KEY is None
        assert DEFAULTS["TIMEOUT"] == synerise_settings.TIMEOUT


def test_missing_synerise_setting_behaves_as_empty() -> None:
    with override_settings():
        from django.conf import settings

        del settings.SYNERISE
        assert synerise_settings.API_KEY is None
        assert DEFAULTS["BASE_URL"] == synerise_settings.BASE_URL


@pytest.mark.parametrize(
    "mapping",
    [
        OrderedDict(API_KEY="k", LEASE_SECONDS=90),
        MappingProxyType({"API_KEY": "k", "LEASE_SECONDS": 90}),
    ],
)
def test_any_mapping_is_accepted(mapping: Any) -> None:
    with override_settings(SYNERISE=mapping):
        assert synerise_settings.API_KEY == "k"
        assert synerise_settings.LEASE_SECONDS == 90


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.synerise.com/", "https://api.synerise.com"),
        ("https://api.azu.synerise.com//", "https://api.azu.synerise.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ],
)
def test_base_url_drops_trailing_slashes(url: str, expected: str) -> None:
    with override_settings(SYNERISE={"API_KEY": "k", "BASE_URL": url}):
        assert expected == synerise_settings.BASE_URL


# --------------------------------------------------------------------------- TIMEOUT helpers


@pytest.mark.parametrize(
    ("timeout", "connect", "read"),
    [
        ((3.05, 10), 3.05, 10.0),
        ([2, 5], 2.0, 5.0),
        (7, 7.0, 7.0),
        (2.5, 2.5, 2.5),
    ],
)
def test_timeout_helpers(timeout: Any, connect: float, read: float) -> None:
    with override_settings(SYNERISE={"API_KEY": "k", "TIMEOUT": timeout}):
        assert synerise_settings.connect_timeout == connect
        assert synerise_settings.read_timeout == read
        assert isinstance(synerise_settings.connect_timeout, float)
        assert isinstance(synerise_settings.read_timeout, float)


def test_timeout_helpers_default() -> None:
    with override_settings(SYNERISE={"API_KEY": "k"}):
        assert (synerise_settings.connect_timeout, synerise_settings.read_timeout) == (3.05, 10.0)


# --------------------------------------------------------------------------- import_setting


def test_adapter_is_the_only_import_string() -> None:
    assert {"ADAPTER"} == IMPORT_STRINGS
    assert set(DEFAULTS) >= IMPORT_STRINGS


def test_import_setting_resolves_dotted_paths() -> None:
    with override_settings(SYNERISE={"API_KEY": "k", "ADAPTER": "tests.test_conf.Adapter"}):
        assert synerise_settings.import_setting("ADAPTER") is Adapter


def test_import_setting_resolves_the_default_adapter() -> None:
    from django_synerise.adapter import DefaultSyneriseAdapter

    with override_settings(SYNERISE={"API_KEY": "k"}):
        assert synerise_settings.import_setting("ADAPTER") is DefaultSyneriseAdapter


def test_import_setting_passes_objects_through() -> None:
    with override_settings(SYNERISE={"API_KEY": "k", "ADAPTER": Adapter}):
        assert synerise_settings.import_setting("ADAPTER") is Adapter


@pytest.mark.parametrize(
    "path", ["tests.test_conf.Missing", "no_such_module_xyz.Adapter", "nodots"]
)
def test_import_setting_error_names_the_key(path: str) -> None:
    conf = {"API_KEY": "k", "ADAPTER": path}
    with override_settings(SYNERISE=conf), pytest.raises(ImproperlyConfigured) as excinfo:
        synerise_settings.import_setting("ADAPTER")
    message = str(excinfo.value)
    assert "SYNERISE['ADAPTER']" in message
    assert repr(path) in message
    assert isinstance(excinfo.value.__cause__, ImportError)


def test_import_setting_of_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError):
        synerise_settings.import_setting("NOT_A_SETTING")


# --------------------------------------------------------------------------- typed attributes


def test_every_key_is_a_typed_property() -> None:
    properties = {
        name for name, value in vars(SyneriseSettings).items() if isinstance(value, property)
    }
    assert set(DEFAULTS) <= properties
    assert not hasattr(SyneriseSettings, "__getattr__")


def test_numbers_are_converted_once() -> None:
    conf = {
        "API_KEY": "k",
        "LEASE_SECONDS": 90,
        "REFRESH_BATCH_SIZE": 50.0,
        "MAX_TOKEN_LIFETIME": timedelta(hours=2),
        "SUPERSEDED_TOKEN_GRACE": None,
        "REFRESH_RATE_LIMIT": 25,
    }
    with override_settings(SYNERISE=conf):
        assert synerise_settings.LEASE_SECONDS == 90.0
        assert isinstance(synerise_settings.LEASE_SECONDS, float)
        assert synerise_settings.REFRESH_BATCH_SIZE == 50
        assert isinstance(synerise_settings.REFRESH_BATCH_SIZE, int)
        assert synerise_settings.MAX_TOKEN_LIFETIME == 7200.0
        assert synerise_settings.SUPERSEDED_TOKEN_GRACE is None
        assert synerise_settings.REFRESH_RATE_LIMIT == 25.0


def test_lone_keys_and_bytes_become_lists_of_text() -> None:
    conf = {
        "API_KEY": "k",
        "TOKEN_ENCRYPTION_KEYS": b"key",
        "JWT_ALGORITHMS": "RS512",
        "OAUTH_SIGNING_KEYS": ("pem", b"bytes"),
    }
    with override_settings(SYNERISE=conf):
        assert synerise_settings.TOKEN_ENCRYPTION_KEYS == ["key"]
        assert synerise_settings.JWT_ALGORITHMS == ["RS512"]
        assert synerise_settings.OAUTH_SIGNING_KEYS == ["pem", "bytes"]


def test_bad_values_are_not_validated_by_the_attributes() -> None:
    """Range and choice problems are the checks' business: the attributes pass them on."""
    conf = {"API_KEY": 3, "AUTH_API": "v9", "REFRESH_MARGIN": 10**6, "BUSINESS_PROFILE_ID": 12}
    with override_settings(SYNERISE=conf):
        assert synerise_settings.API_KEY is None
        assert synerise_settings.AUTH_API == "v9"
        assert synerise_settings.REFRESH_MARGIN == 10**6
        assert synerise_settings.BUSINESS_PROFILE_ID == "12"
        assert synerise_settings.raw("API_KEY") == 3
