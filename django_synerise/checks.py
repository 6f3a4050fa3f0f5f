"""System checks that validate every ``SYNERISE`` key and the project wiring around it."""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.utils.module_loading import import_string
from jwt.algorithms import get_default_algorithms

from .conf import DEFAULTS, synerise_settings
from .conversions import timeout_pair
from .crypto import derive_key
from .signing import key_problem
from .web_sdk import signing_key_problem

#: Custom tag: ``manage.py check --tag django_synerise`` runs only these checks.
TAG = "django_synerise"

BACKEND_PATH = "django_synerise.backends.SyneriseBackend"
REFRESH_TASK = "django_synerise.tasks.refresh_expiring_tokens"
LOOPBACK_NAMES = frozenset({"localhost"})

# Bounds (documented in docs/configuration.rst).
MIN_RESPONSE_BYTES, MAX_RESPONSE_BYTES = 4 * 1024, 16 * 1024 * 1024
MIN_TOKEN_BYTES, MAX_TOKEN_BYTES = 1024, 64 * 1024
MAX_LEEWAY = 300
MIN_MARGIN, MAX_MARGIN, TIGHT_MARGIN = 60, 3000, 300
#: A fresh one-hour token must wait at least 10 minutes before its first refresh.
MAX_MARGIN_PLUS_JITTER = 3000
MAX_BATCH_SIZE = 1000
MAX_CONCURRENCY = 64
MAX_INTERACTIVE_CONCURRENCY = 1024
MIN_RATE_LIMIT, MAX_RATE_LIMIT = 3, 10_000
#: Cache backends a shared rate limit cannot rely on, and why.
_RATE_LIMIT_CACHE_PROBLEMS: dict[str, str] = {
    "django.core.cache.backends.locmem.LocMemCache": "is private to each process, so the "
    "limit holds per process only",
    "django.core.cache.backends.dummy.DummyCache": "stores nothing, so there is no limit",
    "django.core.cache.backends.db.DatabaseCache": "does not increment atomically, so "
    "concurrent workers can exceed the limit",
    "django.core.cache.backends.filebased.FileBasedCache": "does not increment atomically, so "
    "concurrent workers can exceed the limit",
}
MAX_BUSINESS_PROFILE_ID_LENGTH = 32
MIN_RSA_KEY_BITS = 2048
PYJWT_FLOOR = (2, 13)
URLLIB3_FLOOR = (2, 7)

THROTTLE_SCOPES = frozenset({"ip", "account_ip", "account"})
UPSTREAM_PASSWORD_POLICIES = ("linked", "non_local", "non_staff", "all")
#: Cache backends the login throttle cannot count in (deploy check W073 for LocMemCache).
_THROTTLE_CACHE_PROBLEMS: dict[str, str] = {
    key: value
    for key, value in _RATE_LIMIT_CACHE_PROBLEMS.items()
    if not key.endswith("LocMemCache")
}
MODEL_BACKEND_PATH = "django.contrib.auth.backends.ModelBackend"
_RATE_RE = re.compile(r"^[1-9][0-9]*/(s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?)$")
_API_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FERNET_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{43}=$")
# Key families: one verification key has one type, so the list must stay within one family.
_ALGORITHM_FAMILIES: dict[str, str] = {
    **{f"RS{n}": "RSA" for n in (256, 384, 512)},
    **{f"PS{n}": "RSA" for n in (256, 384, 512)},
    **dict.fromkeys(("ES256", "ES256K", "ES384", "ES512", "ES521"), "EC"),
    "EdDSA": "OKP",
}


@dataclass(frozen=True)
class Spec:
    """One check id: its level, message template and fix (the hint)."""

    level: type[Error] | type[Warning]
    message: str
    hint: str
    deploy: bool = False


def _e(message: str, hint: str, *, deploy: bool = False) -> Spec:
    return Spec(Error, message, hint, deploy)


def _w(message: str, hint: str, *, deploy: bool = False) -> Spec:
    return Spec(Warning, message, hint, deploy)


