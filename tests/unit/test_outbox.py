"""After-commit enqueue: nothing leaves before the commit, nothing is lost after it."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from click.testing import CliRunner
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import select, update

from app.cli.main import main
from app.db.models import OutboxMessage
from app.db.session import transaction
from app.middleware.guardrails import Guardrails, MessageRejected
from app.outbox import (
    RELAY_GRACE,
    ActorRef,
    enqueue_after_commit,
    failed_messages,
    message_limit,
    relay,
)
from pipelines.accounts import CHECK_NEW_ACCOUNT


def _unsent(database) -> list[OutboxMessage]:
    with transaction() as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))))


def test_the_message_leaves_only_when_the_transaction_commits(database, stub_broker):
    with transaction() as session:
        message_id = enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"account_id": 5})
        assert stub_broker.queues["fraud"].qsize() == 0, "sent before the commit"

    (sent,) = [m for m in _drain(stub_broker, "fraud")]
    assert (sent.message_id, sent.actor_name, sent.kwargs) == (
        message_id,
        "check_new_account",
        {"account_id": 5},
    )
    assert _unsent(database) == []


def test_a_rolled_back_transaction_sends_nothing(database, stub_broker):
    with pytest.raises(RuntimeError), transaction() as session:
        enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"account_id": 5})
        raise RuntimeError("the flow failed after writing")

    assert stub_broker.queues["fraud"].qsize() == 0
    with transaction() as session:
        assert session.scalars(select(OutboxMessage)).all() == []


def test_a_message_whose_send_failed_after_commit_is_relayed_once(
    database, stub_broker, monkeypatch
):
    # Given a commit whose immediate send failed (Redis away, or the process died),
    def broker_down(*args, **kwargs):
        raise ConnectionError("redis is down")

    with monkeypatch.context() as patch:
        patch.setattr(stub_broker, "enqueue", broker_down)
        with transaction() as session:
            enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"account_id": 9})
    assert len(_unsent(database)) == 1

    # when the relay runs within the grace period, it leaves the row to its owner,
    assert relay(database) == 0

    # and once the row is older than the grace, the relay sends it, once.
    with transaction() as session:
        old = dt.datetime.now(dt.UTC) - RELAY_GRACE - dt.timedelta(seconds=1)
        session.execute(update(OutboxMessage).values(created_at=old))
    assert relay(database) == 1
    assert relay(database) == 0
    assert [m.kwargs for m in _drain(stub_broker, "fraud")] == [{"account_id": 9}]


def test_a_bad_argument_fails_the_callers_transaction(database, stub_broker):
    with (
        pytest.raises(MessageRejected, match="argument 'since' is a datetime"),
        transaction() as session,
    ):
        enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"since": dt.datetime.now(dt.UTC)})

    assert _unsent(database) == []


def _drain(broker, queue_name):
    queue = broker.queues[queue_name]
    messages = []
    while not queue.empty():
        messages.append(dramatiq.Message.decode(queue.get()))
    return messages


def test_a_released_savepoint_does_not_send_before_the_outer_commit(database, stub_broker):
    with transaction() as session:
        for account_id in (1, 2):
            with session.begin_nested():
                enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"account_id": account_id})
        assert stub_broker.queues["fraud"].qsize() == 0, "sent at a savepoint"

    assert sorted(m.kwargs["account_id"] for m in _drain(stub_broker, "fraud")) == [1, 2]


def test_more_messages_than_one_relay_batch_all_leave_at_commit(database, stub_broker):
    from app.outbox import RELAY_BATCH

    with transaction() as session:
        for account_id in range(RELAY_BATCH + 5):
            enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"account_id": account_id})

    assert stub_broker.queues["fraud"].qsize() == RELAY_BATCH + 5
    assert _unsent(database) == []


def test_a_row_goes_to_the_queue_it_names_even_for_an_actor_this_process_lacks(
    database, stub_broker
):
    # Given a flow naming an actor that only another release's workers declare
    elsewhere = ActorRef("reconcile_ledger", queue_name="ledger")
    stub_broker.declare_queue("ledger")

    # When its row commits
    with transaction() as session:
        enqueue_after_commit(session, elsewhere, kwargs={"ledger_id": 3})

    # Then the message is on that actor's queue: sending needed no registry
    (sent,) = _drain(stub_broker, "ledger")
    assert (sent.actor_name, sent.kwargs) == ("reconcile_ledger", {"ledger_id": 3})
    assert _unsent(database) == []


def test_a_row_of_the_release_before_queue_names_is_relayed_through_the_registry(
    database, stub_broker
):
    # Given an unsent row written before rows named their queue
    with transaction() as session:
        old = dt.datetime.now(dt.UTC) - RELAY_GRACE - dt.timedelta(seconds=1)
        session.add(
            OutboxMessage(
                message_id="0b3c4d5e-0000-4000-8000-000000000001",
                actor_name="check_new_account",
                queue_name=None,
                kwargs={"account_id": 4},
                created_at=old,
            )
        )

    # When the relay runs, then it finds the queue of the declared actor
    assert relay(database) == 1
    assert [m.kwargs for m in _drain(stub_broker, "fraud")] == [{"account_id": 4}]


# --- rows that cannot be sent ------------------------------------------------------------------


def _old_row(actor_name: str, kwargs: dict, *, queue_name: str | None = "fraud") -> str:
    """An unsent row past the relay's grace, as a process that died after its commit leaves it."""
    message_id = str(uuid.uuid4())
    with transaction() as session:
        session.add(
            OutboxMessage(
                message_id=message_id,
                actor_name=actor_name,
                queue_name=queue_name,
                kwargs=kwargs,
                created_at=dt.datetime.now(dt.UTC) - RELAY_GRACE - dt.timedelta(seconds=1),
            )
        )
    return message_id


