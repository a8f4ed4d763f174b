"""The Celery side of the latency benchmark: the same no-op task, configured fairly.

Run by ``bench.latency`` as ``celery -A bench.latency_celery_app worker -P prefork -c 2``.
JSON only, no result backend, and ``acks_late`` so that a message is acknowledged after it ran,
as Dramatiq does; prefetch is Celery's default (``worker_prefetch_multiplier=4``, so 4 x
concurrency unacked messages per worker). The task records its start exactly as the Dramatiq
actor does.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from bench.latency_record import QUEUE, record_start

REDIS_URL = os.environ["BENCH_REDIS_URL"]

client = redis.Redis.from_url(REDIS_URL)
app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(sent_at: float) -> None:
    record_start(client, sent_at)
