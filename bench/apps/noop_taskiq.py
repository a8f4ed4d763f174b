"""The no-op and real-work tasks (``bench.work``, as coroutines), for taskiq.

Run as ``taskiq worker bench.apps.noop_taskiq:broker``; the broker is taskiq-redis's
``RedisStreamBroker``, which acknowledges after the task (:func:`bench.systems.taskiq_broker`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bench.systems import taskiq_broker
from bench.work import REDIS_VARIABLE, Async

work = Async()
broker = taskiq_broker(os.environ[REDIS_VARIABLE], work.queue)


@broker.task(task_name="noop")
async def noop(sent_at: float, payload: Sequence[str] = ()) -> None:
    await work.noop(sent_at, payload)


@broker.task(task_name="io")
async def io(sent_at: float, payload: Sequence[str], n: int) -> None:
    await work.io(sent_at, payload, n)


@broker.task(task_name="cpu")
async def cpu(sent_at: float, payload: Sequence[str], n: int) -> None:
    await work.cpu(sent_at, payload, n)
