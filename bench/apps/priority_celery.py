"""Scenario 6's Celery worker module: the same two tasks as ``priority_dramatiq``.

Run as ``celery -A bench.apps.priority_celery worker -Q urgent`` and ``-Q low`` (or one worker
with ``-Q urgent,low``); messages are routed by the queue the sender names.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from bench.latency_record import record_start
from bench.scenarios.priority import LOW_DONE_KEY, LOW_TASK, LOW_WORK_S, URGENT_TASK
from bench.systems import REDIS_VARIABLE, celery_app

app = celery_app("bench-priority")
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])


@app.task(name=URGENT_TASK)
def urgent_notification(sent_at: float, **kwargs: Any) -> None:
    record_start(client, sent_at)


@app.task(name=LOW_TASK)
def low_priority(**kwargs: Any) -> None:
    time.sleep(LOW_WORK_S)
    client.incr(LOW_DONE_KEY)
