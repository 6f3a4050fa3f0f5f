"""DRF views of django-synerise: ``post()`` is validate -> service call -> ``Response``."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth import login as django_login
from django.contrib.auth import logout as django_logout
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import services
from .. import throttle as login_throttle
from ..authentication import SyneriseTokenAuthentication
from ..conf import synerise_settings
from ..models import ClientToken
from ..profile_uuid import parse_uuid, set_tracker_cookies
from .errors import exception_handler
from .parsers import StrictJSONParser
from .serializers import (
    LoginSerializer,
    ProviderLoginSerializer,
    TokenResponseSerializer,
    WebSdkTokenSerializer,
)
from .throttling import LoginThrottle, account_key

__all__ = [
    "LOGIN_BACKEND",
    "NO_STORE_HEADERS",
    "LoginCSRFCheck",
    "LoginView",
    "LogoutView",
    "ProviderLoginView",
    "RefreshView",
    "SyneriseAPIView",
    "TokenView",
    "WebSdkTokenView",
    "login",
    "logout",
    "provider_login",
    "refresh",
    "token",
    "web_sdk_token",
]

logger = logging.getLogger(__name__)

#: Backend recorded in the session by the login views.
LOGIN_BACKEND = "django_synerise.backends.SyneriseBackend"

#: Headers of every response that carries a token (RFC 6749 §5.1).
NO_STORE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _CSRFCheck(CsrfViewMiddleware):
    def _reject(self, request: Any, reason: str) -> str:
        return reason


def _no_view(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    """Stands in for the view and the next middleware: only the CSRF check itself runs."""
    raise NotImplementedError


def starts_session(request: Request) -> bool:
    """Whether a successful login on ``request`` starts a Django session:
    ``LOGIN_STARTS_SESSION`` is on and ``SessionMiddleware`` gave the request a session."""
    return synerise_settings.LOGIN_STARTS_SESSION and hasattr(request._request, "session")


class LoginCSRFCheck(BasePermission):
    """Enforce CSRF on login when a browser session is involved (docs/security.rst, row
    "CSRF on session login").

    The rule: when the login will start a session (:func:`starts_session`) **and** the request
    carries a session cookie, the request needs a valid CSRF token, exactly as
    ``SessionAuthentication`` demands on the other endpoints. API clients send no cookie and
    need no token; a browser that already holds a session cannot be logged into another
    account by a cross-site request (login CSRF). Bodies must be ``application/json`` anyway,
    which a cross-site HTML form cannot send.

    :raises PermissionDenied: ``CSRF Failed: <reason>`` (answered 403, code ``csrf_failed``).
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not starts_session(request):
            return True
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return True
        django_request = request._request
        check = _CSRFCheck(_no_view)
        check.process_request(django_request)
        reason = check.process_view(django_request, _no_view, (), {})
        if reason:
            raise PermissionDenied(f"CSRF Failed: {reason}")
        return True


class SyneriseAPIView(APIView):
    """Base of the django-synerise views: JSON only (strict, size-capped parser) and the
    error contract of :func:`django_synerise.api.errors.exception_handler`, whatever the
    project's ``REST_FRAMEWORK`` settings say."""

    renderer_classes = [JSONRenderer]
    parser_classes = [StrictJSONParser]

    def get_exception_handler(self) -> Any:
        """Return the django-synerise exception handler (see :mod:`django_synerise.api.errors`)."""
        return exception_handler


#: One instance of each response serializer renders every response: an output serializer
#: keeps no state between ``to_representation`` calls (DRF's ``many=True`` reuses its child
#: the same way) and reads the project's ``REST_FRAMEWORK`` settings, such as
#: ``DATETIME_FORMAT``, at each call. This spares building and binding its fields per request.
_TOKEN_BODY = TokenResponseSerializer()
_WEB_SDK_TOKEN_BODY = WebSdkTokenSerializer()


def _token_response(*, token: str, expires_at: Any, client_id: str, user: Any) -> Response:
    body = _TOKEN_BODY.to_representation(
        {
            "token": token,
            "expires_at": expires_at,
            "client_id": client_id,
            "user_id": user.pk,
        }
    )
    return Response(body, status=status.HTTP_200_OK, headers=NO_STORE_HEADERS)


class _BaseLoginView(SyneriseAPIView):
    authentication_classes = []
    permission_classes = [LoginCSRFCheck]
    throttle_classes = [LoginThrottle]

    def _finish_login(self, request: Request, result: Any) -> Response:
        session = starts_session(request)
        if session:
            django_login(request._request, result.user, backend=LOGIN_BACKEND)
        response = _token_response(
            token=result.token,
            expires_at=result.expires_at,
            client_id=result.account.client_id,
            user=result.user,
        )
        value = parse_uuid(result.account.uuid)
        if session and value is not None and synerise_settings.TRACKER_UUID_COOKIE:
            set_tracker_cookies(response, value)
        return response


