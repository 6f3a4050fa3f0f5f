"""Read-only admin for Synerise accounts and client tokens, with refresh and revoke actions.

The plaintext token is never rendered: not in lists, not on change pages, not masked. The
change page shows at most a fingerprint of the ciphertext (first 8 hex digits of its
SHA-256), which changes whenever a new token is stored.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.timesince import timeuntil
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .crypto import key_index
from .exceptions import SyneriseError, TokenDecryptionError
from .models import ClientToken, SyneriseAccount, TokenStatus

logger = logging.getLogger(__name__)


def _user_search_fields(prefix: str) -> tuple[str, ...]:
    """Search fields for the user model behind ``prefix`` (adapts to custom user models)."""
    user_model = get_user_model()
    names = {f.name for f in user_model._meta.get_fields()}
    fields = [f"{prefix}{user_model.USERNAME_FIELD}"]
    email = user_model.get_email_field_name()
    if email in names and email != user_model.USERNAME_FIELD:
        fields.append(f"{prefix}{email}")
    return tuple(fields)


def humanize_expires_in(expires_at: Any, now: Any = None) -> str:
    """Return "in 14 minutes"-style text, or "expired" once ``expires_at`` has passed."""
    if expires_at is None:
        return gettext("unknown")
    now = now or timezone.now()
    if expires_at <= now:
        return gettext("expired")
    return gettext("in %(time)s") % {"time": timeuntil(expires_at, now, depth=2)}


class ExpiringSoonFilter(admin.SimpleListFilter):
    """Filter tokens by how soon they expire (< 15 min, < 1 h, already expired)."""

    title = _("expiring")
    parameter_name = "expiring"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("15m", _("in less than 15 minutes")),
            ("1h", _("in less than 1 hour")),
            ("expired", _("already expired")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        now = timezone.now()
        value = self.value()
        if value == "15m":
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + timedelta(minutes=15))
        if value == "1h":
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + timedelta(hours=1))
        if value == "expired":
            return queryset.filter(expires_at__lte=now)
        return None


class _OperateMixin:
    """Rows are written by the machine: no add and no edit, delete for active superusers.

    Actions need the ``change`` permission although the change form stays read-only.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        opts = ClientToken._meta
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def _revoke(self, request: HttpRequest, token_ids: list[int]) -> None:
        from django_synerise.services import revoke_tokens

        count = revoke_tokens(token_ids, reason="admin")
        self.message_user(  # type: ignore[attr-defined]
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )

    def _refresh(self, request: HttpRequest, token_ids: list[int]) -> None:
        from django_synerise.services import refresh_now

        try:
            report = refresh_now(token_ids)
        except SyneriseError as exc:
            logger.warning("Admin refresh failed: %s", type(exc).__name__)
            self.message_user(  # type: ignore[attr-defined]
                request, _("Synerise is unavailable; try again later."), messages.ERROR
            )
            return
        refreshed = int(report.refreshed)
        self.message_user(  # type: ignore[attr-defined]
            request,
            ngettext("%(count)d token refreshed.", "%(count)d tokens refreshed.", refreshed)
            % {"count": refreshed},
            messages.SUCCESS if refreshed else messages.WARNING,
        )
        needs_login, failed, skipped = (
            int(report.needs_login),
            int(report.failed),
            int(report.skipped),
        )
        problems = (
            (
                needs_login,
                ngettext(
                    "%(count)d token needs a new login.",
                    "%(count)d tokens need a new login.",
                    needs_login,
                ),
            ),
            (
                failed,
                ngettext(
                    "%(count)d token could not be refreshed now (Synerise unavailable); "
                    "it will be retried.",
                    "%(count)d tokens could not be refreshed now (Synerise unavailable); "
                    "they will be retried.",
                    failed,
                ),
            ),
            (
                skipped,
                ngettext(
                    "%(count)d token was skipped (being refreshed, not active or expired).",
                    "%(count)d tokens were skipped (being refreshed, not active or expired).",
                    skipped,
                ),
            ),
        )
        for count, text in problems:
            if count:
                self.message_user(  # type: ignore[attr-defined]
                    request, text % {"count": count}, messages.WARNING
                )


