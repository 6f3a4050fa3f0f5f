"""Forms of the demo pages."""

from __future__ import annotations

from django import forms


class EmailLoginForm(forms.Form):
    """Email and password of a Synerise client (checked by Synerise, never stored here)."""

    email = forms.EmailField(
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password = forms.CharField(
        max_length=1024,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )


class SiteLoginForm(forms.Form):
    """Username and password of an account of this site (checked by Django, stored here)."""

    username = forms.CharField(
        max_length=150, widget=forms.TextInput(attrs={"autocomplete": "username"})
    )
    password = forms.CharField(
        max_length=1024,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
