"""End-user error messages per stable error code: the defaults every caller starts from.

The messages are untranslated message ids (marked with ``gettext_noop``); they are translated
when shown. :class:`django_synerise.adapter.DefaultSyneriseAdapter` serves them through
``error_messages`` / ``error_message(code)``, and the API's error bodies
(:mod:`django_synerise.api.errors`) ask the configured adapter, so a project rewords any of
them by overriding the adapter. Importable before ``django.setup()``.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop as N_

__all__ = ["CONDITIONAL_MESSAGES", "DEFAULT_ERROR_MESSAGES", "GENERIC_CODE"]

#: The code whose message every unknown code falls back to (so a message never reveals why a
#: sign-in failed).
GENERIC_CODE = "credentials_rejected"

#: ``detail`` of the 403 each conditional-login status gets (keyed by the status's code).
CONDITIONAL_MESSAGES: dict[str, str] = {
    "activation_required": N_("Activate your account first: follow the link Synerise e-mailed."),
    "registration_required": N_("No account exists for these credentials yet: register first."),
    "approval_required": N_("Your account is waiting for approval."),
    "terms_acceptance_required": N_("Accept the terms of service to continue."),
    "mfa_required": N_("A second authentication factor is required."),
}

#: Code -> default end-user message. ``credentials_rejected`` is the one body of every
#: rejected credential (API code ``invalid_credentials``).
DEFAULT_ERROR_MESSAGES: dict[str, str] = {
    GENERIC_CODE: N_("Invalid credentials."),
    "account_inactive": N_("This account is disabled."),
    "login_required": N_("Sign in again."),
    "invalid_token": N_("Synerise returned a token that could not be accepted."),
    "synerise_unavailable": N_("Synerise is temporarily unavailable. Try again later."),
    "synerise_bad_response": N_("Synerise sent an answer that could not be used. Try again later."),
    "synerise_bad_request": N_("Synerise rejected the request."),
    "account_conflict": N_("This Synerise client cannot be linked to this user."),
    "conditional_login": N_("Another step is required to sign in."),
    **CONDITIONAL_MESSAGES,
    "invalid": N_("Invalid input."),
    "throttled": N_("Too many requests. Try again later."),
    "request_too_large": N_("Request body is too large."),
}
