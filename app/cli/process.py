"""``fintask process TYPE -- COMMAND``: the environment of one Procfile process, then ``exec``.

Every Procfile line starts through it, so it imports only the settings: a process starts as
fast as its own command does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import MutableMapping

import click

from app.settings import WORKER_PROCESS_TYPES, Settings, load_settings


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("process_type")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def process(process_type: str, command: tuple[str, ...]) -> None:
    """Prepare the environment of one Procfile process type, then exec COMMAND."""
    settings = load_settings()
    prepare_process_environment(process_type, settings, os.environ)
    exec_command(list(command))


def prepare_process_environment(
    process_type: str, settings: Settings, environ: MutableMapping[str, str]
) -> None:
    """Set up ``environ`` for one Procfile process before its command is exec'd.

    Each worker process type gets its own Prometheus port and multiprocess directory, and the
    directory is cleared: Dramatiq never clears it, and stale files of dead pids would
    otherwise be summed into the new process's metrics.
    """
    environ["FINTASK_PROCESS_TYPE"] = process_type
    if process_type == "scheduler":
        # periodiq reads cron specs in the process's local time; the schedule is written in UTC.
        environ["TZ"] = "UTC"
    if process_type in WORKER_PROCESS_TYPES:
        metrics_dir = settings.metrics_dir(process_type)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        environ["dramatiq_prom_db"] = str(metrics_dir)
        # fintask's own counters (app.metrics) write to the same files Dramatiq's server reads.
        environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        environ["dramatiq_prom_port"] = str(settings.metrics_ports[process_type])
        environ["dramatiq_prom_host"] = settings.metrics_host


def exec_command(command: list[str]) -> None:
    """Replace this process with ``command``, so signals reach it directly."""
    os.execvp(command[0], command)
