"""Actors for the real ``dramatiq`` workers of the wake-up broker's integration tests.

Run as ``dramatiq tests.support.latency_actors``: it builds a ``WakeupRedisBroker`` on
``REDIS_URL`` with the production heartbeat timeout and maintenance chance (``Settings``) and,
as every fintask broker has, ``DeadWorkerRecovery``; and records each run in Redis:
``<name>:starts`` lists start times, ``<name>:runs`` and ``<name>:done`` count runs and
completions per message id.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage, default_middleware

from app.middleware.recovery import DeadWorkerRecovery
from app.settings import load_settings
from app.wakeup_broker import WakeupRedisBroker

REDIS_URL = os.environ["REDIS_URL"]
QUEUE = "wakeup"

client = redis.Redis.from_url(REDIS_URL)
settings = load_settings()

broker = WakeupRedisBroker(
    url=REDIS_URL,
    middleware=[
        *(middleware() for middleware in default_middleware),
        CurrentMessage(),
        DeadWorkerRecovery(),
    ],
    heartbeat_timeout=settings.heartbeat_timeout_ms,
    maintenance_chance=settings.maintenance_chance_per_million,
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
