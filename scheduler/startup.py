"""A scheduler started while Redis is down waits for it, saying so in one line a minute.

Its first wake-up reads the newest tick sent of each job, which is how it finds ticks missed
before it started (and catches them up): so it starts sending once Redis answers, not before.
The ticks that come due while it waits are kept, as in an outage under a running scheduler
(``TickScheduler``'s ``started_at``). A traceback and an exit instead would have the platform
restart it in a loop, each start as blind as the last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from redis.sentinel import SentinelConnectionPool

from scheduler.ticker import Wait

logger = logging.getLogger(__name__)

#: How often Redis is asked again.
RETRY_MS = 2_000
#: How often the wait is logged while it lasts.
LOG_EVERY_MS = 60_000


def wait_for_redis(
    client: redis.Redis,
    *,
    wait: Wait,
    retry_ms: int = RETRY_MS,
    log_every_ms: int = LOG_EVERY_MS,
    monotonic: Callable[[], float] = time.monotonic,
) -> bool:
    """Return True once ``client`` answers a PING; False if ``wait`` says to stop first."""
    started: float | None = None
    logged: float | None = None
    while True:
        try:
            client.ping()
        except redis.RedisError as error:
            now = monotonic()
            started = now if started is None else started
            if logged is None:
                logger.warning(
                    "Redis at %s does not answer (%s: %s); waiting for it, trying every %d ms",
                    _address(client),
                    type(error).__name__,
                    error,
                    retry_ms,
                )
                logged = now
            elif (now - logged) * 1000 >= log_every_ms:
                logger.warning(
                    "Redis at %s still does not answer after %.0f s (%s: %s)",
                    _address(client),
                    now - started,
                    type(error).__name__,
                    error,
                )
                logged = now
        else:
            if started is not None:
                logger.info("Redis answers after %.0f s", monotonic() - started)
            return True
        if wait(retry_ms / 1000):
            return False


def _address(client: redis.Redis) -> str:
    """``host:port`` of ``client``, or the master its sentinels name (never its password)."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return f"the master {pool.service_name!r} of its sentinels"
    kwargs = client.get_connection_kwargs()
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
