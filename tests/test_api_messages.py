"""The API's error bodies take their ``detail`` from the adapter's ``error_message()``."""

from __future__ import annotations

import pytest

from django_synerise.adapter import DefaultSyneriseAdapter
from django_synerise.messages import DEFAULT_ERROR_MESSAGES

from .api_helpers import GENERIC_401, LOGIN_URL

pytest_plugins = ["tests.fixtures_api"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_clean_state")]


class RewordingAdapter(DefaultSyneriseAdapter):
    """Rewords two codes and lists nothing else (the defaults fill in the rest)."""

    error_messages = {
        "credentials_rejected": "Wrong email or password.",
        "invalid": "Please check the form.",
    }


@pytest.fixture
def rewording(settings):
    settings.SYNERISE = {**settings.SYNERISE, "ADAPTER": "tests.test_api_messages.RewordingAdapter"}


def test_default_messages_are_the_api_bodies(fake_synerise, api) -> None:
    response = api.post(LOGIN_URL, {"email": "nobody@example.com", "password": "x"},
                        format="json")
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert GENERIC_401["detail"] == DEFAULT_ERROR_MESSAGES["credentials_rejected"]


@pytest.mark.usefixtures("rewording")
def test_adapter_rewords_the_generic_401(fake_synerise, api) -> None:
    response = api.post(LOGIN_URL, {"email": "nobody@example.com", "password": "x"},
                        format="json")
    assert response.status_code == 401
    assert response.json() == {"detail": "Wrong email or password.",
                               "code": "invalid_credentials"}


@pytest.mark.usefixtures("rewording")
def test_adapter_rewords_the_400_and_keeps_other_defaults(fake_synerise, api) -> None:
    response = api.post(LOGIN_URL, {"email": "nope", "password": ""}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Please check the form." and body["code"] == "invalid"
    adapter = RewordingAdapter()
    assert adapter.error_message("login_required") == DEFAULT_ERROR_MESSAGES["login_required"]
    assert adapter.error_message("no_such_code") == "Wrong email or password."
