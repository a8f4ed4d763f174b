"""Running a system's workers: their real command lines in process groups of their own, their
memory (PSS) and CPU while they run, and a kill by pid at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from app.settings import PROJECT_ROOT
from bench.systems.peers import ensure_arq
from bench.systems.system import System


@dataclass
class Workers:
    """Running worker processes; ``peak_pss_mb`` is sampled until they stop.

    PSS (proportional set size) splits each shared page among the processes that map it, so
    forked children (Dramatiq's, Celery's prefork, Huey's, RQ's work horses) are not counted
    once per process for the pages they share with their parent, as RSS would.
    """

    processes: list[subprocess.Popen[bytes]]
    command_lines: list[list[str]]
    #: When the commands were started (``time.time()``), for rates and delays from the spawn.
    spawned_at: float = 0.0
    peak_pss_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def members(self) -> list[psutil.Process]:
        """Every live worker process and its descendants."""
        found = []
        for process in self.processes:
            with suppress(psutil.Error):
                parent = psutil.Process(process.pid)
                found += [parent, *parent.children(recursive=True)]
        return found

    def pss_mb(self) -> float:
        """The proportional memory of every worker process and its children now, in MiB."""
        total = 0
        for member in self.members():
            with suppress(psutil.Error):
                total += member.memory_full_info().pss
        return total / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU of every worker process and its children so far, those that
        ended and were reaped included (RQ's work horses, a recycled child): read it before
        the workers are killed."""
        total = 0.0
        for member in self.members():
            with suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        return total

    def kill(self) -> None:
        """Stop sampling and SIGKILL every worker command's process group.

        The benchmark measures no shutdown, and Redis is flushed before the next run, so a
        graceful stop (seconds per worker set, times every run) would only slow it down.
        """
        self._stop.set()
        for process in self.processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_pss_mb = max(self.peak_pss_mb, self.pss_mb())


@contextmanager
def workers(
    system: System,
    module: str,
    queues: Sequence[str],
    *,
    redis_url: str,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Workers]:
    """``system``'s workers for ``module``, running until the block ends, then killed."""
    if system.kind == "arq":
        ensure_arq()
    commands = system.commands(module, queues)
    with tempfile.TemporaryDirectory(prefix="fintask-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "prometheus").mkdir()
        env = system.env(redis_url, scratch, extra_env)
        with log_path.open("ab") as log:
            spawned_at = time.time()
            running = Workers(
                [
                    subprocess.Popen(
                        command,
                        env=env,
                        cwd=PROJECT_ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    for command in commands
                ],
                commands,
                spawned_at,
            )
        sampler = threading.Thread(target=running._sample, daemon=True)
        sampler.start()
        try:
            yield running
        finally:
            running.kill()
            sampler.join()
            for process in running.processes:
                process.wait()
