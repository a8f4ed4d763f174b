"""DurableRetries: a retry that cannot be enqueued leaves its message dead-lettered, not lost."""

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


class RedisGoneForOneRetry(StubBroker):
    """A stub broker whose next delayed enqueue (a retry's) fails as a lost Redis would."""

    def __init__(self) -> None:
        stack = [DurableRetries() if m is Retries else m() for m in default_middleware]
        super().__init__(middleware=stack)
        self.failures_left = 1

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if delay is not None and self.failures_left:
            self.failures_left -= 1
            raise redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
        return super().enqueue(message, delay=delay)


@pytest.fixture
def broker() -> Iterator[RedisGoneForOneRetry]:
    broker = RedisGoneForOneRetry()
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    yield broker
    worker.stop()


def test_a_message_whose_retry_cannot_be_enqueued_is_dead_lettered_with_the_reason(broker):
    attempts: list[int] = []

    def charge(account_id: int, **kwargs: Any) -> None:
        attempts.append(account_id)
        raise TimeoutError("the bank did not answer")

    actor = dramatiq.actor(charge, broker=broker, max_retries=5, min_backoff=10, max_backoff=10)

    # When its first run fails and Redis is gone when the retry is enqueued
    message = actor.send(7)

    # Then the message is not acked away: it is a dead letter that says what happened
    with pytest.raises(RetryNotEnqueued) as failure:
        broker.join(actor.queue_name)
    assert [m.message_id for m in broker.dead_letters] == [message.message_id]
    assert str(failure.value) == (
        "it failed (TimeoutError: the bank did not answer) and its retry could not be enqueued "
        "(ConnectionError: Error 111 connecting to redis:6379. Connection refused.)"
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
