"""The no-op and real-work jobs (``bench.work``, as coroutines), for arq.

Run as ``arq bench.apps.noop_arq.WorkerSettings`` from arq's own venv (``bench/peers/arq``), so
this module imports only ``bench.work`` (redis-py alone, which that venv has at version 5).
Each process runs up to ``BENCH_CONCURRENCY`` jobs at once (``max_jobs``); results are not
kept, as no other system here keeps them, and arq logs warnings only, as the others do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

from arq.connections import RedisSettings

from bench.work import CONCURRENCY_VARIABLE, REDIS_VARIABLE, Async

work = Async()


async def noop(ctx: dict[str, Any], sent_at: float, payload: Sequence[str] = ()) -> None:
    await work.noop(sent_at, payload)


async def io(ctx: dict[str, Any], sent_at: float, payload: Sequence[str], n: int) -> None:
    await work.io(sent_at, payload, n)


async def cpu(ctx: dict[str, Any], sent_at: float, payload: Sequence[str], n: int) -> None:
    await work.cpu(sent_at, payload, n)


class WorkerSettings:
    functions: ClassVar = [noop, io, cpu]
    redis_settings = RedisSettings.from_dsn(os.environ[REDIS_VARIABLE])
    queue_name = work.queue
    max_jobs = int(os.environ.get(CONCURRENCY_VARIABLE, "10"))
    keep_result = 0
    handle_signals = True


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}
