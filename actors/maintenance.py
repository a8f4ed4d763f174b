"""Maintenance actors: health pings and housekeeping."""

from __future__ import annotations

import os
import socket
from typing import Any

import dramatiq

from app import health
from app.redis_client import get_redis


@dramatiq.actor(
    queue_name="maintenance",
    time_limit=10_000,
    max_age=60_000,
    max_retries=0,
    min_backoff=1_000,
    max_backoff=1_000,
)
def ping(token: str, **kwargs: Any) -> None:
    """Answer ``fintask ping``: proves a worker consumes messages end to end."""
    health.record_pong(get_redis(), token, f"{socket.gethostname()}:{os.getpid()}")
