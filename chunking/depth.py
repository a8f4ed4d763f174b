"""How many messages wait in a queue: the signal backpressure acts on.

Pluggable because the answer lives in the broker: Redis lists in production, the stub
broker's in-memory queues in unit tests, or a host's own metrics.
"""

from __future__ import annotations

from typing import Protocol

import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from chunking.redis_keys import NAMESPACE, messages_key, queue_key


class DepthSource(Protocol):
    """Return how many messages wait in ``queue_name`` (its delay queue included)."""

    def __call__(self, queue_name: str) -> int: ...


class RedisQueueDepth:
    """Depth read from Dramatiq's Redis keys in one round trip.

    By default the ready list ``<ns>:<q>`` plus the delay list ``<ns>:<q>.DQ``. Messages a
    worker has already prefetched (and delayed messages it holds until their ETA) have left
    those lists; ``count_unacked=True`` counts them too, from the ``.msgs`` hashes that keep
    every message until it is acknowledged.
    """

    def __init__(
        self, *, client: redis.Redis, namespace: str = NAMESPACE, count_unacked: bool = False
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.count_unacked = count_unacked

    def __call__(self, queue_name: str) -> int:
        pipeline = self.client.pipeline(transaction=False)
        for name in (queue_name, dq_name(queue_name)):
            if self.count_unacked:
                pipeline.hlen(messages_key(name, namespace=self.namespace))
            else:
                pipeline.llen(queue_key(name, namespace=self.namespace))
        return sum(int(count) for count in pipeline.execute())


class StubQueueDepth:
    """Depth of a :class:`StubBroker` queue: every message enqueued and not yet acknowledged."""

    def __init__(self, *, broker: StubBroker) -> None:
        self.broker = broker

    def __call__(self, queue_name: str) -> int:
        queues = self.broker.queues
        return sum(queues[name].unfinished_tasks for name in (queue_name, dq_name(queue_name)))


def queue_depth_for(broker: Broker) -> DepthSource:
    """The natural depth source of ``broker``; other brokers must be given one explicitly."""
    if isinstance(broker, RedisBroker):
        return RedisQueueDepth(client=broker.client, namespace=broker.namespace)
    if isinstance(broker, StubBroker):
        return StubQueueDepth(broker=broker)
    raise TypeError(f"no queue depth source for {type(broker).__name__}: pass queue_depth=")
