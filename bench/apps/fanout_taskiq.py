"""taskiq's side of the fan-out benchmark: the same tasks and a walker, on one stream.

As a worker module (``taskiq worker bench.apps.fanout_taskiq:broker``; taskiq-redis's
``RedisStreamBroker``, :func:`bench.systems.taskiq_broker`) it declares ``fanout_email(user_id)``,
``fanout_page(user_ids)``, ``fanout_ready()`` and ``fanout_walk(after_id, last_id, per_page)``,
all coroutines on the queue ``fanout``, sending through an asyncio client
(:class:`~bench.apps.fanout_users.AsyncMailbox`). taskiq sends nothing delayed without a
scheduler process, so the walker waits in its task while the stream's unread messages are above
the mark (:func:`~bench.apps.fanout_users.wait_below_mark`, on a thread so that the worker's
other tasks run meanwhile), as Huey's and RQ's do; it reads the next page by keyset (on a
thread too) and sends it: one ``fanout_email`` per user (taskiq has no bulk send: one XADD
each, awaited in turn) or one ``fanout_page``; then itself for the next page.

As a producer (``python -m bench.apps.fanout_taskiq walk|walk-pages USERS``) it sends the first
walker message and prints its peak memory.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import redis
import redis.asyncio
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState

from bench.apps.fanout_users import (
    DB_VARIABLE,
    PEER_QUEUE,
    AsyncMailbox,
    next_page,
    wait_below_mark,
    walker_producer,
)
from bench.systems import REDIS_VARIABLE, queue_depth, taskiq_broker

broker = taskiq_broker(os.environ[REDIS_VARIABLE], PEER_QUEUE)
#: The walker's depth probe, called on its waiting thread.
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
sessions = sessionmaker(create_engine(os.environ[DB_VARIABLE]), expire_on_commit=False)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    """Give the worker its mailbox, on a client of the worker's own event loop."""
    state.mailbox = AsyncMailbox(redis.asyncio.Redis.from_url(os.environ[REDIS_VARIABLE]))


@broker.task(task_name="fanout_email")
async def fanout_email(user_id: int, context: Annotated[Context, TaskiqDepends()]) -> None:
    await context.state.mailbox.send(user_id)


@broker.task(task_name="fanout_page")
async def fanout_page(user_ids: list[int], context: Annotated[Context, TaskiqDepends()]) -> None:
    await context.state.mailbox.send_page(user_ids)


@broker.task(task_name="fanout_ready")
async def fanout_ready(context: Annotated[Context, TaskiqDepends()]) -> None:
    await context.state.mailbox.mark_ready(os.getpid())


def read_page(after_id: int, last_id: int) -> list[int]:
    """The walker's next page, in a session of its own."""
    with sessions() as session:
        return next_page(session, after_id, last_id)


@broker.task(task_name="fanout_walk")
async def fanout_walk(after_id: int, last_id: int, per_page: bool) -> None:
    await asyncio.to_thread(
        wait_below_mark, lambda: queue_depth(client, "taskiq", PEER_QUEUE), per_page=per_page
    )
    user_ids = await asyncio.to_thread(read_page, after_id, last_id)
    if not user_ids:
        return
    if per_page:
        await fanout_page.kiq(user_ids)
    else:
        for user_id in user_ids:
            await fanout_email.kiq(user_id)
    await fanout_walk.kiq(user_ids[-1], last_id, per_page)


async def produce(last_id: int, per_page: bool) -> None:
    """Send the first walker message, through a broker started as an application's is."""
    await broker.startup()
    try:
        await fanout_walk.kiq(0, last_id, per_page)
    finally:
        await broker.shutdown()


def main() -> None:
    walker_producer(
        __doc__ or "", lambda last_id, per_page: asyncio.run(produce(last_id, per_page))
    )


if __name__ == "__main__":
    main()
