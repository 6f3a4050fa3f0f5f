"""Tell a dead token from a dead workspace: the API key probe and the refresh halt.

Synerise answers a refresh with 401/403 (or another 4xx) both when that one token is dead
and when the workspace's API key is rotated, revoked or mistyped; in the second case every
token gets the same answer, and taking each answer at face value would log every customer
out. So before any row moves to ``needs_login`` because Synerise *rejected* it, the refresh
engine (:mod:`django_synerise.services.refresh`, for the background batches and for the lazy
single-flight path alike) asks :func:`judge_rejections`:

* **The rule.** A batch (the lazy path is a batch of one) that got at least one rejection
  makes one cheap probe of the API key: ``POST /sauth/{v}/auth/login/client/anonymous`` with
  ``apiKey`` and a fixed :data:`PROBE_UUID` (always the same anonymous profile, so probing
  creates nothing new at Synerise). Then:

  * probe answered 200: the key works, so the rejections are about those tokens; each
    rejected row moves to ``needs_login`` (verdict :data:`TOKEN`);
  * probe rejected (401, 403 or another 4xx but 429): the workspace is rejected; **no row is
    marked**, every rejected row goes back to ``active`` untouched (no failure counted) and
    background refresh halts (verdict :data:`WORKSPACE`);
  * probe failed transiently (5xx, 429, timeout, reset, open breaker): nothing is known;
    the rejected rows are treated as a transient failure and retried with backoff (verdict
    :data:`UNKNOWN`), so a rejection is only ever final once the key is known to work.

* **The halt.** A :class:`~django_synerise.models.RefreshHalt` row (stored in the database,
  so every web and worker process sees it and it survives restarts) with the reason, the
  probe's status and code, ``since`` and the next probe time. While it exists the beat and
  the cron command claim nothing (:func:`refresh_allowed`); the first run after ``probe_at``
  probes again: accepted, the row is deleted, ``refresh_resumed`` is sent and the run
  proceeds; rejected again, the next probe is pushed back exponentially
  (:data:`PROBE_BACKOFF` doubling, capped by ``HALT_PROBE_MAX``). ``refresh_halted`` is
  sent once, when the halt begins. The lazy path never waits for a halt: it keeps serving
  tokens that are still valid, and a lazy rejection also halts.

Visible in ``manage.py synerise_status``, the admin, ``check --database default``
(``django_synerise.W080``) and the ``refresh_halted``/``refresh_resumed`` signals.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, TypeGuard

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import signals
from ..adapter_loader import resolve_client
from ..conf import synerise_settings
from ..exceptions import BadRequest, CredentialsRejected, SyneriseError, TransientUpstreamError
from ..models import RefreshHalt

if TYPE_CHECKING:
    from ..client import SyneriseClient
    from ..models import RefreshHalt

logger = logging.getLogger(__name__)

__all__ = [
    "PROBE_BACKOFF",
    "PROBE_UUID",
    "TOKEN",
    "UNKNOWN",
    "WORKSPACE",
    "current_halt",
    "is_rejection",
    "judge_rejections",
    "probe_api_key",
    "refresh_allowed",
]

#: The anonymous profile the API key probe signs in (a fixed UUIDv5 of
#: ``django-synerise:api-key-probe``), so every probe reuses one profile.
PROBE_UUID = "8a3f4d3e-5f1c-5b7e-9a64-6d1f0c2b7e51"
#: First delay (seconds) before a halted workspace's key is probed again; it doubles with
#: each rejected probe, up to ``HALT_PROBE_MAX`` (default 30 s, half the beat period, so
#: refresh resumes at most two beats after Synerise accepts the key again).
PROBE_BACKOFF = 2.0

#: Verdicts of :func:`judge_rejections`.
TOKEN = "token"  # nosec B105 # noqa: S105 # the key works: the rejections are about the tokens
WORKSPACE = "workspace"  # the key is rejected: halt, mark nothing
UNKNOWN = "unknown"  # the probe failed transiently: retry the rows later

ACCEPTED = "accepted"
REJECTED = "rejected"


def is_rejection(exc: BaseException | None) -> TypeGuard[CredentialsRejected | BadRequest]:
    """Whether ``exc`` is Synerise rejecting a call (401/403 or another 4xx but 429)."""
    return isinstance(exc, (CredentialsRejected, BadRequest))


def probe_api_key(client: SyneriseClient) -> tuple[str, str]:
    """Ask Synerise whether it accepts the API key (one anonymous login, through the breaker).

    :returns: ``(outcome, detail)``: outcome ``"accepted"``, ``"rejected"`` (a 4xx other
        than 429) or ``"unknown"`` (transient failure); ``detail`` is ``"<status> <code>"``.
        Never raises for upstream errors.
    """
    try:
        client.login_anonymous(uuid=PROBE_UUID)
    except (CredentialsRejected, BadRequest) as exc:
        return REJECTED, f"{getattr(exc, 'status', None) or '-'} {exc.code}"[:255]
    except TransientUpstreamError as exc:
        return UNKNOWN, f"{getattr(exc, 'status', None) or '-'} {exc.code}"[:255]
    except SyneriseError as exc:
        # An unusable answer (e.g. no token in a 200) is not proof the key is rejected.
        return UNKNOWN, f"- {exc.code}"[:255]
    return ACCEPTED, "200"


def _model() -> type[RefreshHalt]:
    return RefreshHalt


def current_halt() -> RefreshHalt | None:
    """Return the halt in force, or ``None`` while background refresh runs (one query)."""
    return _model().objects.filter(pk="refresh").first()


def _probe_delay(probes: int) -> float:
    cap = synerise_settings.HALT_PROBE_MAX
    return max(0.1, min(cap, PROBE_BACKOFF * 2.0 ** min(32, max(0, probes - 1))))


def _halt(reason: str, detail: str) -> None:
    """Record the halt (or push back its next probe); send ``refresh_halted`` when new."""
    model = _model()
    now = timezone.now()
    try:
        with transaction.atomic():
            halt = model.objects.create(
                reason=reason[:64],
                detail=detail[:255],
                since=now,
                probe_at=now + timedelta(seconds=_probe_delay(1)),
                probes=1,
            )
    except IntegrityError:
        return  # already halted: another worker recorded it first
    logger.error(
        "Synerise rejects the API key (%s): background refresh halted, no token marked", detail
    )
    signals.refresh_halted.send(sender=model, halt=halt)


def _end_halt(halt: RefreshHalt | None = None) -> None:
    """End the halt (if any) after a probe found the key accepted; ``refresh_resumed`` is sent
    by the caller that actually deleted it."""
    model = _model()
    halt = halt if halt is not None else current_halt()
    if halt is None:
        return
    deleted, _ = model.objects.filter(pk=halt.pk).delete()
    if not deleted:
        return
    duration = (timezone.now() - halt.since).total_seconds()
    logger.warning(
        "Synerise accepts the API key again: background refresh resumed after %.0f s", duration
    )
    signals.refresh_resumed.send(sender=model, halt=halt, duration=duration)


def judge_rejections(client: SyneriseClient, *, reason: str) -> str:
    """Decide whether a batch's rejections are about the tokens or about the workspace.

    Probes the API key once (see the module docstring for the rule). On :data:`WORKSPACE`
    the halt is recorded (``refresh_halted`` sent if it is new); on :data:`TOKEN` a halt in
    force ends (``refresh_resumed``): the key works again. ``reason`` is the error
    code of one of the rejections (kept as the halt's reason).

    :returns: :data:`TOKEN`, :data:`WORKSPACE` or :data:`UNKNOWN`.
    """
    outcome, detail = probe_api_key(client)
    if outcome == ACCEPTED:
        _end_halt()
        return TOKEN
    if outcome == REJECTED:
        _halt(reason, detail)
        return WORKSPACE
    logger.warning("Synerise API key probe failed (%s); rejections retried later", detail)
    return UNKNOWN


def refresh_allowed(client: SyneriseClient | None = None) -> bool:
    """Gate of every background run: ``True`` unless background refresh is halted.

    While halted, the first caller after ``probe_at`` takes the probe (a conditional
    ``UPDATE`` moves ``probe_at`` on, so concurrent schedulers probe once) and probes the
    key: accepted, the halt ends (``refresh_resumed``) and this returns ``True``; otherwise
    the next probe is scheduled later (doubling) and this returns ``False``. One query when
    not halted.
    """
    model = _model()
    halt = current_halt()
    if halt is None:
        return True
    lease = timedelta(seconds=synerise_settings.TOTAL_TIMEOUT + 5.0)
    with transaction.atomic():
        now = timezone.now()
        taken = model.objects.filter(pk=halt.pk, probe_at__lte=now).update(probe_at=now + lease)
    if not taken:
        return False
    if client is None:
        client = resolve_client(None)
    outcome, detail = probe_api_key(client)
    if outcome == ACCEPTED:
        _end_halt(halt)
        return True
    probes = halt.probes + 1
    delay = _probe_delay(probes)
    model.objects.filter(pk=halt.pk).update(
        probes=probes,
        detail=detail[:255],
        probe_at=timezone.now() + timedelta(seconds=delay),
    )
    logger.warning(
        "Synerise API key probe %s (%s): background refresh stays halted, next probe in %.1f s",
        outcome,
        detail,
        delay,
    )
    return False
