"""Personal and financial data taken out of text before a person or another system reads it.

``redact`` replaces what looks like an e-mail address, an IBAN or a payment card number
(Luhn-checked, so ids and amounts that merely are long numbers stay) with a placeholder that
says what was there. It is the one function every way out of a process goes through: log
records (``app.logs``), Sentry events (``app.sentry``), the dead letters' reasons and messages
the CLI shows (``app.inspection``, and ``app.wakeup_broker`` before a reason is stored), and
every free text the console shows (a dead letter's reason and traceback, a job's error). Such
text comes from exceptions, and an SMTP error names its recipient.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

T = TypeVar("T")

# Tried from the start of a run of address characters only: from every position, a long run
# (a hex blob in a log line) would be scanned again and again, in time quadratic in its length.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
# Not glued to a dash: the digit groups of a uuid (every message id) are no card number.
_CARD = re.compile(r"(?<![\w-])\d(?:[ \-]?\d){12,18}(?![\w-])")


def redact(text: str) -> str:
    """``text`` with e-mail addresses, IBANs and card numbers replaced by ``<email>``,
    ``<iban>`` and ``<card>``."""
    text = _EMAIL.sub("<email>", text)
    text = _IBAN.sub("<iban>", text)
    return _CARD.sub(_card, text)


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


def _card(found: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", found.group())
    return "<card>" if _luhn_valid(digits) else found.group()


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0
