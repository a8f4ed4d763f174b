"""The no-op task of the throughput and latency scenarios, for Celery.

Run as ``celery -A bench.apps.noop_celery worker``; configured by :func:`bench.systems.celery_app`
(JSON, no result backend, ``acks_late``). The task records its start as the Dramatiq actor does.
"""

from __future__ import annotations

import os

import redis

from bench.latency_record import record_start, worker_queue
from bench.systems import REDIS_VARIABLE, celery_app

client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
QUEUE, STARTS = worker_queue()
app = celery_app("bench_noop", task_default_queue=QUEUE)


@app.task(name="noop")
def noop(sent_at: float) -> None:
    record_start(client, sent_at, STARTS)
