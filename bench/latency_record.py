"""What each benchmark task does: append "start sent pid" to one Redis list, nothing else."""

from __future__ import annotations

import os
import time

import redis

#: The queue both systems' no-op task runs on.
QUEUE = "bench"
#: The list each run appends its record to.
STARTS_KEY = "bench:starts"


def record_start(client: redis.Redis, sent_at: float) -> None:
    """Record this run's start time next to the send time that travelled in the message."""
    client.rpush(STARTS_KEY, f"{time.time()!r} {sent_at!r} {os.getpid()}")
