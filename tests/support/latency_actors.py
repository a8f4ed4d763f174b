"""Actors for the real ``dramatiq`` workers of the wake-up broker's integration tests.

Run as ``dramatiq tests.support.latency_actors``: it builds a ``WakeupRedisBroker`` on
``REDIS_URL`` (a plain ``RedisBroker`` with ``FINTASK_TEST_BROKER=plain``), with the heartbeat
timeout and maintenance chance a recovery test needs, and records each run in Redis:
``<name>:starts`` lists start times, ``<name>:runs`` and ``<name>:done`` count runs and
completions per message id.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from app.wakeup_broker import WakeupRedisBroker

REDIS_URL = os.environ["REDIS_URL"]
HEARTBEAT_TIMEOUT_MS = int(os.environ.get("FINTASK_TEST_HEARTBEAT_MS", "60000"))
MAINTENANCE_CHANCE = int(os.environ.get("FINTASK_TEST_MAINTENANCE_CHANCE", "1000"))
QUEUE = "wakeup"

client = redis.Redis.from_url(REDIS_URL)

broker_class = (
    RedisBroker if os.environ.get("FINTASK_TEST_BROKER") == "plain" else WakeupRedisBroker
)
broker = broker_class(
    url=REDIS_URL,
    middleware=[*(middleware() for middleware in default_middleware), CurrentMessage()],
    heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
    maintenance_chance=MAINTENANCE_CHANCE,
)
dramatiq.set_broker(broker)

EXPLICIT: dict[str, Any] = {
    "queue_name": QUEUE,
    "time_limit": 120_000,
    "max_age": 600_000,
    "max_retries": 0,
    "min_backoff": 100,
    "max_backoff": 100,
}


def message_id() -> str:
    """The id of the message this worker thread is running."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    return message.message_id


@dramatiq.actor(**EXPLICIT)
def hold(seconds: float = 0.0, **kwargs: Any) -> None:
    """Record a start; on a message's first run only, sleep ``seconds`` (a kill lands here)."""
    run_id = message_id()
    client.rpush("hold:starts", repr(time.time()))
    client.hincrby("hold:runs", run_id, 1)
    if client.set(f"hold:first:{run_id}", 1, nx=True):
        time.sleep(seconds)
    client.hincrby("hold:done", run_id, 1)
