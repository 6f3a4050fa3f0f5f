"""``{% synerise_tracking_code %}``, Web SDK tokens and ``GET tracking/token/``.

Users sign in over real HTTP against FakeSynerise; the Web SDK token is checked with the
public part of ``WEB_SDK_SIGNING_KEY`` as Synerise would.
"""

from __future__ import annotations

import html
import json
import re
import time

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template
from django.test import RequestFactory
from rest_framework.test import APIClient

from django_synerise import services
from django_synerise.profile_uuid import email_uuid
from django_synerise.web_sdk import WebSdkToken, mint, public_key_pem
from tests.fixtures_services import PASSWORD, add_client, synerise_settings
from tests.web_sdk_keys import rsa_private_pem, rsa_public_pem

pytestmark = pytest.mark.django_db

TRACKER_KEY = "7d97fd94-647a-489c-8be6-4d40b4c0eca2"
TOKEN_URL = "/synerise/tracking/token/"
CONFIG_RE = re.compile(
    r'<script id="synerise-tracking-config" type="application/json">(.*?)</script>', re.S
)


@pytest.fixture
def tracking(fake_synerise, settings):
    synerise_settings(settings, TRACKER_KEY=TRACKER_KEY, WEB_SDK_SIGNING_KEY=rsa_private_pem())
    return fake_synerise


def signed_in_user(fake, email="ann@example.com"):
    add_client(fake, email)
    client = APIClient()
    response = client.post("/synerise/auth/login/", {"email": email, "password": PASSWORD},
                           format="json")
    assert response.status_code == 200, response.content
    return get_user_model().objects.get(pk=response.json()["user_id"]), client


def render(user=None, template="{% load synerise %}{% synerise_tracking_code %}", **context):
    request = RequestFactory().get("/")
    request.user = user or AnonymousUser()
    return Template(template).render(Context({"request": request, **context}))


def config_of(output: str) -> dict:
    match = CONFIG_RE.search(output)
    assert match, output
    return json.loads(match.group(1))


def verify(token: str) -> dict:
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "typ": "JWT"}
    return jwt.decode(token, rsa_public_pem(), algorithms=["RS256"],
                      options={"require": ["uuid", "iat", "exp", "jti"]})


def test_nothing_without_a_tracker_key(fake_synerise, settings):
    synerise_settings(settings, WEB_SDK_SIGNING_KEY=rsa_private_pem())
    user, _ = signed_in_user(fake_synerise)
    assert render(user).strip() == ""
    assert render().strip() == ""


def test_anonymous_page_has_the_snippet_without_token(tracking):
    output = render()
    config = config_of(output)
    assert config["trackerKey"] == TRACKER_KEY
    assert config["trackingDomain"] == "https://web.snrbox.com"
    assert config["scriptUrl"] == "https://web.snrbox.com/synerise-javascript-sdk.min.js"
    assert config["token"] is None and config["tokenUrl"] is None
    assert "SR.init" in output and "clearAccessToken" in output
    assert " onload=" not in output and "onclick" not in output  # no inline handler attributes
    assert "nonce=" not in output


def test_signed_in_page_carries_a_web_sdk_token_that_verifies(tracking):
    user, _ = signed_in_user(tracking)
    before = int(time.time())
    config = config_of(render(user))
    claims = verify(config["token"])
    account = user.synerise_account
    assert claims["uuid"] == account.uuid == tracking.clients[0].uuid
    assert claims["email"] == "ann@example.com"
    assert "customId" not in claims
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 600 == config["expiresIn"]
    assert config["tokenUrl"] == TOKEN_URL
    # Another key does not verify it.
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(config["token"], rsa_public_pem(3072), algorithms=["RS256"])


