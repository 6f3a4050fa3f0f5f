"""Middleware recording session users' activity, so their Synerise token is kept alive."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib.auth import SESSION_KEY
from django.db import DatabaseError

from .conf import synerise_settings
from .profile_uuid import pending_profile_uuid, set_tracker_cookies
from .services.activity import touch_activity

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

#: Session key holding the (epoch seconds) time of the last recorded activity.
LAST_TOUCH_SESSION_KEY = "_synerise_activity_at"


class SyneriseActivityMiddleware:
    """Move ``ClientToken.last_used_at`` for users signed in with a Django session.

    Put it after ``SessionMiddleware`` and ``AuthenticationMiddleware``. It does nothing for
    anonymous requests (no session lookup beyond what ``SessionMiddleware`` already does),
    and for signed-in ones at most once per ``ACTIVITY_INTERVAL``: the time of the last touch
    is kept in the session, so most requests cost no query at all. Bearer-authenticated API
    requests record activity in ``SyneriseTokenAuthentication`` instead.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.record(request)
        return self.get_response(request)

    def record(self, request: HttpRequest) -> None:
        """Touch the activity of the session's user when the last touch is old enough."""
        session = getattr(request, "session", None)
        if session is None or session.get(SESSION_KEY) is None:
            return
        now = time.time()
        last = session.get(LAST_TOUCH_SESSION_KEY)
        interval = synerise_settings.ACTIVITY_INTERVAL
        if isinstance(last, (int, float)) and 0 <= now - last < interval:
            return
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return

        try:
            touch_activity(user)
        except DatabaseError:
            logger.warning("Could not record Synerise activity", exc_info=True)
            return
        session[LAST_TOUCH_SESSION_KEY] = int(now)


class SyneriseTrackerMiddleware:
    """Reset the web tracker's uuid after a session login through ``SyneriseBackend``.

    When a request signs a user in with a Django session (Django's ``LoginView``, the admin's
    login, any view calling :func:`~django.contrib.auth.authenticate` then
    :func:`~django.contrib.auth.login`), the response sets the ``_snrs_uuid`` and
    ``_snrs_reset_uuid`` cookies to the profile uuid Synerise now knows, so the tracker goes
    on with the signed-in profile (see :func:`django_synerise.profile_uuid.set_tracker_cookies`).
    Nothing happens when ``TRACKER_UUID_COOKIE`` is off, when no Synerise login happened, or
    when the login did not end in a session of that user. Put it after ``SessionMiddleware``.
    The API's login views set the cookies themselves.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        self.reset_tracker(request, response)
        return response

    def reset_tracker(self, request: HttpRequest, response: HttpResponse) -> None:
        """Set the tracker cookies on ``response`` when ``request`` made a session login."""
        value = pending_profile_uuid(request)
        if value is None or not synerise_settings.TRACKER_UUID_COOKIE:
            return
        session = getattr(request, "session", None)
        user = getattr(request, "user", None)
        if session is None or user is None or not getattr(user, "is_authenticated", False):
            return
        if session.get(SESSION_KEY) != str(user.pk):
            return
        set_tracker_cookies(response, value)
