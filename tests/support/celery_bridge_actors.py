"""Actors a Celery bridge hands tasks to in tests, and their mapping (``--tasks
tests.support.celery_bridge_actors:TASKS``), recording in Redis what each run did.

``record`` counts each run under ``bridge:runs`` and keeps when it ran (ms) under
``bridge:ran_at``, both keyed by message id: the bridge gives the fintask message the Celery
task's id, so a test counts the runs of each task it published.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq.middleware import CurrentMessage

from app.house_rules import fintask_actor
from app.redis_client import get_redis

QUEUE = "bridged"
RUNS_KEY = "bridge:runs"
RAN_AT_KEY = "bridge:ran_at"


@fintask_actor(
    queue_name=QUEUE,
    time_limit=30_000,
    max_age=3_600_000,
    max_retries=0,
    min_backoff=1_000,
    max_backoff=1_000,
)
def record(label: str, **kwargs: Any) -> None:
    """Record that this message ran, and when."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    client = get_redis()
    client.hincrby(RUNS_KEY, message.message_id, 1)
    client.hset(RAN_AT_KEY, message.message_id, int(time.time() * 1000))


TASKS = {"shop.tasks.record": record}
