"""Enqueue many Dramatiq messages in one Redis round trip per batch.

``actor.send`` costs one round trip per message, and ``group`` is no better: it sends its
messages one by one. On Redis this pipelines the broker's *own* ``dispatch`` script calls
(what ``RedisBroker.enqueue`` runs through ``do_enqueue``), so the stored layout is exactly
Dramatiq's and any worker consumes the messages as usual; on a broker whose consumers wait
for wake-up tokens, the batch's tokens ride in the same round trip. Every message still passes the
broker's ``before_enqueue`` / ``after_enqueue`` middleware hooks, so guardrails that reject
a message and metrics that count it keep working. Other brokers (the stub, RabbitMQ) fall
back to ``broker.enqueue`` one message at a time.

Messages are consumed from the iterable ``batch_size`` at a time, so a producer never holds
more than one batch in memory. A middleware that rejects a message (``MiddlewareError`` in
``before_enqueue``) stops the call before that batch is sent; earlier batches stay enqueued.
A Redis error can leave a prefix of the failing batch enqueued (the pipeline is not a
transaction), so, as everywhere, the receiving actor must be idempotent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Protocol, runtime_checkable
from uuid import uuid4

import redis
from dramatiq import Broker, Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

DEFAULT_BATCH_SIZE = 1000


@runtime_checkable
class WakesConsumers(Protocol):
    """A Redis broker whose idle consumers block until an enqueue pushes them a token
    (fintask's ``WakeupRedisBroker``): a batch pushes one per message, after its enqueues."""

    def add_wake_tokens(self, pipe: redis.client.Pipeline, queue_name: str, count: int) -> None:
        """Queue on ``pipe`` the tokens that wake ``count`` consumers of ``queue_name``."""


def enqueue_many(
    broker: Broker,
    messages: Iterable[Message[Any]],
    *,
    delay_ms: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Enqueue ``messages`` (one round trip per ``batch_size`` on Redis); return how many."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, not {batch_size!r}")
    if not isinstance(broker, RedisBroker):
        count = 0
        for message in messages:
            broker.enqueue(message, delay=delay_ms)
            count += 1
        return count
    return sum(_enqueue_batch(broker, batch, delay_ms) for batch in _batches(messages, batch_size))


def _batches(messages: Iterable[Message[Any]], size: int) -> Iterator[list[Message[Any]]]:
    iterator = iter(messages)
    while batch := list(islice(iterator, size)):
        yield batch


def _enqueue_batch(broker: RedisBroker, batch: list[Message[Any]], delay_ms: int | None) -> int:
    # Mirrors RedisBroker.enqueue (dramatiq 2.2.1) step for step, with the script call
    # queued on a pipeline instead of run at once.
    prepared = [_prepare(message, delay_ms) for message in batch]
    for message in prepared:
        broker.emit_before("enqueue", message, delay_ms)

    dispatch = broker.scripts["dispatch"]
    pipeline = broker.client.pipeline(transaction=False)
    for message in prepared:
        broker.logger.debug(
            "Enqueueing message %r on queue %r.", message.message_id, message.queue_name
        )
        dispatch(
            keys=[broker.namespace],
            args=[
                "enqueue",
                current_millis(),
                message.queue_name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                broker._should_do_maintenance("enqueue"),
                broker._max_unpack_size(),
                message.options["redis_message_id"],
                message.encode(),
            ],
            client=pipeline,
        )
    if isinstance(broker, WakesConsumers):
        for queue_name, count in Counter(m.queue_name for m in prepared).items():
            broker.add_wake_tokens(pipeline, queue_name, count)
    pipeline.execute()

    for message in prepared:
        broker.emit_after("enqueue", message, delay_ms)
    return len(prepared)


def _prepare(message: Message[Any], delay_ms: int | None) -> Message[Any]:
    # A unique id per enqueue, as the broker does: a retried message is enqueued again.
    message = message.copy(options={"redis_message_id": str(uuid4())})
    if delay_ms is None:
        return message
    return message.copy(
        queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay_ms}
    )
