"""Conditional login (``CONDITIONAL_LOGIN``) over real HTTP against FakeSynerise.

Every status a client can be held in, through the API (403 with a stable code, or the generic
401) and through the backend (``None`` plus the ``login_conditions_required`` signal).
"""

from __future__ import annotations

import pytest
import requests
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.signals import user_login_failed
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from django_synerise import services, signals
from django_synerise.exceptions import ConditionalAuthFailed, CredentialsRejected
from django_synerise.models import ClientToken, SyneriseAccount
from django_synerise.testing.fake import CONDITION_STATUSES, DEFAULT_CONDITIONS
from tests.fixtures_services import PASSWORD, add_client, capture, synerise_settings

pytestmark = pytest.mark.django_db

LOGIN_URL = "/synerise/auth/login/"
CONDITIONAL_PATH = "/sauth/v3/auth/login/client/conditional"
GENERIC_401 = {"detail": "Invalid credentials.", "code": "invalid_credentials"}
STEPS = {
    "ACTIVATION_REQUIRED": "activation_required",
    "REGISTRATION_REQUIRED": "registration_required",
    "APPROVAL_REQUIRED": "approval_required",
    "TERMS_ACCEPTANCE_REQUIRED": "terms_acceptance_required",
    "MFA_REQUIRED": "mfa_required",
}


@pytest.fixture
def fake(fake_synerise, settings):
    synerise_settings(settings, CONDITIONAL_LOGIN=True)
    fake_synerise.require_uuid = True
    return fake_synerise


def login(email="ann@example.com", password=PASSWORD):
    return APIClient().post(LOGIN_URL, {"email": email, "password": password}, format="json")


def paths(fake) -> list[str]:
    return [r.path for r in fake.requests]


def nothing_stored() -> bool:
    return not (
        get_user_model().objects.exists()
        or SyneriseAccount.objects.exists()
        or ClientToken.objects.exists()
    )


@pytest.mark.parametrize("status", sorted(STEPS))
def test_api_answers_403_with_the_code_and_conditions_of_each_status(fake, status):
    conditions = [{"type": status, "detail": {"step": 1}}, {"type": "EXTRA"}]
    add_client(fake, condition=status, conditions=conditions)
    with capture(signals.login_conditions_required) as sent:
        response = login()
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["code"] == STEPS[status]
    assert body["conditions"] == conditions
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) == {"detail", "code", "conditions"}
    assert paths(fake) == [CONDITIONAL_PATH]
    assert fake.requests[0].json["uuid"]  # the uuid is sent on this endpoint too
    assert [(s["status"], s["code"], s["identifier"]) for s in sent] == [
        (status, STEPS[status], "ann@example.com")
    ]
    assert nothing_stored()


def test_default_conditions_of_the_fake(fake):
    add_client(fake, condition="TERMS_ACCEPTANCE_REQUIRED")
    assert login().json()["conditions"] == DEFAULT_CONDITIONS["TERMS_ACCEPTANCE_REQUIRED"]


def test_unauthorized_status_is_the_generic_401(fake):
    add_client(fake, condition="UNAUTHORIZED")
    with capture(signals.login_conditions_required) as sent:
        response = login()
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert response["WWW-Authenticate"]
    assert sent == []
    assert nothing_stored()


def test_a_401_from_the_conditional_endpoint_is_the_generic_401(fake):
    add_client(fake)
    response = login(password="wrong")
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert paths(fake) == [CONDITIONAL_PATH]


def test_unknown_status_is_the_generic_401(fake):
    add_client(fake)
    fake.inject(200, path="conditional", body={"status": "PIN_ACTIVATION_REQUIRED",
                                               "conditions": []})
    response = login()
    assert response.status_code == 401
    assert response.json() == GENERIC_401


def test_success_signs_in_through_the_conditional_endpoint(fake):
    client = add_client(fake)
    response = login()
    assert response.status_code == 200, response.content
    assert response.json()["client_id"] == client.client_id
    assert paths(fake)[0] == CONDITIONAL_PATH
    assert "/sauth/v3/auth/login/client" not in paths(fake)
    assert ClientToken.objects.count() == 1


def test_released_client_signs_in(fake):
    client = add_client(fake, condition="APPROVAL_REQUIRED")
    assert login().status_code == 403
    fake.set_condition(client.client_id, None)
    assert login().status_code == 200


def test_switched_off_uses_the_plain_endpoint_and_a_generic_401(fake, settings):
    synerise_settings(settings, CONDITIONAL_LOGIN=False)
    add_client(fake, condition="TERMS_ACCEPTANCE_REQUIRED")
    response = login()
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert paths(fake) == ["/sauth/v3/auth/login/client"]


