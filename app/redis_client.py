"""The Redis clients of a fintask process: every one comes from ``redis_pool``.

``REDIS_URL`` names one Redis (``redis://``, ``rediss://``, ``unix://``) or the sentinels that
know which server is the master (``redis+sentinel://``, ``app.redis_urls``). Either way the
broker, its consumers' blocking waiters and ``get_redis`` (locks, limits, ticks, the control
plane, the web process, the CLI) take their connections from ``redis_pool``, so they all follow
a failover the same way. A pool of redis-py's ``SentinelConnectionPool`` asks the sentinels for
the master's address on every new connection, drops its idle connections when that address
changes, and turns a ``ReadOnlyError`` (a master demoted to a replica under a live connection)
into a ``ConnectionError``: the lost connection every caller already handles by reconnecting.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from app.redis_urls import is_sentinel_url, parse_sentinel_url
from app.settings import SettingsError, load_settings

#: How long a sentinel may take to connect and to answer: it is asked on every new connection
#: to the master, so a dead one must not hold a reconnect up for long before the next is asked
#: (and is not retried: the next sentinel is).
SENTINEL_TIMEOUT_S = 2.0


def no_retry() -> Retry:
    """A redis-py ``retry`` option that tries once: for a question with other places to ask, or
    whose failure is the answer."""
    return Retry(NoBackoff(), 0)


def redis_pool(url: str, **options: Any) -> redis.ConnectionPool:
    """A connection pool for ``url``, of one Redis or of the master its sentinels name.

    ``options`` are redis-py connection options (``socket_timeout``, ``max_connections``...);
    they win over the URL's.
    """
    if not is_sentinel_url(url):
        return redis.ConnectionPool.from_url(url, **options)
    master, sentinel = sentinel_manager(url)
    return SentinelConnectionPool(master, sentinel, **{**master_options(url), **options})


def sentinel_manager(url: str) -> tuple[str, Sentinel]:
    """The master's name in a Sentinel URL, and a ``Sentinel`` that asks its sentinels."""
    parsed = parse_sentinel_url(url)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "username": parsed.sentinel_username,
        "password": parsed.sentinel_password,
        "retry": no_retry(),
    }
    if parsed.tls:
        sentinel_options["ssl"] = True
        sentinel_options.update(
            {name: value for name, value in parsed.options.items() if name.startswith("ssl_")}
        )
    return parsed.master, Sentinel(parsed.sentinels, sentinel_kwargs=sentinel_options)


def master_options(url: str) -> dict[str, Any]:
    """The connection options a Sentinel URL gives for its master."""
    parsed = parse_sentinel_url(url)
    return {
        "db": parsed.db,
        "username": parsed.username,
        "password": parsed.password,
        "ssl": parsed.tls,
        **parsed.options,
    }


@functools.cache
def get_redis() -> redis.Redis:
    """A client for ``REDIS_URL``, made once a process; its pool is thread-safe."""
    url = load_settings().redis_url
    if url is None:
        raise SettingsError("REDIS_URL is not set: fintask needs Redis for this command")
    return redis.Redis(connection_pool=redis_pool(url, socket_timeout=10, health_check_interval=30))


def as_text(value: bytes | str) -> str:
    """A Redis answer as text: fintask's clients keep redis-py's bytes (payloads are bytes), so
    the ids and names read back are decoded where they are used."""
    return value.decode() if isinstance(value, bytes) else value
