"""Queue depths by state, read from the Redis keys of Dramatiq's Redis broker.

The ready list, the delayed messages no worker has fetched yet, and the dead letters
(``chunking.redis_keys`` names the keys).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis
from dramatiq.common import q_name

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
    """Ready, delayed and dead counts of each queue, read in one round trip."""
    names = list(queue_names)
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
