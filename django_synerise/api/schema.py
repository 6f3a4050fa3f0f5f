"""OpenAPI (drf-spectacular) description of the django-synerise endpoints.

drf-spectacular is optional: this module is imported only when it is installed
(:mod:`django_synerise.api.views` checks), and nothing else imports it. It registers an
authentication extension for :class:`~django_synerise.authentication.SyneriseTokenAuthentication`
and view extensions that document every body, response and error without decorating the
views themselves. :func:`generate_schema` returns the schema of the endpoints alone.
"""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)

from .. import __version__
from .errors import CONDITIONAL_DETAILS, GENERIC_401
from .serializers import (
    PROVIDERS,
    ErrorSerializer,
    LoginSerializer,
    ProviderLoginSerializer,
    TokenResponseSerializer,
    WebSdkTokenSerializer,
)

__all__ = ["SyneriseTokenAuthenticationScheme", "error_responses", "generate_schema"]

_TOKEN_EXAMPLE = OpenApiExample(
    "Token",
    value={
        "token": "eyJhbGciOiJSUzUxMiIsInR5cCI6IkpXVCJ9.eyJjbElkIjoxMDB9.c2ln",  # nosec B105
        "expires_at": "2026-01-01T12:00:00Z",
        "client_id": "100000001",
        "user_id": "42",
    },
    response_only=True,
)

_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "Invalid input: field errors, or a body that is not one JSON document.",
        {
            "detail": "Invalid input.",
            "code": "invalid",
            "errors": [
                {"field": "password", "code": "required", "message": "This field is required."}
            ],
        },
    ),
    401: (
        "Rejected credentials (one generic body whatever the reason), missing "
        "authentication, or ``login_required`` when the Synerise session is over.",
        dict(GENERIC_401),
    ),
    403: (
        "CSRF failure (session cookie without a valid CSRF token).",
        {"detail": "CSRF Failed: CSRF token missing.", "code": "csrf_failed"},
    ),
    405: (
        "Method not allowed; see the ``Allow`` header.",
        {"detail": 'Method "GET" not allowed.', "code": "method_not_allowed"},
    ),
    406: (
        "The ``Accept`` header excludes JSON.",
        {"detail": "Could not satisfy the request Accept header.", "code": "not_acceptable"},
    ),
    409: (
        "The account cannot be linked (adapter conflict).",
        {
            "detail": "This Synerise client cannot be linked to this user.",
            "code": "account_conflict",
        },
    ),
    404: (
        "Nothing to give: no ``WEB_SDK_SIGNING_KEY``, or the user has no Synerise client.",
        {"detail": "Not found.", "code": "not_found"},
    ),
    413: (
        "Body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE``.",
        {"detail": "Request body is too large.", "code": "request_too_large"},
    ),
    415: (
        "Body is not ``application/json``.",
        {
            "detail": 'Unsupported media type "text/plain" in request.',
            "code": "unsupported_media_type",
        },
    ),
    429: (
        "Throttled; retry after ``Retry-After`` seconds.",
        {"detail": "Too many requests. Try again later.", "code": "throttled", "retry_after": 42},
    ),
    502: (
        "Synerise sent an answer that could not be used; retry after ``Retry-After`` seconds.",
        {
            "detail": "Synerise sent an answer that could not be used. Try again later.",
            "code": "synerise_bad_response",
        },
    ),
    503: (
        "Synerise is unreachable or failing; retry after ``Retry-After`` seconds.",
        {
            "detail": "Synerise is temporarily unavailable. Try again later.",
            "code": "synerise_unavailable",
        },
    ),
}

_LOGIN_ERRORS = (400, 401, 403, 405, 406, 409, 413, 415, 429, 502, 503)

#: Example ``conditions`` of each conditional-login 403 (Synerise sends free-form objects).
_CONDITION_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "activation_required": [{"type": "ACTIVATION"}],
    "registration_required": [{"type": "REGISTRATION"}],
    "approval_required": [{"type": "APPROVAL"}],
    "terms_acceptance_required": [{"type": "TERMS_ACCEPTANCE", "terms": ["terms-of-service"]}],
    "mfa_required": [{"type": "MFA", "methods": ["EMAIL"]}],
}


