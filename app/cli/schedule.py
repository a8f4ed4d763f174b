"""``fintask schedule``: the periodic schedule, each job's next run and last sent tick."""

from __future__ import annotations

import datetime as dt
import json

import click
import redis

from app.redis_client import get_redis
from scheduler.claims import TickClaims
from scheduler.render import default_schedule, render_schedule, schedule_data


@click.command("schedule")
@click.option("--json", "as_json", is_flag=True, help="print the schedule as JSON")
def schedule(as_json: bool) -> None:
    """Show the periodic schedule: each job's cron spec (UTC), next run, catch-up, last tick."""

    jobs = default_schedule()
    try:
        last_sent = TickClaims(get_redis()).last_ticks(job.name for job in jobs)
    except redis.RedisError as error:
        click.echo(f"last sent ticks unknown: Redis did not answer ({error})", err=True)
        last_sent = {}
    now = dt.datetime.now(dt.UTC)
    if as_json:
        rows = schedule_data(now, jobs, last_sent=last_sent)
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        click.echo(render_schedule(now, jobs, last_sent=last_sent))
