"""Celery's side of scenario 7: the same counting task, on a transport with a short visibility
timeout.

Run as ``celery -A bench.apps.countdown_celery worker``; tasks arrive with a countdown
(``apply_async(countdown=...)``), which the worker holds unacknowledged until the eta.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from bench.scenarios.countdown import (
    TAG_VARIABLE,
    TASK,
    VISIBILITY_VARIABLE,
    queue_name,
    record_run,
    transport_options,
)
from bench.systems import REDIS_VARIABLE, celery_app

TAG = os.environ[TAG_VARIABLE]

app = celery_app(
    "bench_countdown",
    task_default_queue=queue_name(TAG),
    broker_transport_options=transport_options(float(os.environ[VISIBILITY_VARIABLE])),
)
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])


@app.task(name=TASK)
def counted(key: str, sent_at: float, **kwargs: Any) -> None:
    record_run(client, TAG, key, sent_at)
