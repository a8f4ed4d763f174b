"""fintask's side of scenario 5: one actor under a global rate limit that records its starts.

Run as ``dramatiq bench.apps.rate_limit_dramatiq`` with the fintask system (``rate_limit`` is
fintask's actor option, provided by its ``RateLimits`` middleware).
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage

from bench.scenarios.rate_limit import RATE_VARIABLE, TAG_VARIABLE, TASK, queue_name, record_start
from bench.systems import REDIS_VARIABLE, worker_broker

TAG = os.environ[TAG_VARIABLE]

broker = worker_broker()
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])


@dramatiq.actor(
    actor_name=TASK,
    queue_name=queue_name(TAG),
    rate_limit=os.environ[RATE_VARIABLE],
    time_limit=60_000,
    max_age=600_000,
    max_retries=3,
    min_backoff=1_000,
    max_backoff=1_000,
)
def rate_limited(**kwargs: Any) -> None:
    message = CurrentMessage.get_current_message()
    record_start(client, TAG, retries=int(message.options.get("retries", 0)) if message else 0)
