"""Read-only admin for Synerise accounts and client tokens, with refresh and revoke actions
(also on the token's change page; revoking asks for confirmation) and the token dashboard.

The plaintext token is never rendered: not in lists, not on change pages, not masked. The
change page shows at most a fingerprint of the ciphertext (first 8 hex digits of its
SHA-256), which changes whenever a new token is stored.

The user admin is left alone: add :class:`SyneriseAccountInline` to it yourself, or mix
:class:`SyneriseUserAdminMixin` into your user admin (see :doc:`/admin`).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from .crypto import key_index
from .dashboard import dashboard_context
from .exceptions import SyneriseError, TokenDecryptionError
from .models import ClientToken, SyneriseAccount, TokenStatus
from .services import connect_users, refresh_now, revoke_tokens
from .services.halt import current_halt

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    # Django's admin classes are generic only in django-stubs (not subscriptable at run time).
    _ClientTokenModelAdmin = admin.ModelAdmin[ClientToken]
    _AccountModelAdmin = admin.ModelAdmin[SyneriseAccount]
    _AccountInline = admin.StackedInline[SyneriseAccount, Any]
    _MixinBase = admin.ModelAdmin[Any]  # the mixins below only go into ModelAdmin classes
else:
    _ClientTokenModelAdmin = _AccountModelAdmin = admin.ModelAdmin
    _AccountInline = admin.StackedInline
    _MixinBase = object


def _user_search_fields(prefix: str) -> tuple[str, ...]:
    """Search fields for the user model behind ``prefix`` (adapts to custom user models)."""
    user_model = get_user_model()
    names = {f.name for f in user_model._meta.get_fields()}
    fields = [f"{prefix}{user_model.USERNAME_FIELD}"]
    email = user_model.get_email_field_name()
    if email in names and email != user_model.USERNAME_FIELD:
        fields.append(f"{prefix}{email}")
    return tuple(fields)


#: Short labels of the identity providers (the model's choices spell SYNERISE out in full,
#: which wraps a list column onto several lines).
PROVIDER_LABELS = {
    "SYNERISE": _("Synerise"),
    "GOOGLE": _("Google"),
    "APPLE": _("Apple"),
    "FACEBOOK": _("Facebook"),
    "OAUTH": _("OAuth"),
}


def provider_label(value: str | None) -> str:
    """Short label of an identity provider value (``APPLE`` -> ``Apple``); the same text on
    lists, change pages and the user inline. Unknown values are shown as they are."""
    if not value:
        return "-"
    return str(PROVIDER_LABELS.get(value.upper(), value))


def humanize_ago(moment: Any, now: Any = None) -> str:
    """Return "3 minutes ago"-style text (one unit), or "never" for ``None``."""
    if moment is None:
        return gettext("never")
    return gettext("%(time)s ago") % {"time": timesince(moment, now or timezone.now(), depth=1)}


def token_expiry_text(token: ClientToken | None, now: Any = None) -> str:
    """What the admin says about a token's expiry: ``-`` without a token, ``revoked (no
    token kept)`` for a revoked one (its ciphertext is gone), else
    :func:`humanize_expires_in`."""
    if token is None:
        return "-"
    if token.status == TokenStatus.REVOKED:
        return gettext("revoked (no token kept)")
    return humanize_expires_in(token.expires_at, now)


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

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ClientToken]
    ) -> QuerySet[ClientToken] | None:
        now = timezone.now()
        value = self.value()
        if value == "15m":
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + timedelta(minutes=15))
        if value == "1h":
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + timedelta(hours=1))
        if value == "expired":
            return queryset.filter(expires_at__lte=now)
        return None


class ProviderFilter(admin.SimpleListFilter):
    """Filter tokens by the account's identity provider, with the short labels."""

    title = _("identity provider")
    parameter_name = "account__identity_provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return list(PROVIDER_LABELS.items())

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ClientToken]
    ) -> QuerySet[ClientToken] | None:
        if self.value():
            return queryset.filter(account__identity_provider=self.value())
        return None