def _failed(database) -> dict[str, str | None]:
    with transaction() as session:
        return {m.message_id: m.error for m in failed_messages(session)}


def test_rows_that_cannot_be_sent_are_marked_failed_and_the_rest_still_leave(database, stub_broker):
    # Given unsent rows, among them one naming an actor this process does not declare (and no
    # queue), one whose argument the guardrails refuse, and one too big to send,
    _old_row("check_new_account", {"account_id": 1})
    unknown = _old_row("retired_actor", {"account_id": 2}, queue_name=None)
    refused = _old_row("check_new_account", {"note": "secret " * 200})
    too_big = _old_row("check_new_account", {"notes": ["secret " * 140] * 20})
    _old_row("check_new_account", {"account_id": 3})

    # when the relay runs,
    sent = relay(database)

    # then the good messages left, and each bad row is marked failed saying why, without the
    # arguments' values,
    assert sent == 2
    assert [m.kwargs["account_id"] for m in _drain(stub_broker, "fraud")] == [1, 3]
    failed = _failed(database)
    assert failed == {
        unknown: "MessageRejected: actor 'retired_actor': the row names no queue and this "
        "process declares no such actor",
        refused: "MessageRejected: actor 'check_new_account': argument 'note' is a string of "
        "1,400 characters; the limit is 1,000 (store the data and pass its id)",
        too_big: failed[too_big],
    }
    assert "the limit is 16,384 (MAX_MESSAGE_BYTES)" in (failed[too_big] or "")
    assert not any("secret" in (error or "") for error in failed.values())

    # and the next relay neither trips on them again nor sends them.
    assert relay(database) == 0
    assert _drain(stub_broker, "fraud") == []


class RefuseActor(dramatiq.Middleware):
    """A middleware that refuses, at send time, every message of one actor."""

    def __init__(self, actor_name: str) -> None:
        self.actor_name = actor_name

    def before_enqueue(self, broker, message, delay) -> None:
        if message.actor_name == self.actor_name:
            raise MessageRejected(f"actor {message.actor_name!r}: refused by policy")


@pytest.fixture(params=["stub", "redis"])
def relaying_broker(request, stub_broker, monkeypatch) -> Iterator[dramatiq.Broker]:
    """The broker the relay sends through, refusing actor ``nope``: the stub, and Redis."""
    if request.param == "stub":
        monkeypatch.setattr(
            stub_broker, "middleware", [*stub_broker.middleware, RefuseActor("nope")]
        )
        yield stub_broker
        return
    broker = RedisBroker(
        url=request.getfixturevalue("redis_url"),
        middleware=[Guardrails(max_message_bytes=16_384), RefuseActor("nope")],
    )
    dramatiq.set_broker(broker)
    try:
        yield broker
    finally:
        dramatiq.set_broker(stub_broker)
        broker.close()


def test_a_refusal_no_check_foresaw_fails_only_its_own_row(database, relaying_broker):
    # Given a broker refusing one actor's messages, and a row of it between good ones
    _old_row("check_new_account", {"account_id": 1})
    refused = _old_row("nope", {"ledger_id": 2}, queue_name="fraud")
    _old_row("check_new_account", {"account_id": 3})

    # When the relay runs
    sent = relay(database)

    # Then the others left, once each, and the refused row failed with the broker's reason
    assert sent == 2
    assert [m.kwargs for m in _queued(relaying_broker, "fraud")] == [
        {"account_id": 1},
        {"account_id": 3},
    ]
    assert _failed(database) == {refused: "MessageRejected: actor 'nope': refused by policy"}


