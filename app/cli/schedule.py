"""``fintask schedule``: the periodic schedule as it runs, and an operator's hold on it.

``pause``, ``resume`` and ``run`` act on every scheduler at once, with none restarted: they
write ``app.schedule_control``'s keys in Redis, which the schedulers read within seconds, through
``app.control.actions.Operator`` (as the HTTP API does), which then records the action in the
audit trail.
"""

from __future__ import annotations

import datetime as dt

import click
import redis

from app.cli.common import (
    JSON_OPTION,
    acting_operator,
    print_json,
    usage_errors,
)
from app.redis_client import get_redis
from scheduler.jobs import Schedule
from scheduler.render import (
    ScheduleLive,
    default_schedule,
    read_live,
    render_schedule,
    schedule_data,
)


@click.group("schedule", invoke_without_command=True)
@JSON_OPTION
@click.pass_context
def schedule(ctx: click.Context, as_json: bool) -> None:
    """Show the periodic schedule: each job's cron spec (UTC), next run, catch-up, last tick.

    Also whether each job is paused and its run-now requests no scheduler has taken yet. If
    Redis does not answer, the specs still show, with what Redis holds marked unknown.
    """
    if ctx.invoked_subcommand is not None:
        return
    jobs = default_schedule()
    live = _read_live(jobs)
    now = dt.datetime.now(dt.UTC)
    if as_json:
        rows = schedule_data(now, jobs, live=live)
        print_json({"items": [row.as_dict() for row in rows], "next_cursor": None})
    else:
        click.echo(render_schedule(now, jobs, live=live))


@schedule.command("pause")
@click.argument("job")
@JSON_OPTION
def pause(job: str, as_json: bool) -> None:
    """Stop sending JOB's ticks, on every scheduler, until it is resumed.

    The ticks due meanwhile are not caught up on resume: a pause means "do not run".
    """
    with acting_operator() as operator:
        changed = usage_errors(lambda: operator.pause_job(job, known=_job_names()), "JOB")
    if as_json:
        print_json({"job": job, "paused": True, "changed": changed})
    else:
        click.echo(f"{job}: paused" if changed else f"{job}: was paused already")


@schedule.command("resume")
@click.argument("job")
@JSON_OPTION
def resume(job: str, as_json: bool) -> None:
    """Send JOB's ticks again, from its next one on.

    The ticks due while it was paused are not sent, even for a job that catches up.
    """
    with acting_operator() as operator:
        changed = usage_errors(lambda: operator.resume_job(job, known=_job_names()), "JOB")
    if as_json:
        print_json({"job": job, "paused": False, "changed": changed})
    else:
        click.echo(f"{job}: resumed from its next tick" if changed else f"{job}: was not paused")


@schedule.command("run")
@click.argument("job")
@JSON_OPTION
def run(job: str, as_json: bool) -> None:
    """Run JOB once now, besides its schedule, even while it is paused.

    The request waits in Redis until a scheduler takes it (within seconds while one runs); it
    does not stand for the job's next scheduled tick, which still runs.
    """
    with acting_operator() as operator:
        request_id = usage_errors(lambda: operator.run_job(job, known=_job_names()), "JOB")
    if as_json:
        print_json({"job": job, "request_id": request_id})
    else:
        click.echo(f"{job}: run-now request {request_id}; a running scheduler sends it in seconds")


def _job_names() -> list[str]:
    return [scheduled.name for scheduled in default_schedule()]


def _read_live(jobs: Schedule) -> ScheduleLive | None:
    """The schedule's state in Redis, or None (said in one line on stderr) if it does not
    answer: the specs alone are still worth printing."""
    try:
        return read_live(get_redis(), jobs)
    except redis.RedisError as error:
        click.echo(
            f"last sent ticks, pauses and run-now requests unknown: Redis did not answer ({error})",
            err=True,
        )
        return None