def test_provider_logins_keep_the_registering_endpoint(fake):
    token = fake.provider_token("OAUTH", subject="o-1", email="o@example.com")
    response = APIClient().post("/synerise/auth/login/oauth/",
                                {"identity_provider_token": token}, format="json")
    assert response.status_code == 200, response.content
    assert paths(fake)[0] == "/sauth/v3/auth/login/client"
    assert fake.client_for("OAUTH", "o-1") is not None  # registered on first login


def test_service_raises_the_typed_error(fake):
    add_client(fake, condition="MFA_REQUIRED")
    with pytest.raises(ConditionalAuthFailed) as caught:
        services.login(email="ann@example.com", password=PASSWORD)
    assert (caught.value.status, caught.value.code) == ("MFA_REQUIRED", "mfa_required")
    assert caught.value.conditions == DEFAULT_CONDITIONS["MFA_REQUIRED"]
    fake.set_condition(fake.clients[0].client_id, "UNAUTHORIZED")
    with pytest.raises(CredentialsRejected):
        services.login(email="ann@example.com", password=PASSWORD)


@pytest.mark.parametrize("status", sorted(STEPS))
def test_backend_returns_none_and_signals_each_status(fake, status):
    add_client(fake, condition=status)
    request = RequestFactory().post("/login/")
    with capture(signals.login_conditions_required) as sent, \
            capture(user_login_failed) as failed:
        user = authenticate(request, email="ann@example.com", password=PASSWORD)
    assert user is None
    assert len(sent) == 1
    assert sent[0]["status"] == status
    assert sent[0]["code"] == STEPS[status]
    assert sent[0]["request"] is request
    assert sent[0]["conditions"] == DEFAULT_CONDITIONS[status]
    assert len(failed) == 1
    assert nothing_stored()


def test_backend_unauthorized_status_sends_no_condition_signal(fake):
    add_client(fake, condition="UNAUTHORIZED")
    with capture(signals.login_conditions_required) as sent:
        assert authenticate(None, email="ann@example.com", password=PASSWORD) is None
    assert sent == []


def test_django_login_view_shows_the_form_again(fake):
    add_client(fake, condition="TERMS_ACCEPTANCE_REQUIRED")
    with capture(signals.login_conditions_required) as sent:
        response = Client().post("/accounts/login/",
                                 {"username": "ann@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert [s["code"] for s in sent] == ["terms_acceptance_required"]


def test_fake_control_api_puts_a_client_in_each_state(fake):
    created = requests.post(f"{fake.url}/__fake__/clients", json={
        "email": "bo@example.com", "password": PASSWORD, "condition": "ACTIVATION_REQUIRED",
    }, timeout=5).json()
    assert created["condition"] == "ACTIVATION_REQUIRED"
    assert login("bo@example.com").json()["code"] == "activation_required"
    for status in CONDITION_STATUSES:
        answer = requests.post(f"{fake.url}/__fake__/conditions", json={
            "client_id": created["client_id"], "status": status,
            "conditions": [{"type": "X"}],
        }, timeout=5)
        assert answer.status_code == 200
        assert answer.json()["condition"] == status
        response = login("bo@example.com")
        if status == "UNAUTHORIZED":
            assert response.status_code == 401
        else:
            assert (response.status_code, response.json()["code"]) == (403, STEPS[status])
            assert response.json()["conditions"] == [{"type": "X"}]
    released = requests.post(f"{fake.url}/__fake__/conditions",
                             json={"client_id": created["client_id"], "status": None}, timeout=5)
    assert released.json()["condition"] is None
    assert login("bo@example.com").status_code == 200
    bad = requests.post(f"{fake.url}/__fake__/conditions",
                        json={"client_id": created["client_id"], "status": "NOPE"}, timeout=5)
    assert bad.status_code == 400


def test_openapi_schema_documents_every_conditional_403():
    from django_synerise.api.schema import generate_schema

    schema = generate_schema()
    forbidden = schema["paths"]["/synerise/auth/login/"]["post"]["responses"]["403"]
    examples = forbidden["content"]["application/json"]["examples"].values()
    codes = {example["value"]["code"] for example in examples}
    assert codes == {"csrf_failed", *STEPS.values()}
    for example in examples:
        if example["value"]["code"] != "csrf_failed":
            assert isinstance(example["value"]["conditions"], list)
    properties = schema["components"]["schemas"]["Error"]["properties"]
    assert properties["conditions"]["type"] == "array"
