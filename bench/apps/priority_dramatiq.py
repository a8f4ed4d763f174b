"""Scenario 6's Dramatiq worker module, for fintask or bare Dramatiq (``BENCH_SYSTEM``).

Run as ``dramatiq bench.apps.priority_dramatiq --queues urgent`` (the urgent worker set) and
``--queues low`` (the bulk one). The urgent actor records when it started; the low one does a
few milliseconds of work and counts itself done.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis

from bench.latency_record import record_start
from bench.scenarios.priority import (
    LOW_DONE_KEY,
    LOW_QUEUE,
    LOW_TASK,
    LOW_WORK_S,
    URGENT_QUEUE,
    URGENT_TASK,
)
from bench.systems import REDIS_VARIABLE, worker_broker

broker = worker_broker()
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])

LIMITS: dict[str, Any] = {
    "time_limit": 60_000,
    "max_age": 3_600_000,
    "max_retries": 0,
    "min_backoff": 1_000,
    "max_backoff": 1_000,
}


@dramatiq.actor(actor_name=URGENT_TASK, queue_name=URGENT_QUEUE, **LIMITS)
def urgent_notification(sent_at: float, **kwargs: Any) -> None:
    record_start(client, sent_at)


@dramatiq.actor(actor_name=LOW_TASK, queue_name=LOW_QUEUE, **LIMITS)
def low_priority(**kwargs: Any) -> None:
    time.sleep(LOW_WORK_S)
    client.incr(LOW_DONE_KEY)