class _OperateMixin(_MixinBase):
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
        count = revoke_tokens(token_ids, reason="admin")
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )

    def _confirm_revoke(
        self,
        request: HttpRequest,
        token_ids: list[int],
        *,
        action: str | None = None,
        selected: list[Any] | None = None,
    ) -> TemplateResponse:
        """The page asking to confirm a revocation (posts back with ``post=yes``).

        From a list action, ``action`` and the ``selected`` primary keys are posted back to
        the change list; from a change page, the form posts to the page's revoke URL.
        """
        opts = self.model._meta
        tokens = list(
            ClientToken.objects.filter(pk__in=token_ids)
            .exclude(status=TokenStatus.REVOKED)
            .select_related("account", "account__user")
            .order_by("pk")
        )
        context = {
            **self.admin_site.each_context(request),
            "title": _("Revoke Synerise client tokens?"),
            "subtitle": None,
            "opts": opts,
            "tokens": tokens,
            "action": action,
            "selected": selected or [],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "cancel_url": request.headers.get("referer") or "",
        }
        return TemplateResponse(request, "admin/django_synerise/revoke_confirmation.html", context)

    def _revoke_or_confirm(
        self, request: HttpRequest, queryset: QuerySet[Any], token_ids: list[int]
    ) -> TemplateResponse | None:
        if request.POST.get("post") == "yes":
            self._revoke(request, token_ids)
            return None
        return self._confirm_revoke(
            request,
            token_ids,
            action=request.POST.get("action", ""),
            selected=list(queryset.values_list("pk", flat=True)),
        )

    def _refresh(self, request: HttpRequest, token_ids: list[int]) -> None:
        try:
            report = refresh_now(token_ids)
        except SyneriseError as exc:
            logger.warning("Admin refresh failed: %s", type(exc).__name__)
            self.message_user(
                request, _("Synerise is unavailable; try again later."), messages.ERROR
            )
            return
        refreshed = int(report.refreshed)
        self.message_user(
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
                self.message_user(request, text % {"count": count}, messages.WARNING)


@admin.register(ClientToken)
class ClientTokenAdmin(_OperateMixin, _ClientTokenModelAdmin):
    """Read-only list of stored tokens; the token itself is never displayed.

    The change page carries **Refresh now** and **Revoke** (with a confirmation page); the
    change list links to the token dashboard (:mod:`django_synerise.dashboard`).
    """

    # Six short columns: they fit beside the admin's navigation and filter sidebars at
    # 1280 px. Failures show in the status column; last use and the rest on the change page.
    list_display = (
        "user_display",
        "client_id_display",
        "provider_display",
        "status_display",
        "expires_in_display",
        "refreshed_display",
    )
    list_display_links = ("user_display",)
    list_filter = ("status", ProviderFilter, ExpiringSoonFilter)
    list_select_related = ("account", "account__user")
    raw_id_fields = ("account",)
    ordering = ("expires_at",)
    actions = ("refresh_now_action", "revoke_action")
    change_form_template = "admin/django_synerise/clienttoken/change_form.html"
    change_list_template = "admin/django_synerise/clienttoken/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "account",
                    "status",
                    "origin_display",
                    "ciphertext_fingerprint",
                    "encryption_key",
                )
            },
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
        "origin_display",
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

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> Any:
        """The read-only change page, with **Refresh now** and **Revoke** for operators."""
        extra_context = {
            **(extra_context or {}),
            "can_operate": self.has_operate_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        """The model's URLs plus ``dashboard/``, ``<id>/refresh/`` and ``<id>/revoke/``."""
        info = (self.opts.app_label, self.opts.model_name)
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name="{}_{}_dashboard".format(*info)),
            path(
                "<path:object_id>/refresh/",
                wrap(require_POST(self.refresh_view)),
                name="{}_{}_refresh".format(*info),
            ),
            path(
                "<path:object_id>/revoke/",
                wrap(self.revoke_view),
                name="{}_{}_revoke".format(*info),
            ),
            *super().get_urls(),
        ]

    def _operated_object(self, request: HttpRequest, object_id: str) -> ClientToken:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        obj: ClientToken | None = self.get_object(request, object_id)
        if obj is None:
            raise Http404(gettext("No such Synerise client token."))
        return obj

    def _change_url(self, obj: ClientToken) -> str:
        return reverse(
            f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[obj.pk],
        )

    def refresh_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """``POST <id>/refresh/``: refresh this token now, then back to its change page."""
        obj = self._operated_object(request, object_id)
        self._refresh(request, [obj.pk])
        return HttpResponseRedirect(self._change_url(obj))

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """``<id>/revoke/``: GET asks for confirmation, POST with ``post=yes`` revokes."""
        obj = self._operated_object(request, object_id)
        if request.method == "POST" and request.POST.get("post") == "yes":
            self._revoke(request, [obj.pk])
            return HttpResponseRedirect(self._change_url(obj))
        return self._confirm_revoke(request, [obj.pk])

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """The token dashboard (needs the view permission of client tokens)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": _("Synerise token dashboard"),
            "subtitle": None,
            "opts": self.opts,
            **dashboard_context(),
        }
        return TemplateResponse(request, "admin/django_synerise/dashboard.html", context)

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return (
            *_user_search_fields("account__user__"),
            "=account__client_id",
            "account__email",
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClientToken]:
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
        return provider_label(obj.account.identity_provider)

    @admin.display(description=_("origin"))
    def origin_display(self, obj: ClientToken) -> str:
        """The origin claim, labelled like the provider column (``APPLE`` -> ``Apple``)."""
        return provider_label(obj.origin)

    @admin.display(description=_("expires in"), ordering="expires_at")
    def expires_in_display(self, obj: ClientToken) -> str:
        return token_expiry_text(obj)

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, obj: ClientToken) -> str:
        """The status, with the consecutive failures when there are any."""
        label = str(TokenStatus(obj.status).label)
        if obj.failure_count:
            return ngettext(
                "%(status)s (%(count)d failure)",
                "%(status)s (%(count)d failures)",
                obj.failure_count,
            ) % {"status": label, "count": obj.failure_count}
        return label

    @admin.display(description=_("refreshed"), ordering="refreshed_at")
    def refreshed_display(self, obj: ClientToken) -> str:
        return humanize_ago(obj.refreshed_at)

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
    def refresh_now_action(self, request: HttpRequest, queryset: QuerySet[ClientToken]) -> None:
        self._refresh(request, list(queryset.values_list("pk", flat=True)))

    @admin.action(description=_("Revoke…"), permissions=["operate"])
    def revoke_action(
        self, request: HttpRequest, queryset: QuerySet[ClientToken]
    ) -> TemplateResponse | None:
        return self._revoke_or_confirm(
            request, queryset, list(queryset.values_list("pk", flat=True))
        )


@admin.register(SyneriseAccount)
class SyneriseAccountAdmin(_OperateMixin, _AccountModelAdmin):
    """Read-only list of links between Django users and Synerise clients."""

    list_display = (
        "client_id",
        "user",
        "email",
        "provider_display",
        "token_status",
        "token_expires_in",
        "last_login_at",
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
        "provider_display",
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[SyneriseAccount]:
        return super().get_queryset(request).select_related("user", "token")

    @admin.display(description=_("provider"), ordering="identity_provider")
    def provider_display(self, obj: SyneriseAccount) -> str:
        return provider_label(obj.identity_provider)

    @admin.display(description=_("token status"), ordering="token__status")
    def token_status(self, obj: SyneriseAccount) -> str:
        return _token_status(obj)

    @admin.display(description=_("token expires in"), ordering="token__expires_at")
    def token_expires_in(self, obj: SyneriseAccount) -> str:
        return token_expiry_text(_token_of(obj))

    @admin.action(description=_("Refresh tokens now"), permissions=["operate"])
    def refresh_now_action(self, request: HttpRequest, queryset: QuerySet[SyneriseAccount]) -> None:
        ids = list(ClientToken.objects.filter(account__in=queryset).values_list("pk", flat=True))
        self._refresh(request, ids)

    @admin.action(description=_("Revoke tokens…"), permissions=["operate"])
    def revoke_action(
        self, request: HttpRequest, queryset: QuerySet[SyneriseAccount]
    ) -> TemplateResponse | None:
        ids = list(ClientToken.objects.filter(account__in=queryset).values_list("pk", flat=True))
        return self._revoke_or_confirm(request, queryset, ids)


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


class SyneriseAccountInline(_AccountInline):
    """Read-only Synerise account (and token state) for the user change page.

    Not added to any user admin by this package: list it in your user admin's ``inlines``,
    or use :class:`SyneriseUserAdminMixin`.
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
        "provider_display",
        "business_profile_id",
        "last_login_at",
        "token_status",
        "token_expires_in",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[SyneriseAccount]:
        return super().get_queryset(request).select_related("token")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("provider"))
    def provider_display(self, obj: SyneriseAccount) -> str:
        return provider_label(obj.identity_provider)

    @admin.display(description=_("token status"))
    def token_status(self, obj: SyneriseAccount) -> str:
        return _token_status(obj)

    @admin.display(description=_("token expires in"))
    def token_expires_in(self, obj: SyneriseAccount) -> str:
        return token_expiry_text(_token_of(obj))


