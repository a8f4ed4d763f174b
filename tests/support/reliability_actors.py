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

from app.redis_client import get_redis
from tests.support.holding import HOLD_S, count_run, holding_actor

QUEUE = "reliability"
RUNS_KEY = "fintask:reliability:runs"
DONE_KEY = "fintask:reliability:done"


@holding_actor(QUEUE)
def work(hold_first_run: bool = False, **kwargs: Any) -> None:
    """Record this run; hold it if asked and it is the message's first; record completion."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    if count_run(RUNS_KEY, message.message_id) == 1 and hold_first_run:
        time.sleep(HOLD_S)
    get_redis().hincrby(DONE_KEY, message.message_id, 1)
