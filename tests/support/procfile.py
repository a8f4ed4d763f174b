"""Processes started exactly as the Procfile's lines start them, and which of them is which.

``procfile_command("worker")`` is the Procfile's ``worker`` line word for word (``env
dramatiq_queue_prefetch=16 fintask process worker -- dramatiq app.broker:setup_broker actors
--processes 2 --threads 8 ...``): the production prefetch, processes, threads, shutdown timeout
and middleware stack. A test gives it only what a platform gives each dyno: the URLs of its
servers, its var directory and its ports (``procfile_env``); never heartbeat or maintenance
settings (``TUNING`` is refused).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import redis

from app.local.ports import free_port
from app.local.supervisor import procfile_commands
from app.middleware.metrics import CONSUMERS_KEY
from tests.support.processes import fintask_env

#: Settings a fault test must leave at their production defaults.
TUNING = ("HEARTBEAT_TIMEOUT_MS", "BROKER_MAINTENANCE_CHANCE", "NOTIFICATION_CLAIM_TIMEOUT_MS")


def procfile_command(process_type: str, *extra: str) -> list[str]:
    """The Procfile's command for ``process_type``, split as a shell would; ``extra`` words
    appended (the scheduler's schedule module, say)."""
    return [*shlex.split(procfile_commands()[process_type]), *extra]


def procfile_worker(*modules: str) -> list[str]:
    """The Procfile's ``worker`` line with ``modules``' actors imported beside fintask's."""
    command = procfile_command("worker")
    after = command.index("actors") + 1
    return [*command[:after], *modules, *command[after:]]


def procfile_env(*, var_dir: Path, **urls: str) -> dict[str, str]:
    """A Procfile process's environment: the given URLs (``REDIS_URL=...``), its own var
    directory and worker metrics ports, the production settings for everything else."""
    env = fintask_env(
        FINTASK_VAR_DIR=str(var_dir),
        METRICS_PORT_WORKER=str(free_port()),
        METRICS_PORT_WORKER_URGENT=str(free_port()),
        METRICS_HOST="127.0.0.1",
        **urls,
    )
    tuned = [name for name in TUNING if name in env]
    if tuned:
        raise AssertionError(f"a fault test must not tune {', '.join(tuned)}")
    return env


def booted_processes(client: redis.Redis, worker: subprocess.Popen[bytes]) -> int:
    """How many of ``worker``'s Dramatiq processes have booted and registered as consumers.

    ``worker`` runs in a session of its own, so its processes are in its process group.
    """
    booted = 0
    for entry in client.hvals(CONSUMERS_KEY):
        try:
            if os.getpgid(int(json.loads(entry)["pid"])) == worker.pid:
                booted += 1
        except (ProcessLookupError, KeyError, ValueError):
            continue
    return booted


def worker_threads(command: list[str]) -> int:
    """How many worker threads a ``dramatiq`` command line runs: processes x threads."""

    def value(flag: str, default: int) -> int:
        return int(command[command.index(flag) + 1]) if flag in command else default

    return value("--processes", os.cpu_count() or 1) * value("--threads", 8)
