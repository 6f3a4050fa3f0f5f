"""The demo's user admin: Django's own plus django_synerise's account inline (the mixin)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from django_synerise.admin import SyneriseUserAdminMixin


class UserAdmin(SyneriseUserAdminMixin, BaseUserAdmin):
    """Users with their Synerise account (client id, provider, token state) inline."""


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), UserAdmin)
