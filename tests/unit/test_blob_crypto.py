"""Blob envelopes: AES-256-GCM under BLOB_KEYS, bound to their row, failing with a reason.

Every failure names its cause and no message, ``repr`` or settings error ever shows a key.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from app.blob_crypto import (
    NONCE_BYTES,
    DecryptError,
    Keyring,
    KeyringError,
    envelope_header,
    envelope_key_id,
)
from app.settings import SettingsError, load_settings

# Fixed keys: test ids name them, and pytest-xdist needs the same ids in every worker.
KEY_1, KEY_2 = hashlib.sha256(b"test key 1").digest(), hashlib.sha256(b"test key 2").digest()
B64_1, B64_2 = (base64.b64encode(key).decode() for key in (KEY_1, KEY_2))
ROW = b'["raw_blobs",1,"provider.transactions","ab12"]'
PAYLOAD = b'{"account": {"external_id": "acc-1", "balance": "1234.56"}}'


def _secrets() -> list[str]:
    """Every form of the test's keys a leak could take."""
    return [B64_1, B64_2, KEY_1.hex(), KEY_2.hex(), repr(KEY_1), repr(KEY_2)]


def assert_no_key_in(text: str) -> None:
    for secret in _secrets():
        assert secret not in text


def test_a_sealed_blob_opens_to_its_plaintext_and_holds_nothing_of_it_in_clear():
    sealed = Keyring([("k1", KEY_1)]).seal(PAYLOAD, context=ROW)

    assert Keyring([("k1", KEY_1)]).open(sealed, context=ROW) == PAYLOAD
    assert b"acc-1" not in sealed and b"1234.56" not in sealed
    assert sealed.startswith(envelope_header("k1"))
    assert envelope_key_id(sealed) == "k1"


def test_each_seal_has_its_own_nonce():
    keyring = Keyring([("k1", KEY_1)])
    header = len(envelope_header("k1"))

    sealed = [keyring.seal(PAYLOAD, context=ROW) for _ in range(200)]

    assert len({blob[header : header + NONCE_BYTES] for blob in sealed}) == 200
    assert len(set(sealed)) == 200


def test_the_first_key_seals_and_every_listed_key_opens():
    old = Keyring([("k1", KEY_1)]).seal(PAYLOAD, context=ROW)
    rotated = Keyring([("k2", KEY_2), ("k1", KEY_1)])

    assert rotated.current_id == "k2"
    assert envelope_key_id(rotated.seal(PAYLOAD, context=ROW)) == "k2"
    assert rotated.open(old, context=ROW) == PAYLOAD


AUTHENTICATION_FAILED = "authentication failed: wrong key or altered data (or another row's blob)"
K1 = Keyring([("k1", KEY_1)])
SEALED = K1.seal(PAYLOAD, context=ROW)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# A wrong key, a changed byte and the blob of another row are all one to GCM: its tag fails.
@pytest.mark.parametrize(
    ("keyring", "envelope", "context", "reason"),
    [
        pytest.param(
            Keyring([("k1", KEY_2)]), SEALED, ROW, AUTHENTICATION_FAILED, id="another key, same id"
        ),
        pytest.param(K1, _flip(SEALED, -20), ROW, AUTHENTICATION_FAILED, id="altered ciphertext"),
        pytest.param(K1, _flip(SEALED, -1), ROW, AUTHENTICATION_FAILED, id="altered tag"),
        pytest.param(
            K1, SEALED, ROW.replace(b",1,", b",2,"), AUTHENTICATION_FAILED, id="another row"
        ),
        pytest.param(
            Keyring([("k2", KEY_2)]),
            SEALED,
            ROW,
            "key 'k1' is unknown (not in BLOB_KEYS)",
            id="unknown key id",
        ),
        pytest.param(
            K1, SEALED[:20], ROW, "the envelope is truncated or its header damaged", id="truncated"
        ),
        pytest.param(
            K1, b"\x07" + SEALED[1:], ROW, "unknown envelope version 7", id="unknown version"
        ),
    ],
)
def test_an_envelope_that_cannot_be_opened_says_why(keyring, envelope, context, reason):
    with pytest.raises(DecryptError) as error:
        keyring.open(envelope, context=context)

    assert str(error.value) == reason
    assert_no_key_in(str(error.value))
    assert_no_key_in(repr(error.value))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("k1", "entry 1 is not ID:BASE64_KEY"),
        (B64_1, "entry 1 is not ID:BASE64_KEY"),
        (f"k1:{B64_1},k2:", "entry 2 is not ID:BASE64_KEY"),
        (f"k1:{B64_1[:-2]}", "entry 1: its key is not base64"),
        (f"k1:{B64_1.replace('=', '')}!", "entry 1: its key is not base64"),
        (
            f"k1:{base64.b64encode(KEY_1[:16]).decode()}",
            "key 'k1' is 16 bytes; AES-256 needs 32 (openssl rand -base64 32 makes one)",
        ),
        (f"k1:{B64_1}, k1:{B64_2}", "key id 'k1' appears twice"),
        (
            f"{B64_2}:{B64_1}",
            "entry 1: a key id must be 1 to 32 letters, digits, '.', '_' or '-'",
        ),
        (",", "entry 1 is not ID:BASE64_KEY"),
    ],
)
def test_a_malformed_blob_keys_is_one_settings_line_naming_it_without_the_value(value, reason):
    with pytest.raises(SettingsError) as error:
        load_settings({"BLOB_KEYS": value})

    assert str(error.value) == f"BLOB_KEYS='**********': {reason}"
    assert_no_key_in(str(error.value))


def test_blob_keys_parse_into_a_keyring_whose_repr_names_ids_only():
    settings = load_settings({"BLOB_KEYS": f" k2:{B64_2} , k1:{B64_1} "})

    keyring = settings.blob_keyring()
    assert keyring.ids == ("k2", "k1")
    assert repr(keyring) == "Keyring(current='k2', ids=('k2', 'k1'))"
    assert_no_key_in(repr(settings))
    assert_no_key_in(str(settings))


def test_without_blob_keys_asking_for_the_keyring_says_how_to_set_it():
    settings = load_settings({})

    with pytest.raises(SettingsError, match=r"^BLOB_KEYS is not set: ") as error:
        settings.blob_keyring()
    assert "openssl rand -base64 32" in str(error.value)


def test_direct_construction_checks_as_parsing_does():
    with pytest.raises(KeyringError, match="names no key"):
        Keyring([])
    with pytest.raises(KeyringError, match="is 31 bytes"):
        Keyring([("k1", KEY_1[:31])])
