"""After-commit enqueue: nothing leaves before the commit, nothing is lost after it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from app.db.models import OutboxMessage
from app.db.session import transaction
from app.middleware.guardrails import MessageRejected
from app.outbox import RELAY_GRACE, ActorRef, enqueue_after_commit, relay
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
    import dramatiq

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
