"""Template context shared by every demo page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def demo(request: HttpRequest) -> dict[str, Any]:
    """Return flags the layout needs: fake or real Synerise, local Swagger UI available."""
    return {
        "demo_uses_fake": settings.USE_FAKE_SYNERISE,
        "demo_has_sidecar": settings.HAS_SIDECAR,
    }
