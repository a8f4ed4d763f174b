"""Huey's side of the fan-out benchmark: the same tasks and a walker, on one ``RedisHuey`` queue.

As a worker module (``huey_consumer bench.apps.fanout_huey.huey``) it declares
``fanout_email(user_id)``, ``fanout_page(user_ids)``, ``fanout_ready()`` and
``fanout_walk(after_id, last_id, per_page)``, all on the queue ``fanout``. The walker waits in
its task while the queue is above the mark (:func:`~bench.apps.fanout_users.wait_below_mark`),
reads the next page by keyset, and sends it: one ``fanout_email`` per user (Huey has no bulk
enqueue: one LPUSH each) or one ``fanout_page``; then itself for the next page.

As a producer (``python -m bench.apps.fanout_huey walk|walk-pages USERS``) it sends the first
walker message and prints its peak memory.
"""

from __future__ import annotations

import os

import redis
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from bench.apps.fanout_users import (
    DB_VARIABLE,
    PEER_QUEUE,
    Mailbox,
    next_page,
    wait_below_mark,
    walker_producer,
)
from bench.systems import REDIS_VARIABLE, huey_app, queue_depth

huey = huey_app(os.environ[REDIS_VARIABLE], PEER_QUEUE)
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
mailbox = Mailbox(client)
sessions = sessionmaker(create_engine(os.environ[DB_VARIABLE]), expire_on_commit=False)


@huey.task(name="fanout_email")
def fanout_email(user_id: int) -> None:
    mailbox.send(user_id)


@huey.task(name="fanout_page")
def fanout_page(user_ids: list[int]) -> None:
    mailbox.send_page(user_ids)


@huey.task(name="fanout_ready")
def fanout_ready() -> None:
    mailbox.mark_ready(os.getpid())


@huey.task(name="fanout_walk")
def fanout_walk(after_id: int, last_id: int, per_page: bool) -> None:
    wait_below_mark(lambda: queue_depth(client, "huey", PEER_QUEUE), per_page=per_page)
    with sessions() as session:
        user_ids = next_page(session, after_id, last_id)
    if not user_ids:
        return
    if per_page:
        fanout_page(user_ids)
    else:
        for user_id in user_ids:
            fanout_email(user_id)
    fanout_walk(user_ids[-1], last_id, per_page)


def main() -> None:
    walker_producer(__doc__ or "", lambda last_id, per_page: fanout_walk(0, last_id, per_page))


if __name__ == "__main__":
    # Run as the importable module: a message names its task by module, and "__main__" is no
    # module a worker can import.
    from bench.apps import fanout_huey

    fanout_huey.main()