@admin.action(description=_("Connect to Synerise"), permissions=["change"])
def connect_to_synerise(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    """Admin action on users: connect the selected active users to Synerise through OAUTH.

    Runs :func:`~django_synerise.services.connect_users` for them (concurrently, within
    ``REFRESH_RATE_LIMIT``); users Synerise could not take now stay pending and are retried
    by the beat entry. Inactive users are skipped.
    """
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


class SyneriseUserAdminMixin(_MixinBase):
    """Mix into your user ``ModelAdmin`` to show :class:`SyneriseAccountInline` on the user
    change page (after the admin's own inlines) and offer the :func:`connect_to_synerise`
    action::

        @admin.register(User)
        class UserAdmin(SyneriseUserAdminMixin, BaseUserAdmin):
            pass

    The inline and the action are added once, whatever the other bases list.
    """

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        inlines = list(super().get_inlines(request, obj))
        if not any(
            isinstance(inline, type) and issubclass(inline, SyneriseAccountInline)
            for inline in inlines
        ):
            inlines.append(SyneriseAccountInline)
        return inlines

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """The admin's actions plus :func:`connect_to_synerise` on the change list (for users
        who may change users), unless the admin turned actions off.

        ``action_location`` is Django 6.1's ``ActionLocation`` (earlier versions pass none).
        """
        on_change_list = action_location is None or action_location.value == "CHANGE_LIST"
        extra = {} if action_location is None else {"action_location": action_location}
        actions: dict[str, Any] = super().get_actions(request, **extra)
        if (
            on_change_list
            and self.actions is not None
            and "connect_to_synerise" not in actions
            and self.has_change_permission(request)
        ):
            actions["connect_to_synerise"] = self.get_action(connect_to_synerise)
        return actions
