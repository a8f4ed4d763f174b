"""What personal and financial data looks like in a string: e-mail addresses, phone numbers,
IBANs and payment card numbers.

fintask's messages carry ids, ISO dates and short strings; one that carries a user's address
or account number copies it into Redis, the dead letters, the logs and Sentry, where nobody
can delete it. The guardrails refuse such a message at send (``app.middleware.guardrails``),
and the redaction of text that leaves a process finds the same shapes: both read this module,
so what one calls personal data the other does too.

Each kind is a compiled pattern, which finds *candidates*, and a check the pattern cannot make
(the IBAN's country length and mod-97 check digits, the card's Luhn digit, a phone number's
count of digits). A pattern alone is too eager: use :func:`find_pii` (every finding, with its
span, for redaction) or :func:`pii_kind` (the first one's kind, for a refusal), which apply
both. The rules, and what deliberately passes:

- **e-mail**: ``local@domain.tld``, the top-level domain letters only (``pkg@1.2.3`` passes).
- **IBAN**: two upper-case letters of a country in the IBAN registry, two check digits and the
  BBAN, contiguous or printed in groups of four; exactly that country's length, and the mod-97
  check must hold, so an upper-case token of the same shape passes 96 times in 97. Lower-case
  IBANs are not recognised: fintask's own ids are lower-case hex.
- **card**: 13 to 19 digits, contiguous or in groups (4, then 3 to 6) joined by spaces or
  dashes, starting 2 to 6 (the payment networks' major industry identifiers) and passing the
  Luhn check. A millisecond timestamp (it starts with 1 until 2033), a 16-digit id that fails
  the check and any digit run longer than 19 pass; so does a number glued to a word (``ref-``,
  ``acc_``), which is an id. A bare Luhn-valid numeric string is indistinguishable from a card:
  send long numeric ids as integers (the guardrails check strings only).
- **phone**: an international ``+`` form (8 to 15 digits, spaces, dashes, a bracketed area
  code or ``(0)``), or a national one *with separators*: the North-American 3-3-4
  (``(415) 555-2671``, ``415.555.2671``) or a trunk ``0`` form of 9 to 12 digits
  (``030 1234567``, ``06 12 34 56 78``, ``(020) 7946 0958``). Plain digit runs, ISO dates,
  times and offsets, ISO weeks, amounts (signed too), versions and uuids pass.

Digit runs inside a longer token (next to a letter, ``_``, ``-``, ``.``, ``/`` or ``+``) are not
candidates for a card or a phone number: ids, keys and slugs are made that way.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass


class PiiKind(enum.StrEnum):
    """A kind of personal data; its value is the redaction placeholder's name (``<email>``)."""

    EMAIL = "email"
    PHONE = "phone"
    IBAN = "iban"
    CARD = "card"

    @property
    def description(self) -> str:
        """The kind as an error message names it: "an e-mail address"."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    PiiKind.EMAIL: "an e-mail address",
    PiiKind.PHONE: "a phone number",
    PiiKind.IBAN: "an IBAN",
    PiiKind.CARD: "a payment card number",
}

#: Not a candidate when glued to one of these (ids, keys, slugs, amounts).
_NOT_AFTER = r"(?<![\w+\-./])"
#: Not a candidate when followed by a word character, or by one after ``-``, ``.``, ``/``, ``:``.
_NOT_BEFORE = r"(?!\w|[\-./:]\w)"

#: An e-mail address; its domain ends in a top-level domain of letters.
EMAIL_PATTERN = re.compile(r"(?<![\w.%+\-])[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[^\W\d_]{2,}\b")

#: An IBAN candidate (check with :func:`iban_valid`): country, check digits, then the BBAN
#: contiguous or in groups of four separated by single spaces.
IBAN_PATTERN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")

#: A payment card candidate (check with :func:`card_valid`): contiguous digits, or a group of
#: four and then two to four groups of three to six, joined by a space or a dash.
CARD_PATTERN = re.compile(
    _NOT_AFTER + r"(?:[0-9]{13,19}|[0-9]{4}(?:[ \-][0-9]{3,6}){2,4})" + _NOT_BEFORE
)

#: A phone number candidate (check with :func:`phone_valid`).
PHONE_PATTERN = re.compile(
    _NOT_AFTER
    + r"""(?:
        # international: country code, an optional bracketed area code or (0), the rest
        \+[1-9][0-9]{0,2} (?:[ \-]?\([0-9]{1,4}\))? (?:[ \-/]?[0-9]){6,14}
      | # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1 415 555 2671
        (?:1[ \-.])? (?:\([0-9]{3}\)[ ]?|[0-9]{3}[ \-.]) [0-9]{3}[ \-.][0-9]{4}
      | # national with a trunk 0: 030 1234567, 06 12 34 56 78, (020) 7946 0958, 0151/2345678
        (?:\(0[1-9][0-9]{0,4}\)[ ]?|0[1-9][0-9]{0,4}[ \-/]) [0-9]{2,8}(?:[ \-][0-9]{2,8}){0,4}
    )"""
    + _NOT_BEFORE,
    re.VERBOSE,
)

#: The IBAN registry's countries and their IBAN lengths.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_SEPARATORS = re.compile(r"[ \-./()]")


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (0-9 only) end in a correct Luhn check digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """Whether ``candidate`` (spaces allowed) is an IBAN: a registry country, that country's
    length, and check digits that make the mod-97 remainder 1 (ISO 13616)."""
    compact = candidate.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def card_valid(candidate: str) -> bool:
    """Whether ``candidate`` (spaces and dashes allowed) is a payment card number."""
    digits = _SEPARATORS.sub("", candidate)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def phone_valid(candidate: str) -> bool:
    """Whether a ``PHONE_PATTERN`` candidate has a phone number's count of digits: 8 to 15 in
    the international form (E.164's limit), 9 to 12 in a national one."""
    digits = len(_SEPARATORS.sub("", candidate).lstrip("+"))
    return 8 <= digits <= 15 if candidate.startswith("+") else 9 <= digits <= 12


@dataclass(frozen=True)
class Found:
    """Personal data of ``kind`` at ``text[start:end]``."""

    kind: PiiKind
    start: int
    end: int


def _has_at_sign(text: str) -> bool:
    return "@" in text


def _has_digit(text: str) -> bool:
    return any(digit in text for digit in "0123456789")


@dataclass(frozen=True)
class _Detector:
    """A kind's pattern and check, and ``may_hold``, which is false for a text that lacks what
    every candidate contains (an e-mail address its ``@``, the other kinds a digit).

    ``may_hold`` is a few substring searches in C, made once per text for the detectors that
    share it (:func:`find_pii`). The patterns' lookarounds and alternations, tried at every
    position of a text that holds no candidate, are what made the guardrails' check of a 16 kB
    message of plain words cost more than sending it (``docs/benchmarks.md``).
    """

    kind: PiiKind
    pattern: re.Pattern[str]
    valid: Callable[[str], bool]
    may_hold: Callable[[str], bool]

    def find(self, text: str) -> Iterator[Found]:
        """The candidates that pass the check; one that fails is tried again without its
        trailing groups (``BE68 5390 0754 7034 EUR`` holds an IBAN followed by a word)."""
        for match in self.pattern.finditer(text):
            candidate = match.group()
            ends = [len(candidate)] + [
                sep.start() for sep in reversed(list(_SEPARATORS.finditer(candidate)))
            ]
            for end in ends:
                if self.valid(candidate[:end]):
                    yield Found(self.kind, match.start(), match.start() + end)
                    break


#: Most specific first: where two findings overlap, the earlier detector's wins (an IBAN's
#: digits may pass as a card number).
_DETECTORS = (
    _Detector(PiiKind.EMAIL, EMAIL_PATTERN, lambda candidate: True, _has_at_sign),
    _Detector(PiiKind.IBAN, IBAN_PATTERN, iban_valid, _has_digit),
    _Detector(PiiKind.CARD, CARD_PATTERN, card_valid, _has_digit),
    _Detector(PiiKind.PHONE, PHONE_PATTERN, phone_valid, _has_digit),
)


def find_pii(text: str) -> list[Found]:
    """The personal data in ``text``, in order and without overlaps (for redaction)."""
    found: list[Found] = []
    holds = {may_hold: may_hold(text) for may_hold in {d.may_hold for d in _DETECTORS}}
    for detector in _DETECTORS:
        if not holds[detector.may_hold]:
            continue
        for new in detector.find(text):
            if not any(new.start < old.end and old.start < new.end for old in found):
                found.append(new)
    return sorted(found, key=lambda f: f.start)


def pii_kind(value: str) -> PiiKind | None:
    """Which kind of personal data ``value`` holds, or ``None``: the first finding's kind.

    A value that merely contains an address (``"for ada@example.com"``) holds one too.
    """
    found = find_pii(value)
    return found[0].kind if found else None
