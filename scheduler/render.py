"""The schedule as data and as a table: ``fintask schedule`` and the scheduler's start-up log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from app.text_table import table
from scheduler.cron import next_tick
from scheduler.jobs import Schedule
from scheduler.schedule import SCHEDULE


@dataclass(frozen=True)
class ScheduledJob:
    """One job as an operator reads it; times are UTC."""

    name: str
    queue: str
    spec: str
    catch_up: bool
    next_run: dt.datetime | None
    last_sent: dt.datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "queue": self.queue,
            "spec": self.spec,
            "catch_up": self.catch_up,
            "next_run": _iso(self.next_run),
            "last_sent": _iso(self.last_sent),
        }


def default_schedule() -> Schedule:
    """fintask's schedule."""
    return SCHEDULE


def schedule_data(
    now: dt.datetime,
    schedule: Schedule | None = None,
    *,
    last_sent: Mapping[str, dt.datetime | None] | None = None,
) -> list[ScheduledJob]:
    """Every job and its next run after ``now``, soonest first (``last_sent``: read from Redis)."""
    jobs = [
        ScheduledJob(
            name=job.name,
            queue=str(job.actor.queue_name),
            spec=job.spec,
            catch_up=job.catch_up,
            next_run=next_tick(job.cron, now),
            last_sent=(last_sent or {}).get(job.name),
        )
        for job in schedule or default_schedule()
    ]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(jobs, key=lambda job: (job.next_run or far, job.name))


def render_schedule(
    now: dt.datetime,
    schedule: Schedule | None = None,
    *,
    last_sent: Mapping[str, dt.datetime | None] | None = None,
) -> str:
    """The schedule as a text table (times in UTC)."""
    header = ("job", "queue", "cron (UTC)", "catch up", "next run (UTC)", "last sent (UTC)")
    rows = [
        (
            job.name,
            job.queue,
            job.spec,
            "yes" if job.catch_up else "no",
            _minute(job.next_run),
            _minute(job.last_sent),
        )
        for job in schedule_data(now, schedule, last_sent=last_sent)
    ]
    return table(header, *rows)


def _minute(moment: dt.datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M}"


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