#: Every check id with its message and hint. Ids are never reused; docs/checks.rst mirrors this.
MESSAGES: dict[str, Spec] = {
    "E001": _e(
        "SYNERISE['API_KEY'] is missing or blank{detail}.",
        "Set SYNERISE['API_KEY'] to the Profile (client) API key of your Synerise workspace "
        "(Settings > API keys), e.g. from an environment variable.",
    ),
    "E002": _e(
        "SYNERISE contains an unknown key {key}.",
        "{suggestion}Remove it; the valid keys are listed in the django-synerise "
        "configuration docs.",
    ),
    "E003": _e(
        "settings.SYNERISE must be a dict, not {type}.",
        "Define SYNERISE = {{'API_KEY': '...', ...}} in your settings.",
    ),
    "E004": _e(
        "SYNERISE['BASE_URL'] = {value!r} is not a valid base URL: {problem}.",
        "Use the scheme and host only, e.g. 'https://api.synerise.com' "
        "(or 'https://api.azu.synerise.com' / 'https://api.geb.synerise.com').",
    ),
    "E005": _e(
        "SYNERISE['BASE_URL'] uses http:// for the non-loopback host {host!r}.",
        "Use https://. Plain http is accepted only for 127.0.0.1, localhost and ::1 (e.g. "
        "FakeSynerise) or when DEBUG is True.",
    ),
    "E006": _e(
        "SYNERISE['API_VERSION'] = {value!r} is not a version string.",
        "Set it to the Api-Version header Synerise expects, e.g. '4.4'.",
    ),
    "E007": _e(
        "SYNERISE['AUTH_API'] = {value!r} is not 'v3' or 'v2'.",
        "Use 'v3' (current sauth paths) or 'v2' (the 2022 reference paths).",
    ),
    "E008": _e(
        "SYNERISE['TIMEOUT'] = {value!r} is invalid: {problem}.",
        "Use a positive number of seconds or a (connect, read) pair such as (3.05, 10). "
        "None would let a request wait forever.",
    ),
    "E009": _e(
        "SYNERISE['TOTAL_TIMEOUT'] = {value!r} is invalid: {problem}.",
        "Use a positive number of seconds that is at least the read timeout, e.g. 12.",
    ),
    "E010": _e(
        "SYNERISE['MAX_RESPONSE_BYTES'] = {value!r} is invalid: {problem}.",
        f"Use an int between {MIN_RESPONSE_BYTES} and {MAX_RESPONSE_BYTES}; the default is 65536.",
    ),
    "E011": _e(
        "SYNERISE['PUBLIC_KEY'] is invalid: {problem}.",
        "Use None (fetch BASE_URL + /v4/public.pem) or the PEM text of Synerise's RSA public "
        f"key ('-----BEGIN PUBLIC KEY-----...'), at least {MIN_RSA_KEY_BITS} bits.",
    ),
    "E012": _e(
        "SYNERISE['VERIFY_SIGNATURE'] = {value!r} is not a bool.",
        "Use True (recommended) or False.",
    ),
    "E013": _e(
        "SYNERISE['JWT_ALGORITHMS'] = {value!r} is invalid: {problem}.",
        "Use a non-empty list of algorithm names PyJWT supports, e.g. ['RS512'].",
    ),
    "E014": _e(
        "SYNERISE['JWT_ALGORITHMS'] = {value!r} is unsafe: {problem}.",
        "Pin the asymmetric RSA algorithm Synerise signs with: ['RS512']. Never list 'none' "
        "or HS* (key confusion), and never mix key families.",
    ),
    "E015": _e(
        "SYNERISE['JWT_ISSUER'] = {value!r} is not a non-empty string or None.",
        "Use 'Synerise' (the iss claim of client tokens) or None to skip the issuer check.",
    ),
    "E016": _e(
        "SYNERISE['JWT_LEEWAY'] = {value!r} is invalid: {problem}.",
        f"Use a number of seconds between 0 and {MAX_LEEWAY}; 30 is the default.",
    ),
    "E017": _e(
        "SYNERISE['MAX_TOKEN_BYTES'] = {value!r} is invalid: {problem}.",
        f"Use an int between {MIN_TOKEN_BYTES} and {MAX_TOKEN_BYTES}; the default is 8192.",
    ),
    "E018": _e(
        "SYNERISE['BUSINESS_PROFILE_ID'] = {value!r} is invalid: {problem}.",
        "Use None (learned at login) or your workspace's business profile id, e.g. '1234'.",
    ),
    "E019": _e(
        "SYNERISE['REFRESH_MARGIN'] = {value!r} is invalid: {problem}.",
        f"Use an int of seconds between {MIN_MARGIN} and {MAX_MARGIN}: a client token lives "
        "one hour and cannot be refreshed once expired. 900 is the default.",
    ),
    "E020": _e(
        "SYNERISE['REFRESH_JITTER'] = {value!r} is invalid: {problem}.",
        "Use a number of seconds >= 0 with REFRESH_MARGIN + REFRESH_JITTER <= "
        f"{MAX_MARGIN_PLUS_JITTER}: a token is refreshed between REFRESH_MARGIN and "
        "REFRESH_MARGIN + REFRESH_JITTER seconds before it expires, so a larger sum makes a "
        "fresh one-hour token due almost at once.",
    ),
    "E021": _e(
        "SYNERISE['KEEPALIVE_IDLE'] = {value!r} is not a positive number of seconds.",
        "Use e.g. 14 * 24 * 3600 (tokens of users idle longer stop being refreshed).",
    ),
    "E022": _e(
        "SYNERISE['LEASE_SECONDS'] = {value!r} is invalid: {problem}.",
        "Use a positive number of seconds greater than TOTAL_TIMEOUT, so a lease outlives "
        "the refresh call it protects; 60 is the default.",
    ),
    "E023": _e(
        "SYNERISE['SINGLE_FLIGHT_WAIT'] = {value!r} is not a number >= 0.",
        "Use the seconds a caller waits for another process's refresh, e.g. 5.0.",
    ),
    "E024": _e(
        "SYNERISE['ACTIVITY_INTERVAL'] = {value!r} is not a number >= 0.",
        "Use the seconds between last_used_at writes per user, e.g. 60.",
    ),
    "E025": _e(
        "SYNERISE['REFRESH_BATCH_SIZE'] = {value!r} is not an int between 1 and "
        f"{MAX_BATCH_SIZE}.",
        "Use e.g. 100.",
    ),
    "E026": _e(
        "SYNERISE['REFRESH_CONCURRENCY'] = {value!r} is not an int between 1 and "
        f"{MAX_CONCURRENCY}.",
        "Use e.g. 8 (concurrent Synerise calls per batch).",
    ),
    "E027": _e(
        "SYNERISE['RETRY_AFTER_MAX'] = {value!r} is not a positive number of seconds.",
        "Use e.g. 300 (the cap applied to Synerise's Retry-After).",
    ),
    "E028": _e(
        "SYNERISE['PURGE_AFTER'] = {value!r} is not a positive number of seconds.",
        "Use e.g. 7 * 24 * 3600 (revoked and long-expired rows are deleted after this).",
    ),
    "E029": _e(
        "SYNERISE['TOKEN_ENCRYPTION_KEYS'] is invalid: {problem}.",
        "Use a list of Fernet keys, newest first; create one with "
        '`python -c "from cryptography.fernet import Fernet; '
        'print(Fernet.generate_key().decode())"`.',
    ),
    "E030": _e(
        "SYNERISE['TOKEN_ENCRYPTION_KEYS'][{index}] is derived from {setting}.",
        "Generate separate keys with Fernet.generate_key(); a leaked SECRET_KEY must not "
        "also reveal the stored tokens.",
    ),
    "E031": _e(
        "SYNERISE['LINK_BY_EMAIL'] = {value!r} is not a bool.",
        "Use False (recommended) or True.",
    ),
    "E032": _e(
        "SYNERISE['BREAKER_THRESHOLD'] = {value!r} is not a positive int.",
        "Use the number of consecutive failures that opens the circuit, e.g. 5.",
    ),
    "E033": _e(
        "SYNERISE['BREAKER_RESET_TIMEOUT'] = {value!r} is not a positive int.",
        "Use the seconds the circuit stays open before a trial call, e.g. 30.",
    ),
    "E034": _e(
        "SYNERISE['LOGIN_STARTS_SESSION'] = {value!r} is not a bool.",
        "Use True (API logins also start a Django session) or False.",
    ),
    "E035": _e(
        "SYNERISE['LOGIN_THROTTLE_RATES'] is invalid: {problem}.",
        "Use a dict with keys among 'ip', 'account_ip' and 'account', each a DRF rate such as "
        "'30/min' (N/sec, N/min, N/hour, N/day) or None, e.g. "
        "{{'ip': '30/min', 'account_ip': '10/min', 'account': '100/hour'}}.",
    ),
    "E036": _e(
        "SYNERISE['ADAPTER'] = {value!r} could not be imported: {problem}.",
        "Use the dotted path of a class, e.g. 'django_synerise.adapter.DefaultSyneriseAdapter' "
        "or a subclass of it.",
    ),
    "E037": _e(
        "SYNERISE['TOKEN_ENCRYPTION_KEYS'] is empty: tokens are encrypted with keys derived "
        "from SECRET_KEY.",
        "Set TOKEN_ENCRYPTION_KEYS to at least one Fernet key of its own "
        "(Fernet.generate_key()) before deploying.",
        deploy=True,
    ),
    "E038": _e(
        "SYNERISE['BASE_URL'] = {value!r} does not use https.",
        "Deployments talk to Synerise over https only: use 'https://api.synerise.com' "
        "(or your regional host).",
        deploy=True,
    ),
    "E039": _e(
        "PyJWT {version} is installed; django-synerise needs >= {floor} in production.",
        "Upgrade: pip install -U 'PyJWT[crypto]>={floor}' (security fixes CVE-2026-48522 to "
        "48526).",
        deploy=True,
    ),
    "E040": _e(
        "urllib3 {version} is installed; django-synerise needs >= {floor} in production.",
        "Upgrade: pip install -U 'urllib3>={floor}' (decompression-bomb and redirect header "
        "fixes).",
        deploy=True,
    ),
    "E041": _e(
        "CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] = {value!r} {problem}.",
        "Raise visibility_timeout above CELERY_TASK_TIME_LIMIT and SYNERISE['RETRY_AFTER_MAX'] "
        "(and any retry countdown); otherwise the broker redelivers running or waiting "
        "refresh tasks.",
        deploy=True,
    ),
    "E042": _e(
        "SYNERISE['REFRESH_RATE_LIMIT'] = {value!r} is not None or a number of calls per second "
        f"between {MIN_RATE_LIMIT:g} and {MAX_RATE_LIMIT}.",
        "Use None (no global limit) or the calls per second Synerise may receive from the "
        "background refresh of every worker together, e.g. 50.",
    ),
    "E043": _e(
        "SYNERISE['REFRESH_RATE_LIMIT_CACHE'] = {value!r} is not an alias in CACHES.",
        "Use the alias of a Redis or Memcached cache that every worker shares, e.g. 'default'.",
    ),
    "E070": _e(
        "SYNERISE['UPSTREAM_PASSWORDS'] = {value!r} is not one of "
        + ", ".join(repr(p) for p in UPSTREAM_PASSWORD_POLICIES)
        + ".",
        "Use 'non_local' (the default: never send the password of a staff user or of a user "
        "with a usable local password to Synerise), 'linked', 'non_staff' or 'all'.",
    ),
    "E071": _e(
        "SYNERISE['LOGIN_THROTTLE_CACHE'] = {value!r} is not an alias in CACHES.",
        "Use the alias of a cache every web process shares (Redis or Memcached), e.g. 'default'.",
    ),
    "E060": _e(
        "SYNERISE['SUPERSEDED_TOKEN_GRACE'] = {value!r} is not None or a number of seconds >= 0.",
        "Use None (the default: REFRESH_MARGIN + REFRESH_JITTER) or the seconds a token "
        "replaced by a refresh or a newer login stays usable for Bearer requests; 0 refuses "
        "it at once.",
    ),
    "E061": _e(
        "SYNERISE['INTERACTIVE_CONCURRENCY'] = {value!r} is not an int between 1 and "
        f"{MAX_INTERACTIVE_CONCURRENCY}.",
        "Use how many interactive Synerise calls (logins, refreshes on request) one process "
        "may have in flight, below its worker thread count, e.g. 4 (the default).",
    ),
    "E062": _e(
        "SYNERISE['BREAKER_SLOW_CALL_THRESHOLD'] = {value!r} is not None or a positive number "
        "of seconds.",
        "Use the duration above which a Synerise call counts as a failure of the circuit "
        "breaker, e.g. 5.0 (the default), or None to count failures only.",
    ),
    "W060": _w(
        "SYNERISE['SUPERSEDED_TOKEN_GRACE'] = {value!r} is shorter than REFRESH_MARGIN + "
        "REFRESH_JITTER ({window:g} s).",
        "A token replaced by the background refresh then stops working before it expires, "
        "so an app holding it may have to sign in again instead of fetching its successor "
        "from auth/token/. Use at least {window:g} s unless that is what you want.",
    ),
    "E080": _e(
        "SYNERISE['MAX_TOKEN_LIFETIME'] = {value!r} {problem}.",
        "Use the longest client token lifetime your workspace issues, in seconds (or a "
        "timedelta), between 60 s and 30 days; 86400 (24 h) is the default.",
    ),
    "E081": _e(
        "SYNERISE['REFRESH_FLUSH_INTERVAL'] = {value!r} is not a number of seconds in [0, 5].",
        "New tokens are stored at most this long after they arrive (0: each answer at once); "
        "0.25 is the default. A killed worker loses the answers of one such window.",
    ),
    "E082": _e(
        "SYNERISE['HALT_PROBE_MAX'] = {value!r} is not a positive number of seconds.",
        "Use at most half the refresh beat period (30 for the default 60 s beat) so refresh "
        "resumes within two beats once Synerise accepts the API key again.",
    ),
    "E100": _e(
        "SYNERISE['CONDITIONAL_LOGIN'] = {value!r} is not a bool.",
        "Use True to sign SYNERISE logins in through the conditional endpoint (403 codes for "
        "activation, terms, MFA...), or False (the default).",
    ),
    "E101": _e(
        "SYNERISE['TRACKER_KEY'] is invalid: {problem}.",
        "Use None (no tracking code) or the tracker key of your site's tracking code "
        "(Synerise: Settings > Tracking codes), e.g. from an environment variable.",
    ),
    "E102": _e(
        "SYNERISE['TRACKER_DOMAIN'] = {value!r} is not a valid tracking domain: {problem}.",
        "Use the scheme and host only: 'https://web.snrbox.com' (the default), "
        "'https://web.geb.snrbox.com', or your own first-party tracking domain.",
    ),
    "E103": _e(
        "SYNERISE['TRACKER_UUID_COOKIE'] = {value!r} is not a bool.",
        "Use True (the default) to reset the tracker's _snrs_uuid cookie after each session "
        "login, or False.",
    ),
    "E104": _e(
        "SYNERISE['WEB_SDK_SIGNING_KEY'] is invalid: {problem}.",
        "Use None, or the PEM text of an unencrypted RSA private key of at least "
        "2048 bits ('-----BEGIN PRIVATE KEY-----...'), e.g. from a secret store; upload its "
        "public part in Synerise (Data Management > Events > JS SDK event settings > "
        "Certificate).",
    ),
    "E105": _e(
        "SYNERISE['WEB_SDK_TOKEN_LIFETIME'] = {value!r} is invalid: {problem}.",
        "Use a whole number of seconds between 60 and 3600 (default 600); the page renews "
        "the token before it ends.",
    ),
    "W100": _w(
        "SYNERISE['WEB_SDK_SIGNING_KEY'] is set but SYNERISE['TRACKER_KEY'] is not: no page "
        "renders the tracking code, so no Web SDK token is ever used.",
        "Set TRACKER_KEY to the tracker key of your site's tracking code, or remove "
        "WEB_SDK_SIGNING_KEY.",
    ),
    "W101": _w(
        "SYNERISE['TRACKER_UUID_COOKIE'] is on but "
        "django_synerise.middleware.SyneriseTrackerMiddleware is not in MIDDLEWARE: session "
        "logins through Django's own login views do not reset the tracker's uuid.",
        "Add 'django_synerise.middleware.SyneriseTrackerMiddleware' to MIDDLEWARE after "
        "SessionMiddleware and AuthenticationMiddleware, or set TRACKER_UUID_COOKIE to False.",
    ),
    "W001": _w(
        "SYNERISE['VERIFY_SIGNATURE'] is False: client tokens are not verified locally.",
        "Set it to True unless your tokens cannot be verified; without it the expiry comes "
        "from the login response and identity from personal information.",
    ),
    "W002": _w(
        "SYNERISE['REFRESH_MARGIN'] = {value!r} leaves little time to refresh a one-hour token.",
        f"Use at least {TIGHT_MARGIN} s so retries and a late beat still land before expiry; "
        "900 is the default.",
    ),
    "W003": _w(
        "SYNERISE['TOKEN_ENCRYPTION_KEYS'] is empty: token encryption keys are derived from "
        "SECRET_KEY (development only).",
        "Set TOKEN_ENCRYPTION_KEYS to a list of Fernet keys (Fernet.generate_key()); "
        "`check --deploy` reports this as django_synerise.E037.",
    ),
    "W004": _w(
        "SYNERISE['LINK_BY_EMAIL'] is True: a Synerise login can take over an existing Django "
        "user who has the same email address.",
        "Keep it False unless every email is verified on both sides; whoever controls the "
        "address at Synerise (or at a social provider) gets that user's account.",
    ),
    "W005": _w(
        f"'{BACKEND_PATH}' is not in AUTHENTICATION_BACKENDS.",
        f"Add '{BACKEND_PATH}' to AUTHENTICATION_BACKENDS so Django's login forms (admin "
        "included) accept Synerise credentials, or silence this warning if you only use the "
        "HTTP API.",
    ),
    "W006": _w(
        "Celery is configured (CELERY_BROKER_URL) but no refresh schedule was found.",
        f"With Celery's own beat scheduler, merge django_synerise.schedule.BEAT_SCHEDULE into "
        f"CELERY_BEAT_SCHEDULE (it runs '{REFRESH_TASK}'). With django-celery-beat, set "
        "CELERY_BEAT_SCHEDULER = 'django_celery_beat.schedulers:DatabaseScheduler' and run "
        "`manage.py synerise_setup_beat`. Without beat, run `manage.py "
        "synerise_refresh_tokens` from cron and silence this warning.",
    ),
    "W110": _w(
        "django-celery-beat's DatabaseScheduler is configured but no enabled periodic task "
        f"runs '{REFRESH_TASK}'.",
        "Run `manage.py synerise_setup_beat` (creates or updates the refresh and purge tasks "
        "from django_synerise.schedule.BEAT_SCHEDULE; safe on every deploy), or enable the "
        "task in the admin.",
    ),
    "W080": _w(
        "Background refresh of Synerise tokens is halted since {since}: Synerise rejects the "
        "API key ({reason}, {detail}).",
        "Check SYNERISE['API_KEY'] (rotated, revoked or mistyped?). No token was marked; "
        "refresh resumes by itself at the first run after Synerise accepts the key "
        "(next probe at {probe_at}).",
    ),
    "W007": _w(
        "SYNERISE['REFRESH_RATE_LIMIT'] counts calls in cache {alias!r} ({backend}), which "
        "{problem}.",
        "Point REFRESH_RATE_LIMIT_CACHE at a Redis or Memcached cache that every worker shares "
        "(django.core.cache.backends.redis.RedisCache or a memcached backend).",
    ),
    "W070": _w(
        "SYNERISE['UPSTREAM_PASSWORDS'] is 'all': SyneriseBackend sends the username and "
        "password of local users, staff and superusers included, to Synerise{order}.",
        "Use 'non_local' (the default) so local and staff credentials stay on this site, or "
        "'non_staff' if local users are moving to Synerise.",
    ),
    "W071": _w(
        "'{backend}' is listed after SyneriseBackend in AUTHENTICATION_BACKENDS: the "
        "credentials its users type (admin logins included) are sent to Synerise first.",
        "List SyneriseBackend after it, or set SYNERISE['UPSTREAM_PASSWORDS'] = 'linked' so "
        "only identifiers of linked Synerise accounts are sent upstream.",
    ),
    "W072": _w(
        "SYNERISE['LOGIN_THROTTLE_CACHE'] counts login attempts in cache {alias!r} "
        "({backend}), which {problem}.",
        "Point LOGIN_THROTTLE_CACHE at a Redis or Memcached cache every web process shares "
        "(django.core.cache.backends.redis.RedisCache or a memcached backend).",
    ),
    "E090": _e(
        "SYNERISE['OAUTH_SIGNING_KEYS'] is not a list of PEM private keys ({value_type}).",
        "Use a list of PEM strings, the signing key first, e.g. "
        "[open('oauth-2026.pem').read()]; [] (the default) turns the identity provider off.",
    ),
    "E091": _e(
        "SYNERISE['OAUTH_SIGNING_KEYS'][{index}] {problem}.",
        "Give an unencrypted PEM private key: RSA of at least 2048 bits or EC on P-256, e.g. "
        "`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072`.",
    ),
    "E092": _e(
        "SYNERISE['OAUTH_SIGNING_KEYS'][{index}] {problem}.",
        "Weak keys let anyone forge identity tokens Synerise accepts. Generate an RSA key of "
        "at least 2048 bits (3072 recommended) or an EC key on P-256.",
    ),
    "E093": _e(
        "SYNERISE['OAUTH_SIGNING_KEYS'][{index}] {problem}.",
        "This setting holds the private keys this site signs with; the public halves are "
        "published at oauth/jwks.json by themselves. Paste the private key here.",
    ),
    "E094": _e(
        "SYNERISE['OAUTH_ISSUER'] = {value!r} is not set although OAUTH_SIGNING_KEYS is.",
        "Use the URL of this site (e.g. 'https://shop.example.com'); Synerise's OAuth "
        "settings check the iss claim of every identity token against it.",
    ),
    "E095": _e(
        "SYNERISE['OAUTH_AUDIENCE'] = {value!r} is not set although OAUTH_SIGNING_KEYS is.",
        "Use the audience configured in Synerise's OAuth settings (for example your "
        "workspace's name); tokens for another audience are refused.",
    ),
    "E096": _e(
        "SYNERISE['OAUTH_TOKEN_LIFETIME'] = {value!r} is not a whole number of seconds in "
        "[30, 3600].",
        "Identity tokens are used once, at once: keep them short. 300 is the default.",
    ),
    "E097": _e(
        "SYNERISE['CONNECT_ON_LOGIN'] = {value!r} is not True or False.",
        "Set it to True to connect every user who signs in to Synerise, or False (default).",
    ),
    "W090": _w(
        "SYNERISE['CONNECT_ON_LOGIN'] is True but this site is not configured as an identity "
        "provider (OAUTH_SIGNING_KEYS, OAUTH_ISSUER, OAUTH_AUDIENCE): nobody is connected.",
        "Set the three OAUTH_* keys, or set CONNECT_ON_LOGIN to False.",
    ),
    "W091": _w(
        "SYNERISE['OAUTH_ISSUER'] = {value!r} is not an https:// URL.",
        "Synerise fetches oauth/jwks.json or calls oauth/userinfo/ on this site: serve them "
        "over https and use the https:// URL of the site as the issuer.",
        deploy=True,
    ),
    "W073": _w(
        "SYNERISE['LOGIN_THROTTLE_CACHE'] counts login attempts in cache {alias!r} "
        "(LocMemCache) with DEBUG off: the cache is private to each process, so every web "
        "process grants its own budget of guesses.",
        "Point LOGIN_THROTTLE_CACHE at a Redis or Memcached cache every web process shares.",
        deploy=True,
    ),
}


