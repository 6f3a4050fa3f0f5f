"""Sign a Synerise client in: call Synerise, verify the token, link the Django user, store."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import signals
from ..adapter_loader import get_adapter
from ..bulkhead import interactive_call
from ..compiled import CompiledQuery, field_of
from ..conf import synerise_settings
from ..exceptions import (
    CONDITIONAL_CODES,
    AccountInactive,
    BadRequest,
    ConditionalAuthFailed,
    CredentialsRejected,
    FieldErrorDetail,
    SyneriseError,
    TokenVerificationError,
)
from ..models import SyneriseAccount
from ..profile_uuid import (
    ChosenUuid,
    choose_uuid,
    parse_uuid,
    remember_profile_uuid,
    tracker_uuid,
)
from ..providers import IDENTITY_PROVIDERS
from ..verification import claims_for
from .outcomes import record_login
from .tokens import _prepare, check_business_profile, store_with_account

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.http import HttpRequest

    from ..adapter import DefaultSyneriseAdapter
    from ..client import AuthResult, SyneriseClient
    from ..models import SyneriseAccount
    from ..verification import TokenClaims

logger = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class LoginResult:
    """Outcome of a successful :func:`login`.

    ``token`` is the plaintext Synerise client token (hand it to the client that logged in,
    never log it); ``created`` is ``True`` when this login created the Django user (first
    sign-in of a Synerise client that no adapter hook linked to an existing user).
    ``str()``/``repr()`` never show the token.
    """

    user: AbstractBaseUser
    account: SyneriseAccount
    token: str
    expires_at: datetime
    created: bool

    def __repr__(self) -> str:
        return (
            f"LoginResult(user={getattr(self.user, 'pk', None)!r}, "
            f"client_id={self.account.client_id!r}, expires_at={self.expires_at.isoformat()}, "
            f"created={self.created!r})"
        )

    __str__ = __repr__


class AccountConflict(SyneriseError):
    """The adapter chose a user already linked to another Synerise client."""

    default_code = "account_conflict"
    default_message = "This Synerise client cannot be linked to this user."


def _normalise_provider(identity_provider: str | None) -> str:
    provider = (identity_provider or "SYNERISE").strip().upper()
    if provider not in IDENTITY_PROVIDERS:
        raise BadRequest(
            "Unknown identity provider.",
            field_errors=[
                FieldErrorDetail(
                    "identity_provider", "Unknown identity provider.", "invalid_choice"
                )
            ],
        )
    return provider


#: The account of a client id, with its user (compiled once per database).
_ACCOUNT_BY_CLIENT_ID = CompiledQuery(
    SyneriseAccount,
    lambda v: (
        SyneriseAccount.objects.select_related("user")
        .filter(client_id=v["client_id"])
        .order_by("pk")[:1]
    ),
    {"client_id": field_of(SyneriseAccount, "client_id")},
)


def _find_account(client_id: str) -> SyneriseAccount | None:
    return _ACCOUNT_BY_CLIENT_ID.first(client_id=client_id)


def _link(
    adapter: DefaultSyneriseAdapter,
    claims: TokenClaims,
    profile: dict[str, Any] | None,
    request: HttpRequest | None,
    provider: str,
    sent_uuid: str | None = None,
) -> tuple[SyneriseAccount, bool]:
    """Create the account of a client id seen for the first time (user found or created).

    Returns ``(account, user_created)``; ``user_created`` is ``True`` when the adapter created
    a new Django user, ``False`` when it linked an existing one or a concurrent login linked
    the same client id first.
    """
    try:
        with transaction.atomic():
            user = adapter.find_user(claims, profile)
            user_created = user is None
            if user is None:
                user = adapter.create_user(claims, profile, request)
            elif SyneriseAccount.objects.for_user(user).exists():
                raise AccountConflict()
            # Any AUTH_USER_MODEL: django-stubs types the foreign key as the checked settings'
            # User.
            account = SyneriseAccount.objects.create(  # type: ignore[misc]
                user=user,
                client_id=str(claims.client_id),
                email=claims.email or (profile or {}).get("email") or "",
                custom_id=claims.custom_id or "",
                uuid=claims.uuid or sent_uuid or "",
                identity_provider=provider,
                business_profile_id=str(claims.business_profile_id or ""),
            )
    except IntegrityError:
        found = _find_account(str(claims.client_id))
        if found is None:
            raise
        return found, False
    return account, user_created


#: The account fields a login sets (:func:`_update_account`).
_LOGIN_FIELDS = (
    "email",
    "custom_id",
    "uuid",
    "identity_provider",
    "business_profile_id",
    "last_login_at",
    "updated_at",
)


def _update_account(
    account: SyneriseAccount, claims: TokenClaims, provider: str, sent_uuid: str | None = None
) -> tuple[str, ...]:
    """Refresh the account's copy of the Synerise identity; ``last_login_at`` now.

    Sets the fields on ``account`` and returns their names; the caller saves them (with the
    token, :func:`~django_synerise.services.tokens.store_with_account`). The uuid stored is
    the one Synerise now knows: the token's ``uuid`` claim, else the uuid this login sent,
    else the one stored before.
    """
    account.email = claims.email or account.email
    account.custom_id = claims.custom_id or account.custom_id
    account.uuid = claims.uuid or sent_uuid or account.uuid
    account.identity_provider = provider
    if not account.business_profile_id and claims.business_profile_id:
        account.business_profile_id = str(claims.business_profile_id)
    account.last_login_at = timezone.now()
    return _LOGIN_FIELDS


@sensitive_variables("password", "identity_provider_token", "result", "token", "prepared")
def login(
    *,
    request: HttpRequest | None = None,
    identity_provider: str = "SYNERISE",
    email: str | None = None,
    custom_id: str | None = None,
    password: str | None = None,
    identity_provider_token: str | None = None,
    uuid: str | None = None,
    device_id: str | None = None,
    agreements: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    client: SyneriseClient | None = None,
) -> LoginResult:
    """Sign a Synerise client in and return the linked Django user and the stored token.

    Calls Synerise (``identity_provider`` SYNERISE with ``email`` or ``custom_id`` and
    ``password``, or GOOGLE / APPLE / FACEBOOK / OAUTH with ``identity_provider_token``),
    verifies the returned token, refuses anonymous tokens and tokens of another business
    profile, then links by Synerise client id: the account of that client id, else the user
    :meth:`~django_synerise.adapter.DefaultSyneriseAdapter.find_user` returns (email linking
    only when ``LINK_BY_EMAIL`` is on and the adapter agrees), else a new user from
    :meth:`~django_synerise.adapter.DefaultSyneriseAdapter.create_user`. The token is stored
    encrypted, the account updated, activity recorded, and ``client_logged_in`` sent.
    Database work runs in short transactions; none is open during HTTP calls.

    **The uuid sent** (see :func:`select_uuid`): every SYNERISE login sends one, in this
    order: ``uuid``, the ``_snrs_uuid`` cookie of ``request`` when it holds a valid UUID, the
    uuid stored on the account of that e-mail or custom id, else the uuid5 of the e-mail (of
    the custom id for a custom-id login).
    Provider logins send ``uuid`` or the cookie's when there is one. The account stores the
    uuid Synerise now knows, and ``request`` remembers it for
    :class:`~django_synerise.middleware.SyneriseTrackerMiddleware` and the API's session
    logins, which reset the tracker's cookie to it.

    **Conditional login**: with ``CONDITIONAL_LOGIN`` on, SYNERISE logins call the conditional
    endpoint (provider logins keep the endpoint that registers new clients). A status that
    asks for another step sends ``login_conditions_required`` and raises
    :class:`~django_synerise.exceptions.ConditionalAuthFailed`.

    :raises CredentialsRejected: Synerise answered 401/403 (wrong password, unknown client,
        bad provider token), or the conditional status ``UNAUTHORIZED`` or an unknown one.
    :raises ConditionalAuthFailed: conditional login answered ``ACTIVATION_REQUIRED``,
        ``REGISTRATION_REQUIRED``, ``APPROVAL_REQUIRED``, ``TERMS_ACCEPTANCE_REQUIRED`` or
        ``MFA_REQUIRED`` (nothing is stored).
    :raises BadRequest: Synerise answered 400 (missing or invalid fields), an unknown
        ``identity_provider``, or a ``uuid`` that is not a UUID (nothing sent).
    :raises TransientUpstreamError: Synerise is unavailable, rate limiting, or answered
        something unusable (subclasses ``SyneriseUnavailable``, ``RateLimited``,
        ``BadResponse``, ``CircuitOpen``).
    :raises TokenVerificationError: the returned token failed verification or belongs to an
        anonymous client or another business profile.
    :raises AccountInactive: the linked Django user is inactive (nothing is stored).
    :raises SyneriseBusy: ``INTERACTIVE_CONCURRENCY`` interactive calls are already in flight
        in this process; nothing was sent (a ``TransientUpstreamError``).
    """
    provider = _normalise_provider(identity_provider)
    chosen = select_uuid(
        provider=provider, requested=uuid, request=request, email=email, custom_id=custom_id
    )
    trace: dict[str, Any] = {}
    started = time.monotonic()
    try:
        # One slot of the interactive bulkhead for the whole sign-in (login call,
        # verification, profile): refused at once when full, so a slow Synerise cannot take
        # every worker.
        with interactive_call():
            result = _login(
                request=request,
                trace=trace,
                provider=provider,
                email=email,
                custom_id=custom_id,
                password=password,
                identity_provider_token=identity_provider_token,
                chosen=chosen,
                device_id=device_id,
                agreements=agreements,
                attributes=attributes,
                client=client,
            )
    except SyneriseError as exc:
        record_login(
            provider=provider,
            outcome=str(getattr(type(exc), "default_code", None) or "error"),
            client_id=trace.get("client_id"),
            upstream_status=getattr(exc, "status", None) or trace.get("status"),
            duration=time.monotonic() - started,
        )
        raise
    record_login(
        provider=provider,
        outcome="logged_in",
        client_id=result.account.client_id,
        token_id=trace.get("token_id"),
        upstream_status=200,
        duration=time.monotonic() - started,
    )
    return result


def select_uuid(
    *,
    provider: str,
    requested: str | None = None,
    request: HttpRequest | None = None,
    email: str | None = None,
    custom_id: str | None = None,
) -> ChosenUuid | None:
    """Return the uuid a login of ``provider`` sends (see
    :func:`django_synerise.profile_uuid.choose_uuid` for the order), or ``None``.

    SYNERISE logins always get one when an e-mail or custom id is given: the stored uuid is
    that of the account with this e-mail (case-insensitively) or custom id, the most recently
    signed-in first. Provider logins use only ``requested`` and the tracker cookie.

    :raises BadRequest: ``requested`` is given but is not a UUID.
    """
    if requested is not None and parse_uuid(requested) is None:
        raise BadRequest(
            "The uuid is not a UUID.",
            field_errors=[FieldErrorDetail("uuid", "Must be a UUID.", "invalid")],
        )
    if provider != "SYNERISE":
        return choose_uuid(requested=requested, request=request)
    stored = None
    if requested is None and tracker_uuid(request) is None and (email or custom_id):
        stored = _stored_uuid(email=email, custom_id=custom_id)
    return choose_uuid(
        requested=requested, request=request, stored=stored, email=email, custom_id=custom_id
    )


def _recent_uuids(**lookup: Any) -> CompiledQuery[SyneriseAccount]:
    """The uuids of the accounts matching ``lookup`` (one value), most recent sign-in first."""
    ((name, field),) = lookup.items()
    return CompiledQuery(
        SyneriseAccount,
        lambda v: (
            SyneriseAccount.objects.exclude(uuid="")
            .filter(**{name: v["value"]})
            .order_by("-last_login_at", "-pk")
            .values_list("uuid", flat=True)[:5]
        ),
        {"value": field_of(SyneriseAccount, field)},
    )


_UUIDS_BY_EMAIL = _recent_uuids(email__iexact="email")
_UUIDS_BY_CUSTOM_ID = _recent_uuids(custom_id="custom_id")


def _stored_uuid(*, email: str | None, custom_id: str | None) -> str | None:
    if email:
        found = _UUIDS_BY_EMAIL.column(value=email.strip())
    else:
        found = _UUIDS_BY_CUSTOM_ID.column(value=custom_id)
    return next((value for value in found if parse_uuid(value)), None)


@sensitive_variables("password", "identity_provider_token", "result", "outcome", "fields")
def _call_login(
    client: SyneriseClient,
    *,
    request: HttpRequest | None,
    provider: str,
    fields: dict[str, Any],
) -> AuthResult:
    """Call the login endpoint for ``provider``: the conditional one for SYNERISE logins when
    ``CONDITIONAL_LOGIN`` is on, the registering one otherwise."""
    if provider != "SYNERISE" or not synerise_settings.CONDITIONAL_LOGIN:
        return client.login(identity_provider=provider, **fields)
    outcome = client.login_conditional(identity_provider=provider, **fields)
    if outcome.succeeded:
        assert outcome.result is not None  # noqa: S101 - succeeded guarantees it
        return outcome.result
    if outcome.status not in CONDITIONAL_CODES:
        logger.info("Synerise conditional login refused (status %s)", outcome.status[:40])
        raise CredentialsRejected("Conditional login was not authorized.")
    logger.info("Synerise conditional login needs another step (%s)", outcome.status)
    error = ConditionalAuthFailed(outcome.status, outcome.conditions)
    signals.login_conditions_required.send(
        sender=ConditionalAuthFailed,
        request=request,
        status=error.status,
        code=error.code,
        conditions=error.conditions,
        identifier=fields.get("email") or fields.get("custom_id"),
    )
    raise error


@sensitive_variables("password", "identity_provider_token", "result", "token", "prepared")
def _login(
    *,
    request: HttpRequest | None,
    trace: dict[str, Any],
    provider: str,
    email: str | None,
    custom_id: str | None,
    password: str | None,
    identity_provider_token: str | None,
    chosen: ChosenUuid | None,
    device_id: str | None,
    agreements: dict[str, Any] | None,
    attributes: dict[str, Any] | None,
    client: SyneriseClient | None,
) -> LoginResult:
    adapter = get_adapter(request)
    client = client or adapter.get_client()
    sent_uuid = chosen.value if chosen is not None else None
    result, claims = call_login(
        client,
        provider=provider,
        request=request,
        trace=trace,
        email=email,
        custom_id=custom_id,
        password=password,
        identity_provider_token=identity_provider_token,
        uuid=sent_uuid,
        device_id=device_id,
        agreements=agreements,
        attributes=attributes,
    )
    return complete_login(
        adapter,
        client,
        result,
        claims,
        request=request,
        provider=provider,
        sent_uuid=sent_uuid,
        uuid_source=chosen.source if chosen is not None else "none",
        trace=trace,
    )


@sensitive_variables("password", "identity_provider_token", "result")
def call_login(
    client: SyneriseClient,
    *,
    provider: str,
    request: HttpRequest | None = None,
    trace: dict[str, Any] | None = None,
    **credentials: Any,
) -> tuple[AuthResult, TokenClaims]:
    """The upstream half of a sign-in: call Synerise (the conditional endpoint for SYNERISE
    logins when ``CONDITIONAL_LOGIN`` is on) and verify the token it returned.

    No database access, so it may run in a pool thread. ``credentials`` are the keyword
    arguments of :meth:`~django_synerise.client.SyneriseClient.login`. ``trace``, when given,
    receives ``status`` (200 once Synerise answered) and ``client_id`` for the login event.

    :raises: as :func:`login` (upstream errors, ``TokenVerificationError`` for anonymous tokens and
        tokens of another business profile).
    """
    trace = {} if trace is None else trace
    result = _call_login(client, request=request, provider=provider, fields=credentials)
    trace["status"] = 200
    claims = claims_for(result, client=client)
    trace["client_id"] = str(claims.client_id)
    if claims.is_anonymous:
        raise TokenVerificationError("Anonymous tokens cannot sign in.", reason="anonymous")
    check_business_profile(claims)
    return result, claims


def account_values(claims: TokenClaims, provider: str) -> dict[str, str]:
    """The ``SyneriseAccount`` fields a new account takes from its first token's claims."""
    return {
        "client_id": str(claims.client_id),
        "email": claims.email or "",
        "custom_id": claims.custom_id or "",
        "uuid": claims.uuid or "",
        "identity_provider": provider,
        "business_profile_id": str(claims.business_profile_id or ""),
    }


