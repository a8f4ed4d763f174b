"""The no-op actor of the throughput and latency scenarios, for fintask and bare Dramatiq.

Run as ``dramatiq bench.apps.noop_dramatiq``; ``BENCH_SYSTEM`` picks fintask's broker (wake-up
consumer, full middleware stack) or Dramatiq's own ``RedisBroker`` with its defaults.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis

from bench.latency_record import record_start, worker_queue
from bench.systems import REDIS_VARIABLE, worker_broker

broker = worker_broker()
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
QUEUE, STARTS = worker_queue()


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=60_000, max_age=3_600_000)
def noop(sent_at: float, **kwargs: Any) -> None:
    record_start(client, sent_at, STARTS)