def test_token_of_a_custom_id_client_and_a_missing_uuid(tracking, settings):
    synerise_settings(settings, WEB_SDK_TOKEN_LIFETIME=120)
    tracking.add_client(custom_id="card-9", email="cid@example.com", password=PASSWORD)
    response = APIClient().post("/synerise/auth/login/",
                                {"custom_id": "card-9", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    user = get_user_model().objects.get(pk=response.json()["user_id"])
    claims = verify(config_of(render(user))["token"])
    assert claims["customId"] == "card-9"
    assert claims["exp"] - claims["iat"] == 120
    user.synerise_account.uuid = ""
    user.synerise_account.save()
    assert verify(config_of(render(user))["token"])["uuid"] == email_uuid("cid@example.com")


def test_signed_in_without_signing_key_has_no_token(tracking, settings):
    synerise_settings(settings, WEB_SDK_SIGNING_KEY=None)
    user, _ = signed_in_user(tracking)
    config = config_of(render(user))
    assert config["token"] is None


def test_local_user_without_synerise_account_has_no_token(tracking):
    user = get_user_model().objects.create_user("local", password="x")
    assert config_of(render(user))["token"] is None


def test_nonce_from_argument_context_and_request(tracking):
    explicit = render(template="{% load synerise %}{% synerise_tracking_code nonce='abc123' %}")
    assert '<script nonce="abc123">' in explicit
    from_context = render(csp_nonce="ctx456")
    assert '<script nonce="ctx456">' in from_context
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    request.csp_nonce = "req789"
    output = Template("{% load synerise %}{% synerise_tracking_code %}").render(
        Context({"request": request}))
    assert '<script nonce="req789">' in output
    quoted = render(template='{% load synerise %}{% synerise_tracking_code nonce=n %}',
                    n='"><script>alert(1)</script>')
    assert "<script>alert(1)" not in quoted
    assert html.escape('"><script>', quote=True) in quoted


def test_tracking_domain_setting(tracking, settings):
    synerise_settings(settings, TRACKER_DOMAIN="https://web.geb.snrbox.com/")
    config = config_of(render())
    assert config["scriptUrl"] == "https://web.geb.snrbox.com/synerise-javascript-sdk.min.js"
    assert config["trackingDomain"] == "https://web.geb.snrbox.com"


# --------------------------------------------------------------------------- the endpoint


def test_token_endpoint_renews_for_the_session_user(tracking):
    user, client = signed_in_user(tracking)
    response = client.get(TOKEN_URL)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "expires_at", "expires_in"}
    claims = verify(body["token"])
    assert claims["uuid"] == user.synerise_account.uuid
    assert body["expires_in"] == 600


def test_token_endpoint_refuses_anonymous_and_answers_404_without_key(tracking, settings):
    response = APIClient().get(TOKEN_URL)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    _, client = signed_in_user(tracking)
    synerise_settings(settings, WEB_SDK_SIGNING_KEY=None)
    response = client.get(TOKEN_URL)
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_token_endpoint_404_for_a_local_user(tracking):
    user = get_user_model().objects.create_user("local", password="x")
    client = APIClient()
    client.force_login(user)
    assert client.get(TOKEN_URL).status_code == 404


# --------------------------------------------------------------------------- web_sdk module


def test_mint_claims_and_repr_never_show_the_token():
    minted = mint(rsa_private_pem(), profile_uuid="0f8fad5b-d9cb-469f-a165-70867728950e",
                  email="a@example.com", custom_id="c-1", lifetime=300, now=1_900_000_000)
    assert isinstance(minted, WebSdkToken)
    claims = jwt.decode(minted.token, rsa_public_pem(), algorithms=["RS256"],
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["uuid"] == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert (claims["email"], claims["customId"]) == ("a@example.com", "c-1")
    assert (claims["iat"], claims["exp"]) == (1_900_000_000, 1_900_000_300)
    assert minted.token not in repr(minted) and minted.token not in str(minted)


def test_public_key_pem_is_what_to_upload():
    assert public_key_pem(rsa_private_pem()) == rsa_public_pem()


def test_service_returns_none_for_inactive_users(tracking):
    user, _ = signed_in_user(tracking)
    assert services.web_sdk_token(user) is not None
    user.is_active = False
    assert services.web_sdk_token(user) is None


def test_neither_signing_key_nor_web_sdk_token_is_logged(tracking, caplog):
    caplog.set_level("DEBUG")
    user, client = signed_in_user(tracking)
    token = config_of(render(user))["token"]
    renewed = client.get(TOKEN_URL).json()["token"]
    key_body = "".join(rsa_private_pem().splitlines()[1:-1])
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    for secret in (token, renewed, key_body[:40], key_body[-40:]):
        assert secret not in text
