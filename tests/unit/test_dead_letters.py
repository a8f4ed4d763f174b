"""What a consumer can run, and the reason a dead letter keeps: the pure parts."""

from __future__ import annotations

import json
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import SkipMessage

from app.dead_letters import (
    MAX_REASON_CHARS,
    binding_problem,
    failure_reason,
    kept_reason,
    read_message,
    reason_key,
    runnable_problem,
)


def payload(**fields: Any) -> bytes:
    message = {
        "queue_name": "emails",
        "actor_name": "send_email",
        "args": [1],
        "kwargs": {},
        "options": {},
        "message_id": "m-1",
        "message_timestamp": 1_700_000_000_000,
    }
    return json.dumps({**message, **fields}).encode()


def test_a_well_formed_payload_reads_as_its_message():
    message = read_message(payload(args=[7, "x"], kwargs={"k": 1}))

    assert isinstance(message, Message)
    assert (message.actor_name, message.args, message.kwargs) == ("send_email", (7, "x"), {"k": 1})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\xffnot json{", "its payload is not JSON"),
        (b"{not json", "its payload is not JSON"),
        (b"[1, 2, 3]", "its payload is JSON but not a message object"),
        (b'{"hello": "world"}', "its payload is JSON but not a message (no 'actor_name'"),
        (payload(extra=1), "its payload is JSON but not a message (unknown field 'extra')"),
        (payload(args={"a": 1}), "its args is dict"),
        (payload(options="fast"), "its options is str"),
        (payload(message_timestamp=True), "its message_timestamp is bool"),
    ],
)
def test_a_payload_that_is_no_message_reads_as_the_reason(data: bytes, reason: str):
    problem = read_message(data)

    assert isinstance(problem, str)
    assert problem.startswith(reason)


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker(middleware=[])
    broker.declare_queue("emails")

    def send_email(user_id: int, **kwargs: Any) -> None:
        """A fintask-style actor: one required argument and a rubber signature."""

    dramatiq.actor(send_email, broker=broker, queue_name="emails")
    return broker


def test_a_message_this_release_can_run_has_no_problem(broker: StubBroker):
    message = Message("emails", "send_email", (1,), {"unknown_later": True}, {})

    assert runnable_problem(broker, message, "emails") is None


@pytest.mark.parametrize(
    ("message", "fetched_from", "reason"),
    [
        (Message("emails", "no_such_actor", (), {}, {}), "emails", "this release has no actor"),
        (Message("emails", "send_email", (), {}, {}), "emails", "its arguments do not fit"),
        (Message("emails", "send_email", (1, 2), {}, {}), "emails", "its arguments do not fit"),
        (Message("fraud", "send_email", (1,), {}, {}), "emails", "it names queue 'fraud'"),
    ],
)
def test_a_message_this_release_cannot_run_has_a_readable_problem(
    broker: StubBroker, message: Message[Any], fetched_from: str, reason: str
):
    problem = runnable_problem(broker, message, fetched_from)

    assert problem is not None
    assert problem.startswith(reason)


def test_the_binding_problem_names_the_signature_and_what_is_wrong():
    def charge(account_id: int, amount: int, **kwargs: Any) -> None:
        """An actor function."""

    problem = binding_problem(charge, (1,), {})

    assert problem == (
        "its arguments do not fit charge(account_id, amount, **kwargs): "
        "missing a required argument: 'amount'"
    )


def test_a_failure_reason_names_the_exception_and_keeps_a_middlewares_words():
    assert failure_reason(ValueError("account 7 exploded")) == "ValueError: account 7 exploded"
    assert failure_reason(SkipMessage("its schema 2 is newer")) == "its schema 2 is newer"
    assert failure_reason(None) == "failed"


def test_a_reason_is_kept_redacted_and_capped_without_half_an_address_at_the_cut():
    assert kept_reason("SendFailed: 550 <ada@example.com>") == "SendFailed: 550 <<email>>"
    assert len(kept_reason("x" * 5_000)) == MAX_REASON_CHARS
    # Cut first, the address would keep its first half, which no longer looks like one.
    address_at_the_cut = "x" * (MAX_REASON_CHARS - 10) + " ada@example.com"
    assert kept_reason(address_at_the_cut).endswith(" <email>")


def test_the_reason_of_a_delayed_message_sits_by_its_queues_dead_letters():
    assert reason_key("emails", "r-1") == "dramatiq:emails.XQ.reason.r-1"
    assert reason_key("emails.DQ", "r-1") == "dramatiq:emails.XQ.reason.r-1"
