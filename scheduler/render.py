"""The schedule as data and as a table: ``fintask schedule`` and the scheduler's start-up log.

Each job's spec and next run come from the code; what it did and what operators asked of it
(last tick sent, paused, run-now requests waiting) from Redis, read by :func:`read_live`. Without
Redis those show as unknown, never as "not paused": the specs still show, which is what an
operator needs in an outage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from app.schedule_control import RunRequest, paused_jobs, pending_run_requests
from app.text_table import table
from app.timestamps import rfc3339
from scheduler.claims import TickClaims
from scheduler.cron import next_tick
from scheduler.jobs import Schedule
from scheduler.schedule import SCHEDULE

#: A table cell that Redis did not answer for.
UNKNOWN = "?"


@dataclass(frozen=True)
class ScheduleLive:
    """What Redis says of a schedule now."""

    last_sent: Mapping[str, dt.datetime | None]
    paused: frozenset[str]
    pending: Sequence[RunRequest]


@dataclass(frozen=True)
class ScheduledJob:
    """One job as an operator reads it; times are UTC. ``None`` in ``paused`` and
    ``run_requests``: Redis did not answer."""

    name: str
    queue: str
    spec: str
    catch_up: bool
    next_run: dt.datetime | None
    last_sent: dt.datetime | None = None
    paused: bool | None = None
    run_requests: tuple[RunRequest, ...] | None = None

    def as_dict(self) -> dict[str, object]:
        requests = self.run_requests
        return {
            "name": self.name,
            "queue": self.queue,
            "spec": self.spec,
            "catch_up": self.catch_up,
            "next_run": rfc3339(self.next_run),
            "last_sent": rfc3339(self.last_sent),
            "paused": self.paused,
            "run_requests": None if requests is None else [r.as_dict() for r in requests],
        }


def default_schedule() -> Schedule:
    """fintask's schedule."""
    return SCHEDULE


def job_names() -> list[str]:
    """The names of the schedule's jobs: what an operator's action on a job may name."""
    return [scheduled.name for scheduled in default_schedule()]


def read_live(client: redis.Redis, schedule: Schedule) -> ScheduleLive:
    """The schedule's state in Redis; ``redis.RedisError`` if it does not answer."""
    return ScheduleLive(
        last_sent=TickClaims(client).last_ticks(job.name for job in schedule),
        paused=paused_jobs(client),
        pending=pending_run_requests(client),
    )


def schedule_data(
    now: dt.datetime, schedule: Schedule | None = None, *, live: ScheduleLive | None = None
) -> list[ScheduledJob]:
    """Every job and its next run after ``now``, soonest first, with its state in Redis
    (``live``; unknown without it)."""
    jobs = [
        ScheduledJob(
            name=job.name,
            queue=str(job.actor.queue_name),
            spec=job.spec,
            catch_up=job.catch_up,
            next_run=next_tick(job.cron, now),
            last_sent=live.last_sent.get(job.name) if live else None,
            paused=job.name in live.paused if live else None,
            run_requests=tuple(r for r in live.pending if r.job == job.name) if live else None,
        )
        for job in schedule or default_schedule()
    ]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(jobs, key=lambda job: (job.next_run or far, job.name))


def render_schedule(
    now: dt.datetime, schedule: Schedule | None = None, *, live: ScheduleLive | None = None
) -> str:
    """The schedule as a text table (times in UTC), then one line per run-now request waiting."""
    header = (
        "job",
        "queue",
        "cron (UTC)",
        "catch up",
        "next run (UTC)",
        "last sent (UTC)",
        "paused",
        "run now",
    )
    jobs = schedule_data(now, schedule, live=live)
    rows = [
        (
            job.name,
            job.queue,
            job.spec,
            _yes_no(job.catch_up),
            _minute(job.next_run),
            _minute(job.last_sent) if live else UNKNOWN,
            UNKNOWN if job.paused is None else _yes_no(job.paused),
            _waiting(job.run_requests),
        )
        for job in jobs
    ]
    lines = [table(header, *rows)]
    for job in jobs:
        for request in job.run_requests or ():
            lines.append(
                f"run-now request {request.request_id} of {job.name}: asked by "
                f"{request.requested_by} at {rfc3339(request.requested_at)}, not yet taken "
                "by a scheduler"
            )
    return "\n".join(lines)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _waiting(requests: tuple[RunRequest, ...] | None) -> str:
    if requests is None:
        return UNKNOWN
    return f"{len(requests)} waiting" if requests else "-"


def _minute(moment: dt.datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M}"
