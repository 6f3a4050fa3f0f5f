"""Models linking Django users to Synerise clients and storing their encrypted client tokens."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .crypto import decrypt_token, encrypt_token, token_fingerprint
from .exceptions import TokenDecryptionError
from .providers import PROVIDER_LABELS
from .querysets import AccountQuerySet, ClientTokenQuerySet
from .token_status import TokenStatus as TokenStatus  # re-exported

#: How the Synerise client signed in (the ``identityProvider`` of the login call), built from
#: :data:`django_synerise.providers.PROVIDER_LABELS`, the one provider registry.
IdentityProvider = models.TextChoices(  # type: ignore[call-overload]
    "IdentityProvider",
    [(value, (value, _(label))) for value, label in PROVIDER_LABELS.items()],
)
IdentityProvider.__doc__ = (
    "How the Synerise client signed in (the ``identityProvider`` of the login call)."
)
IdentityProvider.__module__ = __name__


class SyneriseAccount(models.Model):
    """The link between one Django user and one Synerise client (profile).

    Users are linked by ``client_id`` (the Synerise ``clId`` claim), never silently by email.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="synerise_account",
        verbose_name=_("user"),
    )
    client_id = models.CharField(
        _("client id"),
        max_length=64,
        unique=True,
        help_text=_("Synerise client id (the clId claim of the client token)."),
    )
    email = models.EmailField(
        _("email"),
        blank=True,
        help_text=_("Email address Synerise holds for this client; may differ from the user's."),
    )
    custom_id = models.CharField(
        _("custom id"),
        max_length=255,
        blank=True,
        help_text=_("Synerise customId of the client, when the workspace uses one."),
    )
    uuid = models.CharField(
        _("uuid"),
        max_length=64,
        blank=True,
        help_text=_("Synerise client UUID (device or profile identifier)."),
    )
    identity_provider = models.CharField(
        _("identity provider"),
        max_length=16,
        choices=IdentityProvider,
        default=IdentityProvider.SYNERISE,
        help_text=_("Provider used at the latest sign-in."),
    )
    business_profile_id = models.CharField(
        _("business profile id"),
        max_length=32,
        blank=True,
        help_text=_("Synerise workspace (bpi claim) the client belongs to, learned at sign-in."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_login_at = models.DateTimeField(
        _("last login at"),
        null=True,
        blank=True,
        help_text=_("When the user last signed in through Synerise."),
    )

    objects = AccountQuerySet.as_manager()

    class Meta:
        verbose_name = _("Synerise account")
        verbose_name_plural = _("Synerise accounts")
        indexes = [
            # A SYNERISE sign-in without a uuid looks up the uuid stored for its e-mail
            # (case-insensitively: ``email__iexact``) or custom id; so does the login
            # backend, to tell whether an identifier names a linked account.
            models.Index(Upper("email"), name="synerise_account_email_ci_idx"),
            models.Index(fields=["custom_id"], name="synerise_account_custom_id_idx"),
        ]

    def __str__(self) -> str:
        return f"Synerise client {self.client_id}"

    def __repr__(self) -> str:
        return f"<SyneriseAccount pk={self.pk} client_id={self.client_id!r} user={self.user_id}>"


class ClientToken(models.Model):
    """The stored Synerise client token of one account.

    ``encrypted_token`` holds only Fernet ciphertext of an envelope bound to
    ``(account_id, client_id)`` (see :mod:`django_synerise.crypto`). Use :meth:`get_token` and
    :meth:`set_token`; the plaintext never appears in ``str()``, ``repr()`` or the admin.
    """

    account = models.OneToOneField(
        SyneriseAccount,
        on_delete=models.CASCADE,
        related_name="token",
        verbose_name=_("account"),
    )
    encrypted_token = models.TextField(
        _("encrypted token"),
        blank=True,
        editable=False,
        help_text=_("Fernet ciphertext of the token bound to this row; empty once revoked."),
    )
    fingerprint = models.CharField(
        _("fingerprint"),
        max_length=64,
        blank=True,
        editable=False,
        help_text=_(
            "SHA-256 of the stored token: the token a Bearer request must present. "
            "Empty once revoked."
        ),
    )
    previous_fingerprint = models.CharField(
        _("previous fingerprint"),
        max_length=64,
        blank=True,
        editable=False,
        help_text=_("SHA-256 of the token the stored one replaced (refresh or a newer login)."),
    )
    previous_valid_until = models.DateTimeField(
        _("previous token accepted until"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "Until when Bearer requests may still present the replaced token "
            "(SUPERSEDED_TOKEN_GRACE, never past its own expiry)."
        ),
    )
    expires_at = models.DateTimeField(
        _("expires at"), db_index=True, help_text=_("Expiry (exp claim) of the stored token.")
    )
    refresh_at = models.DateTimeField(
        _("refresh at"),
        db_index=True,
        help_text=_("When the refresh pipeline refreshes the token (before expiry, jittered)."),
    )
    issued_at = models.DateTimeField(_("issued at"), null=True, blank=True)
    refreshed_at = models.DateTimeField(
        _("last refreshed"),
        null=True,
        blank=True,
        help_text=_("When the token was last refreshed successfully."),
    )
    origin = models.CharField(
        _("origin"),
        max_length=32,
        blank=True,
        help_text=_("Identity provider that issued the original sign-in (origin claim)."),
    )
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=TokenStatus,
        default=TokenStatus.ACTIVE,
        db_index=True,
    )
    version = models.PositiveIntegerField(
        _("version"),
        default=1,
        help_text=_("Incremented on every stored token; used for compare-and-swap writes."),
    )
    lease_until = models.DateTimeField(
        _("lease until"),
        null=True,
        blank=True,
        help_text=_("A worker holds the right to refresh this token until this time."),
    )
    failure_count = models.PositiveIntegerField(
        _("failures"),
        default=0,
        help_text=_(
            "Consecutive failed refresh attempts (the attempt number of the next backoff)."
        ),
    )
    retry_at = models.DateTimeField(
        _("retry at"),
        null=True,
        blank=True,
        help_text=_("After a transient failure, no refresh is attempted before this time."),
    )
    last_error = models.CharField(
        _("last error"),
        max_length=64,
        blank=True,
        help_text=_("Code of the last refresh error (never a message containing the token)."),
    )
    last_used_at = models.DateTimeField(
        _("last used at"),
        null=True,
        blank=True,
        db_index=True,
        help_text=_("Last seen activity of the user; idle tokens are not kept alive."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ClientTokenQuerySet.as_manager()

    if TYPE_CHECKING:
        # Not columns: set on the rows of a refresh batch by services.refresh (the database
        # clock of the claim, the claim lag, the Synerise call) and read by services.outcomes.
        db_offset: timedelta
        claimed_refresh_at: datetime
        call_status: int | None
        call_seconds: float

    class Meta:
        verbose_name = _("Synerise client token")
        verbose_name_plural = _("Synerise client tokens")
        indexes = [
            # Serves ClientTokenQuerySet.due() (the refresh pipeline's "due"):
            # status IN ('active', 'refreshing') AND refresh_at <= now.
            models.Index(fields=["status", "refresh_at"], name="synerise_token_due_idx"),
        ]

    def __str__(self) -> str:
        """``"Client token of Synerise client <client id>"`` (the admin's page title)."""
        if self.account_id is None:
            return gettext("Client token (no account)")
        return gettext("Client token of Synerise client %(client_id)s") % {
            "client_id": self.account.client_id
        }

    def __repr__(self) -> str:
        return f"<ClientToken pk={self.pk} account={self.account_id} status={self.status}>"

    def get_token(self) -> str:
        """Return the plaintext client token.

        Decrypts ``encrypted_token`` and checks that it is bound to this row's account and
        client id.

        :raises TokenDecryptionError: the column is empty, the ciphertext is tampered,
            truncated, under an unknown key, not ciphertext at all, or belongs to another row.
        """
        if not self.encrypted_token:
            raise TokenDecryptionError("No stored token (revoked or never set).")
        return decrypt_token(
            self.encrypted_token,
            account_id=self.account_id,
            client_id=self.account.client_id,
        )

    def set_token(self, token: str) -> None:
        """Encrypt ``token`` under the primary key, bound to this row, and record its
        fingerprint (the token Bearer requests must present); does not save.

        :raises ValueError: the row has no saved account yet, or the token is empty.
        """
        if self.account_id is None:
            raise ValueError("ClientToken.set_token() needs a saved account.")
        self.encrypted_token = encrypt_token(
            token, account_id=self.account_id, client_id=self.account.client_id
        )
        self.fingerprint = token_fingerprint(token)

    def is_expired(self, now: datetime | None = None) -> bool:
        """Return whether the token is expired at ``now`` (a missing expiry counts as expired)."""
        if self.expires_at is None:
            return True
        return self.expires_at <= (now or timezone.now())

    @property
    def expires_in(self) -> float:
        """Seconds until expiry (negative once expired)."""
        if self.expires_at is None:
            return 0.0
        return (self.expires_at - timezone.now()).total_seconds()


class RefreshHalt(models.Model):
    """Background refresh is paused because Synerise rejects the workspace's API key.

    At most one row (``key`` ``"refresh"``); it exists while the pause lasts. Written by
    :mod:`django_synerise.services.halt`, never by hand: deleting it only makes the next run
    call Synerise again, which halts again if the key is still rejected.
    """

    key = models.CharField(_("key"), max_length=16, primary_key=True, default="refresh")
    reason = models.CharField(
        _("reason"),
        max_length=64,
        help_text=_("Code of the rejection that halted background refresh."),
    )
    detail = models.CharField(
        _("detail"),
        max_length=255,
        blank=True,
        help_text=_("HTTP status and error code of the last rejected API key probe."),
    )
    since = models.DateTimeField(_("halted since"))
    probe_at = models.DateTimeField(
        _("next probe"), help_text=_("When the API key is probed again.")
    )
    probes = models.PositiveIntegerField(
        _("probes"), default=0, help_text=_("API key probes rejected since the halt began.")
    )

    class Meta:
        verbose_name = _("refresh halt")
        verbose_name_plural = _("refresh halts")

    def __str__(self) -> str:
        return f"Refresh halted ({self.reason})"

    def as_dict(self) -> dict[str, object]:
        """``reason``, ``detail``, ``since`` and ``probe_at`` (ISO 8601) and ``probes``."""
        return {
            "reason": self.reason,
            "detail": self.detail,
            "since": self.since.isoformat(),
            "probe_at": self.probe_at.isoformat(),
            "probes": self.probes,
        }


class IdentitySubject(models.Model):
    """The opaque identifier (``sub``) this site gives a user as a Synerise identity provider.

    A random UUID created the first time the user is vouched for, never derived from the
    username, email or primary key (they change, can be reassigned, or leak the size of the
    user table). The ``connect_*`` fields track a pending connection (asked for by
    ``CONNECT_ON_LOGIN`` or by a token that needs a new login) and its backoff.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="synerise_identity",
        verbose_name=_("user"),
    )
    subject = models.UUIDField(
        _("subject"),
        unique=True,
        default=uuid.uuid4,
        editable=False,
        help_text=_("The sub claim of the identity tokens this site mints for the user."),
    )
    connect_requested_at = models.DateTimeField(
        _("connection requested at"),
        null=True,
        blank=True,
        db_index=True,
        help_text=_("Set while a connection to Synerise is pending; cleared once it is done."),
    )
    connect_retry_at = models.DateTimeField(
        _("next connection attempt"),
        null=True,
        blank=True,
        help_text=_("No attempt is made before this time (backoff after a transient failure)."),
    )
    connect_failures = models.PositiveIntegerField(_("connection failures"), default=0)
    last_connect_error = models.CharField(_("last connection error"), max_length=64, blank=True)
    connected_at = models.DateTimeField(
        _("connected at"),
        null=True,
        blank=True,
        help_text=_("When Synerise last accepted an identity token of this user."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("identity subject")
        verbose_name_plural = _("identity subjects")

    def __str__(self) -> str:
        return f"Identity subject of user {self.user_id}"

    def __repr__(self) -> str:
        return f"<IdentitySubject pk={self.pk} user={self.user_id}>"


class RefreshOutcome(models.TextChoices):
    """What happened to a token the refresh pipeline took, a scheduler run (``run``), or what
    the refresh batches did and cost (``batch``, ``batch_refreshed``, ``busy_us``,
    ``cpu_us``: sums per hour)."""

    REFRESHED = "refreshed", _("Refreshed")
    TRANSIENT = "transient", _("Failed transiently (retried)")
    NEEDS_LOGIN = "needs_login", _("Needs login")
    HALTED = "halted", _("Halted (API key rejected)")
    RUN = "run", _("Scheduler run")
    BATCH = "batch", _("Refresh batch")
    BATCH_REFRESHED = "batch_refreshed", _("Tokens refreshed by batches")
    BUSY_US = "busy_us", _("Batch time (microseconds)")
    CPU_US = "cpu_us", _("Batch CPU time (microseconds)")


class RefreshOutcomeCount(models.Model):
    """How many refresh outcomes of one kind happened in one hour (UTC), for the dashboard.

    At most one row per ``(hour, outcome)`` and nine kinds, so 24 hours are at most 216
    rows. Written by :mod:`django_synerise.services.outcomes` (one upsert per batch and one
    per scheduler run); rows older than :data:`~django_synerise.services.outcomes.RETENTION`
    are deleted by ``purge_tokens``. ``updated_at`` of the ``run`` rows is the last run.
    """

    hour = models.DateTimeField(_("hour"), help_text=_("Start of the hour (UTC)."))
    outcome = models.CharField(_("outcome"), max_length=16, choices=RefreshOutcome)
    count = models.PositiveBigIntegerField(_("count"), default=0)
    updated_at = models.DateTimeField(_("updated at"))

    class Meta:
        verbose_name = _("refresh outcome count")
        verbose_name_plural = _("refresh outcome counts")
        constraints = [
            models.UniqueConstraint(fields=["hour", "outcome"], name="synerise_outcome_hour_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.outcome} {self.hour.isoformat()}: {self.count}"
