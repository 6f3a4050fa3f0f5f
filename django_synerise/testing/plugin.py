"""Pytest plugin with the ``fake_synerise`` fixture.

Enable it in your ``conftest.py`` with ``pytest_plugins = ["django_synerise.testing.plugin"]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from .fake import FakeSynerise

__all__ = ["fake_synerise", "point_settings_at"]


def _clear_public_key_cache() -> None:
    """Call ``django_synerise.verification.clear_public_key_cache()`` when it exists."""
    try:
        verification = importlib.import_module("django_synerise.verification")
    except ImportError:
        return
    clear = getattr(verification, "clear_public_key_cache", None)
    if callable(clear):
        clear()


def point_settings_at(settings: Any, fake: FakeSynerise) -> None:
    """Point ``settings.SYNERISE`` at ``fake`` (BASE_URL, API_KEY), keeping the other keys.

    ``settings`` is pytest-django's ``settings`` fixture (or ``django.conf.settings`` inside an
    ``override_settings`` block). Also clears the cached Synerise public key.
    """
    current = dict(getattr(settings, "SYNERISE", None) or {})
    current.update({"BASE_URL": fake.url, "API_KEY": fake.api_key})
    settings.SYNERISE = current
    _clear_public_key_cache()


@pytest.fixture
def fake_synerise(settings: Any) -> Iterator[FakeSynerise]:
    """A running :class:`FakeSynerise` with ``settings.SYNERISE`` pointed at it.

    ``BASE_URL`` and ``API_KEY`` are set to the fake's; other keys are kept. The public key
    cache is cleared before and after, and the server is stopped after the test.
    """
    with FakeSynerise() as fake:
        point_settings_at(settings, fake)
        try:
            yield fake
        finally:
            _clear_public_key_cache()
