"""Celery's side of scenario 7: the same counting task, on the set-up's Redis transport options.

Run as ``celery -A bench.apps.countdown_celery worker``; tasks arrive with a countdown
(``apply_async(countdown=...)``), which the worker holds unacknowledged until the eta. The
set-up's tag names its own ``unacked`` keys; ``BENCH_VISIBILITY_TIMEOUT_S``, when set, is the
caveat case's shortened ``visibility_timeout`` (empty: Celery's default, 1 h).
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
VISIBILITY = os.environ.get(VISIBILITY_VARIABLE, "")

app = celery_app(
    "bench_countdown",
    task_default_queue=queue_name(TAG),
    broker_transport_options=transport_options(TAG, float(VISIBILITY) if VISIBILITY else None),
)
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])


@app.task(name=TASK)
def counted(key: str, sent_at: float, **kwargs: Any) -> None:
    record_run(client, TAG, key, sent_at)
