"""The systems every scenario compares, and how to run their workers and producers.

- ``fintask``: fintask's broker as ``app.broker`` builds it for a worker process: the wake-up
  consumer and the full middleware stack (guardrails, unique enqueue, Dramatiq's defaults,
  Prometheus, rate limits, mutex, message metrics, soft time limits).
- ``dramatiq``: Dramatiq's own ``RedisBroker`` with its default middleware, nothing else.
- ``celery``: Celery on the Redis transport, configured fairly (JSON, no result backend,
  ``acks_late`` as Dramatiq acknowledges after the run, prefetch multiplier stated).

Workers run as the real command lines (``dramatiq ...``, ``celery ... worker``) against the
benchmark's private Redis, in their own process group, and are stopped by pid.
A worker module (``bench/apps/*``) calls :func:`worker_broker` or :func:`celery_app` and
declares its tasks; the harness starts it with :func:`workers`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import psutil
import redis
from celery import Celery
from dramatiq import Broker, Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware

from app.local.ports import free_port
from app.settings import PROJECT_ROOT
from chunking.bulk import enqueue_many
from chunking.depth import RedisQueueDepth

VENV_BIN = Path(sys.executable).parent

#: Environment variable naming the system a worker module builds its broker for.
SYSTEM_VARIABLE = "BENCH_SYSTEM"
#: Environment variable carrying the benchmark Redis URL to worker modules.
REDIS_VARIABLE = "BENCH_REDIS_URL"


@dataclass(frozen=True)
class System:
    """One worker set-up of one system (``kind``: ``fintask``, ``dramatiq`` or ``celery``).

    For Dramatiq kinds, ``processes`` x ``threads`` with ``prefetch`` unacked messages per
    process (None: Dramatiq's default, 2 x threads). For Celery, ``pool="prefork"`` runs one
    worker with ``processes`` children; ``pool="threads"`` runs ``processes`` workers of
    ``threads`` threads each, the same shape as Dramatiq's.
    """

    name: str
    kind: str
    processes: int
    threads: int = 8
    prefetch: int | None = None
    pool: str = "prefork"
    prefetch_multiplier: int = 4

    def describe(self) -> str:
        """The set-up, as a reader of a results table needs it."""
        if self.kind == "celery":
            shape = (
                f"prefork -c {self.processes}"
                if self.pool == "prefork"
                else f"{self.processes} workers x threads -c {self.threads}"
            )
            return f"Celery {shape}, prefetch multiplier {self.prefetch_multiplier}, acks_late"
        prefetch = self.prefetch or 2 * self.threads
        default = "" if self.prefetch else " (default)"
        return f"{self.processes} x {self.threads} threads, prefetch {prefetch}{default}"

    @property
    def consumers(self) -> int:
        """How many processes fetch from Redis (Celery's prefork children do not)."""
        if self.kind == "celery" and self.pool == "prefork":
            return 1
        return self.processes

    def commands(self, module: str, queues: Sequence[str]) -> list[list[str]]:
        """The command lines that start this system's workers for ``module``'s tasks."""
        if self.kind == "celery":
            base = [
                str(VENV_BIN / "celery"), "-A", module, "worker", "-Q", ",".join(queues),
                "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--prefetch-multiplier", str(self.prefetch_multiplier),
            ]  # fmt: skip
            if self.pool == "prefork":
                return [[*base, "-P", "prefork", "-c", str(self.processes)]]
            return [
                [*base, "-P", "threads", "-c", str(self.threads), "-n", f"bench{i}@%h"]
                for i in range(self.processes)
            ]
        return [
            [
                str(VENV_BIN / "dramatiq"), module, "--queues", *queues,
                "--processes", str(self.processes), "--threads", str(self.threads),
                "--worker-shutdown-timeout", "10000",
            ]
        ]  # fmt: skip

    def env(
        self, redis_url: str, scratch: Path, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The workers' environment: the system, Redis, and fintask's worker settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("dramatiq_")}
        env.pop("SENTRY_DSN", None)
        env.update(
            {SYSTEM_VARIABLE: self.kind, REDIS_VARIABLE: redis_url},
            PYTHONPATH=str(PROJECT_ROOT),
            # fintask's settings, as `fintask process worker` would set them.
            REDIS_URL=redis_url,
            FINTASK_PROCESS_TYPE="worker",
            FINTASK_VAR_DIR=str(scratch),
            dramatiq_prom_db=str(scratch / "prometheus"),
            PROMETHEUS_MULTIPROC_DIR=str(scratch / "prometheus"),
            dramatiq_prom_port=str(free_port()),
            dramatiq_prom_host="127.0.0.1",
        )
        if self.prefetch:
            env["dramatiq_queue_prefetch"] = str(self.prefetch)
        env.update(extra or {})
        return env


@dataclass
class Workers:
    """Running worker processes; ``peak_rss_mb`` is sampled until they stop."""

    processes: list[subprocess.Popen[bytes]]
    peak_rss_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss_mb(self) -> float:
        """The resident memory of every worker process and its children now, in MiB."""
        total = 0
        for process in self.processes:
            with suppress(psutil.Error):
                parent = psutil.Process(process.pid)
                for member in (parent, *parent.children(recursive=True)):
                    with suppress(psutil.Error):
                        total += member.memory_info().rss
        return total / 2**20

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
            self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())


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
    with tempfile.TemporaryDirectory(prefix="fintask-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "prometheus").mkdir()
        env = system.env(redis_url, scratch, extra_env)
        with log_path.open("ab") as log:
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
                    for command in system.commands(module, queues)
                ]
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


def worker_broker() -> Broker:
    """The broker of a Dramatiq-kind worker module, for the system named in the environment."""
    kind = os.environ[SYSTEM_VARIABLE]
    if kind == "fintask":
        from app.broker import setup_broker

        return setup_broker()
    broker = RedisBroker(
        url=os.environ[REDIS_VARIABLE], middleware=[m() for m in default_middleware]
    )
    dramatiq.set_broker(broker)
    return broker


def producer_broker(kind: str, redis_url: str) -> Broker:
    """A broker for the harness to send through, as an application process of ``kind`` would.

    Messages are enqueued with ``broker.enqueue`` (no actor needs declaring here); fintask's
    gets its full enqueue-side stack, so guardrails and metrics cost what they cost in the app.
    """
    if kind == "fintask":
        from app.broker import build_broker
        from app.settings import load_settings

        return build_broker(load_settings({**os.environ, "REDIS_URL": redis_url}))
    return RedisBroker(url=redis_url, middleware=[m() for m in default_middleware])


class Producer:
    """Sends as an application of ``kind`` does: Celery's ``send_task`` (what ``apply_async``
    publishes), or ``broker.enqueue`` through the kind's broker (fintask's with its full
    enqueue-side stack). Task names are the same in every system's worker module."""

    def __init__(self, kind: str, redis_url: str, **celery_conf: Any) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.app = (
            celery_app("bench_producer", redis_url, **celery_conf) if kind == "celery" else None
        )
        self.broker = None if self.app else producer_broker(kind, redis_url)

    def send(
        self, queue: str, task: str, args: tuple[Any, ...] = (), *, delay_s: float | None = None
    ) -> None:
        """One message, delayed by ``delay_s`` when given (Celery's ``countdown``)."""
        if self.app is not None:
            self.app.send_task(task, args=args, queue=queue, countdown=delay_s)
            return
        assert self.broker is not None
        delay_ms = None if delay_s is None else round(delay_s * 1000)
        self.broker.enqueue(Message(queue, task, args, {}, {}), delay=delay_ms)

    def send_batched(self, queue: str, task: str, arguments: Iterable[tuple[Any, ...]]) -> None:
        """One message per argument tuple, as fast as the system can: fintask's
        ``chunking.enqueue_many`` (Dramatiq's dispatch script, pipelined) for Dramatiq kinds,
        kombu's ``Producer.batch`` (pipelined publishes) for Celery."""
        if self.app is not None:
            with self.app.producer_or_acquire() as producer, producer.batch():
                for args in arguments:
                    self.app.send_task(task, args=args, queue=queue, producer=producer)
            return
        assert self.broker is not None
        enqueue_many(self.broker, (Message(queue, task, args, {}, {}) for args in arguments))

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
        if self.broker is not None:
            self.broker.close()


def celery_app(name: str, redis_url: str | None = None, **conf: Any) -> Celery:
    """A Celery app on the benchmark's Redis, configured fairly; ``conf`` adds to it."""
    url = redis_url or os.environ[REDIS_VARIABLE]
    app = Celery(name, broker=url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.update(conf)
    return app


def wait_until_count(
    read: Callable[[], int], count: int, *, timeout_s: float, interval_s: float = 0.05
) -> int:
    """Poll ``read()`` until it reaches ``count`` or ``timeout_s`` passes; return the last value."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while value < count and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = read()
    return int(value)


def queue_depth(client: redis.Redis, kind: str, queue: str) -> int:
    """Messages waiting in ``queue`` of a system of ``kind``, prefetched ones not counted.

    Dramatiq: the ready list plus the delay list (``chunking``'s own depth probe). Celery's
    Redis transport keeps one list per queue (and priority steps as ``queue\\x06\\x16N``).
    """
    if kind != "celery":
        return RedisQueueDepth(client=client)(queue)
    pipeline = client.pipeline(transaction=False)
    for key in (queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))):
        pipeline.llen(key)
    return sum(int(count) for count in pipeline.execute())
