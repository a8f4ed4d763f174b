"""``fintask run``, ``demo`` and ``sinks``: the whole of fintask on one machine."""

from __future__ import annotations

import json
import os
import sys

import click

from app.db.migrate import upgrade
from app.local.demo import run_demo, until_stopped
from app.local.run_file import RunFile, published
from app.local.showcases import DemoSummary
from app.local.sinks import serve_sinks
from app.local.supervisor import (
    DEFAULT_PROCESS_TYPES,
    embedded_redis,
    run_processes,
    runnable_process_types,
    shared_environment,
)
from app.settings import load_settings, running_stack


def _known_process_types(
    ctx: click.Context, param: click.Parameter, names: tuple[str, ...]
) -> tuple[str, ...]:
    """Refuse a process type the Procfile lacks while parsing, before anything is started."""
    known = runnable_process_types()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown process type {', '.join(map(repr, unknown))}; "
            f"the Procfile's are {', '.join(known)}"
        )
    return names


@click.command()
@click.argument("process_types", nargs=-1, callback=_known_process_types)
def run(process_types: tuple[str, ...]) -> None:
    """Run Procfile process types (default: web, workers, scheduler) with a private Redis.

    It prints the URLs it chose (Redis, web, each worker type's metrics) and keeps them in
    ``<var dir>/run.json`` while it runs, where other ``fintask`` commands find its Redis.
    """
    settings = load_settings()
    other = running_stack(settings.var_dir)
    if other is not None:
        # Two runs of one var dir would share its database, Redis data and metrics files.
        raise click.ClickException(
            f"fintask run (pid {other['pid']}) is already running from {settings.var_dir}: "
            "stop it first, or give this one another FINTASK_VAR_DIR"
        )
    names = list(process_types or DEFAULT_PROCESS_TYPES)
    env = shared_environment(settings, os.environ, names)
    with embedded_redis(settings, env):
        upgrade(settings.database_url)
        started = RunFile.of(names, env)
        with published(started, settings.var_dir) as path:
            click.echo(f"fintask run: pid {started.pid}; its URLs, also in {path}:")
            for line in started.lines():
                click.echo(f"  {line}")
            code = run_processes(names, env)
    sys.exit(code)


@click.command()
@click.option("--users", type=click.IntRange(min=1), default=2_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option(
    "--keep",
    is_flag=True,
    help="leave everything running after the summary (the console, the API) until Ctrl-C",
)
def demo(users: int, as_json: bool, keep: bool) -> None:
    """Run the showcase: private Redis, SQLite, the real processes, the workloads, a summary.

    The summary ends with the console's URL and an operator token to sign in with.
    """
    log = click.echo if not as_json else _stderr

    def show(summary: DemoSummary) -> None:
        click.echo(json.dumps(summary.as_dict(), indent=2) if as_json else summary.render())

    def explore(summary: DemoSummary) -> None:
        show(summary)
        log("\nEverything keeps running: press Ctrl-C to stop it.")
        until_stopped()
        log("Stopping...")

    summary = run_demo(load_settings(), users=users, log=log, keep=explore if keep else None)
    if keep:
        stopped = summary.as_dict()["processes"]["stopped_cleanly"]
        log("Stopped cleanly." if stopped else "Stopped (not every process exited cleanly).")
    else:
        show(summary)


def _stderr(line: str) -> None:
    click.echo(line, err=True)


@click.command()
@click.option("--smtp-port", type=click.IntRange(1, 65535), required=True)
@click.option("--http-port", type=click.IntRange(1, 65535), required=True)
@click.option("--smtp-delay-ms", type=click.IntRange(min=0), default=0, show_default=True)
def sinks(smtp_port: int, http_port: int, smtp_delay_ms: int) -> None:
    """Local SMTP and HTTP sinks that record what fintask sends (demo and tests)."""
    directory = load_settings().var_dir / "sinks"
    click.echo(f"sinks: SMTP on {smtp_port}, HTTP on {http_port}, writing to {directory}")
    serve_sinks(
        directory=directory,
        smtp_port=smtp_port,
        http_port=http_port,
        smtp_delay_s=smtp_delay_ms / 1000,
    )
