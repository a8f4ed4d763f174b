"""RQ's side of the fan-out benchmark: the same jobs and a walker, on one queue.

Run by ``rq worker-pool ... fanout`` (``SimpleWorker``: each job runs in its worker); RQ
imports this module where a job runs. The jobs are ``fanout_email(user_id)``,
``fanout_page(user_ids)``, ``fanout_ready()`` and ``fanout_walk(after_id, last_id,
per_page)``, all on the queue ``fanout``. The walker waits in its job while the queue is above
the mark (:func:`~bench.apps.fanout_users.wait_below_mark`), reads the next page by keyset, and
sends it: one ``fanout_email`` job per user through RQ's own bulk ``Queue.enqueue_many`` in
one pipeline, or one ``fanout_page``; then itself for the next page.

As a producer (``python -m bench.apps.fanout_rq walk|walk-pages USERS``) it sends the first
walker job and prints its peak memory.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from rq import Queue
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
from bench.work import REDIS_VARIABLE

client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
queue = Queue(PEER_QUEUE, connection=client)
mailbox = Mailbox(client)
sessions = sessionmaker(create_engine(os.environ[DB_VARIABLE]), expire_on_commit=False)
#: Job options: no result kept, as no other system keeps one.
OPTIONS: dict[str, Any] = {"result_ttl": 0}


def fanout_email(user_id: int) -> None:
    mailbox.send(user_id)


def fanout_page(user_ids: list[int]) -> None:
    mailbox.send_page(user_ids)


def fanout_ready() -> None:
    mailbox.mark_ready(os.getpid())


def fanout_walk(after_id: int, last_id: int, per_page: bool) -> None:
    wait_below_mark(queue.__len__, per_page=per_page)
    with sessions() as session:
        user_ids = next_page(session, after_id, last_id)
    if not user_ids:
        return
    if per_page:
        queue.enqueue(fanout_page, user_ids, **OPTIONS)
    else:
        jobs = [queue.prepare_data(fanout_email, (user_id,), **OPTIONS) for user_id in user_ids]
        with client.pipeline() as pipeline:
            queue.enqueue_many(jobs, pipeline=pipeline)
            pipeline.execute()
    queue.enqueue(fanout_walk, user_ids[-1], last_id, per_page, **OPTIONS)


def main() -> None:
    walker_producer(
        __doc__ or "",
        lambda last_id, per_page: queue.enqueue(fanout_walk, 0, last_id, per_page, **OPTIONS),
    )


if __name__ == "__main__":
    # Run as the importable module: a message names its task by module, and "__main__" is no
    # module a worker can import.
    from bench.apps import fanout_rq

    fanout_rq.main()
