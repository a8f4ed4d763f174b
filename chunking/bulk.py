"""Enqueue many Dramatiq messages in one Redis round trip per batch.

``actor.send`` costs one round trip per message, and ``group`` is no better: it sends its
messages one by one. On Redis a batch costs one script call per queue: :data:`ENQUEUE_SCRIPT`
stores each message exactly as the broker's own ``dispatch.lua`` enqueue does (the payload in
the queue's ``.msgs`` hash, its Redis id pushed on the queue, the producer's heartbeat), so any
worker, Dramatiq's own included, consumes the messages as usual; on a broker whose consumers
wait for wake-up tokens, the batch's tokens ride in the same round trip. Every message still
passes the broker's ``before_enqueue`` / ``after_enqueue`` middleware hooks, so guardrails that
reject a message and metrics that count it keep working. Other brokers (the stub, RabbitMQ)
fall back to ``broker.enqueue`` one message at a time. :func:`dispatch_args` builds the
arguments of a ``dispatch.lua`` call, for any broker subclass that pipelines its own enqueues.

Dramatiq's maintenance (a dead worker's messages back to their queue) rides on a dispatch call
by chance: when the broker's ``maintenance_chance`` hits for a queue's share of a batch, that
share's first message goes through ``dispatch.lua`` with maintenance on, as a single send would.

Messages are consumed from the iterable ``batch_size`` at a time, so a producer never holds
more than one batch in memory. A middleware that rejects a message (``MiddlewareError`` in
``before_enqueue``) stops the call before that batch is sent; earlier batches stay enqueued.
A Redis error can leave a prefix of the failing batch enqueued (the pipeline is not a
transaction), so, as everywhere, the receiving actor must be idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Protocol, runtime_checkable
from uuid import uuid4

import redis
from dramatiq import Broker, Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

DEFAULT_BATCH_SIZE = 1000

# dispatch.lua's enqueue, for many messages of one queue in one call. KEYS[1]: the namespace.
# ARGV: now (ms), the queue, the producer's (broker's) id, the most values one ``unpack`` may
# spread (the broker's ``_max_unpack_size``), then each message's Redis id and payload.
ENQUEUE_SCRIPT = """
local namespace, now, queue_name, worker_id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local per_call = 2 * math.max(1, math.floor(tonumber(ARGV[4]) / 2))
redis.call("zadd", namespace .. ":__heartbeats__", now, worker_id)
local queue = namespace .. ":" .. queue_name
for first = 5, #ARGV, per_call do
    local last = math.min(first + per_call - 1, #ARGV)
    redis.call("hset", queue .. ".msgs", unpack(ARGV, first, last))
    local ids = {}
    for i = first, last, 2 do ids[#ids + 1] = ARGV[i] end
    redis.call("rpush", queue, unpack(ids))
end
"""


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
    # Mirrors RedisBroker.enqueue (dramatiq 2.2.1) step for step, with the messages of each
    # queue stored by one script call on a pipeline instead of one dispatch call each.
    prepared = []
    for message in (_prepare(message, delay_ms) for message in batch):
        try:
            broker.emit_before("enqueue", message, delay_ms)
        except skip:
            continue
        prepared.append(message)

    by_queue: dict[str, list[Any]] = {}
    for message in prepared:
        broker.logger.debug(
            "Enqueueing message %r on queue %r.", message.message_id, message.queue_name
        )
        pairs = by_queue.setdefault(message.queue_name, [])
        pairs += (message.options["redis_message_id"], message.encode())
    pipeline = broker.client.pipeline(transaction=False)
    for queue_name, pairs in by_queue.items():
        _store(broker, pipeline, queue_name, pairs)
    if isinstance(broker, WakesConsumers):
        for queue_name, pairs in by_queue.items():
            broker.add_wake_tokens(pipeline, queue_name, len(pairs) // 2)
    pipeline.execute()

    for message in prepared:
        broker.emit_after("enqueue", message, delay_ms)
    return len(prepared)


def _store(
    broker: RedisBroker, pipeline: redis.client.Pipeline, queue_name: str, pairs: list[Any]
) -> None:
    """Queue on ``pipeline`` the script calls that store ``pairs`` (Redis id, payload, ...)."""
    keys = [broker.namespace]
    if broker._should_do_maintenance("enqueue"):
        args = dispatch_args(broker, "enqueue", queue_name, *pairs[:2], maintenance=True)
        broker.scripts["dispatch"](keys=keys, args=args, client=pipeline)
        pairs = pairs[2:]
    if pairs:
        head = [current_millis(), queue_name, broker.broker_id, broker._max_unpack_size()]
        # Registering only hashes the text; the pipeline loads the script if Redis lacks it.
        script = broker.client.register_script(ENQUEUE_SCRIPT)
        script(keys=keys, args=[*head, *pairs], client=pipeline)


def _prepare(message: Message[Any], delay_ms: int | None) -> Message[Any]:
    # A unique id per enqueue, as the broker does: a retried message is enqueued again.
    options: dict[str, Any] = {"redis_message_id": str(uuid4())}
    if delay_ms is None:
        return message.copy(options=options)
    options["eta"] = current_millis() + delay_ms
    return message.copy(queue_name=dq_name(message.queue_name), options=options)
