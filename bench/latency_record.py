"""What a latency-measuring task does: append "start sent pid" to one Redis list, nothing else.

Imports nothing but ``redis``: arq's own venv imports it too (``bench.work``).
"""

from __future__ import annotations

import os
import time

import redis

#: The queue the no-op task runs on, in every system.
QUEUE = "bench"
#: The list each run appends its record to.
STARTS_KEY = "bench:starts"
#: Names the queue a worker consumes when several systems' workers run at once.
QUEUE_VARIABLE = "BENCH_QUEUE"


def starts_key(queue: str) -> str:
    """The record list of ``queue``'s runs."""
    return f"{STARTS_KEY}:{queue}"


def worker_queue() -> tuple[str, str]:
    """This worker's queue (``BENCH_QUEUE``, else ``QUEUE``) and the list it records to."""
    queue = os.environ.get(QUEUE_VARIABLE, QUEUE)
    return queue, starts_key(queue)


def record_line(sent_at: float, consumer: int) -> str:
    """One run's record: its start time, the send time its message carried, and the pid of
    the process it counts for (the readiness probe waits until every one has answered)."""
    return f"{time.time()!r} {sent_at!r} {consumer}"


def record_start(client: redis.Redis, sent_at: float, key: str = STARTS_KEY) -> None:
    """Record this run's start time next to the send time that travelled in the message."""
    client.rpush(key, record_line(sent_at, os.getpid()))
