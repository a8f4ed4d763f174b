"""Enqueue many Dramatiq messages in one Redis round trip per batch.

``actor.send`` costs one round trip per message, and ``group`` is no better: it sends its
messages one by one. On Redis this pipelines the broker's *own* ``dispatch`` script calls
(what ``RedisBroker.enqueue`` runs through ``do_enqueue``), so the stored layout is exactly
Dramatiq's and any worker consumes the messages as usual; on a broker whose consumers wait
for wake-up tokens, the batch's tokens ride in the same round trip. Every message still passes the
broker's ``before_enqueue`` / ``after_enqueue`` middleware hooks, so guardrails that reject
a message and metrics that count it keep working. Other brokers (the stub, RabbitMQ) fall
back to ``broker.enqueue`` one message at a time. :func:`dispatch_args` builds each call's
arguments, for any broker subclass that pipelines its own enqueues too.

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
    skip: tuple[type[Exception], ...] = (),
) -> int:
    """Enqueue ``messages`` (one round trip per ``batch_size`` on Redis); return how many.

    A message whose ``before_enqueue`` raises one of ``skip`` (a debounce answering that the
    same work is already pending) is left out without stopping the others.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, not {batch_size!r}")
    if not isinstance(broker, RedisBroker):
        count = 0
        for message in messages:
            try:
                broker.enqueue(message, delay=delay_ms)
            except skip:
                continue
            count += 1
        return count
    batches = _batches(messages, batch_size)
    return sum(_enqueue_batch(broker, batch, delay_ms, skip) for batch in batches)


def dispatch_args(
    broker: RedisBroker,
    command: str,
    queue_name: str,
    *args: Any,
    maintenance: bool | None = None,
) -> list[Any]:
    """The ARGV of ``dispatch.lua``, in the order Dramatiq's ``RedisBroker._dispatch`` uses.

    ``maintenance`` forces the call's maintenance on or off; by default it is the broker's
    ``maintenance_chance``, as in Dramatiq.
    """
    if maintenance is None:
        do_maintenance = broker._should_do_maintenance(command)
    else:
        do_maintenance = int(maintenance)
    return [
        command,
        current_millis(),
        queue_name,
        broker.broker_id,
        broker.heartbeat_timeout,
        broker.dead_message_ttl,
        do_maintenance,
        broker._max_unpack_size(),
        *args,
    ]


def _batches(messages: Iterable[Message[Any]], size: int) -> Iterator[list[Message[Any]]]:
    iterator = iter(messages)
    while batch := list(islice(iterator, size)):
        yield batch


def _enqueue_batch(
    broker: RedisBroker,
    batch: list[Message[Any]],
    delay_ms: int | None,
    skip: tuple[type[Exception], ...],
) -> int:
    # Mirrors RedisBroker.enqueue (dramatiq 2.2.1) step for step, with the script call
    # queued on a pipeline instead of run at once.
    prepared = []
    for message in (_prepare(message, delay_ms) for message in batch):
        try:
            broker.emit_before("enqueue", message, delay_ms)
        except skip:
            continue
        prepared.append(message)

    dispatch = broker.scripts["dispatch"]
    pipeline = broker.client.pipeline(transaction=False)
    for message in prepared:
        broker.logger.debug(
            "Enqueueing message %r on queue %r.", message.message_id, message.queue_name
        )
        args = dispatch_args(
            broker,
            "enqueue",
            message.queue_name,
            message.options["redis_message_id"],
            message.encode(),
        )
        dispatch(keys=[broker.namespace], args=args, client=pipeline)
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
