"""The error contract of the django-synerise endpoints: every error is JSON ``{detail, code}``.

Field errors add ``errors`` (a list of ``{field, code, message}``). Any rejected credential
gets one generic 401 body, whatever the reason (no account enumeration). A conditional login
(``CONDITIONAL_LOGIN``) that needs another step gets 403 with the status's stable ``code``
(``activation_required``, ...) and Synerise's ``conditions``. A failing or
unreachable Synerise gets 503 with ``Retry-After``; an answer from Synerise that cannot be
used (not JSON, no token, a redirect, an unexpected status) gets 502 with ``Retry-After``. Bad
input and upstream failures never produce a 500.

Every ``detail`` below comes from the configured adapter's
:meth:`~django_synerise.adapter.DefaultSyneriseAdapter.error_message` (keyed by the body's
code, ``credentials_rejected`` for the generic 401), so a project rewords them by overriding
``error_messages``; the defaults are :data:`django_synerise.messages.DEFAULT_ERROR_MESSAGES`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from ..adapter_loader import get_adapter
from ..conf import synerise_settings
from ..exceptions import (
    AccountInactive,
    BadRequest,
    BadResponse,
    CircuitOpen,
    ConditionalAuthFailed,
    CredentialsRejected,
    LoginRequired,
    TokenDecryptionError,
    TokenVerificationError,
    TransientUpstreamError,
    UpstreamError,
)
from ..messages import CONDITIONAL_MESSAGES, DEFAULT_ERROR_MESSAGES, GENERIC_CODE
from ..services import AccountConflict

__all__ = [
    "CONDITIONAL_DETAILS",
    "DEFAULT_RETRY_AFTER",
    "GENERIC_401",
    "WWW_AUTHENTICATE",
    "conditional_body",
    "error_detail",
    "exception_handler",
    "flatten_field_errors",
    "retry_after_seconds",
]

logger = logging.getLogger(__name__)

#: ``Retry-After`` (seconds) sent with a 503 when Synerise gave no hint.
DEFAULT_RETRY_AFTER = 30

#: ``WWW-Authenticate`` challenge sent with every 401.
WWW_AUTHENTICATE = 'Bearer realm="api"'

#: The code of the one body every rejected credential gets.
INVALID_CREDENTIALS = "invalid_credentials"

#: Exceptions that mean "these credentials do not sign anybody in".
REJECTED_CREDENTIALS: tuple[type[BaseException], ...] = (
    CredentialsRejected,
    AccountInactive,
    TokenVerificationError,
    BadRequest,
    drf_exceptions.AuthenticationFailed,
)


#: ``detail`` of the 403 each conditional-login status gets (``code`` is the status's code);
#: the defaults of :data:`django_synerise.messages.CONDITIONAL_MESSAGES`.
CONDITIONAL_DETAILS: dict[str, str] = CONDITIONAL_MESSAGES


def error_detail(code: str, request: Any = None) -> str:
    """The ``detail`` of an error body with ``code``: the configured adapter's
    :meth:`~django_synerise.adapter.DefaultSyneriseAdapter.error_message` for ``request``
    (a DRF or Django request, or ``None``)."""
    return get_adapter(getattr(request, "_request", request)).error_message(code)


def conditional_body(exc: ConditionalAuthFailed, request: Any = None) -> dict[str, Any]:
    """Return the 403 body of a conditional-login status: ``detail``, the stable ``code`` and
    Synerise's ``conditions`` (a list of objects) at the top level."""
    code = exc.code if exc.code in CONDITIONAL_DETAILS else "conditional_login"
    return {
        "detail": error_detail(code, request),
        "code": exc.code,
        "conditions": list(exc.conditions),
    }


def generic_401_body(request: Any = None) -> dict[str, str]:
    """Return the single body of every rejected credential (a new dict each call)."""
    return {"detail": error_detail(GENERIC_CODE, request), "code": INVALID_CREDENTIALS}


GENERIC_401 = {"detail": DEFAULT_ERROR_MESSAGES[GENERIC_CODE], "code": INVALID_CREDENTIALS}
"""The untranslated default generic 401 body (for docs and tests)."""


def retry_after_seconds(exc: BaseException) -> int:
    """Return the ``Retry-After`` seconds for a transient upstream failure.

    Synerise's own hint when there is one, the breaker's reset timeout for an open circuit,
    :data:`DEFAULT_RETRY_AFTER` otherwise; always at least 1 and at most ``RETRY_AFTER_MAX``.
    """
    value = getattr(exc, "retry_after", None)
    if value is None:
        if isinstance(exc, CircuitOpen):
            value = synerise_settings.BREAKER_RESET_TIMEOUT
        else:
            value = DEFAULT_RETRY_AFTER
    try:
        seconds = math.ceil(float(value))
    except (TypeError, ValueError, OverflowError):
        seconds = DEFAULT_RETRY_AFTER
    return max(1, min(seconds, int(synerise_settings.RETRY_AFTER_MAX)))


