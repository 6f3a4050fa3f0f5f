"""End the Django sessions of users whose Synerise sign-in ended (logout, revocation)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.utils import timezone

logger = logging.getLogger(__name__)

__all__ = ["end_sessions", "sessions_are_enumerable"]

#: Session rows read per query while looking for a user's sessions.
CHUNK_SIZE = 2000


def _session_store() -> Any:
    return import_module(settings.SESSION_ENGINE).SessionStore


def sessions_are_enumerable() -> bool:
    """Whether ``SESSION_ENGINE`` keeps sessions in the database, where they can be found by
    user: Django's ``db`` and ``cached_db`` engines (and subclasses of their store)."""
    if "django.contrib.sessions" not in settings.INSTALLED_APPS:
        return False
    # Optional app: imported only when django.contrib.sessions is installed.
    from django.contrib.sessions.backends.db import SessionStore as DatabaseStore

    try:
        store = _session_store()
    except ImportError:
        return False
    return isinstance(store, type) and issubclass(store, DatabaseStore)


def end_sessions(users: Iterable[Any]) -> int | None:
    """Delete every unexpired Django session signed in as one of ``users`` (instances or
    primary keys); return how many were deleted.

    Works with the database-backed session engines (``db``, ``cached_db``): the session table
    is read in chunks of :data:`CHUNK_SIZE` rows, each session is decoded and the ones whose
    ``_auth_user_id`` matches are deleted through the engine (so ``cached_db`` drops its
    cached copy too). That costs one pass over the live sessions per call. Other engines
    (``cache``, ``file``, ``signed_cookies``) cannot be searched by user: nothing is deleted
    and ``None`` is returned (see :doc:`security` for what that means and how to cover it).
    """
    wanted = {str(getattr(user, "pk", user)) for user in users}
    wanted.discard("None")
    if not wanted:
        return 0
    if not sessions_are_enumerable():
        logger.debug("SESSION_ENGINE cannot be searched by user; sessions left alone")
        return None
    store_class = _session_store()
    model = store_class.get_model_class()
    decoder = store_class()
    keys: list[str] = []
    live = (
        model.objects.filter(expire_date__gt=timezone.now())
        .values_list("session_key", "session_data")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for session_key, session_data in live:
        if str(decoder.decode(session_data).get(SESSION_KEY)) in wanted:
            keys.append(session_key)
    for session_key in keys:
        store_class(session_key=session_key).delete()
    if keys:
        logger.info("Ended %s Django session(s) of %s user(s)", len(keys), len(wanted))
    return len(keys)
