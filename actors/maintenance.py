"""Maintenance actors: health pings and housekeeping (scheduled in scheduler/)."""

from __future__ import annotations

import os
import socket
from typing import Any

import dramatiq

from app import health
from app.db.session import default_engine
from app.house_rules import fintask_actor
from app.queues import canonical_queue_names, queue_depths
from app.redis_client import get_redis
from pipelines import maintenance


@fintask_actor(
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


@fintask_actor(
    queue_name="maintenance",
    time_limit=600_000,
    max_age=3_600_000,
    max_retries=3,
    min_backoff=10_000,
    max_backoff=60_000,
)
def purge_raw_blobs(**kwargs: Any) -> None:
    """Delete raw provider responses past retention."""
    maintenance.purge_raw_blobs()


@fintask_actor(
    queue_name="maintenance",
    time_limit=60_000,
    max_age=600_000,
    max_retries=3,
    min_backoff=10_000,
    max_backoff=60_000,
)
def fail_stuck_jobs(**kwargs: Any) -> None:
    """Fail jobs still unfinished at their deadline."""
    maintenance.fail_stuck_jobs()


@fintask_actor(
    queue_name="maintenance",
    time_limit=30_000,
    max_age=600_000,
    max_retries=3,
    min_backoff=10_000,
    max_backoff=60_000,
)
def report_dead_letters(**kwargs: Any) -> None:
    """Log each queue's dead-letter count."""
    names = canonical_queue_names(dramatiq.get_broker().get_declared_queues())
    maintenance.report_dead_letters(queue_depths(get_redis(), names))


@fintask_actor(
    queue_name="maintenance",
    time_limit=60_000,
    max_age=120_000,
    max_retries=3,
    min_backoff=10_000,
    max_backoff=60_000,
)
def relay_outbox(**kwargs: Any) -> None:
    """Send outbox messages a dead process committed but never sent."""
    maintenance.relay_outbox(default_engine())
