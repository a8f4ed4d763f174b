"""The ``fintask`` command: run the processes, migrate, seed, and start work from a shell.

Each subcommand lives in a module of this package that is imported only when the subcommand
runs: importing them all (actors, pipelines, SQLAlchemy, FastAPI) takes about 4.5 s on 2 cores,
and ``fintask process``, which starts every Procfile process, would pay it at each start.
"""

from __future__ import annotations

import importlib

import click

from app.settings import exit_on_settings_error

#: Every subcommand: the module that defines it and its one-line help (the command's own
#: docstring's first line, which a test keeps in step), so ``--help`` imports none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "accounts": ("app.cli.work", "Provider accounts: link them."),
    "audit": (
        "app.cli.tokens",
        "What operators did, newest first: who, which action, on what, how many messages.",
    ),
    "batches": ("app.cli.batches", "Batches: progress with rate and ETA, failed members, cancel."),
    "bridge": (
        "app.cli.bridge",
        "Bridges from Celery: tasks its producers publish run on fintask actors.",
    ),
    "demo": (
        "app.cli.local",
        "Run the showcase: private Redis, SQLite, the real processes, the workloads, a summary.",
    ),
    "dlq": ("app.cli.inspect", "Dead letters: messages that ran out of retries."),
    "jobs": (
        "app.cli.inspect",
        "Asynchronous API jobs, most recently updated first, and how many are in each status.",
    ),
    "keys": (
        "app.cli.keys",
        "Raw-blob encryption keys (BLOB_KEYS): re-encrypt every blob under the current one.",
    ),
    "limits": (
        "app.cli.control",
        "Rate limits: declared, overridden at runtime, and in force; set or clear an override.",
    ),
    "messages": (
        "app.cli.control",
        "Messages in the queues: list by state, show one, cancel, requeue, delete, run now.",
    ),
    "migrate": ("app.cli.database", "Apply database migrations (the Procfile's ``release`` step)."),
    "notify": (
        "app.cli.work",
        "Notify a user; sending happens in a worker, after the row is committed.",
    ),
    "outbox": (
        "app.cli.outbox",
        "Outbox messages that could not be sent and why, and how many still wait to be sent.",
    ),
    "ping": ("app.cli.work", "Send a ping through the queue and wait for a worker to answer it."),
    "process": (
        "app.cli.process",
        "Prepare the environment of one Procfile process type, then exec COMMAND.",
    ),
    "queues": (
        "app.cli.inspect",
        "Messages per queue (ready, delayed, dead), the oldest one's age, and live consumers.",
    ),
    "reports": ("app.cli.runs", "The weekly report to every active user."),
    "workers": (
        "app.cli.control",
        "Worker processes: alive, stopped, or gone with what they left for recovery.",
    ),
    "run": (
        "app.cli.local",
        "Run Procfile process types (default: web, workers, scheduler) with a private Redis.",
    ),
    "runs": ("app.cli.runs", "List chunked runs with their progress (newest first); or steer one."),
    "schedule": (
        "app.cli.schedule",
        "Show the periodic schedule: each job's cron spec (UTC), next run, catch-up, last tick.",
    ),
    "seed": (
        "app.cli.database",
        "Create users (and their linked accounts) up to ``--users``, in bulk.",
    ),
    "sinks": (
        "app.cli.local",
        "Local SMTP and HTTP sinks that record what fintask sends (demo and tests).",
    ),
    "tokens": ("app.cli.tokens", "API tokens: create, list and revoke who may call the HTTP API."),
}


class FintaskGroup(click.Group):
    """Loads a subcommand's module when it runs; a bad setting ends it in one line (status 4),
    Redis or the database not answering in one line (status 1, ``app.cli.outages``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        command: click.Command = getattr(importlib.import_module(COMMANDS[cmd_name][0]), cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in sorted(COMMANDS.items())])

    def invoke(self, ctx: click.Context) -> object:
        try:
            return exit_on_settings_error(super().invoke)(ctx)
        except Exception as error:
            # Imported only once a command failed: ``--help`` stays fast.
            from app.cli.outages import outage_line

            line = outage_line(error)
            if line is None:
                raise
            raise click.ClickException(line) from None


@click.group(cls=FintaskGroup)
@click.version_option(package_name="fintask", message="fintask %(version)s")
def main() -> None:
    """fintask: a personal-finance service's background work on Dramatiq and Redis."""
