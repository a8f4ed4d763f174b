"""Personal and financial data taken out of text before a person or another system reads it.

``redact`` replaces what looks like an e-mail address, an IBAN or a payment card number
(Luhn-checked, so ids and amounts that merely are long numbers stay) with a placeholder that
says what was there. The console applies it to every free text it shows (a dead letter's
reason and traceback, a job's error): such text comes from exceptions, and an SMTP error names
its recipient.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"\b\d(?:[ \-]?\d){12,18}\b")


def redact(text: str) -> str:
    """``text`` with e-mail addresses, IBANs and card numbers replaced by ``<email>``,
    ``<iban>`` and ``<card>``."""
    text = _EMAIL.sub("<email>", text)
    text = _IBAN.sub("<iban>", text)
    return _CARD.sub(_card, text)


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
