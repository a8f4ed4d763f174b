"""DurableRetries: a retry that cannot be enqueued is tried again while Redis is unreachable,
and leaves its message dead-lettered, not lost, when it never goes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, default_middleware

from app.middleware.retries import DurableRetries, RetryNotEnqueued

REFUSED = "Error 111 connecting to redis:6379. Connection refused."


class RedisGoneForRetries(StubBroker):
    """A stub broker whose next delayed enqueues (a retry's) fail as a lost Redis would."""

    def __init__(self, retries: DurableRetries) -> None:
        super().__init__(middleware=[retries if m is Retries else m() for m in default_middleware])
        self.failures_left = 1
        self.delays: list[int] = []

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if delay is not None:
            self.delays.append(delay)
            if self.failures_left:
                self.failures_left -= 1
                self.emit_before("enqueue", message, delay)  # as Redis brokers do, first
                raise redis.ConnectionError(REFUSED)
        return super().enqueue(message, delay=delay)


def broker_with(retries: DurableRetries) -> Iterator[RedisGoneForRetries]:
    broker = RedisGoneForRetries(retries)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    yield broker
    worker.stop()


@pytest.fixture
def broker() -> Iterator[RedisGoneForRetries]:
    """The production patience (ten minutes), trying again every 10 ms."""
    yield from broker_with(DurableRetries(every_ms=10))


@pytest.fixture
def impatient_broker() -> Iterator[RedisGoneForRetries]:
    """A patience of 50 ms: what this broker tests is a Redis gone for longer than it."""
    yield from broker_with(DurableRetries(every_ms=10, patience_ms=50))


def charge_failing_first(attempts: list[int]) -> Any:
    def charge(account_id: int, **kwargs: Any) -> None:
        attempts.append(account_id)
        if len(attempts) == 1:
            raise TimeoutError("the bank did not answer")

    return charge


def test_a_retry_that_cannot_be_enqueued_is_tried_again_until_redis_answers(broker):
    attempts: list[int] = []
    actor = dramatiq.actor(
        charge_failing_first(attempts), broker=broker, max_retries=5, min_backoff=100
    )

    # When a message's first run fails and Redis is gone for the retry's first three enqueues
    broker.failures_left = 3
    actor.send(7)
    broker.join(actor.queue_name)

    # Then the retry went once Redis answered, with the delay Retries gave it, and ran
    assert attempts == [7, 7]
    assert broker.dead_letters == []
    assert len(broker.delays) == 4
    assert len(set(broker.delays)) == 1


def test_a_retry_refused_for_good_is_not_tried_again(broker):
    attempts: list[int] = []

    def charge(account_id: int, **kwargs: Any) -> None:
        attempts.append(account_id)
        raise TimeoutError("the bank did not answer")

    actor = dramatiq.actor(charge, broker=broker, max_retries=5, min_backoff=10, max_backoff=10)
    broker.failures_left = 0

    def too_large(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        raise ValueError("message too large")

    # When the retry's enqueue is refused for a reason other than an unreachable Redis
    broker.enqueue = too_large  # type: ignore[method-assign]
    message = StubBroker.enqueue(broker, actor.message(7))

    # Then the message is dead-lettered at once, saying why
    with pytest.raises(RetryNotEnqueued, match=r"\(ValueError: message too large\)"):
        broker.join(actor.queue_name)
    assert [m.message_id for m in broker.dead_letters] == [message.message_id]
    assert attempts == [7]


def test_a_message_whose_retry_cannot_be_enqueued_is_dead_lettered_with_the_reason(
    impatient_broker,
):
    broker = impatient_broker
    attempts: list[int] = []

    def charge(account_id: int, **kwargs: Any) -> None:
        attempts.append(account_id)
        raise TimeoutError("the bank did not answer")

    actor = dramatiq.actor(charge, broker=broker, max_retries=5, min_backoff=10, max_backoff=10)

    # When its first run fails and Redis stays gone past the patience
    broker.failures_left = 1_000_000
    message = actor.send(7)

    # Then the message is not acked away: it is a dead letter that says what happened
    with pytest.raises(RetryNotEnqueued) as failure:
        broker.join(actor.queue_name)
    assert [m.message_id for m in broker.dead_letters] == [message.message_id]
    assert str(failure.value) == (
        "it failed (TimeoutError: the bank did not answer) and its retry could not be enqueued "
        f"(ConnectionError: {REFUSED})"
    )
    assert attempts == [7]


def test_a_retry_that_is_enqueued_retries_as_dramatiq_does(broker):
    broker.failures_left = 0
    attempts: list[int] = []

    def charge(account_id: int, **kwargs: Any) -> None:
        attempts.append(account_id)
        if len(attempts) == 1:
            raise TimeoutError("the bank did not answer")

    actor = dramatiq.actor(charge, broker=broker, max_retries=5, min_backoff=10, max_backoff=10)

    actor.send(7)
    broker.join(actor.queue_name)

    assert attempts == [7, 7]
    assert broker.dead_letters == []
