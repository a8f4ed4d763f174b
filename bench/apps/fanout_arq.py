"""arq's side of the fan-out benchmark: the same jobs and a walker, on one queue.

Run as ``arq bench.apps.fanout_arq.WorkerSettings`` from arq's own venv (``bench/peers/arq``,
which holds SQLAlchemy and psycopg for the walker's reads besides redis-py 5, so this module
imports :mod:`bench.apps.fanout_users` as the others do, and nothing of ``bench.systems``). The
jobs are ``fanout_email(user_id)``, ``fanout_page(user_ids)``, ``fanout_ready()`` and
``fanout_walk(after_id, last_id, per_page)``, all coroutines on the queue ``fanout``, sending
through the worker's own ``ArqRedis`` (:class:`~bench.apps.fanout_users.AsyncMailbox`). arq
defers a job by itself (``_defer_by``, no scheduler process), so the walker behaves as
Dramatiq's and Celery's do: while arq's queue holds more than the mark it sends itself again
after ``BACKPRESSURE_MS`` and stops; otherwise it reads the next page by keyset (on a thread, so
that the worker's other jobs run meanwhile) and sends it: one ``fanout_email`` per user (arq has
no bulk enqueue: one ``enqueue_job`` each, awaited in turn) or one ``fanout_page``; then itself
for the next page. arq's queue is a sorted set that keeps a job until it ends, so the count the
walker compares with the mark includes the running jobs (at most 16; its own job left out).

As a producer (``python -m bench.apps.fanout_arq walk|walk-pages USERS``, in arq's venv too) it
enqueues the first walker job and prints its peak memory.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from bench.apps import noop_arq
from bench.apps.fanout_users import (
    BACKPRESSURE_MS,
    DB_VARIABLE,
    PEER_QUEUE,
    AsyncMailbox,
    high_water,
    next_page,
    walker_producer,
)
from bench.work import CONCURRENCY_VARIABLE, REDIS_VARIABLE

REDIS_SETTINGS = RedisSettings.from_dsn(os.environ[REDIS_VARIABLE])
sessions = sessionmaker(create_engine(os.environ[DB_VARIABLE]), expire_on_commit=False)


async def startup(ctx: dict[str, Any]) -> None:
    """Give the worker its mailbox, on the worker's own connection pool."""
    ctx["mailbox"] = AsyncMailbox(ctx["redis"])


async def fanout_email(ctx: dict[str, Any], user_id: int) -> None:
    await ctx["mailbox"].send(user_id)


async def fanout_page(ctx: dict[str, Any], user_ids: list[int]) -> None:
    await ctx["mailbox"].send_page(user_ids)


async def fanout_ready(ctx: dict[str, Any]) -> None:
    await ctx["mailbox"].mark_ready(os.getpid())


def read_page(after_id: int, last_id: int) -> list[int]:
    """The walker's next page, in a session of its own."""
    with sessions() as session:
        return next_page(session, after_id, last_id)


async def fanout_walk(ctx: dict[str, Any], after_id: int, last_id: int, per_page: bool) -> None:
    pool: ArqRedis = ctx["redis"]
    # The walker's own job stays in the set while it runs: it is not a page or an e-mail.
    if await pool.zcard(PEER_QUEUE) - 1 > high_water(per_page=per_page):
        await pool.enqueue_job(
            "fanout_walk",
            after_id,
            last_id,
            per_page,
            _queue_name=PEER_QUEUE,
            _defer_by=BACKPRESSURE_MS / 1000,
        )
        return
    user_ids = await asyncio.to_thread(read_page, after_id, last_id)
    if not user_ids:
        return
    if per_page:
        await pool.enqueue_job("fanout_page", user_ids, _queue_name=PEER_QUEUE)
    else:
        for user_id in user_ids:
            await pool.enqueue_job("fanout_email", user_id, _queue_name=PEER_QUEUE)
    await pool.enqueue_job("fanout_walk", user_ids[-1], last_id, per_page, _queue_name=PEER_QUEUE)


class WorkerSettings:
    functions: ClassVar = [fanout_email, fanout_page, fanout_ready, fanout_walk]
    on_startup = startup
    redis_settings = REDIS_SETTINGS
    queue_name = PEER_QUEUE
    max_jobs = int(os.environ.get(CONCURRENCY_VARIABLE, "10"))
    keep_result = 0
    handle_signals = True


#: arq's logging, warnings only: the no-op module's (the worker's command line names it here).
LOG_CONFIG = noop_arq.LOG_CONFIG


async def produce(last_id: int, per_page: bool) -> None:
    """Enqueue the first walker job, through a pool as an application's is."""
    pool = await create_pool(REDIS_SETTINGS)
    try:
        await pool.enqueue_job("fanout_walk", 0, last_id, per_page, _queue_name=PEER_QUEUE)
    finally:
        await pool.aclose()


def main() -> None:
    walker_producer(
        __doc__ or "", lambda last_id, per_page: asyncio.run(produce(last_id, per_page))
    )


if __name__ == "__main__":
    main()
