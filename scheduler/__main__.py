"""``python -m scheduler [MODULE]``: the Procfile's ``scheduler`` process.

It stands in for ``periodiq app.broker:setup_broker scheduler.schedule``: periodiq's command
builds its own ``Scheduler`` with no way to put the tick claims in front of its sends (see
``scheduler.ticker``). A team that runs periodiq's command anyway, once or twice, still gets one
run per tick, from the workers' ``TickGuard`` alone; what it goes without is the catch-up of
missed ticks and the ticks kept through a Redis outage.

MODULE (default ``scheduler.schedule``) holds a ``SCHEDULE``; tests pass their own. Ticks are
computed in UTC whatever the environment; ``TZ`` is forced to UTC as well, so that log times and
anything reading local time agree with the schedule. Started while Redis is down, it waits for
Redis (``scheduler.startup``); once running, it keeps the ticks an outage holds up and sends
them when Redis is back (``scheduler.delivery``). Operators pause, resume and run jobs with
``fintask schedule`` while it runs, no restart needed (``scheduler.ticker``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import redis
from dramatiq.cli import LOGFORMAT

from app.broker import setup_broker
from app.redis_client import get_redis
from app.settings import exit_on_settings_error
from scheduler.claims import TickClaims
from scheduler.jobs import Schedule
from scheduler.render import read_live, render_schedule
from scheduler.startup import wait_for_redis
from scheduler.ticker import TickScheduler

logger = logging.getLogger("scheduler")

DEFAULT_MODULE = "scheduler.schedule"


@exit_on_settings_error
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOGFORMAT)
    _run_in_utc()
    setup_broker()
    schedule = getattr(importlib.import_module(args.module), "SCHEDULE", None)
    if not isinstance(schedule, Schedule):
        logger.error("%s has no SCHEDULE (a scheduler.jobs.Schedule)", args.module)
        return 2
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("Stopping on %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    claims = TickClaims(get_redis())
    started_at = dt.datetime.now(dt.UTC)
    if wait_for_redis(claims.client, wait=stopping.wait):
        logger.info("Schedule of %s:\n%s", args.module, _rendered(schedule, claims.client))
        scheduler = TickScheduler(
            schedule, claims=claims, wait=stopping.wait, started_at=started_at
        )
        scheduler.run_forever()
    logger.info("Stopped")
    return 0


def _rendered(schedule: Schedule, client: redis.Redis) -> str:
    """The schedule's table, with its state in Redis (last ticks, pauses, run-now requests)
    if Redis still answers."""
    try:
        live = read_live(client, schedule)
    except redis.RedisError as error:
        logger.warning(
            "Could not read the schedule's state in Redis: %s: %s", type(error).__name__, error
        )
        live = None
    return render_schedule(dt.datetime.now(dt.UTC), schedule, live=live)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler", description="Run fintask's periodic schedule (UTC)."
    )
    parser.add_argument(
        "module", nargs="?", default=DEFAULT_MODULE, help="the module holding SCHEDULE"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    return parser


def _run_in_utc() -> None:
    given = os.environ.get("TZ")
    if given != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()
        logger.info("TZ=%s replaced by TZ=UTC: the schedule is written in UTC", given)


if __name__ == "__main__":
    sys.exit(main())
