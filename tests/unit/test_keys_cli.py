"""``fintask keys rotate``: every raw blob moves to the current key, so old keys can go.

On SQLite and PostgreSQL (the ``database`` fixture), through the real command.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from app.blob_crypto import Keyring, new_key_entry
from app.cli.main import main
from app.db.models import AuditEvent, ProviderAccount, RawBlob
from app.db.session import transaction
from app.raw_blobs import BlobUnreadable, body_of, keep, key_id_of, rotate
from app.settings import load_settings

OLD, NEW = new_key_entry("k1"), new_key_entry("k2")


def fintask(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def account_id(user) -> int:
    with transaction() as session:
        account = ProviderAccount(user_id=user.id, provider="sandbox", external_id="acc-1")
        session.add(account)
    return account.id


def _keep(account_id: int, count: int, *, start: int = 0) -> dict[int, bytes]:
    """``count`` blobs kept as the ETL keeps them, under the current key; id -> plaintext."""
    kept = {}
    with transaction() as session:
        for number in range(start, start + count):
            body = json.dumps({"page": number, "merchant": "Blue Bottle"}).encode()
            kept[keep(session, account_id, "provider.transactions", body)] = body
    return kept


def _plaintext_rows(account_id: int, count: int) -> dict[int, bytes]:
    """Blobs as a release before encryption kept them: JSON in clear."""
    rows = {}
    with transaction() as session:
        for number in range(count):
            body = json.dumps({"legacy": number}).encode()
            blob = RawBlob(
                account_id=account_id, kind="statement", sha256=f"legacy{number}", body=body
            )
            session.add(blob)
            session.flush()
            rows[blob.id] = body
    return rows


def _blobs() -> list[RawBlob]:
    with transaction() as session:
        return list(session.scalars(select(RawBlob).order_by(RawBlob.id)))


def _keyring(entries: str) -> Keyring:
    return load_settings({"BLOB_KEYS": entries}).blob_keyring()


def test_rotate_moves_every_blob_to_the_new_key_and_the_old_key_can_go(account_id, monkeypatch):
    # Given blobs under k1 and two kept in clear before blobs were encrypted,
    monkeypatch.setenv("BLOB_KEYS", OLD)
    plaintexts = {**_keep(account_id, 5), **_plaintext_rows(account_id, 2)}
    # (which are read as they are until they are rotated)
    assert {body_of(blob) for blob in _blobs()} == set(plaintexts.values())

    # when k2 is made current, k1 still listed, and the blobs are rotated in batches of 3,
    monkeypatch.setenv("BLOB_KEYS", f"{NEW},{OLD}")
    result = fintask("keys", "rotate", "--batch-size", "3")

    # then it says what it did batch by batch, and that nothing is left under another key;
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "batch 1: 3 blob(s) re-encrypted so far",
        "batch 2: 6 blob(s) re-encrypted so far",
        "batch 3: 7 blob(s) re-encrypted so far",
        "re-encrypted 7 blob(s) under key 'k2' (5 from k1, 2 from plaintext)",
        "every blob is under 'k2': the other keys can be removed",
    ]
    # every blob is under k2 and opens with k2 alone,
    blobs = _blobs()
    assert {key_id_of(blob.body) for blob in blobs} == {"k2"}
    new_only = _keyring(NEW)
    assert {blob.id: body_of(blob, new_only) for blob in blobs} == plaintexts
    # and none opens with the old key alone any more.
    old_only = _keyring(OLD)
    for blob in blobs:
        with pytest.raises(BlobUnreadable, match=f"raw blob {blob.id} .* key 'k2' is unknown"):
            body_of(blob, old_only)
    # A second run has nothing to do.
    again = fintask("keys", "rotate", "--json")
    assert json.loads(again.stdout) == {
        "key_id": "k2",
        "reencrypted": 0,
        "from": {},
        "batches": 0,
        "unreadable": [],
        "remaining": 0,
    }


def test_a_rotation_stopped_half_way_keeps_its_batches_and_the_next_run_finishes(
    account_id, monkeypatch
):
    monkeypatch.setenv("BLOB_KEYS", OLD)
    _keep(account_id, 5)
    keyring = _keyring(f"{NEW},{OLD}")

    def stop_after_the_first_batch(_rotation) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate(keyring, batch_size=2, on_batch=stop_after_the_first_batch)
    assert [key_id_of(blob.body) for blob in _blobs()] == ["k2", "k2", "k1", "k1", "k1"]

    monkeypatch.setenv("BLOB_KEYS", f"{NEW},{OLD}")
    result = json.loads(fintask("keys", "rotate", "--batch-size", "2", "--json").stdout)

    assert (result["reencrypted"], result["from"], result["remaining"]) == (3, {"k1": 3}, 0)
    assert {key_id_of(blob.body) for blob in _blobs()} == {"k2"}


def test_a_blob_it_cannot_decrypt_is_named_left_as_it_is_and_fails_the_command(
    account_id, monkeypatch
):
    # Given one blob under a key nobody lists any more, and two under k1,
    monkeypatch.setenv("BLOB_KEYS", new_key_entry("gone"))
    [lost] = _keep(account_id, 1)
    monkeypatch.setenv("BLOB_KEYS", OLD)
    _keep(account_id, 2, start=1)
    before = {blob.id: blob.body for blob in _blobs()}

    monkeypatch.setenv("BLOB_KEYS", f"{NEW},{OLD}")
    result = fintask("keys", "rotate", "--json")

    # then the others moved, the lost one is named with why and kept as it was, and the
    # command fails: k1 cannot go yet without the blob becoming unreadable for good.
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["reencrypted"], summary["remaining"]) == (2, 1)
    assert summary["unreadable"] == [
        {
            "id": lost,
            "reason": f"raw blob {lost} cannot be decrypted: "
            "key 'gone' is unknown (not in BLOB_KEYS)",
        }
    ]
    assert {blob.id: blob.body for blob in _blobs()}[lost] == before[lost]
    text = fintask("keys", "rotate")
    assert text.exit_code == 1
    assert f"left as it is: raw blob {lost} cannot be decrypted" in text.stderr
    assert "1 blob(s) are not under 'k2'" in text.stderr


def test_a_rotation_is_in_the_audit_trail(account_id, monkeypatch):
    monkeypatch.setenv("BLOB_KEYS", OLD)
    _keep(account_id, 2)
    monkeypatch.setenv("BLOB_KEYS", f"{NEW},{OLD}")

    assert fintask("keys", "rotate").exit_code == 0

    with transaction() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "keys.rotate"))
        assert (event.target, event.count) == ("k2", 2)
        assert event.detail == {"from": {"k1": 2}, "remaining": 0}
        assert event.who.startswith("cli:")


def test_without_blob_keys_it_stops_in_one_line_saying_how_to_set_them(database, monkeypatch):
    monkeypatch.delenv("BLOB_KEYS")

    result = fintask("keys", "rotate")

    assert result.exit_code == 4
    [line] = result.stderr.splitlines()
    assert line.startswith("configuration error: BLOB_KEYS is not set: ")


def test_a_bad_key_stops_it_in_one_line_without_the_key(database, monkeypatch):
    key = os.urandom(16).hex()
    monkeypatch.setenv("BLOB_KEYS", f"k1:{key}")

    result = fintask("keys", "rotate")

    assert result.exit_code == 4
    assert result.stderr == (
        "configuration error: BLOB_KEYS='**********': key 'k1' is 24 bytes; "
        "AES-256 needs 32 (openssl rand -base64 32 makes one)\n"
    )
    assert key not in result.output
