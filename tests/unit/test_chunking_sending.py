"""Messages leave only after commit; bulk enqueue keeps the broker's middleware on every message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Message, Middleware
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import MiddlewareError
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import chunking
from chunking import ChunkedRun, EnqueueAfterCommit, enqueue_many, start_run

QUEUE = "work"


class Recorder(Middleware):
    """Records every message the broker's enqueue hooks see; refuses ``veto`` arguments."""

    def __init__(self) -> None:
        self.before: list[Any] = []
        self.after: list[Any] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if message.args == ("veto",):
            raise MiddlewareError(f"{message.actor_name}: argument refused")
        self.before.append(message.args)

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.after.append(message.args)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def broker(recorder: Recorder) -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.add_middleware(recorder)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def work(broker: StubBroker) -> dramatiq.Actor[Any, Any]:
    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0, time_limit=1_000)
    def work(value: Any, **kwargs: Any) -> None:
        """Does nothing: these tests only look at what was enqueued."""

    return work


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    chunking.metadata.create_all(engine)
    yield engine
    engine.dispose()


def waiting(broker: StubBroker) -> int:
    return broker.queues[QUEUE].qsize()


def queued_args(broker: StubBroker) -> list[tuple[Any, ...]]:
    return [Message.decode(data).args for data in list(broker.queues[QUEUE].queue)]


def test_messages_are_enqueued_only_when_the_transaction_commits(broker, work, engine):
    send = EnqueueAfterCommit(broker=broker)
    with Session(engine) as session:
        # Given messages handed over inside a transaction, one batch inside a savepoint
        with session.begin():
            send(session, [work.message(1), work.message(2)])
            with session.begin_nested():
                send(session, [work.message(3)])
                session.execute(text("SELECT 1"))

            # Then nothing is sent before the commit, not even when the savepoint is released
            assert waiting(broker) == 0

        # Then all of them go out, in order, when it commits
        assert queued_args(broker) == [(1,), (2,), (3,)]


def test_messages_of_a_rolled_back_or_abandoned_transaction_are_never_sent(broker, work, engine):
    send = EnqueueAfterCommit(broker=broker)
    with Session(engine) as session:
        # Given messages handed over in a transaction that rolls back
        with pytest.raises(RuntimeError), session.begin():
            send(session, [work.message(1)])
            raise RuntimeError("the chunk failed")

        # And in one abandoned without a commit
        session.begin()
        send(session, [work.message(2)])
        session.close()

        # When the same session later commits other work
        with session.begin():
            send(session, [work.message(3)])

    # Then only that work's message was sent
    assert queued_args(broker) == [(3,)]


def test_bulk_enqueue_on_a_non_redis_broker_sends_one_by_one_through_the_middleware(
    broker, recorder, work
):
    # When many messages are bulk-enqueued on the stub broker
    count = enqueue_many(broker, (work.message(i) for i in range(25)), batch_size=10)

    # Then all of them land, each having passed both middleware hooks
    assert count == 25 == waiting(broker)
    assert recorder.before == recorder.after == [(i,) for i in range(25)]


def test_a_message_refused_by_middleware_stops_the_bulk_enqueue(broker, work, recorder):
    messages = [work.message(1), work.message("veto"), work.message(3)]

    with pytest.raises(MiddlewareError, match="argument refused"):
        enqueue_many(broker, messages)

    # the message before the refused one was queued; the refused one and those after it were not
    assert queued_args(broker) == [(1,)]
    assert recorder.before == recorder.after == [(1,)]


def test_a_run_refuses_params_that_are_not_small_plain_json(broker, engine):
    chunked_run = ChunkedRun(
        name="params_chunk",
        enumerate=lambda session, cursor, *, params, limit: None,
        process=lambda ctx, items: None,
        session_factory=lambda: Session(engine),
        broker=broker,
        time_limit=1_000,
        max_age=60_000,
        max_retries=0,
        min_backoff=1_000,
        max_backoff=1_000,
    )
    with Session(engine) as session, session.begin():
        with pytest.raises(ValueError, match="plain JSON"):
            start_run(session, chunked_run, params={"since": object()})
        with pytest.raises(ValueError, match="limit"):
            start_run(session, chunked_run, params={"ids": list(range(5_000))})


def test_a_chunk_actor_states_its_options_and_takes_any_keyword(broker, engine):
    # Given a declared run
    chunked_run = ChunkedRun(
        name="house_rules_chunk",
        enumerate=lambda session, cursor, *, params, limit: None,
        process=lambda ctx, items: None,
        session_factory=lambda: Session(engine),
        broker=broker,
        queue_name="fanout",
        time_limit=5_000,
        max_age=60_000,
        max_retries=3,
        min_backoff=100,
        max_backoff=1_000,
    )

    # Then its actor is on the broker with every option explicit, and a message from a newer
    # release carrying an extra keyword is still accepted
    actor = broker.get_actor("house_rules_chunk")
    assert actor.queue_name == "fanout"
    assert {k: actor.options[k] for k in ("time_limit", "max_age", "max_retries")} == {
        "time_limit": 5_000,
        "max_age": 60_000,
        "max_retries": 3,
    }
    assert (actor.options["min_backoff"], actor.options["max_backoff"]) == (100, 1_000)
    actor.fn(run_id=404, seq=0, schema=2)
    assert chunked_run.message(7, 3).kwargs == {"run_id": 7, "seq": 3}
