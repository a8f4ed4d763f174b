"""Raw blobs at rest: sealed under the current blob key, bound to their row, rotated in batches.

Every ``RawBlob`` body fintask writes is an ``app.blob_crypto`` envelope whose associated data
is the row's natural key (account, kind, SHA-256 of the plaintext): a body copied onto another
account's or kind's row does not open. Bodies written before blobs were encrypted are JSON in
clear (they start with ``{``, which no envelope does): they are read as they are until
``fintask keys rotate`` seals them, like any body not under the current key.

A body that cannot be opened raises ``BlobUnreadable``, a ``ValueError``: the ETL step that
reads it fails its job with the reason (``pipelines.steps``), it is never skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, LargeBinary, func, select
from sqlalchemy.orm import Session

from app.blob_crypto import DecryptError, Keyring, envelope_header, envelope_key_id
from app.db.models import RawBlob, utcnow
from app.db.session import SessionFactory, new_session
from app.db.upsert import insert_once
from app.settings import load_settings

#: How every body written before encryption starts (``pipelines.statements.canonical_json``).
PLAINTEXT_PREFIX = b"{"
#: What ``Rotation.moved`` counts bodies in clear under.
PLAINTEXT = "plaintext"
ROTATE_BATCH = 100


class BlobUnreadable(ValueError):
    """A raw blob whose body cannot be opened: ``raw blob 123 cannot be decrypted: <why>``."""


def keep(session: Session, account_id: int, kind: str, body: bytes) -> int:
    """Keep ``body`` sealed as a blob of ``kind`` once per distinct content; return its id.

    The natural key's SHA-256 is of the plaintext, so the same download finds its blob again
    whichever key sealed it; a body already kept is not sealed again.
    """
    sha256 = hashlib.sha256(body).hexdigest()
    key = {"account_id": account_id, "kind": kind, "sha256": sha256}
    sealed = load_settings().blob_keyring().seal(body, context=_context(account_id, kind, sha256))
    blob_id, _ = insert_once(
        session, RawBlob, {**key, "body": sealed, "fetched_at": utcnow()}, key=key
    )
    return blob_id


def body_of(blob: RawBlob, keyring: Keyring | None = None) -> bytes:
    """``blob``'s plaintext (``keyring``: this process's ``BLOB_KEYS``); ``BlobUnreadable``."""
    if blob.body.startswith(PLAINTEXT_PREFIX):
        return blob.body
    if keyring is None:
        keyring = load_settings().blob_keyring()
    try:
        return keyring.open(blob.body, context=_context(blob.account_id, blob.kind, blob.sha256))
    except DecryptError as error:
        raise BlobUnreadable(f"raw blob {blob.id} cannot be decrypted: {error}") from None


def key_id_of(body: bytes) -> str:
    """The id of the key ``body`` is sealed under, or ``PLAINTEXT``; a ``DecryptError`` if
    it is neither JSON in clear nor an envelope."""
    return PLAINTEXT if body.startswith(PLAINTEXT_PREFIX) else envelope_key_id(body)


@dataclass
class Rotation:
    """What ``rotate`` did: blobs moved to ``key_id`` (by the key they were under) and left."""

    key_id: str
    moved: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    #: Blob id -> why it could not be opened; these keep their body as it was.
    unreadable: dict[int, str] = field(default_factory=dict)
    #: Blobs not under ``key_id`` once done: unreadable ones and any written meanwhile by a
    #: process that still seals with another key.
    remaining: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "reencrypted": sum(self.moved.values()),
            "from": dict(sorted(self.moved.items())),
            "batches": self.batches,
            "unreadable": [
                {"id": blob_id, "reason": reason} for blob_id, reason in self.unreadable.items()
            ],
            "remaining": self.remaining,
        }


def rotate(
    keyring: Keyring,
    *,
    batch_size: int = ROTATE_BATCH,
    on_batch: Callable[[Rotation], None] = lambda rotation: None,
    new_session: SessionFactory = new_session,
) -> Rotation:
    """Seal every blob not under the current key (in clear or under an older one) under it.

    One transaction per ``batch_size`` blobs, in id order, the rows locked while they are
    rewritten: a rotation stopped half-way keeps the batches it committed, and the next one
    goes on with what is left. ``on_batch`` sees the running totals after each batch.
    """
    rotation = Rotation(key_id=keyring.current_id)
    not_current = _not_under(keyring.current_id)
    after_id = 0
    while True:
        with new_session() as session, session.begin():
            query = (
                select(RawBlob)
                .where(RawBlob.id > after_id, not_current)
                .order_by(RawBlob.id)
                .limit(batch_size)
                .with_for_update()
            )
            blobs = list(session.scalars(query))
            for blob in blobs:
                try:
                    plaintext = body_of(blob, keyring)
                except BlobUnreadable as error:
                    rotation.unreadable[blob.id] = str(error)
                    continue
                rotation.moved[key_id_of(blob.body)] += 1
                blob.body = keyring.seal(
                    plaintext, context=_context(blob.account_id, blob.kind, blob.sha256)
                )
        if not blobs:
            break
        after_id = blobs[-1].id
        rotation.batches += 1
        on_batch(rotation)
    with new_session() as session:
        left = select(func.count()).select_from(RawBlob).where(not_current)
        rotation.remaining = session.execute(left).scalar_one()
    return rotation


def _not_under(key_id: str) -> ColumnElement[bool]:
    """SQL true for a blob whose body is not an envelope under ``key_id`` (by its header)."""
    header = envelope_header(key_id)
    return func.substr(RawBlob.body, 1, len(header), type_=LargeBinary) != header


def _context(account_id: int, kind: str, sha256: str) -> bytes:
    """The associated data that binds a body to its row: the row's natural key."""
    return json.dumps(["raw_blobs", account_id, kind, sha256], separators=(",", ":")).encode()
