"""Real worker processes started the way the Procfile starts them, and what Redis says they did.

``worker_process`` is ``fintask process worker -- dramatiq app.broker:setup_broker actors ...``:
the production middleware stack of the ``worker`` process type (recovery included), the
production heartbeat timeout and maintenance chance, over the ``work`` actor of
``tests.support.reliability_actors`` only.
"""

from __future__ import annotations

from pathlib import Path

import redis
from dramatiq import Message

from app.local.ports import free_port
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import VENV_BIN, fintask_env
from tests.support.reliability_actors import DONE_KEY, QUEUE, RUNS_KEY


def worker_process(
    *,
    threads: int,
    modules: tuple[str, ...] = ("actors", "tests.support.reliability_actors"),
    queue: str = QUEUE,
) -> list[str]:
    """The command line of one worker process of the ``worker`` type, running ``modules``'
    actors of ``queue`` (by default the reliability queue's ``work``)."""
    return [
        str(VENV_BIN / "fintask"),
        "process",
        "worker",
        "--",
        str(VENV_BIN / "dramatiq"),
        "app.broker:setup_broker",
        *modules,
        "--processes",
        "1",
        "--threads",
        str(threads),
        "--queues",
        queue,
        "--worker-shutdown-timeout",
        "5000",
    ]


def worker_env(redis_url: str, var_dir: Path, *, prefetch: int) -> dict[str, str]:
    """A worker's environment: its own var directory and metrics port, the given prefetch."""
    return fintask_env(
        REDIS_URL=redis_url,
        FINTASK_VAR_DIR=str(var_dir),
        METRICS_PORT_WORKER=str(free_port()),
        METRICS_HOST="127.0.0.1",
        dramatiq_queue_prefetch=str(prefetch),
    )


def send_work(
    producer: WakeupRedisBroker, *, hold_first_run: bool = False, delay_ms: int | None = None
) -> str:
    """Enqueue one ``work`` message; return its id."""
    message = Message(QUEUE, "work", (), {"hold_first_run": hold_first_run}, {})
    return producer.enqueue(message, delay=delay_ms).message_id


def counts(client: redis.Redis, key: str) -> dict[str, int]:
    """A hash of counters by message id."""
    return {k.decode(): int(v) for k, v in client.hgetall(key).items()}


def runs(client: redis.Redis) -> dict[str, int]:
    """How many times each message started."""
    return counts(client, RUNS_KEY)


def done(client: redis.Redis) -> dict[str, int]:
    """How many times each message ran to the end."""
    return counts(client, DONE_KEY)


def unacked(client: redis.Redis, queue_name: str) -> int:
    """Messages of ``queue_name`` (or ``q.DQ``) fetched by some worker and not acked."""
    return sum(
        int(client.scard(key)) for key in client.scan_iter(f"dramatiq:__acks__.*.{queue_name}")
    )


def consumers(client: redis.Redis) -> int:
    """Worker processes that registered as consumers (``ConsumerRegistry``)."""
    return int(client.hlen("fintask:consumers"))