def _queued(broker: dramatiq.Broker, queue_name: str) -> list[dramatiq.Message]:
    if not isinstance(broker, RedisBroker):
        return _drain(broker, queue_name)
    ids = broker.client.lrange(f"dramatiq:{queue_name}", 0, -1)
    return [
        dramatiq.Message.decode(broker.client.hget(f"dramatiq:{queue_name}.msgs", redis_id))
        for redis_id in ids
    ]


def test_a_broker_that_cannot_be_reached_fails_no_row(database, stub_broker, monkeypatch):
    # Given an unsent row while the broker is unreachable
    message_id = _old_row("check_new_account", {"account_id": 1})

    def broker_down(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    # When the relay runs, then it fails, and the row is left for the next relay, not failed
    with monkeypatch.context() as patch:
        patch.setattr(stub_broker, "enqueue", broker_down)
        with pytest.raises(redis.ConnectionError):
            relay(database)
    assert _failed(database) == {}
    assert relay(database) == 1
    assert [m.message_id for m in _drain(stub_broker, "fraud")] == [message_id]


def test_a_message_too_big_to_send_fails_the_callers_transaction(database, stub_broker):
    notes = [f"note {n} " * 100 for n in range(30)]

    with (
        pytest.raises(MessageRejected, match=r"the encoded message is [\d,]+ bytes; the limit"),
        transaction() as session,
    ):
        enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"notes": notes})

    with transaction() as session:
        assert session.scalars(select(OutboxMessage)).all() == []


def test_a_delayed_message_is_measured_with_what_its_delay_adds(database, stub_broker):
    # Given arguments that bring a message to 5 bytes under the limit
    pad: list[str] = []
    kwargs = {"account_id": 1, "pad": pad}
    while _encoded_size(kwargs) < message_limit(stub_broker) - 900:
        pad.append("x" * 1_000)
    pad.append("")
    pad[-1] = "x" * (message_limit(stub_broker) - _encoded_size(kwargs) - 5)

    # When it is written undelayed, then it is accepted and sent,
    with transaction() as session:
        enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs=kwargs)
    assert len(_drain(stub_broker, "fraud")) == 1

    # and written with a delay (whose ETA makes it bigger), it is refused at once.
    with pytest.raises(MessageRejected, match="the encoded message"), transaction() as session:
        enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs=kwargs, delay_ms=60_000)


def _encoded_size(kwargs: dict) -> int:
    """The encoded size of the undelayed message the outbox sends for ``kwargs``."""
    message = dramatiq.Message(
        queue_name="fraud",
        actor_name=CHECK_NEW_ACCOUNT.actor_name,
        args=(),
        kwargs=kwargs,
        options={"redis_message_id": str(uuid.uuid4())},
        message_id=str(uuid.uuid4()),
        message_timestamp=1_700_000_000_000,
    )
    return len(json.dumps(message.asdict(), separators=(",", ":")).encode())


def test_fintask_outbox_lists_failed_rows_with_their_reason(database, stub_broker):
    # Given a row that failed, and one committed a moment ago that waits to be sent
    unknown = _old_row("retired_actor", {"account_id": 2}, queue_name=None)
    relay(database)
    with transaction() as session:
        session.add(
            OutboxMessage(
                message_id=str(uuid.uuid4()),
                actor_name="check_new_account",
                queue_name="fraud",
                kwargs={"account_id": 1},
            )
        )

    # When an operator asks
    as_json = CliRunner().invoke(main, ["outbox", "--json"])
    as_text = CliRunner().invoke(main, ["outbox"])

    # Then both outputs count them and name the failed message, its actor and why
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.output)
    assert (listed["unsent"], listed["failed"]) == (1, 1)
    (row,) = listed["items"]
    assert (row["message_id"], row["actor_name"], row["queue_name"]) == (
        unknown,
        "retired_actor",
        None,
    )
    assert row["error"].startswith("MessageRejected: actor 'retired_actor': the row names no")
    assert as_text.exit_code == 0, as_text.output
    assert as_text.output.splitlines()[0] == "waiting to be sent: 1  failed: 1"
    assert unknown in as_text.output
    assert "this process declares no such actor" in as_text.output