@method_decorator(sensitive_post_parameters("password"), name="dispatch")
class LoginView(_BaseLoginView):
    """``POST auth/login/``: sign in with a Synerise e-mail (or custom id) and password.

    200 with :class:`TokenResponseSerializer`; starts a Django session when
    ``LOGIN_STARTS_SESSION`` is on. Any rejected credential -> the generic 401.
    """

    serializer_class = LoginSerializer

    @sensitive_variables()
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.serializer_class(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.login(
            request=request._request,
            identity_provider="SYNERISE",
            email=data.get("email"),
            custom_id=data.get("custom_id"),
            password=data["password"],
            uuid=data.get("uuid"),
            device_id=data.get("device_id"),
        )
        login_throttle.record_success(request._request, account_key(data))
        return self._finish_login(request, result)


@method_decorator(sensitive_post_parameters("identity_provider_token"), name="dispatch")
class ProviderLoginView(_BaseLoginView):
    """``POST auth/login/<provider>/`` (``google``, ``apple``, ``facebook``, ``oauth``): sign in
    with an identity provider token that Synerise verifies. First login creates the client.

    One view and one serializer for every provider
    (:data:`django_synerise.api.serializers.PROVIDERS`).
    """

    serializer_class = ProviderLoginSerializer

    @sensitive_variables()
    def post(self, request: Request, provider: str, *args: Any, **kwargs: Any) -> Response:
        serializer = self.serializer_class(
            data=request.data, context={"request": request, "provider": provider}
        )
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.login(
            request=request._request,
            identity_provider=data["identity_provider"],
            identity_provider_token=data["identity_provider_token"],
            uuid=data.get("uuid"),
            device_id=data.get("device_id"),
            agreements=data.get("agreements"),
            attributes=data.get("attributes"),
        )
        return self._finish_login(request, result)


class _AuthenticatedView(SyneriseAPIView):
    authentication_classes = [
        SyneriseTokenAuthentication,
        SessionAuthentication,
    ]
    permission_classes = [IsAuthenticated]
    throttle_classes = []


def _authenticated_row(request: Request) -> ClientToken | None:
    """The token row Bearer authentication read for this request, or ``None`` (session)."""
    authenticator = request.successful_authenticator
    if isinstance(authenticator, SyneriseTokenAuthentication):
        return authenticator.stored_token
    return None


class RefreshView(_AuthenticatedView):
    """``POST auth/refresh/``: refresh the caller's own Synerise token now (single flight;
    a token refreshed in the last minute is returned as is). Nothing in the body or query
    selects the user. 401 ``login_required`` when the token can no longer be refreshed."""

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        stored, token = services.refresh_client_token(
            request.user, loaded=_authenticated_row(request)
        )
        return _token_response(
            token=token,
            expires_at=stored.expires_at,
            client_id=stored.account.client_id,
            user=request.user,
        )


class TokenView(_AuthenticatedView):
    """``GET auth/token/``: the caller's valid Synerise token, refreshed first when it is
    inside ``REFRESH_MARGIN``. 401 ``login_required`` when the user must sign in again."""

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        valid = services.get_valid_client_token(request.user, loaded=_authenticated_row(request))
        user = request.user
        assert not isinstance(user, AnonymousUser)  # IsAuthenticated let the request in
        return _token_response(
            token=valid.token,
            expires_at=valid.expires_at,
            client_id=user.synerise_account.client_id,
            user=request.user,
        )


class LogoutView(_AuthenticatedView):
    """``POST auth/logout/``: revoke the caller's stored Synerise token and end the Django
    session, if any. 204, no body."""

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.logout(request.user)
        session = getattr(request._request, "session", None)
        if session is not None and session.get(SESSION_KEY) == str(request.user.pk):
            django_logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebSdkTokenView(_AuthenticatedView):
    """``GET tracking/token/``: a fresh Web SDK token for the caller's page, which hands it to
    the tracker (``SR.client.setAccessToken``) before the previous one ends. 200 with
    ``token``, ``expires_at`` and ``expires_in`` (seconds; ``Cache-Control: no-store``); 404
    ``not_found`` when there is none to give (``WEB_SDK_SIGNING_KEY`` unset, or the user is
    not linked to a Synerise client)."""

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        minted = services.web_sdk_token(request.user)
        if minted is None:
            raise NotFound()
        body = _WEB_SDK_TOKEN_BODY.to_representation(
            {
                "token": minted.token,
                "expires_at": minted.expires_at,
                "expires_in": minted.lifetime,
            }
        )
        return Response(body, status=status.HTTP_200_OK, headers=NO_STORE_HEADERS)


login = LoginView.as_view()
provider_login = ProviderLoginView.as_view()
refresh = RefreshView.as_view()
token = TokenView.as_view()
logout = LogoutView.as_view()
web_sdk_token = WebSdkTokenView.as_view()


if importlib.util.find_spec("drf_spectacular") is not None:  # optional: OpenAPI description
    from . import schema as _schema  # noqa: E402, F401
