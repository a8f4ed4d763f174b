"""Actors for the real ``dramatiq`` workers of the middleware integration tests.

Run as ``dramatiq tests.support.middleware_actors``: it builds its own RedisBroker on
``REDIS_URL`` with fintask's middleware in the order ``app/broker.py`` uses, and declares actors
with explicit options. Each actor records its effect in Redis under its own name, so that a
test can tell that every message ran exactly once: ``<name>:runs`` counts runs per message id
and ``<name>:starts`` lists start times.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis
from dramatiq import Middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from app.middleware.deadlines import SoftTimeLimit
from app.middleware.locks import Mutex, UniqueEnqueue
from app.middleware.memory_limit import MemoryLimit
from app.middleware.rate_limits import RateLimits

REDIS_URL = os.environ["REDIS_URL"]
#: The global limit of ``limited``; the measuring test and a hand-run measurement set it.
RATE_LIMIT = os.environ.get("FINTASK_TEST_RATE_LIMIT", "20/s")
#: The memory limit of each worker process, in MiB (no limit when unset).
MAX_MEMORY_MB = os.environ.get("FINTASK_TEST_MAX_MEMORY_MB")

client = redis.Redis.from_url(REDIS_URL)

EXPLICIT: dict[str, Any] = {
    "time_limit": 60_000,
    "max_age": 600_000,
    "max_retries": 0,  # any failure dead-letters: a test sees it in the .XQ set
    "min_backoff": 1_000,
    "max_backoff": 1_000,
}


def middleware() -> list[Middleware]:
    """fintask's stack: unique enqueue first, Dramatiq's defaults, then the deferring ones."""
    stack: list[Middleware] = [UniqueEnqueue(client=client)]
    stack += [middleware() for middleware in default_middleware]
    stack.append(CurrentMessage())
    stack += [RateLimits(client=client), Mutex(client=client), SoftTimeLimit()]
    if MAX_MEMORY_MB:
        stack.append(MemoryLimit(max_memory_mb=int(MAX_MEMORY_MB)))
    return stack


broker = RedisBroker(url=REDIS_URL, middleware=middleware())
dramatiq.set_broker(broker)


def record(name: str) -> None:
    """Count this run of the current message, and when it started."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    pipe = client.pipeline(transaction=False)
    pipe.rpush(f"{name}:starts", repr(time.time()))
    pipe.hincrby(f"{name}:runs", message.message_id, 1)
    pipe.hincrby(f"{name}:retries", message.message_id, message.options.get("retries", 0))
    pipe.hincrby(
        f"{name}:deferrals", message.message_id, message.options.get("rate_limit_deferrals", 0)
    )
    pipe.execute()


@dramatiq.actor(queue_name="rate_limited", rate_limit=RATE_LIMIT, **EXPLICIT)
def limited(**kwargs: Any) -> None:
    record("limited")


@dramatiq.actor(
    queue_name="locked",
    lock_key="account:{account_id}",
    # Shorter than the work: only renewal (every 667 ms) keeps the lock, with more than a
    # second to spare for a renewal thread a loaded machine schedules late.
    lock_ttl_ms=2_000,
    lock_defer_ms=100,
    **EXPLICIT,
)
def locked(account_id: int, **kwargs: Any) -> None:
    started = time.time()
    time.sleep(2.5)
    client.rpush(f"locked:{account_id}", f"{started!r} {time.time()!r}")
    record("locked")


#: What ``leak`` keeps on purpose, so that the process's RSS grows by about 1 MiB a message.
LEAKED: list[bytes] = []


@dramatiq.actor(queue_name="leaky", **EXPLICIT)
def leak(**kwargs: Any) -> None:
    LEAKED.append(b"\x01" * 1024 * 1024)  # filled, so that its pages really are resident
    record("leak")
