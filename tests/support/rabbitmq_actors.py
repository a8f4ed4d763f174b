"""Actors for real workers on RabbitMQ, on fintask's ``maintenance`` queue (so that every
``fintask`` command, which declares fintask's queues only, counts them): ``stamp`` records each
run and when it happened, and can hold its first run (for a worker to be killed meanwhile);
``always_fails`` is retried once, through the delay queue, then dead-lettered."""

from __future__ import annotations

import time
from typing import Any

from dramatiq.middleware import CurrentMessage

from app.house_rules import fintask_actor
from app.redis_client import get_redis
from tests.support.holding import HOLD_S, count_run, holding_actor

QUEUE = "maintenance"
#: A hash: message id -> how many times it started.
RUNS_KEY = "rabbitmq:runs"
#: A hash: message id -> when its last run ended (seconds since the epoch).
STAMPS_KEY = "rabbitmq:stamps"
#: ``always_fails``'s retries, as a user would declare them: one, a fifth of a second later.
RETRIES = 1


@holding_actor(QUEUE)
def stamp(hold_first_run: bool = False, **kwargs: Any) -> None:
    """Count this run, hold it if asked and it is the first, then record when it ended."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    if count_run(RUNS_KEY, message.message_id) == 1 and hold_first_run:
        time.sleep(HOLD_S)
    get_redis().hset(STAMPS_KEY, message.message_id, time.time())


@fintask_actor(
    queue_name=QUEUE,
    time_limit=30_000,
    max_age=3_600_000,
    max_retries=RETRIES,
    min_backoff=200,
    max_backoff=200,
)
def always_fails(**kwargs: Any) -> None:
    """Count this run, then fail as a provider's outage would."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    get_redis().hincrby(RUNS_KEY, message.message_id, 1)
    raise RuntimeError("the provider answered 500")
