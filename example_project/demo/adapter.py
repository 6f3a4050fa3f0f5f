"""The example site's Synerise adapter: how a project customises user creation and linking.

``SYNERISE["ADAPTER"] = "demo.adapter.DemoSyneriseAdapter"`` in the settings selects it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.contrib.auth.models import Group

from django_synerise.adapter import DefaultSyneriseAdapter

logger = logging.getLogger(__name__)

#: Every user who signs in through Synerise joins this group (e.g. for permissions).
CUSTOMER_GROUP = "Synerise customers"


class DemoSyneriseAdapter(DefaultSyneriseAdapter):
    """Readable usernames, names copied from the Synerise profile, a customers group."""

    def username_for(self, claims: Any) -> str:
        """Return ``<email local part>-<client id>`` (unique, because client ids are)."""
        local = (claims.email or "client").split("@", 1)[0].lower()
        local = re.sub(r"[^a-z0-9._-]+", "", local)[:100] or "client"
        return f"{local}-{claims.client_id}"[:150]

    def populate_user(self, user: Any, claims: Any, profile: Any) -> Any:
        """Copy email and names from the token claims and the Synerise profile (if fetched)."""
        result = super().populate_user(user, claims, profile)
        user = result if result is not None else user
        profile = profile if isinstance(profile, dict) else {}
        if claims.email and not user.email:
            user.email = claims.email
        first_name = profile.get("firstName") or profile.get("first_name")
        last_name = profile.get("lastName") or profile.get("last_name")
        if first_name:
            user.first_name = str(first_name)[:150]
        if last_name:
            user.last_name = str(last_name)[:150]
        return user

    def create_user(self, claims: Any, profile: Any, request: Any) -> Any:
        """Create the user like the default adapter, then add it to :data:`CUSTOMER_GROUP`."""
        user = super().create_user(claims, profile, request)
        group, _ = Group.objects.get_or_create(name=CUSTOMER_GROUP)
        user.groups.add(group)
        logger.info("Created user %s for Synerise client %s", user.pk, claims.client_id)
        return user
