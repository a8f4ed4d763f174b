"""The memory limit: checked after each message, acted on once, and safe against the repeated
signals of a restart. (The restart by a real dramatiq master is an integration test.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from app.middleware.memory_limit import MemoryLimit
from app.settings import PROJECT_ROOT

MB = 1024 * 1024


@contextmanager
def working(broker: StubBroker) -> Iterator[Worker]:
    worker = Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def test_crossing_the_limit_acts_once_however_many_messages_follow():
    # Given a limit 120 MiB above what this process holds now (a margin for what the other
    # threads of a shared test process allocate meanwhile)
    exceeded: list[int] = []
    limit = MemoryLimit(max_memory_mb=0, on_exceeded=exceeded.append)
    limit.max_memory_mb = limit.rss_bytes() // MB + 120
    broker = StubBroker(middleware=[limit])
    kept: list[bytes] = []

    @dramatiq.actor(broker=broker)
    def grow(**kwargs: Any) -> None:
        kept.append(b"\x01" * 8 * MB)

    # When messages grow it by 240 MiB
    for _ in range(30):
        grow.send()
    with working(broker):
        broker.join(grow.queue_name)
    kept.clear()

    # Then the replacement was asked for exactly once, over the limit
    assert len(exceeded) == 1
    assert exceeded[0] > limit.max_memory_mb * MB


def test_over_the_limit_a_cli_child_pauses_its_threads_and_signals_its_master_once(monkeypatch):
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: signals.append((pid, signum)))
    limit = MemoryLimit(max_memory_mb=1_048_576)
    broker = StubBroker(middleware=[limit])
    limit.master_pid = 4242  # as after_process_boot records it in a dramatiq CLI child

    with working(broker) as worker:
        limit.max_memory_mb = 1
        limit.check()
        limit.check()
        assert all(thread.paused for thread in worker.workers)

    assert signals == [(4242, signal.SIGHUP)]


def test_a_limit_below_the_boot_size_is_reported_and_never_acted_on(caplog):
    exceeded: list[int] = []
    limit = MemoryLimit(max_memory_mb=1, on_exceeded=exceeded.append)
    broker = StubBroker(middleware=[limit])

    with working(broker):
        limit.check()

    assert exceeded == []
    assert "replacing it cannot help" in caplog.text


def test_outside_the_dramatiq_cli_nothing_is_signalled(monkeypatch, caplog):
    monkeypatch.setattr(os, "kill", lambda *args: pytest.fail("signalled a process"))
    limit = MemoryLimit(max_memory_mb=1)

    limit.check()

    assert "nothing will replace it" in caplog.text


#: Run in a fresh interpreter: forking pytest itself, with its threads, risks a deadlocked child.
CHILD = """
import multiprocessing, os, signal, time
from dramatiq.brokers.stub import StubBroker
from app.middleware import memory_limit
from app.middleware.memory_limit import MemoryLimit

memory_limit._SIGTERM_BURST_S = 1.0  # a loaded machine can pause a process for 0.2 s
from app.settings import PROJECT_ROOT

def child(report):
    received = []  # what dramatiq's own handler sees, behind the wrapper
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    MemoryLimit(max_memory_mb=100).after_process_boot(StubBroker(middleware=[]))
    for signum in (signal.SIGHUP, signal.SIGHUP, signal.SIGTERM, signal.SIGTERM):
        os.kill(os.getpid(), signum)
    time.sleep(1.5)  # past the burst: the operator insists
    os.kill(os.getpid(), signal.SIGTERM)
    report.put(received)

if __name__ == "__main__":
    context = multiprocessing.get_context("fork")
    report = context.Queue()
    process = context.Process(target=child, args=(report,), daemon=True)
    process.start()
    print(" ".join(signal.Signals(s).name for s in report.get(timeout=20)))
    process.join(20)
"""


def test_in_a_cli_child_a_restart_absorbs_repeated_hups_and_a_burst_of_terms():
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )

    # Dramatiq's handler sees the SIGHUP that starts the graceful stop, then only the late SIGTERM
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SIGHUP", "SIGTERM"]
