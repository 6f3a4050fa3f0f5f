"""A page of the test project with the tracking code under a strict Content Security Policy."""

from __future__ import annotations

import secrets

from django.http import HttpRequest, HttpResponse
from django.template import Context, Template

PAGE = Template(
    "{% load synerise %}<!DOCTYPE html><html><head><title>Tracked</title></head>"
    "<body><h1>Tracked page</h1>{% synerise_tracking_code %}</body></html>"
)

#: The policies the browser test loads the page under; ``{nonce}`` and ``{tracker}`` are
#: filled per request. Neither allows inline code without the nonce, nor ``eval``.
POLICIES = {
    "strict-dynamic": "default-src 'none'; script-src 'nonce-{nonce}' 'strict-dynamic'; "
    "connect-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'",
    "allow-list": "default-src 'none'; script-src 'nonce-{nonce}' {tracker}; "
    "connect-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'",
}


def tracked_page(request: HttpRequest) -> HttpResponse:
    """Render :data:`PAGE` with a fresh nonce under the policy named by ``?policy=``."""
    from django_synerise.conf import synerise_settings

    nonce = secrets.token_urlsafe(16)
    policy = POLICIES[request.GET.get("policy", "strict-dynamic")]
    response = HttpResponse(PAGE.render(Context({"request": request, "csp_nonce": nonce})))
    response["Content-Security-Policy"] = policy.format(
        nonce=nonce, tracker=synerise_settings.TRACKER_DOMAIN
    )
    return response
