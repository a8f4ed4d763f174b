"""A schedule for tests: two jobs every minute on a queue of their own, nothing else.

``python -m scheduler tests.support.scheduler_actors`` runs it in a real process; unit tests
import it on the StubBroker. The actors do nothing: tests count their messages.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from app.house_rules import fintask_actor
from scheduler.jobs import Schedule, every

QUEUE = "scheduler_test"
LIMITS: dict[str, Any] = {
    "time_limit": 10_000,
    "max_age": 3_600_000,
    "max_retries": 0,
    "min_backoff": 1_000,
    "max_backoff": 1_000,
}


@fintask_actor(queue_name=QUEUE, **LIMITS)
def every_minute(**kwargs: Any) -> None:
    """A job whose missed ticks are logged and dropped."""


@fintask_actor(queue_name=QUEUE, **LIMITS)
def every_minute_catching_up(**kwargs: Any) -> None:
    """A job whose most recent missed tick is sent when a scheduler starts."""


SCHEDULE = Schedule(
    every("* * * * *", run=every_minute),
    every("* * * * *", run=every_minute_catching_up, catch_up=True),
)


def declare_noop_actor(name: str, **limits: Any) -> dramatiq.Actor[..., Any]:
    """A do-nothing actor named ``name`` on the current broker (tests delete it after)."""

    def noop(**kwargs: Any) -> None:
        pass

    return fintask_actor(queue_name=QUEUE, actor_name=name, **{**LIMITS, **limits})(noop)
