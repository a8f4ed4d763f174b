"""Real worker processes on RabbitMQ (``BROKER_URL=amqp://...``) and what they did, as Redis and
the ``fintask`` command tell it.

The workers are ``tests.support.recovery.worker_process``: ``fintask process worker --
dramatiq app.broker:setup_broker ...``, the ``worker`` process type's production stack and
settings, here over fintask's actors and ``tests.support.rabbitmq_actors`` on ``maintenance``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import redis
from dramatiq import Message

from app.control.workers import list_workers
from app.rabbitmq import FintaskRabbitmqBroker
from tests.support.processes import VENV_BIN, run_to_exit
from tests.support.rabbitmq_actors import QUEUE, RUNS_KEY, STAMPS_KEY
from tests.support.recovery import worker_env, worker_process

MODULES = ("actors", "tests.support.rabbitmq_actors")


def rabbitmq_worker() -> list[str]:
    """The command line of one worker process (2 threads) of ``QUEUE``."""
    return worker_process(threads=2, modules=MODULES, queue=QUEUE)


def rabbitmq_worker_env(
    redis_url: str, rabbitmq_url: str, var_dir: Path, *, hostname: str | None = None
) -> dict[str, str]:
    """A worker's environment on RabbitMQ: Redis for the rest, its own var dir, the host it
    names (``FINTASK_HOSTNAME``, else the machine's), the Procfile worker's prefetch (16)."""
    env = worker_env(redis_url, var_dir, prefetch=16)
    env["BROKER_URL"] = rabbitmq_url
    if hostname is not None:
        env["FINTASK_HOSTNAME"] = hostname
    return env


def send(
    producer: FintaskRabbitmqBroker, actor_name: str, *, delay_ms: int | None = None, **kwargs: Any
) -> str:
    """Enqueue one message of ``actor_name`` on ``QUEUE``; its message id."""
    message = Message(QUEUE, actor_name, (), kwargs, {})
    return producer.enqueue(message, delay=delay_ms).message_id


def runs(client: redis.Redis) -> dict[str, int]:
    """How many times each message started."""
    return {k.decode(): int(v) for k, v in client.hgetall(RUNS_KEY).items()}


def ended_at(client: redis.Redis, message_id: str) -> float | None:
    """When ``stamp`` finished ``message_id`` (seconds since the epoch), or None."""
    value = client.hget(STAMPS_KEY, message_id)
    return None if value is None else float(value)


def alive_workers(client: redis.Redis, *process_groups: int) -> list[dict[str, Any]]:
    """The live worker records (``app.control.workers``) of the processes in ``process_groups``
    (each test worker runs in a session of its own)."""
    views = list_workers(client, [QUEUE])
    records = [
        {**v.as_dict(), "control_version": v.record.get("control_version", 0)}
        for v in views
        if v.state == "alive"
    ]
    return [r for r in records if _group_of(r.get("pid")) in process_groups]


def _group_of(pid: object) -> int | None:
    try:
        return os.getpgid(int(str(pid)))
    except (ProcessLookupError, ValueError):
        return None


def fintask(*arguments: str, **env: str) -> tuple[int, str]:
    """Run ``fintask ARGUMENTS`` to its end; its status and output."""
    return run_to_exit([str(VENV_BIN / "fintask"), *arguments], **env)


def fintask_json(*arguments: str, **env: str) -> Any:
    """The JSON a ``fintask ... --json`` command printed (it must succeed)."""
    status, output = fintask(*arguments, "--json", **env)
    assert status == 0, output
    return json.loads(output)
