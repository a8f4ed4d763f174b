"""Celery's side of scenario 5: the same task under Celery's ``rate_limit``, recording its starts.

Run as ``celery -A bench.apps.rate_limit_celery worker``; Celery enforces ``rate_limit`` with a
token bucket in each worker instance's consumer.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from bench.scenarios.rate_limit import (
    RATE_VARIABLE,
    TAG_VARIABLE,
    TASK,
    queue_name,
    record_start,
)
from bench.systems import REDIS_VARIABLE, celery_app

TAG = os.environ[TAG_VARIABLE]

app = celery_app("bench_rate_limit", task_default_queue=queue_name(TAG))
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])


@app.task(name=TASK, rate_limit=os.environ[RATE_VARIABLE])
def rate_limited(**kwargs: Any) -> None:
    record_start(client, TAG)
