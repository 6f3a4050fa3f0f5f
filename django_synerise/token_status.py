"""The lifecycle states of a stored client token (importable before ``django.setup()``).

:class:`TokenStatus` is re-exported by :mod:`django_synerise.models`; :data:`CLAIMABLE` is the
set of states the refresh pipeline may claim a row in.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["CLAIMABLE", "TokenStatus"]


class TokenStatus(models.TextChoices):
    """Lifecycle state of a stored client token.

    ``active`` tokens are kept alive by the refresh pipeline; ``refreshing`` rows are leased
    by a worker; ``needs_login`` means Synerise can no longer refresh the token (expired,
    rejected or undecryptable) and the user must sign in again; ``revoked`` tokens were ended
    locally (logout, deactivation, admin) and their ciphertext is cleared.
    """

    ACTIVE = "active", _("Active")
    REFRESHING = "refreshing", _("Refreshing")
    NEEDS_LOGIN = "needs_login", _("Needs login")
    REVOKED = "revoked", _("Revoked")


#: States a due row may be claimed in: ``active``, or ``refreshing`` whose lease ran out (its
#: worker died).
CLAIMABLE: tuple[str, ...] = (TokenStatus.ACTIVE, TokenStatus.REFRESHING)
