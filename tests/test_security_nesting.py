"""Nesting and size bombs in request bodies: a 400 with a stable code, never a 500.

A body that parses but nests deep enough to exhaust the recursion limit later (while a
serializer re-encodes it) used to answer 500. The parser now refuses anything deeper than
``MAX_JSON_DEPTH``, and ``agreements`` / ``attributes`` carry their own depth and size caps.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from django_synerise.api.parsers import MAX_JSON_DEPTH, StrictJSONParser, json_depth
from django_synerise.testing import FakeSynerise

from .api_helpers import (
    LOGIN_URL,
    LOGOUT_URL,
    REFRESH_URL,
    TOKEN_URL,
    provider_token,
    provider_url,
    sign_in,
    upstream_calls,
)

pytest_plugins = ["tests.fixtures_api"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_clean_state")]

#: 1 to 5,000, dense where the recursion limit (1,000 frames) bites.
DEPTHS = sorted(
    {1, 2, 3, 5, 10, 20, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 50, 100, 200,
     400, 600, 800, 850, 880, 890}
    | set(range(900, 1001))
    | {1100, 1500, 2000, 3000, 5000}
)


def nested_list(depth: int) -> str:
    """``[[...[1]...]]``: ``depth`` arrays around one number."""
    return "[" * depth + "1" + "]" * depth


def nested_object(depth: int) -> str:
    """``{"a": {"a": ... 1}}``: ``depth`` objects around one number."""
    return '{"a":' * depth + "1" + "}" * depth


def _raw_client() -> APIClient:
    """A client that reports a server error as a 500 response instead of re-raising it."""
    return APIClient(raise_request_exception=False)


def _post(client: APIClient, url: str, body: str) -> Any:
    cache.clear()  # login throttle counters: this file is about parsing, not throttling
    return client.generic("POST", url, body.encode(), content_type="application/json")


def _assert_clean_400(response: Any, fake: FakeSynerise) -> dict[str, Any]:
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["code"] in {"invalid", "parse_error"}
    assert upstream_calls(fake) == []
    return body


# --------------------------------------------------------------------------- observation 4


def test_observation_4_attributes_nested_943_deep_is_400_not_500(fake_synerise) -> None:
    """The reported body: ``attributes`` holding a list nested ~943 deep (every depth around
    it too). It parsed, then a ``RecursionError`` re-encoding it answered 500."""
    client = _raw_client()
    token = provider_token(fake_synerise, "FACEBOOK", subject="fb-1")
    for depth in range(900, 1000):
        body = f'{{"identity_provider_token": {json.dumps(token)}, "attributes": ' \
               f'{{"a": {nested_list(depth)}}}}}'
        response = _post(client, provider_url("facebook"), body)
        assert response.status_code == 400, (depth, response.status_code)
    assert upstream_calls(fake_synerise) == []


# --------------------------------------------------------------------------- the fuzz


def test_every_json_field_of_every_endpoint_nested_1_to_5000_is_never_a_500(
    fake_synerise, settings
) -> None:
    """Every field of every endpoint (and each body as a whole) holding an array or an object
    nested 1 to 5,000 deep: always a clean 4xx / 2xx, never a 500."""
    # The few bodies that sign in must not give the anonymous client a session.
    settings.SYNERISE = {**settings.SYNERISE, "LOGIN_STARTS_SESSION": False}
    signed_in = sign_in(fake_synerise)
    fake_synerise.clear_requests()
    anonymous = _raw_client()
    bearer = _raw_client()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {signed_in.token}")

    login_fields = ["email", "custom_id", "password", "uuid", "device_id"]
    provider_fields = ["identity_provider_token", "uuid", "device_id", "agreements",
                       "attributes"]
    bases = {provider: '"identity_provider_token": '
             + json.dumps(provider_token(fake_synerise, provider.upper(), subject=f"{provider}-1"))
             for provider in ("facebook", "google")}
    statuses: dict[tuple[str, str], set[int]] = {}

    def record(key: tuple[str, str], response: Any) -> None:
        statuses.setdefault(key, set()).add(response.status_code)
        assert response.status_code != 500 and response.status_code < 500, (
            key, response.status_code, response.content[:200])

    for depth in DEPTHS:
        for shape, make in (("list", nested_list), ("object", nested_object)):
            value = make(depth)
            # Each body as a whole.
            for url in (LOGIN_URL, provider_url("facebook"), REFRESH_URL, LOGOUT_URL):
                client = bearer if url == REFRESH_URL else anonymous
                record((url, "<body>"), _post(client, url, value))
            # Each field of the password login.
            for field in login_fields:
                others = {"email": "a@example.com", "password": "pw"}
                others.pop(field, None)
                prefix = "".join(f"{json.dumps(k)}: {json.dumps(v)}, "
                                 for k, v in others.items())
                response = _post(anonymous, LOGIN_URL, f'{{{prefix}"{field}": {value}}}')
                record((LOGIN_URL, field), response)
                assert response.status_code == 400, (field, depth)
                assert response.json()["code"] in {"invalid", "parse_error"}
            # Each field of every provider login, and one level down in the two objects.
            for provider, provider_base in bases.items():
                for field in provider_fields:
                    prefix = "" if field == "identity_provider_token" else provider_base + ", "
                    response = _post(anonymous, provider_url(provider),
                                     f'{{{prefix}"{field}": {value}}}')
                    record((provider, field), response)
                    # {"a": 1} is a valid set of attributes: the one body that signs in.
                    valid = field == "attributes" and shape == "object" and depth == 1
                    assert response.status_code == (200 if valid else 400), (provider, field)
                for field in ("agreements", "attributes"):
                    response = _post(anonymous, provider_url(provider),
                                     f'{{{provider_base}, "{field}": {{"k": {value}}}}}')
                    record((provider, f"{field}.k"), response)
                    assert response.status_code == 400, (provider, field, depth)
                    assert response.json()["code"] in {"invalid", "parse_error"}
            # The token endpoint takes no body; a GET with one must not matter either.
            response = bearer.generic("GET", TOKEN_URL, value.encode(),
                                      content_type="application/json")
            record((TOKEN_URL, "<body>"), response)

    # The authenticated endpoints ignore bodies they do not read; none was a server error.
    assert statuses[(REFRESH_URL, "<body>")] == {200}
    assert statuses[(TOKEN_URL, "<body>")] == {200}
    assert statuses[(LOGOUT_URL, "<body>")] == {401}
    # Only the valid bodies above reached Synerise (one login per provider).
    logins = [call for call in upstream_calls(fake_synerise) if call.endswith("/login/client")]
    assert len(logins) == 2


# --------------------------------------------------------------------------- the limits


@pytest.mark.parametrize("shape", [nested_list, nested_object])
def test_parser_accepts_max_depth_and_refuses_one_more(shape) -> None:
    parser = StrictJSONParser()

    def parse(text: str) -> Any:
        import io

        return parser.parse(io.BytesIO(text.encode()))

    assert json_depth(parse(shape(MAX_JSON_DEPTH)), limit=10_000) == MAX_JSON_DEPTH
    from rest_framework.exceptions import ParseError

    with pytest.raises(ParseError) as excinfo:
        parse(shape(MAX_JSON_DEPTH + 1))
    assert "nested too deeply" in str(excinfo.value.detail)
    assert excinfo.value.get_codes() == "parse_error"


def test_json_depth_counts_and_stops_early() -> None:
    assert json_depth(1, limit=5) == 0
    assert json_depth({}, limit=5) == 1
    assert json_depth({"a": [1, {"b": []}]}, limit=5) == 4
    assert json_depth([[[[[[[[]]]]]]]], limit=3) == 4  # stops one past the limit
    deep: list[Any] = []
    for _ in range(100_000):  # no recursion: a depth far past the recursion limit is fine
        deep = [deep]
    assert json_depth(deep, limit=64) == 65


def test_body_nested_past_max_depth_is_parse_error(fake_synerise) -> None:
    body = '{"email": "a@example.com", "password": "pw", "x": ' \
           + nested_list(MAX_JSON_DEPTH) + "}"
    response = _post(_raw_client(), LOGIN_URL, body)
    assert _assert_clean_400(response, fake_synerise)["code"] == "parse_error"
    assert response.json()["detail"] == "JSON parse error - the document is nested too deeply."


@pytest.mark.parametrize("field,value,code", [
    ("attributes", {"a": [1]}, "max_depth"),
    ("attributes", {"a": {"b": 1}}, "max_depth"),
    ("attributes", {"a": [[[[[[[[[[1]]]]]]]]]]}, "max_depth"),
    ("attributes", {f"k{i}": 1 for i in range(51)}, "max_size"),
    ("attributes", {f"k{i}": "x" * 1000 for i in range(9)}, "max_size"),
    ("agreements", {"email": [True]}, "max_depth"),
    ("agreements", {"email": {"push": True}}, "max_depth"),
    ("agreements", {f"k{i}": True for i in range(17)}, "max_size"),
])
def test_agreements_and_attributes_limits_have_stable_codes(fake_synerise, field, value,
                                                            code) -> None:
    token = provider_token(fake_synerise, "FACEBOOK", subject="fb-1")
    response = _raw_client().post(provider_url("facebook"),
                                  {"identity_provider_token": token, field: value},
                                  format="json")
    body = _assert_clean_400(response, fake_synerise)
    assert body["errors"] == [{"field": field, "code": code, "message": body["errors"][0][
        "message"]}]


def test_agreements_and_attributes_at_their_limits_are_accepted(fake_synerise) -> None:
    token = provider_token(fake_synerise, "FACEBOOK", subject="fb-1")
    attributes = {f"k{i}": "x" * 100 for i in range(50)}
    agreements = {f"k{i}": True for i in range(16)}
    response = _raw_client().post(provider_url("facebook"),
                                  {"identity_provider_token": token,
                                   "attributes": attributes, "agreements": agreements},
                                  format="json")
    assert response.status_code == 200, response.content
    sent = [r.json for r in fake_synerise.requests if r.path.endswith("/login/client")]
    assert sent and sent[0]["attributes"] == attributes
