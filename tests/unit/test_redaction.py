"""``app.redaction.redact``: what a person reads of an error keeps its ids and loses its PII."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import given
from hypothesis import strategies as st

from app.redaction import redact


def test_an_smtp_refusal_loses_its_recipient_and_keeps_its_ids():
    text = "SendFailed: 550 5.1.1 <ana.silva+bank@mail.example.co.uk>: no such user (user_id=8123)"
    assert redact(text) == "SendFailed: 550 5.1.1 <<email>>: no such user (user_id=8123)"


def test_card_numbers_are_recognised_by_their_check_digit_whatever_the_spacing():
    assert redact("card 4111 1111 1111 1111 declined") == "card <card> declined"
    assert redact("card 5500-0000-0000-0004") == "card <card>"
    assert redact("pan=378282246310005") == "pan=<card>"
    # Sixteen digits that fail the Luhn check are an id, not a card.
    assert redact("transaction 4111111111111112") == "transaction 4111111111111112"


def test_ibans_are_removed_with_or_without_spaces():
    assert redact("to GB82 WEST 1234 5698 7654 32 now") == "to <iban> now"
    assert redact("to DE89370400440532013000.") == "to <iban>."


def test_a_message_id_whose_digit_groups_pass_the_luhn_check_is_still_an_id():
    # 41111111-1111-1111 is a card's 16 digits, dashed; a uuid is never read as one.
    for message_id in (
        "41111111-1111-1111-a000-000000000000",
        "a0000000-0000-4000-4111-111111111111",
    ):
        assert redact(f"message {message_id} failed") == f"message {message_id} failed"


# Database ids up to a trillion: a longer number that passes the Luhn check is a card to us.
@given(st.uuids(), st.integers(min_value=0, max_value=10**12))
def test_ids_pass_untouched(message_id: uuid.UUID, account_id: int):
    text = f"message {message_id} of account {account_id} failed"
    assert redact(text) == text


@given(
    st.datetimes(timezones=st.just(dt.UTC)),
    st.decimals(min_value=-(10**9), max_value=10**9, places=2),
)
def test_dates_and_amounts_pass_untouched(moment: dt.datetime, amount: object):
    text = f"at {moment.isoformat()} the balance was {amount} EUR"
    assert redact(text) == text
