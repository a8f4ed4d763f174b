"""Actors for real ``dramatiq app.broker:setup_broker tests.support.control_actors`` workers,
recording in Redis what each message did, so a test can see what a control action changed.

Every start is counted under ``control:started`` (a hash by message id) and stamped, on
Redis's clock, in ``control:starts`` (a list of µs); how a ``hold`` ended is under
``control:ended`` ("done" or "revoked"). ``hold`` runs until ``control:release`` exists:
``cooperative`` ones call ``check_deadline()`` every 50 ms, the others never do (only a hard
cancel can stop them).
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq.middleware import CurrentMessage

from app.house_rules import fintask_actor
from app.middleware.deadlines import MessageRevoked, check_deadline
from app.redis_client import get_redis

QUEUE = "control"
STARTED_KEY = "control:started"
STARTS_KEY = "control:starts"
ENDED_KEY = "control:ended"
RELEASE_KEY = "control:release"
#: The rate ``limited`` declares.
DECLARED_RATE = "2/s"

_LIMITS = {
    "queue_name": QUEUE,
    "time_limit": 600_000,
    "max_age": 3_600_000,
    "max_retries": 0,
    "min_backoff": 1_000,
    "max_backoff": 1_000,
}


def _started() -> tuple[redis.Redis, str]:
    message = CurrentMessage.get_current_message()
    assert message is not None
    client = get_redis()
    seconds, micros = client.time()
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(STARTED_KEY, message.message_id, 1)
    pipe.rpush(STARTS_KEY, seconds * 1_000_000 + micros)
    pipe.execute()
    return client, message.message_id


@fintask_actor(**_LIMITS)
def quick(**kwargs: Any) -> None:
    """Record the start; nothing else."""
    _started()


@fintask_actor(**_LIMITS, rate_limit=DECLARED_RATE)
def limited(**kwargs: Any) -> None:
    """Record the start, under a declared rate limit."""
    _started()


@fintask_actor(**_LIMITS)
def hold(cooperative: bool = True, **kwargs: Any) -> None:
    """Run until released, checking for a revocation (``cooperative``) or not."""
    client, message_id = _started()
    try:
        while not client.exists(RELEASE_KEY):
            if cooperative:
                check_deadline()
            time.sleep(0.05)
    except MessageRevoked:
        client.hset(ENDED_KEY, message_id, "revoked")
        raise
    client.hset(ENDED_KEY, message_id, "done")
