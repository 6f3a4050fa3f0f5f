"""Sign Django users into Synerise as clients and keep their client tokens alive."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("django-synerise")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
