"""Finding the configured adapter and its client: what the adapter and the services both need.

The services call :func:`get_adapter` / :func:`resolve_client`, and the adapter's own hooks
call into the services; this module depends on neither, which is what keeps
:mod:`django_synerise.adapter` and :mod:`django_synerise.services` free of an import cycle.
The adapter class is loaded from its dotted path (``SYNERISE["ADAPTER"]``) at call time.
:func:`get_adapter` is re-exported by :mod:`django_synerise.adapter`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conf import synerise_settings

if TYPE_CHECKING:
    from django.http import HttpRequest

    from .adapter import DefaultSyneriseAdapter
    from .client import SyneriseClient

__all__ = ["get_adapter", "resolve_client"]


def get_adapter(request: HttpRequest | Any | None = None) -> DefaultSyneriseAdapter:
    """Return an instance of the ``SYNERISE["ADAPTER"]`` class for ``request``.

    :raises ImproperlyConfigured: when the dotted path cannot be imported.
    """
    adapter_class = synerise_settings.import_setting("ADAPTER")
    return adapter_class(request)  # type: ignore[no-any-return]


def resolve_client(client: SyneriseClient | None) -> SyneriseClient:
    """Return ``client``, or the configured adapter's client when it is ``None``."""
    if client is not None:
        return client
    return get_adapter().get_client()
