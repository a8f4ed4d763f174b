"""The Redis client for fintask's own keys (locks, limits, pongs), shared by a process."""

from __future__ import annotations

import functools

import redis

from app.settings import SettingsError, load_settings


@functools.cache
def get_redis() -> redis.Redis:
    """A client for ``REDIS_URL``, made once a process; its pool is thread-safe."""
    url = load_settings().redis_url
    if url is None:
        raise SettingsError("REDIS_URL is not set: fintask needs Redis for this command")
    return redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30)


def as_text(value: bytes | str) -> str:
    """A Redis answer as text: fintask's clients keep redis-py's bytes (payloads are bytes), so
    the ids and names read back are decoded where they are used."""
    return value.decode() if isinstance(value, bytes) else value
