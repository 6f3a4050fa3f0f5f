"""The web tracker of a page: its settings and the Web SDK token of the signed-in user."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.views.decorators.debug import sensitive_variables

from ..conf import synerise_settings
from ..models import SyneriseAccount
from ..profile_uuid import email_uuid, parse_uuid
from ..web_sdk import WebSdkToken, mint

logger = logging.getLogger(__name__)

__all__ = ["TrackerConfig", "tracker_config", "web_sdk_token"]

#: Path of the tracker script on ``TRACKER_DOMAIN``.
TRACKER_SCRIPT = "/synerise-javascript-sdk.min.js"


@dataclass(frozen=True)
class TrackerConfig:
    """What a page needs to start the Synerise web tracker."""

    tracker_key: str
    tracking_domain: str
    script_url: str


def tracker_config() -> TrackerConfig | None:
    """Return the tracker settings, or ``None`` when ``TRACKER_KEY`` is unset (no tracking)."""
    key = synerise_settings.TRACKER_KEY
    if key is None or not key.strip():
        return None
    domain = synerise_settings.TRACKER_DOMAIN.rstrip("/")
    return TrackerConfig(
        tracker_key=key.strip(), tracking_domain=domain, script_url=domain + TRACKER_SCRIPT
    )


@sensitive_variables("key")
def web_sdk_token(user: Any) -> WebSdkToken | None:
    """Return a fresh Web SDK token for ``user``, or ``None`` when there is none to give:
    ``WEB_SDK_SIGNING_KEY`` unset, the user anonymous or inactive, or not linked to a Synerise
    client.

    The token names the profile by the uuid stored on the user's
    :class:`~django_synerise.models.SyneriseAccount` (the one the tracker's cookie is reset to
    after sign-in), else the uuid5 of its e-mail; it lives ``WEB_SDK_TOKEN_LIFETIME`` seconds.
    Nothing is stored and no HTTP call is made.

    :raises ValueError: ``WEB_SDK_SIGNING_KEY`` is set but unusable (system check E104).
    """
    key = synerise_settings.WEB_SDK_SIGNING_KEY
    if not key or user is None or not getattr(user, "is_authenticated", False):
        return None
    if not getattr(user, "is_active", True):
        return None

    account = SyneriseAccount.objects.filter(user=user).only("uuid", "email", "custom_id").first()
    if account is None:
        return None
    profile_uuid = parse_uuid(account.uuid) or (
        email_uuid(account.email) if account.email else None
    )
    if profile_uuid is None:
        logger.info("No Web SDK token: Synerise account %s has no uuid or e-mail", account.pk)
        return None
    return mint(
        key,
        profile_uuid=profile_uuid,
        email=account.email or None,
        custom_id=account.custom_id or None,
        lifetime=synerise_settings.WEB_SDK_TOKEN_LIFETIME,
    )
