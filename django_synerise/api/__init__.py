"""DRF endpoints of django-synerise: login, provider login, refresh, token and logout."""

from __future__ import annotations