@admin.register(ClientToken)
class ClientTokenAdmin(_OperateMixin, admin.ModelAdmin):
    """Read-only list of stored tokens; the token itself is never displayed."""

    list_display = (
        "id",
        "user_display",
        "client_id_display",
        "provider_display",
        "status",
        "expires_in_display",
        "refreshed_at",
        "failure_count",
        "last_used_at",
    )
    list_display_links = ("id", "user_display")
    list_filter = ("status", "account__identity_provider", ExpiringSoonFilter)
    list_select_related = ("account", "account__user")
    raw_id_fields = ("account",)
    ordering = ("expires_at",)
    actions = ("refresh_now_action", "revoke_action")
    fieldsets = (
        (
            None,
            {"fields": ("account", "status", "origin", "ciphertext_fingerprint", "encryption_key")},
        ),
        (
            _("Lifetime"),
            {
                "fields": (
                    "issued_at",
                    "expires_at",
                    "expires_in_display",
                    "refresh_at",
                    "refreshed_at",
                    "last_used_at",
                )
            },
        ),
        (
            _("Pipeline"),
            {
                "fields": (
                    "version",
                    "lease_until",
                    "retry_at",
                    "failure_count",
                    "last_error",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )
    readonly_fields = (
        "account",
        "status",
        "origin",
        "ciphertext_fingerprint",
        "encryption_key",
        "issued_at",
        "expires_at",
        "expires_in_display",
        "refresh_at",
        "refreshed_at",
        "last_used_at",
        "version",
        "lease_until",
        "retry_at",
        "failure_count",
        "last_error",
        "created_at",
        "updated_at",
    )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        """The token list; warns on top while background refresh is halted."""
        from .services.halt import current_halt

        halt = current_halt()
        if halt is not None:
            self.message_user(
                request,
                _(
                    "Background refresh is halted since %(since)s: Synerise rejects the API "
                    "key (%(reason)s, %(detail)s). No token is marked; refresh resumes by "
                    "itself once the key is accepted (next probe at %(probe_at)s)."
                )
                % {
                    "since": halt.since.isoformat(timespec="seconds"),
                    "reason": halt.reason,
                    "detail": halt.detail,
                    "probe_at": halt.probe_at.isoformat(timespec="seconds"),
                },
                messages.ERROR,
            )
        return super().changelist_view(request, extra_context)

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return (
            *_user_search_fields("account__user__"),
            "=account__client_id",
            "account__email",
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("account", "account__user")

    # -- columns

    @admin.display(description=_("user"), ordering="account__user")
    def user_display(self, obj: ClientToken) -> str:
        return str(obj.account.user)

    @admin.display(description=_("client id"), ordering="account__client_id")
    def client_id_display(self, obj: ClientToken) -> str:
        return obj.account.client_id

    @admin.display(description=_("provider"), ordering="account__identity_provider")
    def provider_display(self, obj: ClientToken) -> str:
        return str(obj.account.get_identity_provider_display())

    @admin.display(description=_("expires in"), ordering="expires_at")
    def expires_in_display(self, obj: ClientToken) -> str:
        return humanize_expires_in(obj.expires_at)

    @admin.display(description=_("ciphertext fingerprint"))
    def ciphertext_fingerprint(self, obj: ClientToken) -> str:
        """First 8 hex digits of SHA-256 of the ciphertext (never of the token)."""
        if not obj.encrypted_token:
            return "-"
        return hashlib.sha256(obj.encrypted_token.encode("ascii", "replace")).hexdigest()[:8]

    @admin.display(description=_("encryption key"))
    def encryption_key(self, obj: ClientToken) -> str:
        """Which configured key decrypts the row (primary, older, or none)."""
        if not obj.encrypted_token:
            return "-"
        try:
            position = key_index(obj.encrypted_token)
        except TokenDecryptionError:
            return gettext("unreadable with the configured keys")
        if position == 0:
            return gettext("primary")
        return gettext("older key #%(n)d (run synerise_rotate_keys)") % {"n": position}

    # -- actions

    @admin.action(description=_("Refresh now"), permissions=["operate"])
    def refresh_now_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._refresh(request, list(queryset.values_list("pk", flat=True)))

    @admin.action(description=_("Revoke"), permissions=["operate"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._revoke(request, list(queryset.values_list("pk", flat=True)))


@admin.register(SyneriseAccount)
class SyneriseAccountAdmin(_OperateMixin, admin.ModelAdmin):
    """Read-only list of links between Django users and Synerise clients."""

    list_display = (
        "client_id",
        "user",
        "email",
        "identity_provider",
        "token_status",
        "token_expires_in",
        "last_login_at",
        "created_at",
    )
    list_filter = ("identity_provider", "token__status")
    list_select_related = ("user", "token")
    raw_id_fields = ("user",)
    ordering = ("-created_at",)
    actions = ("refresh_now_action", "revoke_action")
    fields = (
        "user",
        "client_id",
        "email",
        "custom_id",
        "uuid",
        "identity_provider",
        "business_profile_id",
        "token_status",
        "token_expires_in",
        "last_login_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return (*_user_search_fields("user__"), "=client_id", "email", "custom_id")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("user", "token")

    @admin.display(description=_("token status"), ordering="token__status")
    def token_status(self, obj: SyneriseAccount) -> str:
        return _token_status(obj)

    @admin.display(description=_("token expires in"), ordering="token__expires_at")
    def token_expires_in(self, obj: SyneriseAccount) -> str:
        token = _token_of(obj)
        return humanize_expires_in(token.expires_at) if token else "-"

    @admin.action(description=_("Refresh tokens now"), permissions=["operate"])
    def refresh_now_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(ClientToken.objects.filter(account__in=queryset).values_list("pk", flat=True))
        self._refresh(request, ids)

    @admin.action(description=_("Revoke tokens"), permissions=["operate"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(ClientToken.objects.filter(account__in=queryset).values_list("pk", flat=True))
        self._revoke(request, ids)


def _token_of(account: SyneriseAccount) -> ClientToken | None:
    try:
        return account.token
    except ObjectDoesNotExist:
        return None


def _token_status(account: SyneriseAccount) -> str:
    token = _token_of(account)
    if token is None:
        return gettext("no token")
    return str(TokenStatus(token.status).label)


class SyneriseAccountInline(admin.StackedInline):
    """Read-only Synerise account (and token state) on the user change page.

    Added automatically to the user admin registered on ``admin.site`` when this module is
    imported after it; otherwise add it to your own ``UserAdmin.inlines``.
    """

    model = SyneriseAccount
    fk_name = "user"
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name = _("Synerise account")
    fields = (
        "client_id",
        "email",
        "identity_provider",
        "business_profile_id",
        "last_login_at",
        "token_status",
        "token_expires_in",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("token")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("token status"))
    def token_status(self, obj: SyneriseAccount) -> str:
        return _token_status(obj)

    @admin.display(description=_("token expires in"))
    def token_expires_in(self, obj: SyneriseAccount) -> str:
        token = _token_of(obj)
        return humanize_expires_in(token.expires_at) if token else "-"


@admin.action(description=_("Connect to Synerise"), permissions=["change"])
def connect_to_synerise(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    """Admin action on users: connect the selected active users to Synerise through OAUTH.

    Runs :func:`~django_synerise.services.connect_users` for them (concurrently, within
    ``REFRESH_RATE_LIMIT``); users Synerise could not take now stay pending and are retried
    by the beat entry. Inactive users are skipped.
    """
    from django_synerise.services import connect_users

    ids = list(queryset.values_list("pk", flat=True))
    try:
        report = connect_users(user_ids=ids)
    except SyneriseError as exc:
        logger.warning("Admin connect failed: %s", type(exc).__name__)
        modeladmin.message_user(
            request,
            _("This site is not configured as the Synerise identity provider."),
            messages.ERROR,
        )
        return
    connected = len(report.connected)
    modeladmin.message_user(
        request,
        ngettext(
            "%(count)d user connected to Synerise.",
            "%(count)d users connected to Synerise.",
            connected,
        )
        % {"count": connected},
        messages.SUCCESS if connected else messages.WARNING,
    )
    for count, text in (
        (
            len(report.retry),
            ngettext(
                "%(count)d user could not be connected now (Synerise unavailable); it will "
                "be retried.",
                "%(count)d users could not be connected now (Synerise unavailable); they "
                "will be retried.",
                len(report.retry),
            ),
        ),
        (
            len(report.failed),
            ngettext(
                "%(count)d user was refused by Synerise.",
                "%(count)d users were refused by Synerise.",
                len(report.failed),
            ),
        ),
        (
            len(ids) - report.selected,
            ngettext(
                "%(count)d inactive user was skipped.",
                "%(count)d inactive users were skipped.",
                len(ids) - report.selected,
            ),
        ),
    ):
        if count:
            modeladmin.message_user(request, text % {"count": count}, messages.WARNING)


def register_user_inline(site: admin.AdminSite | None = None) -> bool:
    """Add :class:`SyneriseAccountInline` and the :func:`connect_to_synerise` action to the
    user model's admin on ``site``.

    Subclasses the registered ``ModelAdmin`` with the inline and the action appended and
    re-registers it.

    :returns: ``True`` when the inline was added, ``False`` when the user model is not
        registered on ``site`` or already has the inline.
    """
    site = site or admin.site
    user_model = get_user_model()
    try:
        current = site.get_model_admin(user_model)
    except NotRegistered:
        return False
    current_class = type(current)
    if any(
        isinstance(inline, type) and issubclass(inline, SyneriseAccountInline)
        for inline in (current_class.inlines or ())
    ):
        return False
    patched = type(
        current_class.__name__,
        (current_class,),
        {
            "inlines": [*(current_class.inlines or ()), SyneriseAccountInline],
            "actions": [*(current_class.actions or ()), connect_to_synerise],
            "__module__": current_class.__module__,
        },
    )
    site.unregister(user_model)
    site.register(user_model, patched)
    return True


register_user_inline()
