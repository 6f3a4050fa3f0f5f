"""Middleware recording session users' activity, so their Synerise token is kept alive."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib.auth import SESSION_KEY
from django.db import DatabaseError

from .conf import synerise_settings

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
        interval = float(synerise_settings.ACTIVITY_INTERVAL)
        if isinstance(last, (int, float)) and 0 <= now - last < interval:
            return
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return
        from .services.activity import touch_activity

        try:
            touch_activity(user)
        except DatabaseError:
            logger.warning("Could not record Synerise activity", exc_info=True)
            return
        session[LAST_TOUCH_SESSION_KEY] = int(now)
