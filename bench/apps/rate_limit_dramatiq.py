"""fintask's and bare Dramatiq's side of scenario 5: one rate-limited actor recording its starts.

Run as ``dramatiq bench.apps.rate_limit_dramatiq``. With the fintask system the limit is
fintask's actor option ``rate_limit`` (its ``RateLimits`` middleware: one GCRA limiter in Redis,
a message over the limit deferred to its slot without spending a retry). With bare Dramatiq it
is Dramatiq's own recipe: a :class:`~dramatiq.rate_limits.BucketRateLimiter` on Redis acquired
inside the actor, whose ``RateLimitExceeded`` on a miss is retried by the ``Retries``
middleware, with a short backoff and room for many misses. Bare Dramatiq has no
``CurrentMessage`` middleware to read a message's retries from, so each miss counts itself.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import redis
from dramatiq import Broker, Middleware, RateLimitExceeded
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage
from dramatiq.rate_limits import BucketRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from app.middleware.rate_limits import SLOT_OPTION, RateLimits
from bench.scenarios.rate_limit import (
    RATE_VARIABLE,
    SLOT_COPY,
    TAG_VARIABLE,
    TASK,
    queue_name,
    record_start,
    retries_key,
)
from bench.systems import REDIS_VARIABLE, SYSTEM_VARIABLE, worker_broker

TAG = os.environ[TAG_VARIABLE]
#: Bare Dramatiq's retries of a miss: the first after 100 ms, doubling up to 1 s, and enough
#: of them that a backlog's tail is not dead-lettered while it waits its turn.
BUCKET_RETRIES: dict[str, Any] = {"max_retries": 1_000, "min_backoff": 100, "max_backoff": 1_000}

broker = worker_broker()
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
LIMIT, PERIOD = os.environ[RATE_VARIABLE].split("/")


class KeepSlot(Middleware):
    """Copies the slot a deferred message reserved, which ``RateLimits`` drops as it lets the
    message run, so the task can record how long after its slot it started."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        message.options[SLOT_COPY] = message.options.get(SLOT_OPTION)


if os.environ[SYSTEM_VARIABLE] == "fintask":
    broker.add_middleware(KeepSlot(), before=RateLimits)

    @dramatiq.actor(
        actor_name=TASK,
        queue_name=queue_name(TAG),
        rate_limit=os.environ[RATE_VARIABLE],
        time_limit=60_000,
        max_age=600_000,
        max_retries=3,
        min_backoff=1_000,
        max_backoff=1_000,
    )
    def rate_limited(**kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        options = message.options if message else {}
        record_start(
            client, TAG, retries=int(options.get("retries", 0)), slot_us=options.get(SLOT_COPY)
        )

else:
    assert PERIOD == "s", "the bucket here is one second"
    bucket = BucketRateLimiter(
        RedisBackend(client=client), f"bench-rate-limit-{TAG}", limit=int(LIMIT), bucket=1_000
    )

    @dramatiq.actor(
        actor_name=TASK, queue_name=queue_name(TAG), time_limit=60_000, **BUCKET_RETRIES
    )
    def rate_limited(**kwargs: Any) -> None:
        # What ``bucket.acquire()`` does, with the miss counted before it raises.
        with bucket.acquire(raise_on_failure=False) as acquired:
            if not acquired:
                client.incr(retries_key(TAG))
                raise RateLimitExceeded(f"rate limit exceeded for key {bucket.key!r}")
            record_start(client, TAG)
