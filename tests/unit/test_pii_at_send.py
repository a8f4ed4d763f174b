"""No personal data in messages: a send, a bulk send or an outbox record whose string argument
looks like an e-mail address, a phone number, an IBAN or a card number is refused, naming the
actor, the argument and the fix, and nothing leaves or is recorded; an id passes."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select

from actors.notifications import deliver_email
from app.db.models import OutboxMessage
from app.db.session import transaction
from app.middleware.guardrails import MessageRejected
from app.outbox import RELAY_GRACE, enqueue_after_commit, failed_messages, outbox_sender, relay
from chunking.bulk import enqueue_many
from pipelines.notifications import DELIVER_EMAIL

EMAIL = "ada@example.com"

REFUSED = {
    EMAIL: "an e-mail address; send the user id and load the address in the actor",
    "+44 20 7946 0958": "a phone number; send the user id and load the number in the actor",
    "DE89 3704 0044 0532 0130 00": "an IBAN; send the account id and load the IBAN in the actor",
    "4111 1111 1111 1111": (
        "a payment card number; send the account id and load the card number in the actor"
    ),
}


@pytest.mark.parametrize("value", list(REFUSED))
def test_a_keyword_argument_holding_personal_data_is_refused_at_send(stub_broker, value: str):
    with pytest.raises(MessageRejected) as error:
        deliver_email.send(notification_id=1, to=value)

    assert str(error.value) == f"actor 'deliver_email': argument 'to' looks like {REFUSED[value]}"
    assert value not in str(error.value)
    assert stub_broker.queues["emails"].qsize() == 0


def test_a_positional_argument_and_a_list_item_are_named_as_such(stub_broker):
    with pytest.raises(MessageRejected, match=r"argument 'args\[0\]' looks like an e-mail"):
        deliver_email.send(EMAIL)
    with pytest.raises(MessageRejected, match=r"argument 'cc\[1\]' looks like an e-mail"):
        deliver_email.send(notification_id=1, cc=[7, EMAIL])
    with pytest.raises(MessageRejected, match=r"argument 'note' looks like an e-mail"):
        deliver_email.send(notification_id=1, note=f"bounced for {EMAIL}, retry")

    assert stub_broker.queues["emails"].qsize() == 0


def test_a_bulk_send_refuses_it_too(stub_broker):
    message = deliver_email.message(notification_id=2, to=EMAIL)

    with pytest.raises(MessageRejected, match="argument 'to' looks like an e-mail address"):
        enqueue_many(stub_broker, [message])

    assert stub_broker.queues["emails"].qsize() == 0


def test_ids_dates_and_numbers_as_integers_pass(stub_broker):
    deliver_email.send(
        notification_id=4111111111111111,  # a card's digits, but an int: an id
        user_id=42,
        day="2026-11-23",
        week="2026-W47",
        amount="-1234.50",
        tick="2026-11-23T09:00:00+00:00",
    )

    assert stub_broker.queues["emails"].qsize() == 1


def _rows() -> list[OutboxMessage]:
    with transaction() as session:
        return list(session.scalars(select(OutboxMessage)))


@pytest.mark.parametrize("value", list(REFUSED))
def test_the_outbox_refuses_personal_data_when_the_flow_records_it(
    database, stub_broker, value: str
):
    with pytest.raises(MessageRejected) as error, transaction() as session:
        enqueue_after_commit(session, DELIVER_EMAIL, kwargs={"notification_id": 1, "to": value})

    assert str(error.value) == f"actor 'deliver_email': argument 'to' looks like {REFUSED[value]}"
    assert _rows() == []
    assert stub_broker.queues["emails"].qsize() == 0


def test_a_chunks_outbox_messages_are_refused_when_recorded(database, stub_broker):
    with (
        pytest.raises(MessageRejected, match="argument 'to' looks like an e-mail address"),
        transaction() as session,
    ):
        outbox_sender(session, [deliver_email.message(notification_id=1, to=EMAIL)])

    assert _rows() == []


def test_the_outbox_records_and_sends_an_id(database, stub_broker):
    with transaction() as session:
        enqueue_after_commit(session, DELIVER_EMAIL, kwargs={"notification_id": 1})

    assert stub_broker.queues["emails"].qsize() == 1
    assert [row.sent_at is not None for row in _rows()] == [True]


def test_a_row_an_older_release_recorded_with_an_address_fails_without_showing_it(
    database, stub_broker
):
    # Given an unsent row with an address, written before this check existed,
    with transaction() as session:
        session.add(
            OutboxMessage(
                message_id=str(uuid.uuid4()),
                actor_name="deliver_email",
                queue_name="emails",
                kwargs={"notification_id": 1, "to": EMAIL},
                created_at=dt.datetime.now(dt.UTC) - RELAY_GRACE - dt.timedelta(seconds=1),
            )
        )

    # when the relay runs, it does not send it, and marks it failed saying why,
    assert relay(database) == 0
    assert stub_broker.queues["emails"].qsize() == 0
    with transaction() as session:
        (failed,) = failed_messages(session)
    assert failed.error == (
        "MessageRejected: actor 'deliver_email': argument 'to' looks like an e-mail address; "
        "send the user id and load the address in the actor"
    )
