"""``fintask reports`` and ``fintask runs``: start the weekly fan-out, watch and steer runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn
from rich.progress import Progress as ProgressBar
from sqlalchemy import select

import actors  # noqa: F401  (declares the runs' actors; the outbox sends through them)
from actors.reports import start_report
from actors.runs import CHUNKED_RUNS
from app.cli.common import JSON_OPTION, acting_operator, print_json, with_broker
from app.db.session import transaction
from app.text_table import table
from chunking import ChunkRun, Progress, run_progress
from pipelines.reports import report_week, week_bounds

#: What a weekly report run counts: users, one report e-mail each.
UNIT = "users"

#: How often ``--wait`` reads the run's progress.
POLL_S = 0.5

#: How often ``--wait`` prints a progress line when its output is no terminal: often enough to
#: show a run is moving, rarely enough that a long run's log stays readable.
PLAIN_LINE_EVERY_S = 5.0


@click.group()
def reports() -> None:
    """The weekly report to every active user."""


@reports.command("send")
@with_broker
@click.option("--week", help="ISO week, e.g. 2026-W48 (default: last week)")
@click.option(
    "--wait", is_flag=True, help="show progress (done/total, rate, ETA) until the run finishes"
)
@JSON_OPTION
def reports_send(week: str | None, wait: bool, as_json: bool) -> None:
    """Start the week's report run (once per week: a second start returns the same run).

    With ``--json`` and ``--wait`` the output is one JSON document, the run's final progress
    (as ``fintask runs --json`` lists it): a script reads how the run ended, not a bar.
    """
    week = week or report_week(None)
    try:
        week_bounds(week)
    except ValueError:
        raise click.BadParameter(f"{week!r} is not an ISO week such as 2026-W48") from None
    with transaction() as session:
        run_id = start_report(session, week)
    if not as_json:
        click.echo(f"run {run_id}: weekly report for {week}")
    if wait:
        _follow(run_id, as_json)
    elif as_json:
        print_json({"run_id": run_id, "week": week})


def _progress(run_id: int) -> Progress:
    with transaction() as session:
        progress = run_progress(session, run_id)
    if progress is None:
        raise click.ClickException(f"run {run_id} does not exist")
    return progress


def _follow(run_id: int, as_json: bool) -> None:
    """Show the run's progress until it ends: a live bar on a terminal, else a line now and then;
    as JSON, nothing until the final progress.

    A log or a CI job records every redraw of a bar as more output, so there it gets plain lines.
    """
    snapshots = _snapshots(run_id)
    if as_json:
        progress = deque(snapshots, maxlen=1).pop()
        print_json(_progress_json(progress))
    else:
        if sys.stdout.isatty():
            progress = _show_bar(snapshots, Console())
        else:
            progress = _print_lines(run_id, snapshots)
        click.echo(f"run {run_id} {progress.status}: {progress.processed} processed")
    if progress.status != "done":
        raise click.ClickException(progress.error or f"run {run_id} ended {progress.status}")


def _progress_json(progress: Progress) -> dict[str, Any]:
    """A run's progress as every ``--json`` here prints it: one shape wherever a run is shown."""
    return dataclasses.asdict(progress)


def _snapshots(run_id: int) -> Iterator[Progress]:
    """The run's progress every ``POLL_S`` while it runs, ending with its first other state."""
    progress = _progress(run_id)
    yield progress
    while progress.status == "running":
        time.sleep(POLL_S)
        progress = _progress(run_id)
        yield progress


def _show_bar(snapshots: Iterator[Progress], console: Console) -> Progress:
    """Draw the snapshots as one live bar on ``console``; return the last one."""
    columns = (
        TextColumn(UNIT),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("eta {task.fields[eta]}"),
    )
    progress = next(snapshots)
    with ProgressBar(*columns, console=console) as bar:
        task = bar.add_task(UNIT, **_bar_fields(progress))
        for progress in snapshots:
            bar.update(task, **_bar_fields(progress))
    return progress


def _bar_fields(progress: Progress) -> dict[str, Any]:
    return {
        "completed": progress.processed,
        "total": progress.estimated_total,
        "rate": _rate(progress),
        "eta": _eta(progress),
    }


def _print_lines(run_id: int, snapshots: Iterator[Progress]) -> Progress:
    """Print the first snapshot, then one every ``PLAIN_LINE_EVERY_S``; return the last one."""
    progress = next(snapshots)
    click.echo(_line(run_id, progress))
    printed_at = time.monotonic()
    for progress in snapshots:
        if time.monotonic() - printed_at >= PLAIN_LINE_EVERY_S:
            click.echo(_line(run_id, progress))
            printed_at = time.monotonic()
    return progress


def _line(run_id: int, progress: Progress) -> str:
    total = "?" if progress.estimated_total is None else progress.estimated_total
    percent = "" if progress.percent is None else f" ({progress.percent:.0f}%)"
    return (
        f"run {run_id}: {progress.processed}/{total} {UNIT}{percent}, "
        f"{_rate(progress)}, eta {_eta(progress)}"
    )


def _rate(progress: Progress) -> str:
    # The run's own rate since it last started or resumed, whoever watches and since when.
    rate = "?" if progress.rate_per_s is None else f"{progress.rate_per_s:.1f}"
    return f"{rate} {UNIT}/s"


def _eta(progress: Progress) -> str:
    return "?" if progress.eta_s is None else str(dt.timedelta(seconds=round(progress.eta_s)))


@click.group(invoke_without_command=True)
@JSON_OPTION
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
        print_json({"items": [_progress_json(p) for p in listed], "next_cursor": None})
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
@JSON_OPTION
def runs_pause(run_id: int, as_json: bool) -> None:
    """Stop a run after its current chunk."""

    with acting_operator() as operator:
        changed = operator.pause_run(run_id)
    _report(run_id, "paused", changed, as_json)


@runs.command("resume")
@with_broker
@click.argument("run_id", type=int)
@JSON_OPTION
def runs_resume(run_id: int, as_json: bool) -> None:
    """Resume a paused or failed run from its last committed cursor."""

    name = _progress(run_id).name
    if name not in CHUNKED_RUNS:
        raise click.ClickException(f"run {run_id} is a {name!r} run, which this release lacks")
    with acting_operator() as operator:
        changed = operator.resume_run(run_id, CHUNKED_RUNS[name])
    _report(run_id, "resumed", changed, as_json)


@runs.command("cancel")
@click.argument("run_id", type=int)
@JSON_OPTION
def runs_cancel(run_id: int, as_json: bool) -> None:
    """Cancel a run: no further chunk runs."""

    with acting_operator() as operator:
        changed = operator.cancel_run(run_id)
    _report(run_id, "cancelled", changed, as_json)


def _report(run_id: int, done: str, changed: bool, as_json: bool) -> None:
    """Say the run is now ``done`` (``paused``, ...); a run that was not changed is an error."""
    if not changed:
        raise click.ClickException(f"run {run_id} was not {done}: it is {_progress(run_id).status}")
    if as_json:
        print_json({"run_id": run_id, "status": done})
    else:
        click.echo(f"run {run_id} {done}")
