"""Two jobs every minute for real ``periodiq`` processes; each run is recorded in Redis.

periodiq's own command schedules them: ``periodiq app.broker:setup_broker
tests.support.periodiq_actors``. Its first argument names the broker, and when that is a
callable periodiq calls it, as ``dramatiq`` does: so the process's entry point builds the broker
(``setup_broker``) before periodiq imports this module, and importing it only declares the
actors and sets their ``periodic`` option (``scheduler.jobs.every``). Workers run them with
``dramatiq app.broker:setup_broker tests.support.periodiq_actors``.

Each run appends ``{"actor", "tick", "message_id"}`` to ``RUNS_KEY``; the tick is the one
``TickGuard`` keyed the message on (periodiq's ``scheduled_at`` cut to its UTC minute).
"""

from __future__ import annotations

import json
from typing import Any

from dramatiq.middleware import CurrentMessage

from app.house_rules import fintask_actor
from app.middleware.ticks import message_tick
from app.redis_client import get_redis
from scheduler.jobs import Schedule, every

QUEUE = "periodiq_test"
RUNS_KEY = "periodiq_test:runs"
# Not tests.support.scheduler_actors' limits: importing that module would give periodiq its
# periodic actors to schedule too.
LIMITS: dict[str, Any] = {
    "time_limit": 10_000,
    "max_age": 3_600_000,
    "max_retries": 0,
    "min_backoff": 1_000,
    "max_backoff": 1_000,
}


def record_run(actor_name: str) -> None:
    """Append this run of ``actor_name`` to ``RUNS_KEY``."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    run = {"actor": actor_name, "tick": message_tick(message), "message_id": message.message_id}
    get_redis().rpush(RUNS_KEY, json.dumps(run))


@fintask_actor(queue_name=QUEUE, **LIMITS)
def periodiq_first(**kwargs: Any) -> None:
    """One of two jobs on the same minutes: ticks of different jobs must not collide."""
    record_run("periodiq_first")


@fintask_actor(queue_name=QUEUE, **LIMITS)
def periodiq_second(**kwargs: Any) -> None:
    """The other job."""
    record_run("periodiq_second")


SCHEDULE = Schedule(
    every("* * * * *", run=periodiq_first),
    every("* * * * *", run=periodiq_second),
)
