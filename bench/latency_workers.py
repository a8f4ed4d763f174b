"""The systems the latency benchmark compares: how to start their workers and send to them.

Each system runs its own worker processes (the ``dramatiq`` or ``celery`` command line, as in
production) against the benchmark's private Redis, and is fed by a producer in the harness.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from app.settings import PROJECT_ROOT
from app.wakeup_broker import WakeupRedisBroker
from bench.latency_record import QUEUE, STARTS_KEY

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class System:
    """One worker set-up: ``broker`` is ``wakeup`` (fintask), ``plain`` (Dramatiq) or ``celery``."""

    name: str
    broker: str
    processes: int
    threads: int = 1
    prefetch: int | None = None  # dramatiq_queue_prefetch; None: Dramatiq's 2 x threads

    def describe(self) -> str:
        """The set-up, as a reader of the results table needs it."""
        if self.broker == "celery":
            return f"Celery prefork -c {self.processes}, prefetch multiplier 4, acks_late"
        prefetch = self.prefetch or 2 * self.threads
        default = "" if self.prefetch else " (default)"
        return f"{self.processes} x {self.threads} threads, prefetch {prefetch}{default}"

    @property
    def consumers(self) -> int:
        """How many processes consume from Redis (Celery's pool children do not)."""
        return 1 if self.broker == "celery" else self.processes

    def command(self) -> list[str]:
        if self.broker == "celery":
            return [
                str(VENV_BIN / "celery"), "-A", "bench.latency_celery_app", "worker",
                "-P", "prefork", "-c", str(self.processes), "-Q", QUEUE, "-l", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
        return [
            str(VENV_BIN / "dramatiq"), "bench.latency_dramatiq_app", "--queues", QUEUE,
            "--processes", str(self.processes), "--threads", str(self.threads),
            "--worker-shutdown-timeout", "10000",
        ]  # fmt: skip

    def env(self, redis_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("dramatiq_")}
        env.update(
            BENCH_REDIS_URL=redis_url, BENCH_BROKER=self.broker, PYTHONPATH=str(PROJECT_ROOT)
        )
        if self.prefetch:
            env["dramatiq_queue_prefetch"] = str(self.prefetch)
        return env


class Producer(Protocol):
    def send(self, sent_at: float) -> None: ...

    def close(self) -> None: ...


class DramatiqProducer:
    """Sends like an application does: ``enqueue`` on fintask's or Dramatiq's broker."""

    def __init__(self, redis_url: str, *, wakeup: bool) -> None:
        broker_class = WakeupRedisBroker if wakeup else RedisBroker
        self.broker = broker_class(url=redis_url, middleware=[])

    def send(self, sent_at: float) -> None:
        self.broker.enqueue(Message(QUEUE, "noop", (sent_at,), {}, {}))

    def close(self) -> None:
        self.broker.client.close()


class CeleryProducer:
    """Sends with ``apply_async`` on the benchmark's Celery app."""

    def __init__(self, redis_url: str) -> None:
        os.environ["BENCH_REDIS_URL"] = redis_url
        from bench.latency_celery_app import app, noop

        self.app = app
        self.noop = noop

    def send(self, sent_at: float) -> None:
        self.noop.apply_async(args=(sent_at,))

    def close(self) -> None:
        """Nothing: the app's connection pool is shared by every producer of this run."""


def producer_for(system: System, redis_url: str) -> Producer:
    if system.broker == "celery":
        return CeleryProducer(redis_url)
    return DramatiqProducer(redis_url, wakeup=system.broker == "wakeup")


@contextmanager
def workers(system: System, redis_url: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The system's workers, running until the block ends; then SIGTERM, then SIGKILL."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            system.command(),
            env=system.env(redis_url),
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(30)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def await_ready(
    system: System, producer: Producer, client: redis.Redis, timeout_s: float = 90.0
) -> None:
    """Send probes until every consuming process has run one (each record carries its pid)."""
    client.delete(STARTS_KEY)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        producer.send(time.time())
        time.sleep(0.05)
        records: list[bytes] = client.lrange(STARTS_KEY, 0, -1)  # type: ignore[assignment]
        if len({record.split()[2] for record in records}) >= system.consumers:
            break
    else:
        raise RuntimeError(f"{system.name}: not every worker process answered in {timeout_s} s")
    time.sleep(1.0)  # the last probes drain
    client.delete(STARTS_KEY)
