"""The Synerise profile uuid of a sign-in: which one to send, and handing it to the tracker.

Synerise merges what a visitor did anonymously into the signed-in profile when a login sends
that visitor's uuid. :func:`choose_uuid` picks it in a fixed, documented order; the web
tracker keeps the anonymous visitor's uuid in the ``_snrs_uuid`` cookie, which is read here
only after it has been validated as a UUID. After a session login, :func:`set_tracker_cookies`
resets the tracker to the uuid Synerise now knows, so tracking continues the same profile.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

__all__ = [
    "RESET_COOKIE",
    "TRACKER_COOKIE",
    "TRACKER_COOKIE_MAX_AGE",
    "UUID_NAMESPACE",
    "ChosenUuid",
    "choose_uuid",
    "email_uuid",
    "parse_uuid",
    "pending_profile_uuid",
    "remember_profile_uuid",
    "set_tracker_cookies",
    "tracker_uuid",
]

#: Namespace of the uuid5 that Synerise's own server-side integrations derive from an e-mail
#: (Synerise's Magento 2 integration, ``Helper/Tracking/UuidGenerator.php``).
UUID_NAMESPACE = uuid.UUID("ea1c3a9d-64a6-45d0-a70c-d2a055f350d3")

#: Cookie in which the Synerise web tracker keeps the visitor's uuid.
TRACKER_COOKIE = "_snrs_uuid"

#: Cookie the web tracker reads once at start-up to adopt a new uuid (then deletes).
RESET_COOKIE = "_snrs_reset_uuid"

#: Lifetime of the ``_snrs_uuid`` cookie we set: two years, in seconds.
TRACKER_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600

#: Attribute of the ``HttpRequest`` holding the uuid of a login made during that request.
_REQUEST_ATTRIBUTE = "_synerise_profile_uuid"

#: Where a chosen uuid came from, in the order :func:`choose_uuid` tries them.
SOURCES = ("app", "cookie", "stored", "email", "custom_id")


@dataclass(frozen=True)
class ChosenUuid:
    """The uuid a login sends and where it came from (one of :data:`SOURCES`)."""

    value: str
    source: str


def parse_uuid(value: Any) -> str | None:
    """Return ``value`` as a canonical lower-case UUID string, or ``None`` when it is not one.

    Accepts the 36-character hyphenated form and the 32-character hex form; anything else
    (other types, braces, ``urn:`` prefixes, surrounding whitespace, over-long input) is
    refused, so a cookie or request value is never sent to Synerise unchecked.
    """
    if not isinstance(value, str) or len(value) not in (32, 36):
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    if len(value) == 36 and str(parsed) != value.lower():
        return None  # hyphens in the wrong places
    return str(parsed)


def email_uuid(email: str) -> str:
    """Return the deterministic uuid5 of ``email`` (stripped, lower-cased) in
    :data:`UUID_NAMESPACE`: the uuid Synerise's server-side integrations give that address."""
    return str(uuid.uuid5(UUID_NAMESPACE, email.strip().lower()))


def tracker_uuid(request: HttpRequest | None) -> str | None:
    """Return the web tracker's uuid from the request's ``_snrs_uuid`` cookie when it holds a
    valid UUID, else ``None`` (no request, no cookie, or a value that is not a UUID)."""
    if request is None:
        return None
    cookies = getattr(request, "COOKIES", None) or {}
    return parse_uuid(cookies.get(TRACKER_COOKIE))


def choose_uuid(
    *,
    requested: str | None = None,
    request: HttpRequest | None = None,
    stored: str | None = None,
    email: str | None = None,
    custom_id: str | None = None,
) -> ChosenUuid | None:
    """Pick the uuid a login sends, in this order:

    1. ``requested``: the uuid the app sent (already validated by the caller);
    2. the browser's ``_snrs_uuid`` cookie on ``request``, when it holds a valid UUID;
    3. ``stored``: the uuid stored on the account from an earlier login;
    4. the uuid5 of ``email`` (see :func:`email_uuid`);
    5. for a custom-id login without any of these, the uuid5 of ``custom_id`` (as typed) in
       the same namespace, so that such a login sends a uuid too.

    Returns ``None`` when none applies (no request cookie, no account, no identifier).
    """
    candidates = (
        ("app", parse_uuid(requested)),
        ("cookie", tracker_uuid(request)),
        ("stored", parse_uuid(stored)),
        ("email", email_uuid(email) if email and email.strip() else None),
        ("custom_id", str(uuid.uuid5(UUID_NAMESPACE, custom_id)) if custom_id else None),
    )
    for source, value in candidates:
        if value:
            return ChosenUuid(value, source)
    return None


def set_tracker_cookies(response: HttpResponseBase, value: str) -> None:
    """Reset the web tracker to the profile uuid ``value`` on ``response``.

    Sets ``_snrs_uuid`` (what the tracker and the next login read) and ``_snrs_reset_uuid``
    (which the tracker reads once at start-up to switch to that uuid, then deletes), both
    readable by the page's script (not ``HttpOnly``), ``SameSite=Lax``, on the session
    cookie's domain and ``Secure`` flag. ``value`` must be a UUID.

    :raises ValueError: ``value`` is not a UUID.
    """
    canonical = parse_uuid(value)
    if canonical is None:
        raise ValueError("the tracker uuid must be a UUID")
    common: dict[str, Any] = {
        "path": "/",
        "domain": settings.SESSION_COOKIE_DOMAIN,
        "secure": settings.SESSION_COOKIE_SECURE,
        "httponly": False,
        "samesite": "Lax",
    }
    response.set_cookie(TRACKER_COOKIE, canonical, max_age=TRACKER_COOKIE_MAX_AGE, **common)
    response.set_cookie(RESET_COOKIE, canonical, **common)


def remember_profile_uuid(request: HttpRequest | None, value: str | None) -> None:
    """Remember on ``request`` the profile uuid of a login made while serving it (ignored when
    there is no request or ``value`` is not a UUID); see :func:`pending_profile_uuid`."""
    canonical = parse_uuid(value)
    if request is not None and canonical is not None:
        setattr(request, _REQUEST_ATTRIBUTE, canonical)


def pending_profile_uuid(request: HttpRequest) -> str | None:
    """Return the profile uuid :func:`remember_profile_uuid` stored on ``request``, if any."""
    return getattr(request, _REQUEST_ATTRIBUTE, None)
