"""AES-256-GCM envelopes under the keys of ``BLOB_KEYS``, so that data at rest can rotate keys.

The raw provider payloads fintask keeps (account numbers, balances, merchant names) must be
unreadable in a database dump, a backup or a replica. Each is sealed in an envelope that
names the key that sealed it, so the keyring can hold several keys: the first encrypts, all of
them decrypt, and ``fintask keys rotate`` moves every envelope to the first before an old key
is dropped.

Envelope, version 1::

    0x01 | key id length (1 byte) | key id (ASCII) | nonce (12 random bytes) | ciphertext+tag

The header (version and key id) is authenticated along with the caller's ``context``, the
associated data that binds an envelope to the row it belongs to: an envelope with a changed
byte, opened under another key, or copied onto another row fails its tag. A random 96-bit
nonce per envelope keeps well inside GCM's bound for random nonces (2^32 per key) at
fintask's rate of one envelope per refresh step.

No key's bytes appear in any message, ``repr`` or exception of this module: errors name keys
by their id and entries of ``BLOB_KEYS`` by their position.

``BLOB_KEYS`` is ``ID:BASE64_KEY[,ID:BASE64_KEY...]``: ids of 1 to 32 letters, digits, ``.``,
``_`` or ``-``; keys of 32 bytes in standard base64 (``openssl rand -base64 32``).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_KEY_ID_RULE = "1 to 32 letters, digits, '.', '_' or '-'"


class KeyringError(ValueError):
    """``BLOB_KEYS`` is malformed; the message says which entry and why, never a key."""


class DecryptError(ValueError):
    """An envelope that cannot be opened: the message says why (never with a key's bytes)."""


class Keyring:
    """The keys blobs are sealed and opened with: the first seals, every one opens."""

    __slots__ = ("_ciphers",)

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyringError("names no key: expected ID:BASE64_KEY[,ID:BASE64_KEY...]")
        ciphers: dict[str, AESGCM] = {}
        for number, (key_id, key) in enumerate(keys, start=1):
            if not _KEY_ID.fullmatch(key_id):
                # Not shown: a key pasted where its id belongs would be.
                raise KeyringError(f"entry {number}: a key id must be {_KEY_ID_RULE}")
            if key_id in ciphers:
                raise KeyringError(f"key id {key_id!r} appears twice")
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                    f"(openssl rand -base64 {KEY_BYTES} makes one)"
                )
            ciphers[key_id] = AESGCM(key)
        self._ciphers = ciphers

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """The keyring ``BLOB_KEYS`` describes; a ``KeyringError`` naming the bad entry."""
        keys: list[tuple[str, bytes]] = []
        for number, entry in enumerate(text.split(","), start=1):
            key_id, colon, encoded = (part.strip() for part in entry.partition(":"))
            if not colon or not encoded:
                # The whole entry may be a key pasted without its id: never show it.
                raise KeyringError(f"entry {number} is not ID:BASE64_KEY")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise KeyringError(f"entry {number}: its key is not base64") from None
            keys.append((key_id, key))
        return cls(keys)

    @property
    def current_id(self) -> str:
        """The id of the key new envelopes are sealed with (the first of ``BLOB_KEYS``)."""
        return next(iter(self._ciphers))

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, the current one first."""
        return tuple(self._ciphers)

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        """``plaintext`` in an envelope under the current key, bound to ``context``."""
        header = envelope_header(self.current_id)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plaintext, header + context)
        return header + nonce + sealed

    def open(self, envelope: bytes, *, context: bytes) -> bytes:
        """The plaintext of ``envelope``, if it was sealed under one of these keys for
        ``context`` and not altered since; a ``DecryptError`` saying which of these failed."""
        key_id = envelope_key_id(envelope)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptError(f"key {key_id!r} is unknown (not in BLOB_KEYS)")
        header_length = len(envelope_header(key_id))
        nonce = envelope[header_length : header_length + NONCE_BYTES]
        try:
            return cipher.decrypt(
                nonce, envelope[header_length + NONCE_BYTES :], envelope[:header_length] + context
            )
        except InvalidTag:
            raise DecryptError(
                "authentication failed: wrong key or altered data (or another row's blob)"
            ) from None

    def __repr__(self) -> str:
        return f"Keyring(current={self.current_id!r}, ids={self.ids!r})"


def envelope_header(key_id: str) -> bytes:
    """The bytes every envelope sealed under ``key_id`` starts with."""
    encoded = key_id.encode("ascii")
    return bytes([VERSION, len(encoded)]) + encoded


def envelope_key_id(envelope: bytes) -> str:
    """The id of the key ``envelope`` names; a ``DecryptError`` if it is no envelope."""
    if not envelope:
        raise DecryptError("it is empty, not an envelope")
    if envelope[0] != VERSION:
        raise DecryptError(f"unknown envelope version {envelope[0]}")
    length = envelope[1] if len(envelope) > 1 else 0
    key_id = envelope[2 : 2 + length].decode("ascii", errors="replace")
    if not _KEY_ID.fullmatch(key_id) or len(envelope) < 2 + length + NONCE_BYTES + 16:
        raise DecryptError("the envelope is truncated or its header damaged")
    return key_id


def new_key_entry(key_id: str) -> str:
    """A ``BLOB_KEYS`` entry with a new random key: ``ID:BASE64_KEY``."""
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"
