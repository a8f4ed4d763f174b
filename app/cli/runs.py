"""``fintask reports`` and ``fintask runs``: start the weekly fan-out, watch and steer runs."""

from __future__ import annotations

import dataclasses
import json
import time

import click
from sqlalchemy import select

import actors  # noqa: F401  (declares the runs' actors; the outbox sends through them)
from actors.reports import start_report
from actors.runs import CHUNKED_RUNS
from app.cli.common import with_broker
from app.db.session import transaction
from app.text_table import table
from chunking import ChunkRun, Progress, cancel_run, pause_run, resume_run, run_progress
from pipelines.reports import report_week, week_bounds


@click.group()
def reports() -> None:
    """The weekly report to every active user."""


@reports.command("send")
@with_broker
@click.option("--week", help="ISO week, e.g. 2026-W48 (default: last week)")
@click.option("--wait", is_flag=True, help="show a progress bar until the run finishes")
def reports_send(week: str | None, wait: bool) -> None:
    """Start the week's report run (once per week: a second start returns the same run)."""
    week = week or report_week(None)
    try:
        week_bounds(week)
    except ValueError:
        raise click.BadParameter(f"{week!r} is not an ISO week such as 2026-W48") from None
    with transaction() as session:
        run_id = start_report(session, week)
    click.echo(f"run {run_id}: weekly report for {week}")
    if wait:
        _follow(run_id)


def _progress(run_id: int) -> Progress:

    with transaction() as session:
        progress = run_progress(session, run_id)
    if progress is None:
        raise click.ClickException(f"run {run_id} does not exist")
    return progress


def _follow(run_id: int) -> None:
    progress = _progress(run_id)
    with click.progressbar(length=progress.estimated_total or 0, label="users") as bar:
        shown = 0
        while progress.status == "running":
            time.sleep(0.5)
            progress = _progress(run_id)
            bar.update(progress.processed - shown)
            shown = progress.processed
    click.echo(f"run {run_id} {progress.status}: {progress.processed} processed")
    if progress.status != "done":
        raise click.ClickException(progress.error or f"run {run_id} ended {progress.status}")


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_context
def runs(ctx: click.Context, as_json: bool, limit: int) -> None:
    """List chunked runs with their progress (newest first); or steer one."""
    if ctx.invoked_subcommand is not None:
        return

    with transaction() as session:
        ids = list(session.scalars(select(ChunkRun.id).order_by(ChunkRun.id.desc()).limit(limit)))
    listed = [_progress(run_id) for run_id in ids]
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in listed], default=str, indent=2))
        return
    rows = [
        (
            p.run_id,
            p.name,
            p.status,
            p.processed,
            "-" if p.estimated_total is None else p.estimated_total,
            "-" if p.percent is None else f"{p.percent:.1f}",
        )
        for p in listed
    ]
    click.echo(table(("RUN", "NAME", "STATUS", "PROCESSED", "TOTAL", "%"), *rows))


@runs.command("pause")
@click.argument("run_id", type=int)
def runs_pause(run_id: int) -> None:
    """Stop a run after its current chunk."""

    with transaction() as session:
        changed = pause_run(session, run_id)
    _report(run_id, "paused", changed)


@runs.command("resume")
@with_broker
@click.argument("run_id", type=int)
def runs_resume(run_id: int) -> None:
    """Resume a paused or failed run from its last committed cursor."""

    name = _progress(run_id).name
    if name not in CHUNKED_RUNS:
        raise click.ClickException(f"run {run_id} is a {name!r} run, which this release lacks")
    with transaction() as session:
        changed = resume_run(session, CHUNKED_RUNS[name], run_id)
    _report(run_id, "resumed", changed)


@runs.command("cancel")
@click.argument("run_id", type=int)
def runs_cancel(run_id: int) -> None:
    """Cancel a run: no further chunk runs."""

    with transaction() as session:
        changed = cancel_run(session, run_id)
    _report(run_id, "cancelled", changed)


def _report(run_id: int, done: str, changed: bool) -> None:
    if not changed:
        raise click.ClickException(f"run {run_id} was not {done}: it is {_progress(run_id).status}")
    click.echo(f"run {run_id} {done}")
