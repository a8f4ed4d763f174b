"""``app.pii``: e-mail addresses, phone numbers, IBANs and card numbers are recognised however
they are written, and the ids, dates, amounts, names and slugs fintask sends are not."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import pii
from app.pii import IBAN_LENGTHS, Found, PiiKind, find_pii, luhn_valid, pii_kind


@pytest.mark.parametrize(
    "value",
    [
        "ada@example.com",
        "Ana.Silva+bank@mail.example.co.uk",
        "obrien_1990@example-mail.ie",
        "josé@exämple.com",
        "SendFailed: 550 5.1.1 <ada@example.com>: no such user",
    ],
)
def test_email_addresses_are_recognised(value: str):
    assert pii_kind(value) is PiiKind.EMAIL


@pytest.mark.parametrize(
    "value",
    [
        # international, with or without separators, a bracketed area code or trunk (0)
        "+4915112345678",
        "+44 20 7946 0958",
        "+49 (0)30 1234567",
        "+1 (415) 555-2671",
        "+1-415-555-2671",
        "+33 6 12 34 56 78",
        # North American
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "1 415 555 2671",
        # national, with a trunk 0
        "030 1234567",
        "030-123 456 78",
        "0151/2345678",
        "06 12 34 56 78",
        "07700 900123",
        "(020) 7946 0958",
        "call me on 020 7946 0958 tomorrow",
    ],
)
def test_phone_numbers_are_recognised_in_international_and_national_forms(value: str):
    assert pii_kind(value) is PiiKind.PHONE


@pytest.mark.parametrize(
    "value",
    [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB82 WEST 1234 5698 7654 32",
        "NL91ABNA0417164300",
        "BE68 5390 0754 7034",
        "to FR14 2004 1010 0505 0001 3M02 606 now",
        # a word after a printed IBAN is not part of it
        "BE68 5390 0754 7034 EUR",
    ],
)
def test_ibans_are_recognised_contiguous_or_printed(value: str):
    assert pii_kind(value) is PiiKind.IBAN


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5500-0000-0000-0004",
        "378282246310005",
        "3782 822463 10005",  # American Express: 4-6-5
        "6011 0009 9013 9424",
        "4222222222222",  # 13 digits
        "card=4111111111111111 declined",
    ],
)
def test_card_numbers_are_recognised_by_their_check_digit_whatever_the_spacing(value: str):
    assert pii_kind(value) is PiiKind.CARD


def _with_luhn_digit(digits: str) -> str:
    for check in "0123456789":
        if luhn_valid(digits + check):
            return digits + check
    raise AssertionError("unreachable: one check digit always fits")


@given(
    st.integers(min_value=2, max_value=6),
    st.sampled_from([13, 15, 16, 19]),
    st.data(),
    st.sampled_from(["", " ", "-"]),
)
def test_any_luhn_valid_card_number_is_recognised(first: int, length: int, data, separator: str):
    body = data.draw(st.text(alphabet="0123456789", min_size=length - 2, max_size=length - 2))
    number = _with_luhn_digit(f"{first}{body}")
    if length == 13:
        separator = ""  # printed 4-4-4-1 by nobody
    printed = separator.join(number[i : i + 4] for i in range(0, length, 4))

    assert pii_kind(printed) is PiiKind.CARD


@given(st.sampled_from(sorted(IBAN_LENGTHS)), st.data(), st.booleans())
def test_any_iban_of_a_registry_country_is_recognised(country: str, data, printed: bool):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    size = IBAN_LENGTHS[country] - 4
    bban = data.draw(st.text(alphabet=alphabet, min_size=size, max_size=size))
    remainder = int("".join(str(int(char, 36)) for char in f"{bban}{country}00")) % 97
    iban = f"{country}{98 - remainder:02d}{bban}"
    if printed:
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))

    assert pii_kind(iban) is PiiKind.IBAN


def test_every_finding_is_located_in_order_and_an_iban_is_not_also_a_card():
    text = "ada@example.com paid DE89 3704 0044 0532 0130 00 with 4111 1111 1111 1111"

    found = find_pii(text)

    assert [(f.kind, text[f.start : f.end]) for f in found] == [
        (PiiKind.EMAIL, "ada@example.com"),
        (PiiKind.IBAN, "DE89 3704 0044 0532 0130 00"),
        (PiiKind.CARD, "4111 1111 1111 1111"),
    ]
    assert all(isinstance(f, Found) for f in found)


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111112",  # sixteen digits that fail the Luhn check: an id
        "1764633600000",  # a millisecond timestamp (Luhn-valid or not, it starts with 1)
        "41111111111111111111",  # twenty digits: longer than any card
        "ref-4111111111111111",  # a Luhn-valid number inside a key is the key's
        "acc_4111111111111111",
        "DE89370400440532013001",  # an IBAN's shape whose check digits are wrong
        "DE8937040044053201300",  # one character short of a German IBAN
        "XX89370400440532013000",  # no such country
        "INV2026000123456",  # an invoice number
        "0301234567",  # a plain digit id, even one that could be dialled
        "pkg@1.2.3",  # no top-level domain of letters
        "noreply@localhost",
        "+0100",  # a UTC offset
        "+1234567.89",  # a signed amount
        "203.0.113.42",  # an IP address
        "10.0.19041.1",  # a version
        "01/02/2026",
        "03-11-2026 10:30",
        "0999-12-31 23:59:59",
        "0900-1730",  # opening hours
        "digest:2026-11-23:42",  # a dedup key
    ],
)
def test_lookalikes_are_not_personal_data(value: str):
    assert pii_kind(value) is None


# What fintask's messages carry: ids, dates and times, ISO weeks, amounts, names, slugs.

ids = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(str),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),  # ping tokens
    st.binary(min_size=8, max_size=8).map(lambda b: f"ref-{b.hex()}"),  # provider refresh ids
    st.binary(min_size=32, max_size=32).map(bytes.hex),  # sha256 digests
)


@given(ids)
def test_ids_are_not_personal_data(value: str):
    assert pii_kind(value) is None


@given(
    st.one_of(
        st.dates().map(dt.date.isoformat),
        st.datetimes(timezones=st.timezones()).map(dt.datetime.isoformat),
        st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.isoformat(sep=" ")),
        st.datetimes().map(str),
        st.times().map(dt.time.isoformat),
        st.dates().map(lambda d: "{:04d}-W{:02d}".format(*d.isocalendar())),
    )
)
def test_dates_times_and_iso_weeks_are_not_personal_data(value: str):
    assert pii_kind(value) is None


amounts = st.decimals(
    min_value=-(10**15), max_value=10**15, places=2, allow_nan=False, allow_infinity=False
)


@given(amounts, st.sampled_from(["{}", "{:+}", "{:,}", "{} EUR", "{:+,} USD"]))
def test_amounts_are_not_personal_data(amount: Decimal, form: str):
    assert pii_kind(form.format(amount)) is None


names = st.text(
    alphabet=st.characters(exclude_categories=("Nd", "Cs"), exclude_characters="@"),
    min_size=1,
    max_size=60,
)


@given(names, st.one_of(st.just(""), st.integers(min_value=1, max_value=10**6).map(" #{}".format)))
def test_names_of_people_and_merchants_are_not_personal_data(name: str, store_number: str):
    assert pii_kind(name + store_number) is None


@given(st.from_regex(r"\A[a-z][a-z0-9]*(?:[-_][a-z0-9]+){0,4}\Z"))
def test_slugs_and_keys_are_not_personal_data(slug: str):
    assert pii_kind(slug) is None


#: E-mail addresses, IBANs, card and phone numbers, their pieces, and the words around them.
_TEXT_PIECES = st.sampled_from([
    "ada@example.com", "DE89 3704 0044 0532 0130 00", "4111 1111 1111 1111", "+44 20 7946 0958",
    "(415) 555-2671", "ada", "@", "example", ".com", "DE89", "3704", "0044", "0532", "0130",
    "00", "4111", "1111", "+44", "(0)", "20", "7946", "0958", "-", " ", "/", ".", "_", "é",
    "fintask-bench-",
])  # fmt: skip


@given(st.lists(_TEXT_PIECES, max_size=24).map("".join))
def test_skipping_a_text_without_a_kinds_marker_finds_exactly_what_a_full_scan_finds(text: str):
    full_scan = tuple(
        dataclasses.replace(detector, may_hold=lambda text: True) for detector in pii._DETECTORS
    )
    with mock.patch.object(pii, "_DETECTORS", full_scan):
        expected = find_pii(text)
    assert find_pii(text) == expected
