"""``python -m scheduler [MODULE]``: the Procfile's ``scheduler`` process.

It stands in for ``periodiq scheduler.schedule``: periodiq's command builds its own
``Scheduler`` with no way to put the tick claims in front of its sends (see
``scheduler.ticker``). MODULE (default ``scheduler.schedule``) holds a ``SCHEDULE``; tests
pass their own. Ticks are computed in UTC whatever the environment; ``TZ`` is forced to UTC as
well, so that log times and anything reading local time agree with the schedule.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from dramatiq.cli import LOGFORMAT

from app.broker import setup_broker
from app.middleware.ticks import TickClaims
from app.redis_client import get_redis
from scheduler.jobs import Schedule
from scheduler.render import render_schedule
from scheduler.ticker import TickScheduler

logger = logging.getLogger("scheduler")

DEFAULT_MODULE = "scheduler.schedule"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOGFORMAT)
    _run_in_utc()
    setup_broker()
    schedule = getattr(importlib.import_module(args.module), "SCHEDULE", None)
    if not isinstance(schedule, Schedule):
        logger.error("%s has no SCHEDULE (a scheduler.jobs.Schedule)", args.module)
        return 2
    claims = TickClaims(get_redis())
    scheduler = TickScheduler(schedule, claims=claims)

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("Stopping on %s", signal.Signals(signum).name)
        scheduler.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    now = dt.datetime.now(dt.UTC)
    last_sent = claims.last_ticks(job.name for job in schedule)
    logger.info(
        "Schedule of %s:\n%s", args.module, render_schedule(now, schedule, last_sent=last_sent)
    )
    scheduler.run_forever()
    logger.info("Stopped")
    return 0


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