def flatten_field_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested ``ValidationError.detail`` into ``[{field, code, message}]``.

    Nested fields are joined with dots (``agreements.email``); errors that belong to no field
    use ``non_field_errors``. Messages are DRF's, which never repeat the submitted value here.
    """
    errors: list[dict[str, str]] = []
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            field = f"{prefix}.{key}" if prefix else str(key)
            errors.extend(flatten_field_errors(value, field))
    elif isinstance(detail, Sequence) and not isinstance(detail, str):
        for item in detail:
            errors.extend(flatten_field_errors(item, prefix))
    else:
        errors.append(
            {
                "field": prefix or "non_field_errors",
                "code": str(getattr(detail, "code", None) or "invalid"),
                "message": str(detail),
            }
        )
    return errors


def _body(detail: Any, code: str) -> dict[str, Any]:
    return {"detail": str(detail), "code": code}


def _api_exception_response(exc: drf_exceptions.APIException, request: Any) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        data: dict[str, Any] = {
            "detail": error_detail("invalid", request),
            "code": "invalid",
            "errors": flatten_field_errors(exc.detail),
        }
        return Response(data, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, drf_exceptions.AuthenticationFailed):
        return Response(
            generic_401_body(request),
            status=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        headers["WWW-Authenticate"] = getattr(exc, "auth_header", None) or WWW_AUTHENTICATE
        return Response(
            _body(exc.detail, "not_authenticated"),
            status=status.HTTP_401_UNAUTHORIZED,
            headers=headers,
        )
    if isinstance(exc, drf_exceptions.Throttled):
        # drf-stubs do not declare Throttled.wait (seconds or None).
        hint: float | None = getattr(exc, "wait", None)
        wait = max(1, math.ceil(hint)) if hint is not None else DEFAULT_RETRY_AFTER
        return Response(
            {
                "detail": error_detail("throttled", request),
                "code": "throttled",
                "retry_after": wait,
            },
            status=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, drf_exceptions.PermissionDenied):
        detail = str(exc.detail)
        code = "csrf_failed" if detail.startswith("CSRF Failed") else "permission_denied"
        return Response(_body(detail, code), status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return Response(
            _body(exc.detail, "method_not_allowed"), status=status.HTTP_405_METHOD_NOT_ALLOWED
        )
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return Response(
            _body(exc.detail, "unsupported_media_type"),
            status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    message = exc.detail if isinstance(exc.detail, str) else exc.default_detail
    retry_wait: float | None = getattr(exc, "wait", None)
    if retry_wait:
        headers["Retry-After"] = str(max(1, math.ceil(retry_wait)))
    return Response(_body(message, code), status=exc.status_code, headers=headers)


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Response | None:
    """Turn ``exc`` into the JSON error response of the django-synerise endpoints.

    Used by every django-synerise view through ``get_exception_handler()`` (the project's
    ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` is left alone).

    Returns ``None`` (so DRF re-raises and Django answers 500) only for exceptions that are
    neither bad input nor an upstream failure — that is, for bugs and misconfiguration.
    """
    response = _response_for(exc, context)
    if response is not None:
        set_rollback()
    return response


def _upstream_response(exc: UpstreamError, request: Any, view_name: str) -> Response:
    """Synerise is the problem, not the caller: an answer that cannot be used is 502
    ``synerise_bad_response``; any other failure (unreachable, 5xx, rate limited, circuit
    open) 503 ``synerise_unavailable``; both with ``Retry-After``."""
    retry_after = (
        retry_after_seconds(exc) if isinstance(exc, TransientUpstreamError) else DEFAULT_RETRY_AFTER
    )
    status_code: int
    if isinstance(exc, BadResponse):
        status_code, detail, code = (
            status.HTTP_502_BAD_GATEWAY,
            error_detail("synerise_bad_response", request),
            "synerise_bad_response",
        )
    else:
        status_code, detail, code = (
            status.HTTP_503_SERVICE_UNAVAILABLE,
            error_detail("synerise_unavailable", request),
            "synerise_unavailable",
        )
    logger.warning(
        "%s: Synerise failed (%s, status %s); answering %s",
        view_name,
        type(exc).__name__,
        getattr(exc, "status", None),
        status_code,
    )
    return Response(
        _body(detail, code), status=status_code, headers={"Retry-After": str(retry_after)}
    )


def _response_for(exc: Exception, context: Mapping[str, Any]) -> Response | None:
    view = context.get("view")
    request = context.get("request")
    view_name = type(view).__name__ if view is not None else "?"
    if isinstance(exc, RequestDataTooBig):
        return Response(
            _body(error_detail("request_too_large", request), "request_too_large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if isinstance(exc, (LoginRequired, TokenDecryptionError)):
        if isinstance(exc, LoginRequired):
            logger.info("%s: login required (%s)", view_name, exc.reason)
        else:
            logger.warning("%s: stored token could not be decrypted", view_name)
        return Response(
            _body(error_detail("login_required", request), "login_required"),
            status=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )
    if isinstance(exc, ConditionalAuthFailed) and exc.code in CONDITIONAL_DETAILS:
        logger.info("%s: conditional login needs another step (%s)", view_name, exc.status)
        return Response(conditional_body(exc, request), status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, (*REJECTED_CREDENTIALS, ConditionalAuthFailed)):
        if isinstance(exc, BadRequest):
            logger.warning("%s: Synerise refused the request with status %s", view_name, exc.status)
        else:
            logger.info("%s: credentials rejected (%s)", view_name, type(exc).__name__)
        return Response(
            generic_401_body(request),
            status=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )
    if isinstance(exc, UpstreamError):
        return _upstream_response(exc, request, view_name)
    if isinstance(exc, AccountConflict):
        logger.warning("%s: account conflict", view_name)
        return Response(
            _body(error_detail(exc.code, request), exc.code), status=status.HTTP_409_CONFLICT
        )
    if isinstance(exc, drf_exceptions.APIException):
        return _api_exception_response(exc, request)
    return None