def _password_login_403() -> OpenApiResponse:
    """The 403 of ``POST auth/login/``: CSRF, or a conditional-login status."""
    examples = [
        OpenApiExample(
            "csrf_failed", value=_ERRORS[403][1], response_only=True, status_codes=["403"]
        )
    ]
    for code, conditions in _CONDITION_EXAMPLES.items():
        examples.append(
            OpenApiExample(
                code,
                value={"detail": CONDITIONAL_DETAILS[code], "code": code, "conditions": conditions},
                response_only=True,
                status_codes=["403"],
            )
        )
    return OpenApiResponse(
        response=ErrorSerializer,
        description="CSRF failure (``csrf_failed``), or, with ``CONDITIONAL_LOGIN`` on, a step "
        "Synerise requires before it signs the client in: ``activation_required``, "
        "``registration_required``, ``approval_required``, ``terms_acceptance_required`` or "
        "``mfa_required``, with Synerise's ``conditions`` at the top level.",
        examples=examples,
    )


_AUTHENTICATED_ERRORS = (400, 401, 403, 405, 406, 413, 415, 502, 503)


def error_responses(statuses: tuple[int, ...]) -> dict[int, OpenApiResponse]:
    """Return ``{status: OpenApiResponse(ErrorSerializer, example)}`` for ``statuses``."""
    return {
        code: OpenApiResponse(
            response=ErrorSerializer,
            description=_ERRORS[code][0],
            examples=[
                OpenApiExample(
                    f"{code}", value=_ERRORS[code][1], response_only=True, status_codes=[str(code)]
                )
            ],
        )
        for code in statuses
    }


def _token_responses(errors: tuple[int, ...]) -> dict[int, Any]:
    return {
        200: OpenApiResponse(
            TokenResponseSerializer,
            examples=[_TOKEN_EXAMPLE],
            description="The token (``Cache-Control: no-store``).",
        ),
        **error_responses(errors),
    }


#: Operation descriptions (the views' docstrings are for Python readers).
_DESCRIPTIONS: dict[str, str] = {
    "synerise_login": (
        "Exactly one of ``email`` and ``custom_id``, plus ``password``. Starts a Django session "
        "when ``LOGIN_STARTS_SESSION`` is on (CSRF is then required when the request carries a "
        "session cookie) and then resets the tracker's ``_snrs_uuid`` cookie to the client's "
        "uuid. The uuid sent to Synerise is ``uuid``, else the ``_snrs_uuid`` cookie, else the "
        "one stored from an earlier login, else the uuid5 of the e-mail. Any rejected "
        "credential gets the same 401 body; with ``CONDITIONAL_LOGIN`` on, a step Synerise "
        "requires first (activation, terms, MFA...) gets a 403 with its own ``code``."
    ),
    "synerise_provider_login": (
        "Synerise verifies ``identity_provider_token`` and creates the client on its first "
        "login; the user is linked by the Synerise client id. Google and Apple tokens must be "
        "JWTs (three segments), Facebook and OAuth tokens printable ASCII; at most "
        "``MAX_TOKEN_BYTES`` bytes."
    ),
    "synerise_refresh": (
        "Refreshes the caller's own token (one Synerise call however many concurrent requests; "
        "a token obtained in the last minute is returned as is)."
    ),
    "synerise_token": (  # nosec B105
        "A valid token of the caller, refreshed first when it is inside ``REFRESH_MARGIN``."
    ),
    "synerise_logout": ("Revokes the stored token and ends the Django session, if any."),
    "synerise_web_sdk_token": (  # nosec B105
        "A fresh Web SDK token (RS256, signed with ``WEB_SDK_SIGNING_KEY``) for the caller's "
        "page to pass to the Synerise web tracker before the previous one ends. 404 when "
        "there is none to give (no signing key, or no linked Synerise client)."
    ),
}


class SyneriseTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """``Authorization: Bearer <Synerise client token>`` as an OpenAPI security scheme."""

    target_class = "django_synerise.authentication.SyneriseTokenAuthentication"
    name = "SyneriseBearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A Synerise client token (realm ``client``) of this workspace, "
            "mapped by its client id to an active user.",
        }


