"""Key rotation: mixed key lists, rotate_encryption_keys / synerise_rotate_keys, fail closed."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections, transaction

from django_synerise import crypto
from django_synerise.exceptions import TokenDecryptionError
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.services.keys import RotationReport, rotate_encryption_keys
from django_synerise.signals import token_expired
from tests.factories import make_token, raw_ciphertext

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def read_all() -> dict[int, str]:
    return {t.pk: t.get_token() for t in ClientToken.objects.select_related("account")}


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("synerise_rotate_keys", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_rows_under_a_are_readable_with_b_a_then_with_b_alone_after_rotation(keys):
    keys(KEY_A)
    rows = [make_token() for _ in range(5)]
    expected = {r.pk: r.plaintext for r in rows}

    keys(KEY_B, KEY_A)                           # phase 1+2: B added in front
    assert read_all() == expected
    keys(KEY_B)                                  # not yet rotated: B alone cannot read
    with pytest.raises(TokenDecryptionError):
        read_all()

    keys(KEY_B, KEY_A)
    out, err = run_command("--batch-size", "2")
    assert "rotated=5" in out and "failed=0" in out and "batches=3" in out
    assert err == ""

    keys(KEY_B)                                  # phase 3: A removed
    assert read_all() == expected
    for r in rows:
        assert raw_ciphertext(r.pk).startswith("gAAAAA")
        assert r.plaintext not in raw_ciphertext(r.pk)


@pytest.mark.django_db
def test_rotation_is_idempotent_and_keeps_version(keys):
    keys(KEY_A)
    rows = [make_token() for _ in range(3)]
    keys(KEY_B, KEY_A)
    first = rotate_encryption_keys(batch_size=10)
    assert (first.rotated, first.unchanged, first.failed, first.batches) == (3, 0, 0, 1)
    after_first = {r.pk: raw_ciphertext(r.pk) for r in rows}

    second = rotate_encryption_keys(batch_size=10)
    assert (second.rotated, second.unchanged, second.failed) == (0, 3, 0)
    assert {r.pk: raw_ciphertext(r.pk) for r in rows} == after_first          # nothing rewritten
    out, _ = run_command()
    assert "rotated=0 unchanged=3 failed=0" in out
    assert set(ClientToken.objects.values_list("version", flat=True)) == {1}


@pytest.mark.django_db
def test_dry_run_writes_nothing(keys):
    keys(KEY_A)
    rows = [make_token() for _ in range(3)]
    before = {r.pk: raw_ciphertext(r.pk) for r in rows}
    ClientToken.objects.filter(pk=rows[0].pk).update(encrypted_token=rows[0].plaintext)
    before[rows[0].pk] = rows[0].plaintext
    keys(KEY_B, KEY_A)
    out, err = run_command("--dry-run")
    assert out.startswith("[dry run] rotated=2 unchanged=0 failed=1")
    assert "could not be decrypted" in err
    assert {r.pk: raw_ciphertext(r.pk) for r in rows} == before
    assert ClientToken.objects.get(pk=rows[0].pk).status == TokenStatus.ACTIVE


@pytest.mark.django_db
def test_resume_after_id(keys):
    keys(KEY_A)
    rows = [make_token() for _ in range(4)]
    keys(KEY_B, KEY_A)
    report = rotate_encryption_keys(after_id=rows[1].pk)
    assert report.rotated == 2 and report.last_id == rows[3].pk
    assert [crypto.key_index(raw_ciphertext(r.pk)) for r in rows] == [1, 1, 0, 0]
    out, _ = run_command("--after-id", str(rows[3].pk))
    assert "rotated=0 unchanged=0 failed=0 batches=0" in out
    report = rotate_encryption_keys()
    assert (report.rotated, report.unchanged) == (2, 2)


@pytest.mark.django_db(transaction=True)
def test_undecryptable_live_rows_fail_closed(keys):
    keys(KEY_A)
    good = make_token()
    legacy = make_token()
    foreign = make_token()
    swapped_a, swapped_b = make_token(), make_token()
    dead = make_token(status=TokenStatus.NEEDS_LOGIN)
    revoked = make_token(status=TokenStatus.REVOKED)
    ClientToken.objects.filter(pk=legacy.pk).update(encrypted_token=legacy.plaintext)
    ClientToken.objects.filter(pk=foreign.pk).update(
        encrypted_token=Fernet(Fernet.generate_key()).encrypt(b"x").decode()
    )
    ClientToken.objects.filter(pk=swapped_a.pk).update(encrypted_token=raw_ciphertext(swapped_b.pk))
    ClientToken.objects.filter(pk=dead.pk).update(encrypted_token="garbage")
    ClientToken.objects.filter(pk=revoked.pk).update(encrypted_token="")

    received = []

    def receiver(sender, token, account, reason, **kwargs):
        received.append((token.pk, account.pk, reason))

    token_expired.connect(receiver)
    try:
        keys(KEY_B, KEY_A)
        report = rotate_encryption_keys(batch_size=3)
    finally:
        token_expired.disconnect(receiver)

    assert report.failed == 4                   # legacy, foreign, swapped_a, dead
    assert report.rotated == 2                  # good, swapped_b
    statuses = dict(ClientToken.objects.values_list("pk", "status"))
    assert statuses[good.pk] == TokenStatus.ACTIVE
    assert statuses[swapped_b.pk] == TokenStatus.ACTIVE
    for pk in (legacy.pk, foreign.pk, swapped_a.pk):
        assert statuses[pk] == TokenStatus.NEEDS_LOGIN
        assert ClientToken.objects.get(pk=pk).last_error == "decryption_failed"
    assert statuses[dead.pk] == TokenStatus.NEEDS_LOGIN
    assert statuses[revoked.pk] == TokenStatus.REVOKED
    assert sorted(r[0] for r in received) == sorted([legacy.pk, foreign.pk, swapped_a.pk])
    assert {r[2] for r in received} == {"decryption_failed"}
    # the ciphertext of failed rows is kept (forensics / restoring a forgotten key)
    assert raw_ciphertext(legacy.pk) == legacy.plaintext


@pytest.mark.django_db
def test_mixed_workers_read_everything(keys):
    keys(KEY_A, KEY_B)
    old = make_token()
    keys(KEY_B, KEY_A)
    new = make_token()
    for order in ((KEY_A, KEY_B), (KEY_B, KEY_A)):
        keys(*order)
        assert read_all() == {old.pk: old.plaintext, new.pk: new.plaintext}


@pytest.mark.django_db
def test_command_rejects_bad_batch_size_and_bad_key(keys):
    with pytest.raises(CommandError):
        run_command("--batch-size", "0")
    with pytest.raises(ValueError):
        rotate_encryption_keys(batch_size=0)
    make_token()
    keys("this-is-not-a-fernet-key")
    with pytest.raises(CommandError, match="not a valid Fernet key"):
        run_command()


def test_report_shape():
    report = RotationReport(rotated=1, failed=2, batches=3)
    assert (report.rotated, report.failed, report.batches, report.unchanged) == (1, 2, 3, 0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rows_locked_by_another_transaction_are_skipped_not_waited_for(require_postgres, keys):
    keys(KEY_A)
    rows = [make_token() for _ in range(3)]
    keys(KEY_B, KEY_A)
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        try:
            with transaction.atomic():
                list(ClientToken.objects.select_for_update().filter(pk=rows[1].pk))
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        report = rotate_encryption_keys(batch_size=10)
    finally:
        release.set()
        holder.join(10)
    assert report.rotated == 2
    assert [crypto.key_index(raw_ciphertext(r.pk)) for r in rows] == [0, 1, 0]
    report = rotate_encryption_keys(batch_size=10)        # run again once the lock is gone
    assert (report.rotated, report.unchanged) == (1, 2)
