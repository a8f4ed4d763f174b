"""Real fintask processes started by a test, and stopped by pid when it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from app.settings import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent


def fintask_env(**overrides: str) -> dict[str, str]:
    """The test's environment for a child: the venv first on PATH, no stub broker."""
    env = {k: v for k, v in os.environ.items() if k != "BROKER_URL"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(overrides)
    return env


@contextmanager
def running(
    command: list[str], env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own session; on exit SIGTERM it, then SIGKILL its session."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def run_to_exit(command: list[str], timeout_s: float = 90.0, **env: str) -> tuple[int, str]:
    """Run ``command`` until it exits on its own; its status and its output, stderr included.

    For a process that must stop by itself (a bad setting, an outage line): one still running
    after ``timeout_s`` is killed with its session, and the test fails showing its output.
    """
    process = subprocess.Popen(
        command,
        env=fintask_env(**env),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(
            f"{command[0]} was still running after {timeout_s:.0f} s:\n{output}"
        ) from None
    return process.returncode, output


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM ``process``; SIGKILL its whole session if it outlives ``timeout_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def dramatiq_worker(
    *queues: str,
    processes: int = 1,
    threads: int = 2,
    extra: tuple[str, ...] = (),
    modules: tuple[str, ...] = ("actors",),
) -> list[str]:
    """The command line of a real ``dramatiq`` worker over fintask's actors (or ``modules``')."""
    command = [
        str(VENV_BIN / "dramatiq"),
        "app.broker:setup_broker",
        *modules,
        "--processes",
        str(processes),
    ]
    command += ["--threads", str(threads), "--worker-shutdown-timeout", "5000", *extra]
    return command + (["--queues", *queues] if queues else [])


def wait_until(
    condition: Callable[[], object], *, timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
