"""One worker set-up of one system: its knobs, its command lines, its environment, and the
delivery guarantee it gives."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.blob_crypto import new_key_entry
from app.local.ports import free_port
from app.settings import PROJECT_ROOT
from bench.work import CONCURRENCY_VARIABLE, REDIS_VARIABLE

VENV_BIN = Path(sys.executable).parent
#: arq's own locked project (redis-py 5, which fintask's venv cannot hold beside redis 8).
ARQ_PROJECT = PROJECT_ROOT / "bench" / "peers" / "arq"
ARQ_BIN = ARQ_PROJECT / ".venv" / "bin"
#: arq's interpreter: its producers run in its own venv too.
ARQ_PYTHON = ARQ_BIN / "python"

#: Environment variable naming the system a worker module builds its broker for.
SYSTEM_VARIABLE = "BENCH_SYSTEM"
#: The ``amqp://`` URL of a RabbitMQ node given to the benchmark (its own: queues are purged):
#: with it, the ``fintask-rabbitmq`` kind (``BROKER_URL``) joins the scenarios.
RABBITMQ_VARIABLE = "BENCH_RABBITMQ_URL"
#: Set for RQ's forking worker: a run counts for the worker that forked its work horse.
RQ_FORK_VARIABLE = "BENCH_RQ_FORK"

#: The Dramatiq kinds, as (broker, middleware): fintask's wake-up broker or Dramatiq's
#: ``RedisBroker``, with fintask's full stack or Dramatiq's default middleware. The two mixed
#: kinds exist for the middleware tax, which separates the consumer from the stack;
#: ``fintask-rabbitmq`` is fintask on RabbitMQ (``app.rabbitmq``), Redis for the rest.
DRAMATIQ_KINDS: dict[str, tuple[str, str]] = {
    "fintask": ("wakeup", "fintask"),
    "fintask-rabbitmq": ("rabbitmq", "fintask"),
    "dramatiq": ("redis", "dramatiq"),
    "wakeup-dramatiq": ("wakeup", "dramatiq"),
    "redis-fintask": ("redis", "fintask"),
}
PEER_KINDS = ("celery", "taskiq", "huey", "arq", "rq")

#: What each system does with a message whose worker dies mid-task.
GUARANTEES = {
    "dramatiq": "acks after the task; a dead worker's unacked messages are requeued",
    "celery": "acks_late: acks after the task; a dead worker's unacked messages come back "
    "after the visibility timeout",
    "taskiq": "RedisStreamBroker, acks after the task (--ack-type when_saved); a dead "
    "worker's unacked messages are reclaimed after idle_timeout (10 min)",
    "huey": "no ack: BRPOP takes the message off the queue before it runs (at most once)",
    "arq": "the job stays queued until it finishes (an in-progress key guards it); a dead "
    "worker's job runs again once that key expires",
    "rq": "the job leaves the queue when it starts (kept in the started registry); a dead "
    "worker's job is marked failed (AbandonedJobError), not run again",
}


@dataclass(frozen=True)
class System:
    """One worker set-up of one system (``kind``: a key of :data:`DRAMATIQ_KINDS`, or one of
    :data:`PEER_KINDS`).

    What the knobs mean per kind:

    - Dramatiq kinds: ``processes`` x ``threads``, ``prefetch`` unacked messages per process
      (None: Dramatiq's default, 2 x threads).
    - Celery: ``pool="prefork"`` runs one worker of ``processes`` children; ``"threads"`` runs
      ``processes`` workers of ``threads`` threads; ``"solo"`` runs ``processes`` solo
      workers. ``prefetch_multiplier`` is Celery's.
    - taskiq: ``processes`` worker processes (``--workers``), each running up to ``threads``
      tasks at once (``--max-async-tasks``), ``prefetch`` messages read ahead
      (``--max-prefetch``; None: taskiq's default).
    - Huey: ``processes`` workers (``-w``) of ``pool`` type ``"process"`` or ``"thread"``.
    - arq: ``processes`` worker processes, each running up to ``threads`` jobs (``max_jobs``).
    - RQ: ``processes`` workers in one ``rq worker-pool``; ``pool="simple"`` runs each job in
      its worker (``SimpleWorker``), ``"fork"`` forks a work horse per job (``Worker``).
    """

    name: str
    kind: str
    processes: int
    threads: int = 8
    prefetch: int | None = None
    pool: str = "prefork"
    prefetch_multiplier: int = 4

    def __post_init__(self) -> None:
        if self.kind not in DRAMATIQ_KINDS and self.kind not in PEER_KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def dramatiq(self) -> bool:
        """Whether this is one of the Dramatiq kinds (fintask, bare Dramatiq, the mixes)."""
        return self.kind in DRAMATIQ_KINDS

    def setting(self) -> str:
        """The tuned knobs, short, as a results table names a system's best setting."""
        if self.dramatiq:
            prefetch = self.prefetch or 2 * self.threads
            default = "" if self.prefetch else " (default)"
            return f"{self.processes} x {self.threads} threads, prefetch {prefetch}{default}"
        if self.kind == "celery":
            shape = {
                "prefork": f"prefork -c {self.processes}",
                "threads": f"{self.processes} workers x threads -c {self.threads}",
                "solo": f"{self.processes} solo workers",
            }[self.pool]
            return f"{shape}, prefetch multiplier {self.prefetch_multiplier}"
        if self.kind == "taskiq":
            read_ahead = f", prefetch {self.prefetch}" if self.prefetch else ""
            return f"{self.processes} workers x {self.threads} async tasks{read_ahead}"
        if self.kind == "huey":
            return f"{self.processes} {'processes' if self.pool == 'process' else 'threads'}"
        if self.kind == "arq":
            return f"{self.processes} workers x max_jobs {self.threads}"
        worker = "SimpleWorker" if self.pool == "simple" else "forking Worker"
        return f"worker-pool -n {self.processes}, {worker}"

    def guarantee(self) -> str:
        """What happens to a message whose worker dies while running it."""
        return GUARANTEES["dramatiq" if self.dramatiq else self.kind]

    def describe(self) -> str:
        """The set-up and its delivery guarantee, as a reader of a results table needs them."""
        return f"{self.setting()}; {self.guarantee()}"

    @property
    def consumers(self) -> int:
        """How many processes run tasks, each answering a readiness probe with its pid
        (Celery's prefork master fetches for its children: one; Huey's threads: one)."""
        if (self.kind, self.pool) in (("celery", "prefork"), ("huey", "thread")):
            return 1
        return self.processes

    @property
    def python(self) -> str:
        """The interpreter of this system's own processes (arq's: its own venv's)."""
        return str(ARQ_PYTHON) if self.kind == "arq" else sys.executable

    @property
    def slots(self) -> int:
        """How many tasks the set-up runs at once: processes x threads where a process runs
        threads or coroutines (Dramatiq kinds, Celery's threads pool, taskiq's async tasks,
        arq's ``max_jobs``); one per process where each runs one task (Celery's prefork
        children and solo workers, Huey's workers of either type, RQ's workers)."""
        threaded = self.dramatiq or self.kind in ("taskiq", "arq")
        if threaded or (self.kind, self.pool) == ("celery", "threads"):
            return self.processes * self.threads
        return self.processes

    def commands(self, module: str, queues: Sequence[str]) -> list[list[str]]:
        """The command lines that start this system's workers for ``module``'s tasks.

        taskiq, Huey and arq name their queue in the worker module (``BENCH_QUEUE``), not on the
        command line.
        """
        if self.dramatiq:
            return [
                [
                    str(VENV_BIN / "dramatiq"), module, "--queues", *queues,
                    "--processes", str(self.processes), "--threads", str(self.threads),
                    "--worker-shutdown-timeout", "10000",
                ]
            ]  # fmt: skip
        return getattr(self, f"_{self.kind}_commands")(module, queues)

    def _celery_commands(self, module: str, queues: Sequence[str]) -> list[list[str]]:
        base = [
            str(VENV_BIN / "celery"), "-A", module, "worker", "-Q", ",".join(queues),
            "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--prefetch-multiplier", str(self.prefetch_multiplier),
        ]  # fmt: skip
        if self.pool == "prefork":
            return [[*base, "-P", "prefork", "-c", str(self.processes)]]
        concurrency = str(self.threads if self.pool == "threads" else 1)
        return [
            [*base, "-P", self.pool, "-c", concurrency, "-n", f"bench{i}@%h"]
            for i in range(self.processes)
        ]

    def _taskiq_commands(self, module: str, queues: Sequence[str]) -> list[list[str]]:
        command = [
            str(VENV_BIN / "taskiq"), "worker", f"{module}:broker",
            "--workers", str(self.processes), "--max-async-tasks", str(self.threads),
            "--log-level", "WARNING", "--ack-type", "when_saved",
        ]  # fmt: skip
        if self.prefetch:
            command += ["--max-prefetch", str(self.prefetch)]
        return [command]

    def _huey_commands(self, module: str, queues: Sequence[str]) -> list[list[str]]:
        return [
            [
                str(VENV_BIN / "huey_consumer"), f"{module}.huey",
                "-w", str(self.processes), "-k", self.pool, "-q",
            ]
        ]  # fmt: skip

    def _arq_commands(self, module: str, queues: Sequence[str]) -> list[list[str]]:
        command = [
            str(ARQ_BIN / "arq"), f"{module}.WorkerSettings",
            "--custom-log-dict", f"{module}.LOG_CONFIG",
        ]  # fmt: skip
        return [command for _ in range(self.processes)]

    def _rq_commands(self, module: str, queues: Sequence[str]) -> list[list[str]]:
        worker = "rq.worker.SimpleWorker" if self.pool == "simple" else "rq.worker.Worker"
        return [
            [
                str(VENV_BIN / "rq"), "worker-pool", "-n", str(self.processes),
                "-w", worker, "-l", "WARNING", *queues,
            ]
        ]  # fmt: skip

    def env(
        self, redis_url: str, scratch: Path, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The workers' environment: the system, Redis, and fintask's worker settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("dramatiq_")}
        env.pop("SENTRY_DSN", None)
        env.pop("VIRTUAL_ENV", None)
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
            RQ_REDIS_URL=redis_url,
        )
        # A fintask worker does not start without blob keys; a benchmark keeps no blobs.
        env.setdefault("BLOB_KEYS", new_key_entry("bench"))
        env[CONCURRENCY_VARIABLE] = str(self.threads)
        if self.prefetch and self.dramatiq:
            env["dramatiq_queue_prefetch"] = str(self.prefetch)
        if self.kind == "rq" and self.pool == "fork":
            env[RQ_FORK_VARIABLE] = "1"
        if DRAMATIQ_KINDS.get(self.kind, ("", ""))[0] == "rabbitmq":
            env["BROKER_URL"] = os.environ[RABBITMQ_VARIABLE]
        env.update(extra or {})
        return env
