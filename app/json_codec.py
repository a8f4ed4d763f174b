"""fintask's message codec: JSON, written and read by orjson wherever that means the same.

Every message is encoded at its send and decoded at its delivery, and Dramatiq's
``JSONEncoder`` (the standard library's ``json``) is among the costlier steps of both. orjson
does the same work several times faster, but it differs from ``json`` at a few edges, and a
message must mean exactly what it meant before, whoever reads it (Dramatiq's own
``JSONEncoder`` reads everything written here). So ``json`` takes over where orjson would differ:

- orjson writes NaN and the infinities as ``null``, ``json`` as ``NaN`` and ``Infinity``: an
  encoding holding ``null`` is made again with ``json`` (a message with a ``None`` in it costs
  the old price, and no more);
- orjson refuses integers beyond 64 bits, lone surrogates and subclasses of ``str`` and
  ``int`` (it is told to pass them through), which ``json`` writes: ``json`` writes them;
- orjson reads an integer beyond 64 bits as a float, ``json`` exactly: a payload with a run of
  19 digits or more (which may be one) is read by ``json``, and so is anything orjson rejects,
  so a payload that is not JSON fails with ``json``'s error, as before.

The bytes differ in one way only, which no JSON reader sees: non-ASCII characters are written as
UTF-8 instead of ``\\u`` escapes. orjson also writes values ``json`` refuses (UUIDs, enums,
numpy numbers); fintask's guardrails refuse those in a message's arguments before it is encoded.
"""

from __future__ import annotations

import orjson
from dramatiq.encoder import JSONEncoder, MessageData

#: What orjson writes exactly; the rest it passes to ``json`` (by raising ``TypeError``).
_OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)

#: Every ASCII digit made ``0``, so that a run of 19 digits (which may be an integer orjson
#: would read as a float, beyond 64 bits) is a run of 19 zeros: ``bytes.translate`` and ``in``
#: find it in one pass each in C, where a regex tried at every position of a 16 kB message
#: took 155 µs, twenty times orjson's decoding of it.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_DIGITS = b"0" * 19


class FastJSONEncoder(JSONEncoder):
    """Dramatiq's ``JSONEncoder``, through orjson wherever orjson gives the same meaning."""

    def encode(self, data: MessageData) -> bytes:
        try:
            encoded = orjson.dumps(data, option=_OPTIONS)
        except TypeError:
            return super().encode(data)
        if b"null" in encoded:
            return super().encode(data)
        return encoded

    def decode(self, data: bytes) -> MessageData:
        if _LONG_DIGITS not in data.translate(_DIGITS_AS_ZERO):
            try:
                decoded: MessageData = orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
            else:
                return decoded
        return super().decode(data)
