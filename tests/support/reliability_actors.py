"""An actor for real ``dramatiq app.broker:setup_broker actors tests.support.reliability_actors``
workers, which records in Redis what each message did, so a test can count runs and losses.

``work`` counts each run under ``fintask:reliability:runs`` and each completion under
``fintask:reliability:done`` (hashes keyed by message id, in fintask's key space, which
``ops/redis-users.acl`` grants the worker). A message sent with ``hold_first_run=True``
blocks its first run for ten minutes: the worker that fetched it first is killed while it runs,
and any later run (after recovery) completes at once.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq.middleware import CurrentMessage

from app.house_rules import fintask_actor
from app.redis_client import get_redis

QUEUE = "reliability"
RUNS_KEY = "fintask:reliability:runs"
DONE_KEY = "fintask:reliability:done"
HOLD_S = 600


@fintask_actor(
    queue_name=QUEUE,
    time_limit=(HOLD_S + 60) * 1000,
    max_age=3_600_000,
    max_retries=0,
    min_backoff=1_000,
    max_backoff=1_000,
)
def work(hold_first_run: bool = False, **kwargs: Any) -> None:
    """Record this run; hold it if asked and it is the message's first; record completion."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    client = get_redis()
    runs = int(client.hincrby(RUNS_KEY, message.message_id, 1))
    if hold_first_run and runs == 1:
        time.sleep(HOLD_S)
    client.hincrby(DONE_KEY, message.message_id, 1)
