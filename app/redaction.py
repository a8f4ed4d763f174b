"""Personal and financial data taken out of text before a person or another system reads it.

``redact`` replaces what looks like an e-mail address, a phone number, an IBAN (mod-97 checked)
or a payment card number (Luhn-checked, so ids and amounts that merely are long numbers stay)
with a placeholder that says what was there (``app.pii`` finds them). It is the one function
every way out of a process goes through: log records (``app.logs``), Sentry events
(``app.sentry``), the dead letters' reasons and messages the CLI shows (``app.inspection``, and
``app.wakeup_broker`` before a reason is stored), and every free text the console shows (a dead
letter's reason and traceback, a job's error). Such text comes from exceptions, and an SMTP
error names its recipient.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from app.pii import find_pii

T = TypeVar("T")


def redact(text: str) -> str:
    """``text`` with what ``app.pii`` finds in it (e-mail addresses, phone numbers, IBANs,
    card numbers) replaced by ``<email>``, ``<phone>``, ``<iban>`` and ``<card>``: the same
    detectors that refuse such a value in a message at send, so what may not be sent is what
    is taken out."""
    pieces: list[str] = []
    last = 0
    for found in find_pii(text):
        pieces += [text[last : found.start], f"<{found.kind}>"]
        last = found.end
    pieces.append(text[last:])
    return "".join(pieces)


def redact_data(data: T) -> T:
    """``data`` (decoded JSON: dicts, lists, scalars) with every string in it, keys included,
    at any depth, redacted; the rest as it was. A copy: ``data`` is not changed."""
    value: Any = data
    if isinstance(value, str):
        return cast(T, redact(value))
    if isinstance(value, dict):
        return cast(T, {redact_data(k): redact_data(v) for k, v in value.items()})
    if isinstance(value, list):
        return cast(T, [redact_data(item) for item in value])
    return data
