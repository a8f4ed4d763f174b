"""The Dramatiq side of the latency benchmark: one no-op actor that records when it started.

Run by ``bench.latency`` as ``dramatiq bench.latency_dramatiq_app``. ``BENCH_BROKER`` picks
fintask's ``WakeupRedisBroker`` (``wakeup``) or Dramatiq's own ``RedisBroker`` (``plain``); both
get Dramatiq's default middleware, so the broker is the only difference.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware

from app.wakeup_broker import WakeupRedisBroker
from bench.latency_record import QUEUE, record_start

REDIS_URL = os.environ["BENCH_REDIS_URL"]
client = redis.Redis.from_url(REDIS_URL)
broker_class = WakeupRedisBroker if os.environ.get("BENCH_BROKER") == "wakeup" else RedisBroker
broker = broker_class(url=REDIS_URL, middleware=[m() for m in default_middleware])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=60_000)
def noop(sent_at: float) -> None:
    record_start(client, sent_at)
