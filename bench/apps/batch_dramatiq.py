"""fintask's side of scenario 10: a batch's no-op member, its callback, and a readiness probe.

Run as ``dramatiq bench.apps.batch_dramatiq`` with ``BENCH_SYSTEM=fintask``: the broker is
``app.broker.setup_broker()``, whose ``BatchMembers`` middleware records each member in its
batch (under ``app.redis_access.BATCH_PREFIX``) and enqueues the callback after the last one.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis

from bench.scenarios.batch import CALLBACK, MEMBER, QUEUE, READY, READY_KEY, record_callback
from bench.systems import REDIS_VARIABLE, worker_broker

broker = worker_broker()
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
#: Full mode's 10^6 members wait in the queue for many minutes: no member may expire.
OPTIONS: dict[str, Any] = {
    "queue_name": QUEUE,
    "max_retries": 0,
    "time_limit": 60_000,
    "max_age": 4 * 3_600_000,
}


@dramatiq.actor(actor_name=MEMBER, **OPTIONS)
def member(**kwargs: Any) -> None:
    """A no-op: what is measured is the batch around it."""


@dramatiq.actor(actor_name=CALLBACK, **OPTIONS)
def batch_done(batch_id: str, succeeded: int, failed: int, **kwargs: Any) -> None:
    record_callback(client, succeeded + failed)


@dramatiq.actor(actor_name=READY, **OPTIONS)
def batch_ready(**kwargs: Any) -> None:
    client.sadd(READY_KEY, os.getpid())
