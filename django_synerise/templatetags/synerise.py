"""Template tags of django-synerise: ``{% load synerise %}``.

``{% synerise_tracking_code %}`` renders Synerise's web tracking code (see
:func:`synerise_tracking_code`).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString

from .. import services

register = template.Library()

#: ``id`` of the JSON element holding the tracker's configuration.
CONFIG_ELEMENT_ID = "synerise-tracking-config"

#: Global function the tracker calls once its script has loaded.
CALLBACK = "onSyneriseLoad"


def _nonce(context: template.Context, nonce: str | None) -> str | None:
    if nonce:
        return str(nonce)
    value = context.get("csp_nonce")  # Django's csp context processor
    if not value:
        request = context.get("request")
        value = getattr(request, "csp_nonce", None)  # django-csp
    return str(value) if value else None


def _token_url() -> str | None:
    try:
        return reverse("synerise:web-sdk-token")
    except NoReverseMatch:
        return None


@register.simple_tag(takes_context=True)
def synerise_tracking_code(context: template.Context, nonce: str | None = None) -> SafeString:
    """Render Synerise's web tracking code with ``TRACKER_KEY``; nothing when it is unset.

    Output: a ``<script type="application/json">`` with the configuration (escaped by
    :func:`~django.utils.html.json_script`) and one inline ``<script>`` that loads the tracker
    from ``TRACKER_DOMAIN`` and starts it with ``SR.init``. No inline event handler
    attributes are used, so a strict Content Security Policy works: the inline script and the
    tracker's script element carry ``nonce`` (the ``nonce`` argument, else the context's
    ``csp_nonce`` or ``request.csp_nonce``); allow the tracker's host in ``script-src`` or use
    ``'strict-dynamic'``.

    For a signed-in user linked to a Synerise client, with ``WEB_SDK_SIGNING_KEY`` set, the
    page also identifies the customer to the tracker: it passes a Web SDK token
    (:func:`django_synerise.services.web_sdk_token`) to ``SR.client.setAccessToken`` and
    fetches a new one from ``tracking/token/`` before it ends. For anyone else it calls
    ``SR.jwt.clearAccessToken()``, so a signed-out browser is no longer identified.
    """
    tracker = services.tracker_config()
    if tracker is None:
        return SafeString("")
    request = context.get("request")
    user = getattr(request, "user", None) if request is not None else context.get("user")
    minted = services.web_sdk_token(user)
    config: dict[str, Any] = {
        "trackerKey": tracker.tracker_key,
        "trackingDomain": tracker.tracking_domain,
        "scriptUrl": tracker.script_url,
        "callback": CALLBACK,
        "token": minted.token if minted is not None else None,
        "expiresIn": minted.lifetime if minted is not None else None,
        "tokenUrl": _token_url() if minted is not None else None,
    }
    return render_to_string(
        "django_synerise/tracking_code.html",
        {"config": config, "element_id": CONFIG_ELEMENT_ID, "nonce": _nonce(context, nonce)},
    )
