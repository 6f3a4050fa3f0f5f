"""OpenAPI schema of the HTTP API (drf-spectacular) and schemathesis against a live server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("drf_spectacular")

from django_synerise.api.schema import generate_schema  # noqa: E402

from .api_helpers import PASSWORD  # noqa: E402

pytest_plugins = ["tests.fixtures_api"]
pytestmark = pytest.mark.usefixtures("api_clean_state")

ENDPOINTS = {
    ("/synerise/auth/login/", "post"): {"200", "400", "401", "403", "405", "413", "415", "429",
                                        "503"},
    ("/synerise/auth/login/{provider}/", "post"): {"200", "400", "401", "403", "413", "415",
                                                    "429", "503"},
    ("/synerise/auth/refresh/", "post"): {"200", "401", "403", "503"},
    ("/synerise/auth/token/", "get"): {"200", "401", "403", "503"},
    ("/synerise/auth/logout/", "post"): {"204", "401", "403", "503"},
    ("/synerise/tracking/token/", "get"): {"200", "401", "403", "404"},
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return generate_schema()


def test_every_endpoint_is_documented_with_its_errors(schema) -> None:
    paths = schema["paths"]
    assert set(paths) == {path for path, _ in ENDPOINTS}
    for (path, method), statuses in ENDPOINTS.items():
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), (path, method)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/Error")
            if status == "200":
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/WebSdkToken" if "tracking" in path else "/TokenResponse")


def test_operation_ids_are_stable(schema) -> None:
    ids = {op["operationId"] for item in schema["paths"].values() for op in item.values()}
    assert ids == {"synerise_login", "synerise_provider_login", "synerise_refresh",
                   "synerise_token", "synerise_logout", "synerise_web_sdk_token"}


def test_request_bodies_and_security(schema) -> None:
    login = schema["paths"]["/synerise/auth/login/"]["post"]
    assert login.get("security", []) in ([], [{}])  # no authentication on login
    body = login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/Login")
    props = schema["components"]["schemas"]["Login"]["properties"]
    assert {"email", "custom_id", "password", "uuid", "device_id"} <= set(props)
    assert props["password"]["maxLength"] == 1024
    provider = schema["paths"]["/synerise/auth/login/{provider}/"]["post"]
    [param] = [p for p in provider["parameters"] if p["name"] == "provider"]
    assert param["schema"]["enum"] == ["apple", "facebook", "google", "oauth"]
    token = schema["paths"]["/synerise/auth/token/"]["get"]
    schemes = {name for requirement in token["security"] for name in requirement}
    assert "SyneriseBearer" in schemes
    bearer = schema["components"]["securitySchemes"]["SyneriseBearer"]
    assert bearer == {**bearer, "type": "http", "scheme": "bearer"}
    error = schema["components"]["schemas"]["Error"]
    assert {"detail", "code"} <= set(error["required"])


def test_schema_info(schema) -> None:
    assert schema["info"]["title"] == "django-synerise API"


def test_schema_is_valid_openapi(schema) -> None:
    from drf_spectacular.validation import validate_schema

    validate_schema(schema)


def test_make_schema_command_writes_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    subprocess.run(
        [sys.executable, "-m", "django_synerise.api", "--file", str(out)],
        check=True, cwd=Path(__file__).resolve().parent.parent,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )
    written = json.loads(out.read_text())
    assert written["openapi"].startswith("3.")
    assert "/synerise/auth/login/" in written["paths"]


# --------------------------------------------------------------------------- schemathesis

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402


@pytest.fixture
def live_api(api_live_server, fake_synerise):
    """The generated schema, plus a Bearer token of a signed-in user, on a live server."""
    import requests

    fake_synerise.add_client(email="st@example.com", password=PASSWORD)
    response = requests.post(f"{api_live_server}/synerise/auth/login/",
                             json={"email": "st@example.com", "password": PASSWORD}, timeout=10)
    assert response.status_code == 200, response.text
    return schemathesis.openapi.from_dict(generate_schema()), response.json()["token"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("path,method", sorted(ENDPOINTS))
def test_schemathesis_no_500_and_conforming_responses(api_live_server, live_api, path,
                                                      method, mode) -> None:
    """Up to 25 generated requests per operation and mode (valid data, then data violating
    the schema): never a 5xx other than the documented 503, and every response matches the
    schema (body conforming)."""
    from hypothesis import given
    from schemathesis.generation import GenerationMode

    schema, token = live_api
    operation = schema[path][method.upper()]
    headers = {} if path.endswith("/logout/") else {"Authorization": f"Bearer {token}"}

    @given(case=operation.as_strategy(GenerationMode(mode)))
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(base_url=api_live_server, headers=headers,
                               checks=[not_a_server_error, response_schema_conformance])

    run()


def test_published_schema_is_up_to_date() -> None:
    """``docs/_static/openapi.yaml`` (linked from the docs) matches the generated schema."""
    from drf_spectacular.renderers import OpenApiYamlRenderer

    published = Path(__file__).resolve().parent.parent / "docs" / "_static" / "openapi.yaml"
    generated = OpenApiYamlRenderer().render(generate_schema("synerise/"), renderer_context={})
    assert published.read_bytes() == generated, "run `make schema` and commit the result"
