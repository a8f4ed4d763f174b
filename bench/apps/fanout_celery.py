"""The Celery side of the fan-out benchmark: the same tasks, a walker, and the producers.

As a worker module (``celery -A bench.apps.fanout_celery worker``) it declares:

- ``fanout_email(user_id)`` on ``fanout_emails``, whose effect is the Dramatiq actor's
  (:mod:`bench.apps.fanout_users`), and ``fanout_page(user_ids)`` on ``fanout_pages``, a page's
  e-mails in one loop. ``chunks()`` runs as Celery's built-in ``celery.starmap`` task, routed
  to ``fanout_pages``: one message per chunk carrying ``CHUNK_SIZE`` argument tuples, each
  chunk calling the e-mail task in turn inside one worker;
- ``fanout_walk(after_id, last_id, per_page)`` on ``fanout_chunks``, what a careful Celery team
  writes at 10^6 users: read the next page by keyset; while the target queue's Redis list is
  longer than the mark, send itself again with a countdown and stop; else send the page (one
  ``fanout_email`` per user inside kombu's ``Producer.batch()``, pipelined, or one
  ``fanout_page``), then itself for the next page. Its cursor travels in the message.

As a producer (``python -m bench.apps.fanout_celery chunks|walk|walk-pages USERS``) it does
what a Celery shop does: load every active id and apply ``email.chunks(ids, CHUNK_SIZE)``, or
send the first walker message; it prints its peak memory.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import redis
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from bench.apps.fanout_users import (
    BACKPRESSURE_MS,
    CHUNK_QUEUE,
    CHUNK_SIZE,
    DB_VARIABLE,
    EMAIL_QUEUE,
    PAGE_QUEUE,
    Mailbox,
    ProducerReport,
    active_ids,
    high_water,
    max_id,
    next_page,
)
from bench.systems import REDIS_VARIABLE, celery_app, queue_depth

app = celery_app(
    "fanout",
    task_default_queue=EMAIL_QUEUE,
    task_routes={
        "fanout_page": {"queue": PAGE_QUEUE},
        "celery.starmap": {"queue": PAGE_QUEUE},
        "fanout_walk": {"queue": CHUNK_QUEUE},
    },
)
client = redis.Redis.from_url(os.environ[REDIS_VARIABLE])
mailbox = Mailbox(client)
sessions = sessionmaker(create_engine(os.environ[DB_VARIABLE]), expire_on_commit=False)


@app.task(name="fanout_email")
def email(user_id: int, **kwargs: Any) -> None:
    mailbox.send(user_id)


@app.task(name="fanout_page")
def page(user_ids: list[int], **kwargs: Any) -> None:
    mailbox.send_page(user_ids)


@app.task(name="fanout_ready")
def ready(**kwargs: Any) -> None:
    mailbox.mark_ready(os.getpid())


@app.task(name="fanout_walk")
def walk(after_id: int, last_id: int, per_page: bool, **kwargs: Any) -> None:
    target = PAGE_QUEUE if per_page else EMAIL_QUEUE
    if queue_depth(client, "celery", target) > high_water(per_page=per_page):
        walk.apply_async((after_id, last_id, per_page), countdown=BACKPRESSURE_MS / 1000)
        return
    with sessions() as session:
        user_ids = next_page(session, after_id, last_id)
    if not user_ids:
        return
    if per_page:
        page.delay(user_ids)
    else:
        with app.producer_or_acquire() as producer, producer.batch():
            for user_id in user_ids:
                email.apply_async((user_id,), producer=producer)
    walk.delay(user_ids[-1], last_id, per_page)


def produce(strategy: str, users: int) -> ProducerReport:
    """Send ``chunks()`` of the first ``users`` active users' e-mails, or start the walker."""
    if strategy.startswith("walk"):
        walk.delay(0, max_id(users), strategy == "walk-pages")
        return ProducerReport.of_this_process(sent=1)
    with Session(create_engine(os.environ[DB_VARIABLE])) as session:
        ids = active_ids(session, users)
    email.chunks(((user_id,) for user_id in ids), CHUNK_SIZE).apply_async()
    return ProducerReport.of_this_process(sent=len(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("strategy", choices=("chunks", "walk", "walk-pages"))
    parser.add_argument("users", type=int)
    arguments = parser.parse_args()
    produce(arguments.strategy, arguments.users).emit()


if __name__ == "__main__":
    main()
