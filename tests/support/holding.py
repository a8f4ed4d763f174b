"""What the kill tests' actors share: a first run that holds until its worker is killed.

A test sends a message whose first run blocks for ``HOLD_S`` (longer than any test waits), kills
the worker meanwhile, and counts the runs of the message after recovery: each start is counted in
a Redis hash of the test's own (``count_run``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

from app.house_rules import fintask_actor
from app.redis_client import get_redis

#: Longer than any kill test waits: a blocked first run ends only with its worker.
HOLD_S = 600


def holding_actor(queue_name: str) -> Callable[[Callable[..., Any]], dramatiq.Actor[Any, Any]]:
    """An actor on ``queue_name`` whose time limit outlasts its hold and which is never retried:
    only a dead worker's recovery runs it again."""
    return fintask_actor(
        queue_name=queue_name,
        time_limit=(HOLD_S + 60) * 1000,
        max_age=3_600_000,
        max_retries=0,
        min_backoff=1_000,
        max_backoff=1_000,
    )


def count_run(runs_key: str, name: str) -> int:
    """Count one more start of ``name`` in the hash ``runs_key``; which start this is (1: first)."""
    return int(get_redis().hincrby(runs_key, name, 1))
