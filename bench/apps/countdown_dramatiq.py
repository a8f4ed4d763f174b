"""fintask's and bare Dramatiq's side of scenario 7: an actor that counts its executions.

Run as ``dramatiq bench.apps.countdown_dramatiq``; the system in the environment picks
fintask's broker or Dramatiq's own. Messages arrive through the delay queue (``enqueue`` with
``delay``).
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis

from bench.scenarios.countdown import TAG_VARIABLE, TASK, queue_name, record_run
from bench.systems import REDIS_VARIABLE, worker_broker

TAG = os.environ[TAG_VARIABLE]

broker = worker_broker()
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])


@dramatiq.actor(
    actor_name=TASK,
    queue_name=queue_name(TAG),
    time_limit=60_000,
    max_age=600_000,
    max_retries=0,
    min_backoff=1_000,
    max_backoff=1_000,
)
def counted(key: str, sent_at: float, **kwargs: Any) -> None:
    record_run(client, TAG, key, sent_at)