class _SyneriseAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema with the stable operation id of each view."""

    def get_operation_id(self) -> str:
        return getattr(self.view, "openapi_operation_id", None) or super().get_operation_id()


def _replace(target: str | type, operation_id: str, decorator: Any) -> type:
    # A drf-spectacular AutoSchema whatever DEFAULT_SCHEMA_CLASS says, then the description.
    # ``target`` is an extension's ``target_class``: drf-spectacular has imported the dotted
    # path by the time it asks for the replacement.
    if not isinstance(target, type):
        raise TypeError(f"{target!r} is not a view class")

    @decorator
    class Documented(target):  # type: ignore[valid-type, misc]
        schema = _SyneriseAutoSchema()
        openapi_operation_id = operation_id

    Documented.__name__ = target.__name__
    Documented.__qualname__ = target.__qualname__
    return Documented


class LoginViewScheme(OpenApiViewExtension):
    """Documents ``POST auth/login/``."""

    target_class = "django_synerise.api.views.LoginView"

    def view_replacement(self) -> type:
        return _replace(
            self.target_class,
            "synerise_login",
            extend_schema(
                description=_DESCRIPTIONS["synerise_login"],
                summary="Sign in with a Synerise e-mail (or custom id) and password",
                request=LoginSerializer,
                responses={**_token_responses(_LOGIN_ERRORS), 403: _password_login_403()},
                auth=[],
                tags=["synerise"],
            ),
        )


class ProviderLoginViewScheme(OpenApiViewExtension):
    """Documents ``POST auth/login/<provider>/``."""

    target_class = "django_synerise.api.views.ProviderLoginView"

    def view_replacement(self) -> type:
        return _replace(
            self.target_class,
            "synerise_provider_login",
            extend_schema(
                description=_DESCRIPTIONS["synerise_provider_login"],
                summary="Sign in with a Google, Apple, Facebook or OAuth token",
                parameters=[
                    OpenApiParameter(
                        "provider",
                        str,
                        OpenApiParameter.PATH,
                        enum=sorted(PROVIDERS),
                        description="Identity provider.",
                    )
                ],
                request=ProviderLoginSerializer,
                responses=_token_responses(_LOGIN_ERRORS),
                auth=[],
                tags=["synerise"],
            ),
        )


class RefreshViewScheme(OpenApiViewExtension):
    """Documents ``POST auth/refresh/``."""

    target_class = "django_synerise.api.views.RefreshView"

    def view_replacement(self) -> type:
        return _replace(
            self.target_class,
            "synerise_refresh",
            extend_schema(
                description=_DESCRIPTIONS["synerise_refresh"],
                summary="Refresh the caller's Synerise token now",
                request=None,
                responses=_token_responses(_AUTHENTICATED_ERRORS),
                tags=["synerise"],
            ),
        )


class TokenViewScheme(OpenApiViewExtension):
    """Documents ``GET auth/token/``."""

    target_class = "django_synerise.api.views.TokenView"

    def view_replacement(self) -> type:
        return _replace(
            self.target_class,
            "synerise_token",
            extend_schema(
                description=_DESCRIPTIONS["synerise_token"],
                summary="The caller's valid Synerise token (refreshed first when needed)",
                responses=_token_responses((401, 403, 405, 406, 502, 503)),
                tags=["synerise"],
            ),
        )


class LogoutViewScheme(OpenApiViewExtension):
    """Documents ``POST auth/logout/``."""

    target_class = "django_synerise.api.views.LogoutView"

    def view_replacement(self) -> type:
        return _replace(
            self.target_class,
            "synerise_logout",
            extend_schema(
                description=_DESCRIPTIONS["synerise_logout"],
                summary="Revoke the caller's Synerise token and end the session",
                request=None,
                responses={
                    204: OpenApiResponse(description="Signed out."),
                    **error_responses(_AUTHENTICATED_ERRORS),
                },
                tags=["synerise"],
            ),
        )


class WebSdkTokenViewScheme(OpenApiViewExtension):
    """Documents ``GET tracking/token/``."""

    target_class = "django_synerise.api.views.WebSdkTokenView"

    def view_replacement(self) -> type:
        return _replace(
            self.target_class,
            "synerise_web_sdk_token",
            extend_schema(
                description=_DESCRIPTIONS["synerise_web_sdk_token"],
                summary="A Web SDK token for the tracker of the caller's page",
                responses={
                    200: OpenApiResponse(
                        WebSdkTokenSerializer,
                        description="The token (``Cache-Control: no-store``).",
                    ),
                    **error_responses((401, 403, 404, 405, 406)),
                },
                tags=["synerise"],
            ),
        )


def generate_schema(
    prefix: str = "synerise/", *, title: str = "django-synerise API", version: str | None = None
) -> dict[str, Any]:
    """Return the OpenAPI 3 schema (a dict) of the endpoints mounted under ``prefix``."""
    from drf_spectacular.generators import SchemaGenerator  # optional extra: [openapi]

    generator = SchemaGenerator(
        patterns=[path(prefix, include("django_synerise.urls"))],
        title=title,
        version=version or __version__,
    )
    schema: dict[str, Any] = generator.get_schema(request=None, public=True)
    schema["info"] = {**schema.get("info", {}), "title": title, "version": version or __version__}
    return schema
