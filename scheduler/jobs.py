"""Declaring the schedule: ``every(spec, run=actor)``, checked when the schedule is imported.

A mistake in a schedule shows up as a job that silently never runs, weeks later. So each
declaration is checked at import (and so by the test suite and at scheduler start): the spec
fires (see ``scheduler.cron``), the actor follows the house rules, its ``max_age`` ends before
its tick key expires, and no actor is scheduled twice (its name keys its ticks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq

from app.house_rules import house_rule_problems
from app.middleware.ticks import TICK_TTL_S
from scheduler.cron import CronSpec, ScheduleError, parse_spec


@dataclass(frozen=True)
class Job:
    """One periodic job: an actor, the cron spec (UTC) it runs on, and its missed-tick policy.

    ``catch_up``: when the scheduler starts after missing ticks of this job, send the most
    recent one. Without it missed ticks are logged and dropped (right for jobs that run often).
    """

    actor: dramatiq.Actor[..., Any]
    spec: str
    cron: CronSpec
    catch_up: bool

    @property
    def name(self) -> str:
        return str(self.actor.actor_name)


def every(spec: str, *, run: dramatiq.Actor[..., Any], catch_up: bool = False) -> Job:
    """Run actor ``run`` at each minute matching ``spec`` (cron, UTC).

    Also sets the actor's ``periodic`` option, which is how periodiq's own CLI finds jobs.
    """
    name = run.actor_name
    cron = parse_spec(spec, job=name)
    problems = house_rule_problems(run)
    if problems:
        raise ScheduleError(f"job {name!r}: the actor {'; '.join(problems)}")
    # max_age bounds a message's life, retries included (they keep its timestamp); one that
    # outlived its tick key could run twice.
    if run.options["max_age"] >= TICK_TTL_S * 1000:
        raise ScheduleError(
            f"job {name!r}: max_age={run.options['max_age']} ms must be below {TICK_TTL_S} s, "
            "the life of a tick's key"
        )
    run.options["periodic"] = cron
    return Job(actor=run, spec=spec, cron=cron, catch_up=catch_up)


class Schedule:
    """The jobs of one scheduler process, each actor at most once."""

    def __init__(self, *jobs: Job) -> None:
        names = [job.name for job in jobs]
        if not jobs:
            raise ScheduleError("a schedule needs at least one job")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ScheduleError(f"jobs scheduled more than once: {', '.join(duplicates)}")
        self.jobs = jobs

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)
