"""Views of the demo site: sign-in (email/password and identity providers), account, API.

The views hold no business logic: they call ``django.contrib.auth.authenticate`` (which asks
``SyneriseBackend``) and ``django_synerise.services``, like a real project would.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from django_synerise import services
from django_synerise.exceptions import (
    AccountInactive,
    CredentialsRejected,
    SyneriseError,
    TransientUpstreamError,
)
from django_synerise.profile_uuid import tracker_uuid

from . import fake
from .forms import EmailLoginForm, SiteLoginForm
from .openapi import operations_from_schema

logger = logging.getLogger(__name__)

SYNERISE_BACKEND = "django_synerise.backends.SyneriseBackend"

PROVIDERS: list[dict[str, str]] = [
    {"slug": "google", "name": "Google", "setting": "GOOGLE_CLIENT_ID"},
    {"slug": "apple", "name": "Apple", "setting": "APPLE_CLIENT_ID"},
    {"slug": "facebook", "name": "Facebook", "setting": "FACEBOOK_APP_ID"},
]


#: What the login page says for each step conditional login reports (``CONDITIONAL_LOGIN``).
NEXT_STEPS: dict[str, str] = {
    "activation_required": "Activate your account first: follow the link in the e-mail "
    "Synerise sent you, then sign in again.",
    "registration_required": "There is no account for this e-mail yet. Register first.",
    "approval_required": "Your account is waiting for approval. Try again later.",
    "terms_acceptance_required": "Accept the current terms of service to continue. (In this "
    "demo the account stays in that state: it only shows how a site can react.)",
    "mfa_required": "Confirm the sign-in with your second factor.",
}

#: Attribute of the request where :func:`remember_condition` puts the step to show.
_CONDITION = "_demo_login_condition"


def remember_condition(sender: Any, request: HttpRequest | None, code: str, **kwargs: Any) -> None:
    """Receiver of ``login_conditions_required`` (connected in ``DemoConfig.ready``): note on
    the request being served which step Synerise asks for, so the login page can show it."""
    if request is not None:
        setattr(request, _CONDITION, code)


def _providers() -> list[dict[str, Any]]:
    """Return each provider with its SDK client id (empty: demo button through the fake)."""
    result = []
    for provider in PROVIDERS:
        client_id = getattr(settings, provider["setting"], "")
        result.append(
            {
                **provider,
                "client_id": client_id,
                "sdk": bool(client_id),
                "demo": not client_id and settings.USE_FAKE_SYNERISE,
            }
        )
    return result


def _next_url(request: HttpRequest) -> str:
    """Return the safe ``next`` target of a login request, or the account page."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("demo:account")


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Send signed-in users to their account page, others to the login page."""
    return redirect("demo:account" if request.user.is_authenticated else "demo:login")


@sensitive_post_parameters("password")
def login_view(request: HttpRequest) -> HttpResponse:
    """Show the sign-in page; on POST, check email + password with Synerise and sign in."""
    form = EmailLoginForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = authenticate(
            request,
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password"],
        )
        if user is not None:
            auth_login(request, user)
            return redirect(_next_url(request))
        step = getattr(request, _CONDITION, None)
        form.add_error(
            None,
            NEXT_STEPS.get(
                step or "",
                "Synerise did not accept this email and password. Check them and try again.",
            ),
        )
    context = {
        "form": form,
        "site_form": SiteLoginForm(),
        "condition": getattr(request, _CONDITION, None),
        "providers": _providers(),
        "next": request.GET.get("next", ""),
        "apple_redirect_uri": settings.APPLE_REDIRECT_URI
        or request.build_absolute_uri(reverse("demo:login")),
        "demo_client_password": settings.DEMO_CLIENT_PASSWORD if settings.USE_FAKE_SYNERISE else "",
    }
    return render(request, "demo/login.html", context, status=400 if form.errors else 200)


@require_POST
@sensitive_post_parameters("password")
def site_login(request: HttpRequest) -> HttpResponse:
    """Sign in with an account of this site (a Django password, checked by ``ModelBackend``).

    Nothing here talks to Synerise: with ``CONNECT_ON_LOGIN`` Django's ``user_logged_in``
    asks for a connection and a Celery worker signs the user into Synerise through this
    site's OAUTH identity provider; the account page shows the token once it is stored.
    """
    form = SiteLoginForm(request.POST)
    if form.is_valid():
        user = authenticate(
            request,
            username=form.cleaned_data["username"],
            password=form.cleaned_data["password"],
        )
        if user is not None:
            auth_login(request, user)
            return redirect(_next_url(request))
    messages.error(request, "This username and password do not match a site account.")
    return redirect("demo:login")


@require_POST
def demo_provider_login(request: HttpRequest, provider: str) -> HttpResponse:
    """Sign in with a provider token minted by FakeSynerise (what a provider SDK would return).

    The token goes through :func:`django_synerise.services.login`, exactly like a real Google,
    Apple or Facebook token posted by the SDK buttons.
    """
    if provider not in fake.DEMO_PROVIDERS:
        raise Http404("Unknown identity provider.")
    if not settings.USE_FAKE_SYNERISE:
        messages.error(request, "Demo sign-in needs FakeSynerise; configure the provider's SDK.")
        return redirect("demo:login")
    try:
        provider_token = fake.provider_token(provider)
        result = services.login(
            request=request,
            identity_provider=fake.DEMO_PROVIDERS[provider][0],
            identity_provider_token=provider_token,
        )
    except fake.FakeControlError as exc:
        messages.error(request, str(exc))
        return redirect("demo:login")
    except AccountInactive:
        messages.error(request, "This account is disabled.")
        return redirect("demo:login")
    except CredentialsRejected:
        messages.error(request, "Synerise rejected the provider token.")
        return redirect("demo:login")
    except TransientUpstreamError:
        messages.error(request, "Synerise is unavailable right now. Try again in a moment.")
        return redirect("demo:login")
    except SyneriseError as exc:
        logger.warning("Demo %s sign-in failed: %s", provider, type(exc).__name__)
        messages.error(request, "Sign-in failed.")
        return redirect("demo:login")
    auth_login(request, result.user, backend=SYNERISE_BACKEND)
    return redirect(_next_url(request))


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    """Revoke the stored Synerise token and end the Django session."""
    if request.user.is_authenticated:
        services.logout(request.user, reason="logout")
    auth_logout(request)
    messages.info(request, "You are signed out.")
    return redirect("demo:login")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def token_status(user: Any) -> dict[str, Any]:
    """Return what the account page shows about ``user``'s stored token (never the token)."""
    token = services.get_token_for(user)
    data: dict[str, Any] = {"server_time": timezone.now().isoformat(), "has_token": False}
    if token is None:
        return data
    data.update(
        has_token=True,
        status=token.status,
        status_display=token.get_status_display(),
        version=token.version,
        origin=token.origin,
        issued_at=_iso(token.issued_at),
        expires_at=_iso(token.expires_at),
        refresh_at=_iso(token.refresh_at),
        refreshed_at=_iso(token.refreshed_at),
        last_used_at=_iso(token.last_used_at),
        failure_count=token.failure_count,
        last_error=token.last_error,
    )
    return data


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    """Show the user's Synerise client id, the uuid continuity and the live state of their
    token."""
    synerise_account = getattr(request.user, "synerise_account", None)
    identity = getattr(request.user, "synerise_identity", None)
    context = {
        "synerise_account": synerise_account,
        "connecting": synerise_account is None
        and identity is not None
        and identity.connect_requested_at is not None,
        "connect_error": getattr(identity, "last_connect_error", ""),
        "tracker_uuid": tracker_uuid(request),
        "token": services.get_token_for(request.user) if synerise_account else None,
        "status": token_status(request.user) if synerise_account else {"has_token": False},
    }
    return render(request, "demo/account.html", context)


@login_required
@require_GET
def account_status(request: HttpRequest) -> JsonResponse:
    """JSON twin of the account page's token panel, polled by ``account.js``."""
    return JsonResponse(token_status(request.user))


@require_GET
def api_page(request: HttpRequest) -> HttpResponse:
    """List the HTTP API from its OpenAPI schema, rendered here (no CDN)."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = [
        op for op in operations_from_schema(schema) if op["path"].startswith("/synerise/")
    ]
    return render(request, "demo/api.html", {"schema": schema, "operations": operations})