def _link_to(user: Any, claims: TokenClaims, provider: str) -> SyneriseAccount:
    """Create the account of ``user`` for a client id seen for the first time.

    :raises AccountConflict: ``user`` is already linked to another Synerise client.
    """
    try:
        with transaction.atomic():
            if SyneriseAccount.objects.filter(user=user).exists():
                raise AccountConflict()
            return SyneriseAccount.objects.create(user=user, **account_values(claims, provider))
    except IntegrityError:
        account = _find_account(str(claims.client_id))
        if account is None or account.user_id != user.pk:
            raise AccountConflict() from None
        return account


@sensitive_variables("result", "prepared")
def complete_login(
    adapter: DefaultSyneriseAdapter,
    client: SyneriseClient,
    result: AuthResult,
    claims: TokenClaims,
    *,
    request: HttpRequest | None,
    provider: str,
    link_user: Any = None,
    sent_uuid: str | None = None,
    uuid_source: str = "none",
    trace: dict[str, Any] | None = None,
) -> LoginResult:
    """The database half of a sign-in: link the user, store the token, send ``client_logged_in``.

    ``sent_uuid`` is the uuid the login sent (``uuid_source`` says where it came from, for the
    log): the account keeps the uuid Synerise now knows, and the tracker cookie is reset to it
    after a session login. ``trace``, when given, receives ``token_id`` (the stored row) for
    the login event.

    With ``link_user`` (an identity-provider connection of a known user) the client id is
    linked to that user, never to another: a client id already linked elsewhere, or a user
    already linked to another client id, raises :class:`AccountConflict`, and the adapter's
    ``find_user``/``create_user`` (and the profile fetch) do not run.

    :raises AccountInactive: the linked user is inactive (nothing is stored).
    :raises TokenVerificationError: the token fails the storage checks of
        :func:`~django_synerise.services.store_token`.
    """
    account = _find_account(str(claims.client_id))
    created = False
    if account is None:
        if link_user is not None:
            account = _link_to(link_user, claims, provider)
        else:
            profile = adapter.fetch_profile(client, result.token, claims)
            account, created = _link(adapter, claims, profile, request, provider, sent_uuid)
    else:
        if link_user is not None and account.user_id != link_user.pk:
            raise AccountConflict()
        check_business_profile(claims, account)
    user = account.user
    if not user.is_active:
        logger.info("Synerise login refused: Django user %s is inactive", user.pk)
        raise AccountInactive()

    prepared = _prepare(account, result.token, claims)
    fields = _update_account(account, claims, provider, sent_uuid)
    token_id = store_with_account(account, prepared, fields=fields, now=account.last_login_at)
    if trace is not None:
        trace["token_id"] = token_id
    remember_profile_uuid(request, account.uuid)
    logger.info(
        "Synerise client %s signed in as user %s (provider %s, user created %s, uuid from %s)",
        account.client_id,
        user.pk,
        provider,
        created,
        uuid_source,
    )
    signals.client_logged_in.send(
        sender=type(account), user=user, account=account, request=request, created=created
    )
    return LoginResult(
        user=user,
        account=account,
        token=result.token,
        expires_at=prepared.expires_at,
        created=created,
    )


__all__ = [
    "IDENTITY_PROVIDERS",
    "AccountConflict",
    "LoginResult",
    "call_login",
    "complete_login",
    "login",
    "select_uuid",
]