def _message(code: str, *, obj: str | None = None, **fmt: Any) -> CheckMessage:
    spec = MESSAGES[code]
    return spec.level(
        spec.message.format(**fmt),
        hint=spec.hint.format(**fmt),
        obj=obj,
        id=f"{TAG}.{code}",
    )


# --------------------------------------------------------------------------- value helpers


def _raw() -> Any:
    return getattr(settings, "SYNERISE", None)


_user = synerise_settings.user_settings
_get = synerise_settings.raw


def _is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: object) -> TypeGuard[int | float]:
    return _is_number(value) and value > 0


def _non_negative(value: object) -> TypeGuard[int | float]:
    return _is_number(value) and value >= 0


def _obj(key: str) -> str:
    """The ``obj`` of a message about ``key`` (the key itself is named in the message)."""
    return "settings.SYNERISE"


def _timeout_pair(value: Any) -> tuple[float, float] | None:
    """Return ``(connect, read)`` for a valid TIMEOUT, ``None`` otherwise."""
    if _positive(value) or (
        isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_positive, value))
    ):
        return timeout_pair(value)
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _version_tuple(version: str) -> tuple[int, ...] | None:
    match = re.match(r"^(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _installed_version(distribution: str) -> str | None:
    """Return the installed version of ``distribution`` or ``None`` when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- settings checks


def _check_structure() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for key in _user():
        if key in DEFAULTS:
            continue
        close = difflib.get_close_matches(str(key), list(DEFAULTS), n=1, cutoff=0.6)
        suggestion = f"Did you mean {close[0]!r}? " if close else ""
        errors.append(
            _message("E002", obj="settings.SYNERISE", key=repr(key), suggestion=suggestion)
        )
    return errors


def _check_api_key() -> list[CheckMessage]:
    value = _user().get("API_KEY")
    if isinstance(value, str) and value.strip():
        return []
    detail = "" if value is None or isinstance(value, str) else f" (got {type(value).__name__})"
    return [_message("E001", obj=_obj("API_KEY"), detail=detail)]


def _base_url_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if any(char.isspace() for char in value):
        return "it contains whitespace"
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"}:
        return "the scheme must be https (or http for a loopback test server)"
    if not parts.hostname:
        return "it has no host"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "the port is not a number between 0 and 65535"
    if parts.username is not None or parts.password is not None:
        return "it must not contain credentials"
    if parts.path not in {"", "/"}:
        return f"it must not have a path ({parts.path!r})"
    if parts.query or parts.fragment or value.rstrip().endswith(("?", "#")):
        return "it must not have a query or fragment"
    return None


def _check_base_url() -> list[CheckMessage]:
    value = _get("BASE_URL")
    problem = _base_url_problem(value)
    if problem:
        shown = value
        if isinstance(value, str) and "@" in value:
            shown = re.sub(r"//[^/]*@", "//***@", value)  # never echo credentials
        return [_message("E004", obj=_obj("BASE_URL"), value=shown, problem=problem)]
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme == "http" and not _is_loopback(host) and not settings.DEBUG:
        return [_message("E005", obj=_obj("BASE_URL"), host=host)]
    return []


def _check_api() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    version = _get("API_VERSION")
    if not isinstance(version, str) or not _API_VERSION_RE.match(version):
        errors.append(_message("E006", obj=_obj("API_VERSION"), value=version))
    auth_api = _get("AUTH_API")
    if not isinstance(auth_api, str) or auth_api not in {"v2", "v3"}:
        errors.append(_message("E007", obj=_obj("AUTH_API"), value=auth_api))
    return errors


def _check_timeouts() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    timeout = _get("TIMEOUT")
    pair = _timeout_pair(timeout)
    if pair is None:
        if timeout is None:
            problem = "None disables the timeout"
        elif isinstance(timeout, (tuple, list)) and len(timeout) != 2:
            problem = f"a pair needs exactly 2 values, got {len(timeout)}"
        else:
            problem = "every value must be a positive number of seconds"
        errors.append(_message("E008", obj=_obj("TIMEOUT"), value=timeout, problem=problem))
    total = _get("TOTAL_TIMEOUT")
    if not _positive(total):
        errors.append(
            _message(
                "E009",
                obj=_obj("TOTAL_TIMEOUT"),
                value=total,
                problem="it must be a positive number of seconds",
            )
        )
    elif pair is not None and total < pair[1]:
        errors.append(
            _message(
                "E009",
                obj=_obj("TOTAL_TIMEOUT"),
                value=total,
                problem=f"it is shorter than the read timeout ({pair[1]:g} s)",
            )
        )
    return errors


def _int_in_range(code: str, key: str, low: int, high: int) -> list[CheckMessage]:
    value = _get(key)
    if not _is_int(value):
        problem = f"expected an int, got {type(value).__name__}"
    elif not low <= value <= high:
        problem = f"it must be between {low} and {high}"
    else:
        return []
    return [_message(code, obj=_obj(key), value=value, problem=problem)]


def _check_sizes() -> list[CheckMessage]:
    return [
        *_int_in_range("E010", "MAX_RESPONSE_BYTES", MIN_RESPONSE_BYTES, MAX_RESPONSE_BYTES),
        *_int_in_range("E017", "MAX_TOKEN_BYTES", MIN_TOKEN_BYTES, MAX_TOKEN_BYTES),
    ]


def _public_key_problem(value: Any) -> str | None:

    if isinstance(value, str):
        data = value.encode("utf-8", "replace")
    elif isinstance(value, bytes):
        data = value
    else:
        return f"expected PEM text or None, got {type(value).__name__}"
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"not a PEM public key ({type(exc).__name__})"
    if not isinstance(key, rsa.RSAPublicKey):
        return f"expected an RSA key, got {type(key).__name__}"
    if key.key_size < MIN_RSA_KEY_BITS:
        return f"the RSA key has {key.key_size} bits"
    return None


def _check_verification() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    public_key = _get("PUBLIC_KEY")
    if public_key is not None:
        problem = _public_key_problem(public_key)
        if problem:
            messages.append(_message("E011", obj=_obj("PUBLIC_KEY"), problem=problem))
    verify = _get("VERIFY_SIGNATURE")
    if not isinstance(verify, bool):
        messages.append(_message("E012", obj=_obj("VERIFY_SIGNATURE"), value=verify))
    elif not verify:
        messages.append(_message("W001", obj=_obj("VERIFY_SIGNATURE")))
    messages.extend(_check_algorithms())
    issuer = _get("JWT_ISSUER")
    if issuer is not None and not (isinstance(issuer, str) and issuer.strip()):
        messages.append(_message("E015", obj=_obj("JWT_ISSUER"), value=issuer))
    leeway = _get("JWT_LEEWAY")
    if not _is_number(leeway):
        messages.append(
            _message(
                "E016", obj=_obj("JWT_LEEWAY"), value=leeway, problem="expected a number of seconds"
            )
        )
    elif not 0 <= leeway <= MAX_LEEWAY:
        messages.append(
            _message(
                "E016",
                obj=_obj("JWT_LEEWAY"),
                value=leeway,
                problem=f"it must be between 0 and {MAX_LEEWAY}",
            )
        )
    bpi = _get("BUSINESS_PROFILE_ID")
    problem = _business_profile_problem(bpi)
    if problem:
        messages.append(
            _message("E018", obj=_obj("BUSINESS_PROFILE_ID"), value=bpi, problem=problem)
        )
    return messages


def _business_profile_problem(bpi: Any) -> str | None:
    """What is wrong with a ``BUSINESS_PROFILE_ID`` value (``None``: nothing, or unset)."""
    if bpi is None:
        return None
    if _is_int(bpi):
        return "it must not be negative" if bpi < 0 else None
    if not isinstance(bpi, str):
        return f"expected a string, got {type(bpi).__name__}"
    if not bpi.strip() or bpi != bpi.strip():
        return "it is blank or has surrounding whitespace"
    if len(bpi) > MAX_BUSINESS_PROFILE_ID_LENGTH:
        return f"it is longer than {MAX_BUSINESS_PROFILE_ID_LENGTH} characters"
    return None


def _check_algorithms() -> list[CheckMessage]:
    value = _get("JWT_ALGORITHMS")
    found = _algorithm_list_problem(value) or _algorithm_family_problem(value)
    if found is None:
        return []
    check_id, problem = found
    return [_message(check_id, obj=_obj("JWT_ALGORITHMS"), value=value, problem=problem)]


def _algorithm_list_problem(value: Any) -> tuple[str, str] | None:
    """``(check id, problem)`` when ``JWT_ALGORITHMS`` is not a list of known, asymmetric
    algorithm names; ``None`` otherwise."""
    if not isinstance(value, (list, tuple)) or not value:
        return "E013", "expected a non-empty list"
    if not all(isinstance(name, str) for name in value):
        return "E013", "every entry must be a string"
    if any(name.strip().lower() == "none" for name in value):
        return "E014", "'none' accepts unsigned tokens"
    hmac = [name for name in value if name.upper().startswith("HS")]
    if hmac:
        return "E014", f"{', '.join(hmac)} is symmetric (HMAC key confusion)"
    unknown = [name for name in value if name not in get_default_algorithms()]
    if unknown:
        return "E013", f"unknown algorithm {', '.join(map(repr, unknown))}"
    return None


def _algorithm_family_problem(value: list[str] | tuple[str, ...]) -> tuple[str, str] | None:
    """``(check id, problem)`` unless every algorithm is of the RSA family Synerise uses."""
    families = {_ALGORITHM_FAMILIES.get(str(name), str(name)) for name in value}
    if len(families) > 1:
        return "E014", f"it mixes key families ({', '.join(sorted(families))})"
    if families != {"RSA"}:
        return "E014", "Synerise signs client tokens with an RSA key"
    return None


def _check_lease() -> list[CheckMessage]:
    """E022: ``LEASE_SECONDS`` is a positive number above ``TOTAL_TIMEOUT``."""
    lease = _get("LEASE_SECONDS")
    total = _get("TOTAL_TIMEOUT")
    if not _positive(lease):
        problem = "expected a positive number of seconds"
    elif _positive(total) and lease <= total:
        problem = f"it must exceed TOTAL_TIMEOUT ({total:g} s)"
    else:
        return []
    return [_message("E022", obj=_obj("LEASE_SECONDS"), value=lease, problem=problem)]


def _check_lifecycle() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    margin = _get("REFRESH_MARGIN")
    margin_ok = False
    if not _is_int(margin):
        messages.append(
            _message(
                "E019",
                obj=_obj("REFRESH_MARGIN"),
                value=margin,
                problem="expected an int of seconds",
            )
        )
    elif not MIN_MARGIN <= margin <= MAX_MARGIN:
        messages.append(
            _message(
                "E019",
                obj=_obj("REFRESH_MARGIN"),
                value=margin,
                problem=f"it must be between {MIN_MARGIN} and {MAX_MARGIN} for a one-hour token",
            )
        )
    else:
        margin_ok = True
        if margin < TIGHT_MARGIN:
            messages.append(_message("W002", obj=_obj("REFRESH_MARGIN"), value=margin))
    jitter = _get("REFRESH_JITTER")
    if not _non_negative(jitter):
        messages.append(
            _message(
                "E020",
                obj=_obj("REFRESH_JITTER"),
                value=jitter,
                problem="expected a number of seconds >= 0",
            )
        )
    elif margin_ok and margin + jitter > MAX_MARGIN_PLUS_JITTER:
        messages.append(
            _message(
                "E020",
                obj=_obj("REFRESH_JITTER"),
                value=jitter,
                problem=f"REFRESH_MARGIN + REFRESH_JITTER = {margin + jitter:g} s is above "
                f"{MAX_MARGIN_PLUS_JITTER} s",
            )
        )
    if not _positive(_get("KEEPALIVE_IDLE")):
        messages.append(_message("E021", obj=_obj("KEEPALIVE_IDLE"), value=_get("KEEPALIVE_IDLE")))
    messages.extend(_check_lease())
    simple: list[tuple[str, str, Callable[[Any], bool]]] = [
        ("E023", "SINGLE_FLIGHT_WAIT", _non_negative),
        ("E024", "ACTIVITY_INTERVAL", _non_negative),
        ("E027", "RETRY_AFTER_MAX", _positive),
        ("E028", "PURGE_AFTER", _positive),
    ]
    for code, key, valid in simple:
        if not valid(_get(key)):
            messages.append(_message(code, obj=_obj(key), value=_get(key)))
    for code, key, high in (
        ("E025", "REFRESH_BATCH_SIZE", MAX_BATCH_SIZE),
        ("E026", "REFRESH_CONCURRENCY", MAX_CONCURRENCY),
    ):
        value = _get(key)
        if not (_is_int(value) and 1 <= value <= high):
            messages.append(_message(code, obj=_obj(key), value=value))
    return messages


def _fernet_key_problem(key: Any) -> str | None:

    if isinstance(key, bytes):
        try:
            key = key.decode("ascii")
        except UnicodeDecodeError:
            return "it is not ASCII"
    if not isinstance(key, str):
        return f"expected a string, got {type(key).__name__}"
    if not _FERNET_KEY_RE.match(key):
        return "it is not 32 bytes of url-safe base64 (44 characters ending in '=')"
    try:
        Fernet(key)
    except (ValueError, binascii.Error):
        return "it is not a valid Fernet key"
    return None


def _derived_from(key: Any, secret: Any) -> bool:
    """Return True when ``key`` is ``secret`` itself, its first 32 bytes, or its HKDF key."""

    if not isinstance(secret, (str, bytes)) or not secret:
        return False
    if not isinstance(key, (str, bytes)):
        return False
    secret_bytes = secret.encode("utf-8") if isinstance(secret, str) else secret
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    if key_bytes.strip() == secret_bytes.strip() or key_bytes.decode("ascii", "replace") == (
        derive_key(secret_bytes)
    ):
        return True
    try:
        decoded = base64.urlsafe_b64decode(key_bytes)
    except (ValueError, binascii.Error):
        return False
    return len(decoded) == 32 and decoded in secret_bytes


def _check_security() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    keys = _get("TOKEN_ENCRYPTION_KEYS")
    obj = _obj("TOKEN_ENCRYPTION_KEYS")
    if not isinstance(keys, (list, tuple)):
        messages.append(
            _message(
                "E029",
                obj=obj,
                problem=f"expected a list of Fernet keys, got {type(keys).__name__}",
            )
        )
    elif not keys:
        messages.append(_message("W003", obj=obj))
    else:
        secrets = [("SECRET_KEY", getattr(settings, "SECRET_KEY", None))]
        secrets += [
            ("SECRET_KEY_FALLBACKS", secret)
            for secret in getattr(settings, "SECRET_KEY_FALLBACKS", None) or []
        ]
        seen: set[str] = set()
        for index, key in enumerate(keys):
            derived = next((name for name, secret in secrets if _derived_from(key, secret)), None)
            if derived:
                messages.append(_message("E030", obj=obj, index=index, setting=derived))
                continue
            problem = _fernet_key_problem(key)
            if problem:
                messages.append(_message("E029", obj=obj, problem=f"key {index}: {problem}"))
                continue
            normalized = key.decode("ascii") if isinstance(key, bytes) else key
            if normalized in seen:
                messages.append(_message("E029", obj=obj, problem=f"key {index} is listed twice"))
            seen.add(normalized)
    link = _get("LINK_BY_EMAIL")
    if not isinstance(link, bool):
        messages.append(_message("E031", obj=_obj("LINK_BY_EMAIL"), value=link))
    elif link:
        messages.append(_message("W004", obj=_obj("LINK_BY_EMAIL")))
    return messages


def _check_breaker_and_api() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for code, key in (("E032", "BREAKER_THRESHOLD"), ("E033", "BREAKER_RESET_TIMEOUT")):
        value = _get(key)
        if not (_is_int(value) and value > 0):
            messages.append(_message(code, obj=_obj(key), value=value))
    starts = _get("LOGIN_STARTS_SESSION")
    if not isinstance(starts, bool):
        messages.append(_message("E034", obj=_obj("LOGIN_STARTS_SESSION"), value=starts))
    problem = _throttle_problem(_get("LOGIN_THROTTLE_RATES"))
    if problem:
        messages.append(_message("E035", obj=_obj("LOGIN_THROTTLE_RATES"), problem=problem))
    messages.extend(_check_throttle_cache())
    policy = _get("UPSTREAM_PASSWORDS")
    if policy not in UPSTREAM_PASSWORD_POLICIES:
        messages.append(_message("E070", obj=_obj("UPSTREAM_PASSWORDS"), value=policy))
    return messages


def _throttle_cache_backend() -> tuple[str, str] | None:
    """Return ``(alias, backend path)`` of ``LOGIN_THROTTLE_CACHE``, or None when unknown."""
    alias = _get("LOGIN_THROTTLE_CACHE")
    caches = getattr(settings, "CACHES", None) or {}
    if not isinstance(alias, str) or not isinstance(caches, Mapping) or alias not in caches:
        return None
    config = caches[alias]
    return alias, str(config.get("BACKEND", "") if isinstance(config, Mapping) else "")


def _check_throttle_cache() -> list[CheckMessage]:
    found = _throttle_cache_backend()
    if found is None:
        value = _get("LOGIN_THROTTLE_CACHE")
        return [_message("E071", obj=_obj("LOGIN_THROTTLE_CACHE"), value=value)]
    alias, backend = found
    problem = _THROTTLE_CACHE_PROBLEMS.get(backend)
    if problem is None:
        return []
    name = backend.rsplit(".", 1)[-1]
    return [
        _message(
            "W072", obj=_obj("LOGIN_THROTTLE_CACHE"), alias=alias, backend=name, problem=problem
        )
    ]


def _throttle_problem(rates: Any) -> str | None:
    if not isinstance(rates, Mapping):
        return f"expected a dict, got {type(rates).__name__}"
    for scope, rate in rates.items():
        if scope not in THROTTLE_SCOPES:
            return f"unknown scope {scope!r} (use 'ip' or 'account')"
        if rate is not None and not (isinstance(rate, str) and _RATE_RE.match(rate)):
            return f"{scope!r}: {rate!r} is not a rate like '30/min'"
    return None


def _check_rate_limit() -> list[CheckMessage]:
    rate = _get("REFRESH_RATE_LIMIT")
    if rate is None:
        return []
    if not (_is_number(rate) and MIN_RATE_LIMIT <= rate <= MAX_RATE_LIMIT):
        return [_message("E042", obj=_obj("REFRESH_RATE_LIMIT"), value=rate)]
    alias = _get("REFRESH_RATE_LIMIT_CACHE")
    caches = getattr(settings, "CACHES", None) or {}
    if not isinstance(alias, str) or not isinstance(caches, Mapping) or alias not in caches:
        return [_message("E043", obj=_obj("REFRESH_RATE_LIMIT_CACHE"), value=alias)]
    config = caches[alias]
    backend = config.get("BACKEND", "") if isinstance(config, Mapping) else ""
    problem = _RATE_LIMIT_CACHE_PROBLEMS.get(str(backend))
    if problem is None:
        return []
    return [
        _message(
            "W007",
            obj=_obj("REFRESH_RATE_LIMIT_CACHE"),
            alias=alias,
            backend=str(backend).rsplit(".", 1)[-1],
            problem=problem,
        )
    ]


def _check_trust() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    grace = _get("SUPERSEDED_TOKEN_GRACE")
    if grace is not None and not _non_negative(grace):
        messages.append(_message("E060", obj=_obj("SUPERSEDED_TOKEN_GRACE"), value=grace))
    elif grace is not None:
        margin, jitter = _get("REFRESH_MARGIN"), _get("REFRESH_JITTER")
        if _is_number(margin) and _non_negative(jitter) and grace < margin + jitter:
            messages.append(
                _message(
                    "W060",
                    obj=_obj("SUPERSEDED_TOKEN_GRACE"),
                    value=grace,
                    window=margin + jitter,
                )
            )
    concurrency = _get("INTERACTIVE_CONCURRENCY")
    if not (_is_int(concurrency) and 1 <= concurrency <= MAX_INTERACTIVE_CONCURRENCY):
        messages.append(_message("E061", obj=_obj("INTERACTIVE_CONCURRENCY"), value=concurrency))
    slow = _get("BREAKER_SLOW_CALL_THRESHOLD")
    if slow is not None and not _positive(slow):
        messages.append(_message("E062", obj=_obj("BREAKER_SLOW_CALL_THRESHOLD"), value=slow))
    return messages


MAX_LIFETIME_CAP = 30 * 24 * 3600


def _check_refresh_engine() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    lifetime = _get("MAX_TOKEN_LIFETIME")
    seconds = lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime
    if not _is_number(seconds):
        problem = "is not a number of seconds or a timedelta"
        messages.append(
            _message("E080", obj=_obj("MAX_TOKEN_LIFETIME"), value=lifetime, problem=problem)
        )
    elif not 60 <= seconds <= MAX_LIFETIME_CAP:
        problem = "is outside 60 s .. 30 days"
        messages.append(
            _message("E080", obj=_obj("MAX_TOKEN_LIFETIME"), value=lifetime, problem=problem)
        )
    flush = _get("REFRESH_FLUSH_INTERVAL")
    if not (_is_number(flush) and 0 <= flush <= 5):
        messages.append(_message("E081", obj=_obj("REFRESH_FLUSH_INTERVAL"), value=flush))
    probe = _get("HALT_PROBE_MAX")
    if not _positive(probe):
        messages.append(_message("E082", obj=_obj("HALT_PROBE_MAX"), value=probe))
    return messages


def _check_identity_provider() -> list[CheckMessage]:

    messages: list[CheckMessage] = []
    keys = _get("OAUTH_SIGNING_KEYS")
    obj = _obj("OAUTH_SIGNING_KEYS")
    if not isinstance(keys, (list, tuple)):
        messages.append(_message("E090", obj=obj, value_type=type(keys).__name__))
        keys = []
    for index, pem in enumerate(keys):
        problem = key_problem(pem)
        if problem is not None:
            code = {"weak": "E092", "public": "E093"}.get(problem.kind, "E091")
            messages.append(_message(code, obj=obj, index=index, problem=str(problem)))
    if keys:
        for code, key in (("E094", "OAUTH_ISSUER"), ("E095", "OAUTH_AUDIENCE")):
            value = _get(key)
            if not isinstance(value, str) or not value.strip():
                messages.append(_message(code, obj=_obj(key), value=value))
    lifetime = _get("OAUTH_TOKEN_LIFETIME")
    if not (_is_int(lifetime) and 30 <= lifetime <= 3600):
        messages.append(_message("E096", obj=_obj("OAUTH_TOKEN_LIFETIME"), value=lifetime))
    connect = _get("CONNECT_ON_LOGIN")
    if not isinstance(connect, bool):
        messages.append(_message("E097", obj=_obj("CONNECT_ON_LOGIN"), value=connect))
    elif connect and not (keys and _get("OAUTH_ISSUER") and _get("OAUTH_AUDIENCE")):
        messages.append(_message("W090", obj=_obj("CONNECT_ON_LOGIN")))
    return messages


_TRACKER_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MIN_WEB_SDK_LIFETIME, MAX_WEB_SDK_LIFETIME = 60, 3600
TRACKER_MIDDLEWARE = "django_synerise.middleware.SyneriseTrackerMiddleware"


def _tracker_key_problem(value: Any) -> str | None:
    """Why ``TRACKER_KEY`` is unusable, or ``None`` (``None`` itself is allowed: no tracker)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not _TRACKER_KEY_RE.match(value):
        return "use letters, digits, '-' and '_' only (at most 128)"
    return None


def _tracker_domain_problem(value: Any) -> str | None:
    """Why ``TRACKER_DOMAIN`` is unusable, or ``None`` (https, or http on a loopback host)."""
    problem = _base_url_problem(value)
    if problem is None:
        parts = urlsplit(value)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            problem = "use https:// (http:// only for a loopback test server)"
    return problem


def _web_sdk_lifetime_problem(value: Any) -> str | None:
    """Why ``WEB_SDK_TOKEN_LIFETIME`` is unusable, or ``None`` (an int within the bounds)."""
    if not _is_int(value):
        return f"expected an int, got {type(value).__name__}"
    if not MIN_WEB_SDK_LIFETIME <= value <= MAX_WEB_SDK_LIFETIME:
        return f"it must be between {MIN_WEB_SDK_LIFETIME} and {MAX_WEB_SDK_LIFETIME}"
    return None


def _check_web_sdk_key(tracker_key: Any) -> list[CheckMessage]:
    """E104, W100: a usable ``WEB_SDK_SIGNING_KEY``, and a tracker to use it with."""

    key = _get("WEB_SDK_SIGNING_KEY")
    if key is None:
        return []
    problem = signing_key_problem(key)
    if problem:
        return [_message("E104", obj=_obj("WEB_SDK_SIGNING_KEY"), problem=problem)]
    if tracker_key is None:
        return [_message("W100", obj=_obj("WEB_SDK_SIGNING_KEY"))]
    return []


def _check_client_flow() -> list[CheckMessage]:
    """E100-E105, W100: conditional login, tracking code and Web SDK token settings."""
    messages: list[CheckMessage] = []
    conditional = _get("CONDITIONAL_LOGIN")
    if not isinstance(conditional, bool):
        messages.append(_message("E100", obj=_obj("CONDITIONAL_LOGIN"), value=conditional))
    tracker_key = _get("TRACKER_KEY")
    problem = _tracker_key_problem(tracker_key)
    if problem:
        messages.append(_message("E101", obj=_obj("TRACKER_KEY"), problem=problem))
    domain = _get("TRACKER_DOMAIN")
    problem = _tracker_domain_problem(domain)
    if problem:
        messages.append(_message("E102", obj=_obj("TRACKER_DOMAIN"), value=domain, problem=problem))
    cookie = _get("TRACKER_UUID_COOKIE")
    if not isinstance(cookie, bool):
        messages.append(_message("E103", obj=_obj("TRACKER_UUID_COOKIE"), value=cookie))
    messages.extend(_check_web_sdk_key(tracker_key))
    lifetime = _get("WEB_SDK_TOKEN_LIFETIME")
    problem = _web_sdk_lifetime_problem(lifetime)
    if problem:
        messages.append(
            _message("E105", obj=_obj("WEB_SDK_TOKEN_LIFETIME"), value=lifetime, problem=problem)
        )
    return messages


_SETTINGS_CHECKS: tuple[Callable[[], list[CheckMessage]], ...] = (
    _check_structure,
    _check_api_key,
    _check_base_url,
    _check_api,
    _check_timeouts,
    _check_sizes,
    _check_verification,
    _check_lifecycle,
    _check_security,
    _check_breaker_and_api,
    _check_rate_limit,
    _check_trust,
    _check_refresh_engine,
    _check_identity_provider,
    _check_client_flow,
)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate every key of ``settings.SYNERISE`` (type, range and consistency).

    Returns ``E003`` alone when ``SYNERISE`` is not a dict. Never touches the database or the
    network.
    """
    raw = _raw()
    if raw is not None and not isinstance(raw, Mapping):
        return [_message("E003", obj="settings.SYNERISE", type=type(raw).__name__)]
    messages: list[CheckMessage] = []
    for check in _SETTINGS_CHECKS:
        messages.extend(check())
    return messages


# --------------------------------------------------------------------------- integration


def _check_adapter() -> list[CheckMessage]:
    value = _get("ADAPTER")
    if isinstance(value, type):
        return []
    if not isinstance(value, str) or not value.strip():
        return [
            _message("E036", obj=_obj("ADAPTER"), value=value, problem="expected a dotted path")
        ]
    try:
        import_string(value)
    except Exception as exc:  # a broken module must become a message, not a crashed check
        problem = f"{type(exc).__name__}: {exc}"
        return [_message("E036", obj=_obj("ADAPTER"), value=value, problem=problem)]
    return []


def _check_backend() -> list[CheckMessage]:
    backends = list(getattr(settings, "AUTHENTICATION_BACKENDS", []) or [])
    if BACKEND_PATH in backends:
        return []
    try:
        ours = import_string(BACKEND_PATH)
    except ImportError:
        ours = None
    if ours is not None:
        for path in backends:
            try:
                backend = import_string(path)
            except (ImportError, ImproperlyConfigured, TypeError, ValueError):
                continue
            if isinstance(backend, type) and issubclass(backend, ours):
                return []
    return [_message("W005", obj="settings.AUTHENTICATION_BACKENDS")]


def _backend_class(path: str) -> Any:
    """The object ``path`` names in ``AUTHENTICATION_BACKENDS``, or ``None`` when it does not
    import (Django's own check reports that)."""
    try:
        return import_string(path)
    except (ImportError, ImproperlyConfigured, TypeError, ValueError):
        return None


def _subclass_of(obj: Any, classes: type | tuple[type, ...]) -> bool:
    """``obj`` is a class and a subclass of ``classes``."""
    return isinstance(obj, type) and issubclass(obj, classes)


def _check_backend_order() -> list[CheckMessage]:
    """W070 / W071: backend order and UPSTREAM_PASSWORDS that send admin logins upstream."""
    backends = list(getattr(settings, "AUTHENTICATION_BACKENDS", []) or [])
    try:
        ours = import_string(BACKEND_PATH)
    except ImportError:
        return []
    classes = [_backend_class(path) for path in backends]
    position = next((i for i, c in enumerate(classes) if _subclass_of(c, ours)), None)
    if position is None:
        return []
    messages: list[CheckMessage] = []
    policy = _get("UPSTREAM_PASSWORDS")
    model = import_string(MODEL_BACKEND_PATH)
    later = list(zip(backends[position + 1 :], classes[position + 1 :], strict=True))
    if policy == "all":
        after = [c for _, c in later if _subclass_of(c, model)]
        order = (
            ", before ModelBackend checks them" if after else ", after ModelBackend refused them"
        )
        messages.append(_message("W070", obj="settings.AUTHENTICATION_BACKENDS", order=order))
    if policy != "linked":
        messages.extend(
            _message("W071", obj="settings.AUTHENTICATION_BACKENDS", backend=path)
            for path, backend in later
            if not _subclass_of(backend, (model, ours))
        )
    return messages


#: ``CELERY_BEAT_SCHEDULER`` values that mean django-celery-beat's database scheduler.
DATABASE_SCHEDULERS = frozenset(
    {
        "django_celery_beat.schedulers:DatabaseScheduler",
        "django_celery_beat.schedulers.DatabaseScheduler",
        "django",
    }
)


def _database_scheduler() -> bool:
    """django-celery-beat is installed and ``CELERY_BEAT_SCHEDULER`` selects its scheduler."""
    scheduler = getattr(settings, "CELERY_BEAT_SCHEDULER", None)
    return apps.is_installed("django_celery_beat") and scheduler in DATABASE_SCHEDULERS


def _schedule_has_refresh() -> bool:
    schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", None)
    if isinstance(schedule, Mapping):
        for entry in schedule.values():
            if isinstance(entry, Mapping) and entry.get("task") == REFRESH_TASK:
                return True
    return False


def _check_schedule() -> list[CheckMessage]:
    if not getattr(settings, "CELERY_BROKER_URL", None):
        return []
    if _database_scheduler() or _schedule_has_refresh():
        return []  # the database scheduler's rows are checked by W110 (--database)
    return [_message("W006", obj="settings.CELERY_BEAT_SCHEDULE")]


def check_integration(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check the wiring around the settings: adapter import, auth backend, refresh schedule,
    the tracker middleware.

    Imports the configured adapter and backends; never imports Celery, never touches the
    database or the network.
    """
    return [
        *_check_adapter(),
        *_check_backend(),
        *_check_backend_order(),
        *_check_schedule(),
        *_check_tracker_middleware(),
    ]


def _check_tracker_middleware() -> list[CheckMessage]:
    """W101: the tracker cookie reset is on and a tracker key is set, but the middleware that
    resets the cookie after Django's own login views is missing."""
    if _get("TRACKER_UUID_COOKIE") is not True or not _get("TRACKER_KEY"):
        return []
    if TRACKER_MIDDLEWARE in list(getattr(settings, "MIDDLEWARE", None) or []):
        return []
    return [_message("W101", obj="settings.MIDDLEWARE")]


# --------------------------------------------------------------------------- deploy


def _check_deploy_settings() -> list[CheckMessage]:
    raw = _raw()
    if raw is not None and not isinstance(raw, Mapping):
        return []  # E003 already reports it
    messages: list[CheckMessage] = []
    keys = _get("TOKEN_ENCRYPTION_KEYS")
    if isinstance(keys, (list, tuple)) and not keys:
        messages.append(_message("E037", obj=_obj("TOKEN_ENCRYPTION_KEYS")))
    url = _get("BASE_URL")
    if isinstance(url, str) and urlsplit(url).scheme != "https":
        messages.append(_message("E038", obj=_obj("BASE_URL"), value=url))
    issuer = _get("OAUTH_ISSUER")
    keys_set = bool(_get("OAUTH_SIGNING_KEYS"))
    if keys_set and isinstance(issuer, str) and issuer and urlsplit(issuer).scheme != "https":
        messages.append(_message("W091", obj=_obj("OAUTH_ISSUER"), value=issuer))
    found = _throttle_cache_backend()
    # With DEBUG on the site is a development server (one process): a private cache is fine.
    deployed = not getattr(settings, "DEBUG", False)
    if deployed and found is not None and found[1].endswith("locmem.LocMemCache"):
        messages.append(_message("W073", obj=_obj("LOGIN_THROTTLE_CACHE"), alias=found[0]))
    return messages


def _check_versions() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for code, distribution, floor in (
        ("E039", "PyJWT", PYJWT_FLOOR),
        ("E040", "urllib3", URLLIB3_FLOOR),
    ):
        version = _installed_version(distribution)
        parsed = _version_tuple(version) if version else None
        if parsed is not None and parsed < floor:
            messages.append(_message(code, version=version, floor=".".join(map(str, floor))))
    return messages


def _check_visibility_timeout() -> list[CheckMessage]:
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None)
    if not isinstance(options, Mapping) or "visibility_timeout" not in options:
        return []
    value = options["visibility_timeout"]
    obj = "settings.CELERY_BROKER_TRANSPORT_OPTIONS"
    if not _positive(value):
        return [
            _message("E041", obj=obj, value=value, problem="is not a positive number of seconds")
        ]
    waits: list[tuple[str, float]] = []
    time_limit = getattr(settings, "CELERY_TASK_TIME_LIMIT", None)
    if _positive(time_limit):
        waits.append(("CELERY_TASK_TIME_LIMIT", time_limit))
    retry_after_max = _get("RETRY_AFTER_MAX")
    if _positive(retry_after_max):
        waits.append(("SYNERISE['RETRY_AFTER_MAX']", retry_after_max))
    for name, seconds in waits:
        if value <= seconds:
            return [
                _message(
                    "E041", obj=obj, value=value, problem=f"does not exceed {name} ({seconds:g} s)"
                )
            ]
    return []


def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Production-only checks run by ``manage.py check --deploy``.

    Encryption keys configured (E037), https base URL (E038), a login throttle cache shared
    by every process (W073), an https identity-provider issuer (W091), PyJWT and urllib3
    version floors (E039, E040), Celery visibility timeout above the task time limit (E041).
    """
    return [*_check_deploy_settings(), *_check_versions(), *_check_visibility_timeout()]


def check_refresh_halt(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Runtime check (``manage.py check --database default``): W080 while background refresh
    is halted because Synerise rejects the API key. Reads one row; never calls Synerise."""
    if not databases:
        return []
    # Imported here: the services import the models, and this module loads with the app
    # config, before the app registry is ready.
    from .services.halt import current_halt

    try:
        halt = current_halt()
    except DatabaseError:  # not migrated yet: nothing can be halted
        return []
    if halt is None:
        return []
    return [
        _message(
            "W080",
            obj="django_synerise.RefreshHalt",
            since=halt.since.isoformat(timespec="seconds"),
            reason=halt.reason,
            detail=halt.detail,
            probe_at=halt.probe_at.isoformat(timespec="seconds"),
        )
    ]


def check_beat_tasks(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Runtime check (``manage.py check --database default``): W110 when django-celery-beat's
    DatabaseScheduler is configured, ``CELERY_BEAT_SCHEDULE`` does not carry the refresh
    entry (the scheduler would copy it into the database) and no enabled ``PeriodicTask``
    runs it. One query; never imports Celery."""
    if not databases or not getattr(settings, "CELERY_BROKER_URL", None):
        return []
    if not _database_scheduler() or _schedule_has_refresh():
        return []

    model = apps.get_model("django_celery_beat", "PeriodicTask")
    try:
        found = model.objects.filter(task=REFRESH_TASK, enabled=True).exists()
    except DatabaseError:  # not migrated yet
        return []
    return [] if found else [_message("W110", obj="django_celery_beat.PeriodicTask")]


def register_checks() -> None:
    """Register the package's system checks (idempotent; called from ``AppConfig.ready``)."""
    register(check_settings, Tags.security, TAG)
    register(check_integration, TAG)
    register(check_deploy, Tags.security, TAG, deploy=True)
    register(check_refresh_halt, Tags.database, TAG)
    register(check_beat_tasks, Tags.database, TAG)
