"""Queue depths by state, read from the Redis keys of Dramatiq's Redis broker, or from RabbitMQ.

The ready list, the delayed messages no worker has fetched yet, and the dead letters
(``chunking.redis_keys`` names the keys); on RabbitMQ, the messages waiting in the queue, its
``.DQ`` and its ``.XQ`` (``app.rabbitmq``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dramatiq
import redis
from dramatiq.common import q_name

from app.broker_features import rabbitmq_broker
from chunking.depth import queue_depth_for
from chunking.redis_keys import NAMESPACE, dead_letters_key, delay_queue_key, queue_key


@dataclass(frozen=True)
class QueueDepth:
    """How many messages wait in one queue, by state."""

    queue_name: str
    ready: int
    delayed: int
    dead: int


def canonical_queue_names(declared: Iterable[str]) -> list[str]:
    """The user-facing queue names among a broker's declared queues (no ``.DQ``/``.XQ``)."""
    return sorted({q_name(name) for name in declared})


def queue_depths(
    client: redis.Redis, queue_names: Iterable[str], *, namespace: str = NAMESPACE
) -> list[QueueDepth]:
    """Ready, delayed and dead counts of each queue, read in one round trip (on RabbitMQ,
    one a queue, from RabbitMQ)."""
    names = list(queue_names)
    rabbitmq = rabbitmq_broker()
    if rabbitmq is not None:
        return [QueueDepth(name, *rabbitmq.message_counts(name)) for name in names]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(queue_key(name, namespace=namespace))
        pipe.llen(delay_queue_key(name, namespace=namespace))
        pipe.zcard(dead_letters_key(name, namespace=namespace))
    counts = pipe.execute()
    return [
        QueueDepth(name, *(int(c) for c in counts[i * 3 : i * 3 + 3]))
        for i, name in enumerate(names)
    ]


def pending_messages(queue_name: str) -> int:
    """Messages of ``queue_name`` (ready or delayed) on this process's broker, whichever it is:
    the depth a chunked run's backpressure reads (``chunking`` knows Redis and the stub)."""
    rabbitmq = rabbitmq_broker()
    if rabbitmq is None:
        return queue_depth_for(dramatiq.get_broker())(queue_name)
    ready, delayed, _ = rabbitmq.message_counts(queue_name)
    return ready + delayed
