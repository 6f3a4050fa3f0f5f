"""Encryption at rest: ciphertext only in the column, row binding, fail closed, live keys."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from django_synerise import crypto
from django_synerise.exceptions import SyneriseConfigurationError, TokenDecryptionError
from django_synerise.models import ClientToken
from tests.factories import make_account, make_token, raw_ciphertext

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def write_column(pk: int, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_synerise_clienttoken SET encrypted_token = %s WHERE id = %s",
            [value, pk],
        )


def reload(pk: int) -> ClientToken:
    return ClientToken.objects.select_related("account").get(pk=pk)


# ------------------------------------------------------------------ R-ENC-1: at rest


@pytest.mark.django_db
def test_raw_column_holds_only_fernet_ciphertext():
    # '#' and '.' are outside the base64url alphabet: a clear client id cannot hide in it.
    account = make_account(client_id="cl#4711.x")
    row = make_token(account)
    raw = raw_ciphertext(row.pk)

    assert raw.startswith("gAAAAA")
    assert row.plaintext not in raw
    for segment in row.plaintext.split("."):
        assert segment not in raw
    assert "cl#4711.x" not in raw
    assert '"tok"' not in raw and '"aid"' not in raw
    decoded = base64.urlsafe_b64decode(raw.encode())
    assert row.plaintext.encode() not in decoded
    assert b"cl#4711.x" not in decoded
    assert b'"tok"' not in decoded


@pytest.mark.django_db
def test_same_token_encrypts_differently_each_time():
    row = make_token()
    first = raw_ciphertext(row.pk)
    row.set_token(row.plaintext)
    row.save()
    assert raw_ciphertext(row.pk) != first
    assert reload(row.pk).get_token() == row.plaintext


@pytest.mark.django_db
def test_str_and_repr_never_show_token_or_ciphertext():
    row = make_token()
    for text in (str(row), repr(row), str(row.account), repr(row.account)):
        assert row.plaintext not in text
        assert row.encrypted_token not in text
        assert row.encrypted_token[:12] not in text
        for segment in row.plaintext.split("."):
            assert segment not in text
    assert str(row) == f"Client token of Synerise client {row.account.client_id}"


# ------------------------------------------------------------------ R-ENC-2: fail closed


def _flip_one_byte(ciphertext: str, position: int) -> str:
    data = bytearray(base64.urlsafe_b64decode(ciphertext.encode()))
    data[position] ^= 0x01
    return base64.urlsafe_b64encode(bytes(data)).decode()


@pytest.mark.django_db
@pytest.mark.parametrize("position", [0, 5, 12, 30, -40, -1])
def test_one_flipped_byte_fails_closed(position):
    row = make_token()
    write_column(row.pk, _flip_one_byte(raw_ciphertext(row.pk), position))
    with pytest.raises(TokenDecryptionError):
        reload(row.pk).get_token()


@pytest.mark.django_db
@pytest.mark.parametrize("keep", [10, 60, -1, -33])
def test_truncated_ciphertext_fails_closed(keep):
    row = make_token()
    raw = raw_ciphertext(row.pk)
    write_column(row.pk, raw[:keep])
    with pytest.raises(TokenDecryptionError):
        reload(row.pk).get_token()


@pytest.mark.django_db
def test_ciphertext_under_unknown_key_fails_closed():
    row = make_token()
    envelope = {"v": 1, "aid": row.account_id, "cid": row.account.client_id, "tok": "a.b.c"}
    foreign = Fernet(Fernet.generate_key()).encrypt(json.dumps(envelope).encode()).decode()
    write_column(row.pk, foreign)
    with pytest.raises(TokenDecryptionError):
        reload(row.pk).get_token()


@pytest.mark.django_db
def test_legacy_plaintext_value_fails_closed():
    row = make_token()
    write_column(row.pk, row.plaintext)
    with pytest.raises(TokenDecryptionError):
        reload(row.pk).get_token()
    write_column(row.pk, "gAAAAA" + row.plaintext)
    with pytest.raises(TokenDecryptionError):
        reload(row.pk).get_token()


@pytest.mark.django_db
def test_non_ascii_and_empty_columns_fail_closed():
    row = make_token()
    write_column(row.pk, "gAAAAAżółć")
    with pytest.raises(TokenDecryptionError):
        reload(row.pk).get_token()
    write_column(row.pk, "")
    with pytest.raises(TokenDecryptionError):
        reload(row.pk).get_token()


# ------------------------------------------------------------------ R-ENC-3: row binding


@pytest.mark.django_db
def test_swapped_ciphertexts_fail_closed_for_both_rows():
    one, two = make_token(), make_token()
    raw_one, raw_two = raw_ciphertext(one.pk), raw_ciphertext(two.pk)
    write_column(one.pk, raw_two)
    write_column(two.pk, raw_one)
    for pk in (one.pk, two.pk):
        with pytest.raises(TokenDecryptionError, match="binding_mismatch"):
            reload(pk).get_token()


@pytest.mark.django_db
def test_changed_client_id_breaks_binding():
    row = make_token()
    row.account.client_id = "999999999"
    row.account.save()
    with pytest.raises(TokenDecryptionError, match="binding_mismatch"):
        reload(row.pk).get_token()


@pytest.mark.django_db
def test_ciphertext_of_same_client_on_other_account_pk_is_rejected():
    row = make_token()
    ct = crypto.encrypt_token("x.y.z", account_id=row.account_id + 1000,
                              client_id=row.account.client_id)
    write_column(row.pk, ct)
    with pytest.raises(TokenDecryptionError, match="binding_mismatch"):
        reload(row.pk).get_token()


@pytest.mark.parametrize(
    "envelope, reason",
    [
        ({"v": 2, "aid": 7, "cid": "c", "tok": "a.b.c"}, "unsupported_version"),
        ({"v": True, "aid": 7, "cid": "c", "tok": "a.b.c"}, "unsupported_version"),
        ({"aid": 7, "cid": "c", "tok": "a.b.c"}, "unsupported_version"),
        ({"v": 1, "aid": "7", "cid": "c", "tok": "a.b.c"}, "binding_mismatch"),
        ({"v": 1, "aid": 7.0, "cid": "c", "tok": "a.b.c"}, "binding_mismatch"),
        ({"v": 1, "aid": 7, "cid": 7, "tok": "a.b.c"}, "binding_mismatch"),
        ({"v": 1, "aid": 7, "cid": "c", "tok": ""}, "bad_envelope"),
        ({"v": 1, "aid": 7, "cid": "c", "tok": ["a"]}, "bad_envelope"),
        (["v", 1], "bad_envelope"),
    ],
)
def test_malformed_envelopes_under_the_right_key_are_rejected(envelope, reason):
    ct = crypto.get_multifernet().encrypt(json.dumps(envelope).encode()).decode()
    with pytest.raises(TokenDecryptionError, match=reason):
        crypto.decrypt_token(ct, account_id=7, client_id="c")


def test_non_json_plaintext_under_the_right_key_is_rejected():
    ct = crypto.get_multifernet().encrypt(b"eyJhbGciOi.plain.jwt").decode()
    with pytest.raises(TokenDecryptionError, match="bad_envelope"):
        crypto.decrypt_token(ct, account_id=7, client_id="c")


def test_encrypt_rejects_empty_token_and_missing_row():
    with pytest.raises(ValueError):
        crypto.encrypt_token("", account_id=1, client_id="1")
    with pytest.raises(ValueError):
        crypto.encrypt_token("a.b.c", account_id=None, client_id="1")


@pytest.mark.django_db
def test_set_token_needs_a_saved_account():
    row = ClientToken()
    with pytest.raises(ValueError):
        row.set_token("a.b.c")


def test_decryption_failure_logs_reason_but_no_secret(caplog):
    ct = crypto.encrypt_token("secret.token.value", account_id=1, client_id="c")
    with caplog.at_level(logging.DEBUG, logger="django_synerise"), pytest.raises(
        TokenDecryptionError
    ):
        crypto.decrypt_token(ct, account_id=2, client_id="c")
    assert "binding_mismatch" in caplog.text
    assert "secret.token.value" not in caplog.text
    assert ct not in caplog.text and ct[:20] not in caplog.text


def test_exception_does_not_chain_decoder_state():
    ct = crypto.get_multifernet().encrypt(b"{not json: secret.token").decode()
    with pytest.raises(TokenDecryptionError) as info:
        crypto.decrypt_token(ct, account_id=1, client_id="c")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "secret.token" not in str(info.value)


@hsettings(max_examples=60, deadline=None)
@given(
    token=st.text(min_size=1, max_size=300),
    account_id=st.integers(min_value=1, max_value=2**62),
    client_id=st.text(max_size=64),
)
def test_roundtrip_property(token, account_id, client_id):
    ct = crypto.encrypt_token(token, account_id=account_id, client_id=client_id)
    assert ct.startswith("gAAAAA")
    assert crypto.decrypt_token(ct, account_id=account_id, client_id=client_id) == token
    with pytest.raises(TokenDecryptionError):
        crypto.decrypt_token(ct, account_id=account_id + 1, client_id=client_id)
    with pytest.raises(TokenDecryptionError):
        crypto.decrypt_token(ct, account_id=account_id, client_id=client_id + "x")


# ------------------------------------------------------------------ keys: live settings


def test_keys_are_read_live(keys):
    keys(KEY_A)
    ct = crypto.encrypt_token("a.b.c", account_id=1, client_id="c")
    keys(KEY_B)
    with pytest.raises(TokenDecryptionError):
        crypto.decrypt_token(ct, account_id=1, client_id="c")
    keys(KEY_B, KEY_A)
    assert crypto.decrypt_token(ct, account_id=1, client_id="c") == "a.b.c"
    assert crypto.key_index(ct) == 1
    new = crypto.encrypt_token("a.b.c", account_id=1, client_id="c")
    assert crypto.key_index(new) == 0
    keys(KEY_B)
    assert crypto.decrypt_token(new, account_id=1, client_id="c") == "a.b.c"


def test_multifernet_is_cached_per_key_tuple(keys):
    keys(KEY_A, KEY_B)
    first = crypto.get_multifernet()
    assert crypto.get_multifernet() is first
    keys(KEY_B, KEY_A)
    assert crypto.get_multifernet() is not first


def test_rotate_ciphertext_moves_to_primary_and_keeps_binding(keys):
    keys(KEY_A)
    ct = crypto.encrypt_token("a.b.c", account_id=3, client_id="c")
    keys(KEY_B, KEY_A)
    rotated = crypto.rotate_ciphertext(ct)
    keys(KEY_B)
    assert crypto.decrypt_token(rotated, account_id=3, client_id="c") == "a.b.c"
    with pytest.raises(TokenDecryptionError):
        crypto.decrypt_token(rotated, account_id=4, client_id="c")
    with pytest.raises(TokenDecryptionError):
        crypto.rotate_ciphertext(ct)
    with pytest.raises(TokenDecryptionError):
        crypto.key_index(ct)


def test_malformed_key_is_a_configuration_error_without_echoing_it(keys):
    keys(KEY_A, "not-a-fernet-key-but-secret-material")
    with pytest.raises(SyneriseConfigurationError) as info:
        crypto.encrypt_token("a.b.c", account_id=1, client_id="c")
    assert "[1]" in str(info.value)
    assert "secret-material" not in str(info.value)


def test_lone_string_counts_as_one_key(settings):
    settings.SYNERISE = {**settings.SYNERISE, "TOKEN_ENCRYPTION_KEYS": KEY_A}
    assert crypto.configured_keys() == [KEY_A]
    assert not crypto.keys_are_derived()


def test_derived_key_from_secret_key_when_list_is_empty(keys, settings):
    keys()
    assert crypto.keys_are_derived()
    ct = crypto.encrypt_token("a.b.c", account_id=1, client_id="c")
    assert crypto.decrypt_token(ct, account_id=1, client_id="c") == "a.b.c"
    # The derived key is HKDF-SHA256(SECRET_KEY), not SECRET_KEY itself.
    derived = crypto.derive_key(settings.SECRET_KEY)
    assert Fernet(derived).decrypt(ct.encode())
    assert derived != settings.SECRET_KEY
    assert crypto.derive_key(settings.SECRET_KEY) == derived
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    with pytest.raises(TokenDecryptionError):
        crypto.decrypt_token(ct, account_id=1, client_id="c")


def test_configured_keys_are_not_derived(keys):
    keys(KEY_A)
    assert not crypto.keys_are_derived()
