"""Re-encryption of stored client tokens under the primary encryption key (key rotation)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from django.db import transaction

from ..crypto import decrypt_token, key_index, rotate_ciphertext
from ..exceptions import TokenDecryptionError
from ..models import ClientToken, TokenStatus
from ..signals import token_expired

logger = logging.getLogger(__name__)

#: ``last_error`` code and ``token_expired`` reason for rows that fail to decrypt.
DECRYPTION_FAILED = "decryption_failed"


@dataclass(frozen=True)
class RotationReport:
    """Outcome of :func:`rotate_encryption_keys`.

    ``rotated``: rows re-encrypted under the primary key (or that would be, in a dry run);
    ``unchanged``: rows already under the primary key; ``failed``: rows no configured key
    decrypts or whose envelope is bound to another row (live ones are moved to
    ``needs_login`` unless ``dry_run``); ``batches``: batches processed; ``last_id``: the
    highest primary key examined (pass it as ``after_id`` to resume).
    """

    rotated: int
    failed: int
    batches: int
    unchanged: int = 0
    last_id: int | None = None


def rotate_encryption_keys(
    *, batch_size: int = 500, dry_run: bool = False, after_id: int | None = None
) -> RotationReport:
    """Re-encrypt every stored token under the primary key of ``TOKEN_ENCRYPTION_KEYS``.

    Rows are walked in primary-key order, ``batch_size`` at a time, each batch in its own
    short transaction that locks its rows with ``select_for_update(skip_locked=True)``; rows
    another transaction holds (a refresh being written) are skipped, and that refresh stores
    its new token under the primary key anyway. Only ``encrypted_token`` is written; ``version``
    is left alone so an in-flight refresh still wins its compare-and-swap. Revoked rows with a
    cleared ciphertext are ignored.

    Safe to run again (rows already under the primary key cost one decryption and no write)
    and resumable with ``after_id``. Fails closed: a live row (active or refreshing) whose
    ciphertext no key decrypts, or that is bound to another row, is moved to ``needs_login``
    with ``last_error="decryption_failed"`` and ``token_expired`` is sent after commit; its
    ciphertext is kept for forensics.

    :returns: a :class:`RotationReport`.
    :raises ValueError: ``batch_size`` is not positive.
    :raises SyneriseConfigurationError: a configured key is malformed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    rotated = failed = unchanged = batches = 0
    last_id = after_id
    while True:
        with transaction.atomic():
            qs = (
                ClientToken.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("account")
                .exclude(encrypted_token="")  # nosec B106
                .order_by("pk")
            )
            if last_id is not None:
                qs = qs.filter(pk__gt=last_id)
            rows = list(qs[:batch_size])
            if not rows:
                break
            batches += 1
            last_id = rows[-1].pk
            to_write: list[ClientToken] = []
            broken: list[ClientToken] = []
            for row in rows:
                try:
                    decrypt_token(
                        row.encrypted_token,
                        account_id=row.account_id,
                        client_id=row.account.client_id,
                    )
                    if key_index(row.encrypted_token) == 0:
                        unchanged += 1
                        continue
                    row.encrypted_token = rotate_ciphertext(row.encrypted_token)
                except TokenDecryptionError:
                    failed += 1
                    broken.append(row)
                    continue
                rotated += 1
                to_write.append(row)
            if not dry_run:
                if to_write:
                    ClientToken.objects.bulk_update(to_write, ["encrypted_token"])
                if broken:
                    _fail_closed(broken)
        logger.info(
            "Key rotation batch %d: up to id %s, rotated=%d unchanged=%d failed=%d dry_run=%s",
            batches,
            last_id,
            rotated,
            unchanged,
            failed,
            dry_run,
        )
    if failed:
        logger.error(
            "Key rotation: %d stored tokens could not be decrypted with the configured keys "
            "(live ones moved to needs_login unless dry run).",
            failed,
        )
    return RotationReport(
        rotated=rotated, failed=failed, batches=batches, unchanged=unchanged, last_id=last_id
    )


def _send_expired(row: ClientToken) -> None:
    token_expired.send(sender=ClientToken, token=row, account=row.account, reason=DECRYPTION_FAILED)


def _fail_closed(rows: list[ClientToken]) -> None:
    """Move live undecryptable rows to ``needs_login`` and send ``token_expired`` on commit."""
    live = [r for r in rows if r.status in (TokenStatus.ACTIVE, TokenStatus.REFRESHING)]
    if not live:
        return
    ids = [r.pk for r in live]
    ClientToken.objects.filter(
        pk__in=ids, status__in=[TokenStatus.ACTIVE, TokenStatus.REFRESHING]
    ).update(status=TokenStatus.NEEDS_LOGIN, last_error=DECRYPTION_FAILED, lease_until=None)
    for row in live:
        row.status = TokenStatus.NEEDS_LOGIN
        row.last_error = DECRYPTION_FAILED
        row.lease_until = None
        transaction.on_commit(partial(_send_expired, row))
