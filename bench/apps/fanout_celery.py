"""The Celery side of the fan-out benchmark: the same e-mail task, and the ``chunks()`` producer.

As a worker module (``celery -A bench.apps.fanout_celery worker -Q fanout_celery``) it declares
``bench.fanout_email(user_id)``, whose effect is the Dramatiq actor's (:mod:`fanout_users`).
Celery's ``chunks()`` runs as its built-in ``celery.starmap`` task: one message per chunk
carrying ``CHUNK_SIZE`` argument tuples, each chunk calling the task in turn inside one worker.

As a producer (``python -m bench.apps.fanout_celery chunks USERS``) it does what a Celery shop
does: load every active id, then ``email.chunks(((id,) for id in ids), CHUNK_SIZE)``, applied
as a group; it prints its peak memory.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import redis
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench.apps.fanout_users import (
    CELERY_QUEUE,
    CHUNK_SIZE,
    DB_VARIABLE,
    Mailbox,
    ProducerReport,
    active_ids,
)
from bench.systems import REDIS_VARIABLE, celery_app

app = celery_app("fanout", task_default_queue=CELERY_QUEUE)
mailbox = Mailbox(redis.Redis.from_url(os.environ[REDIS_VARIABLE]))


@app.task(name="bench.fanout_email")
def email(user_id: int, **kwargs: Any) -> None:
    mailbox.send(user_id)


@app.task(name="fanout_ready")
def ready(**kwargs: Any) -> None:
    mailbox.mark_ready(os.getpid())


def produce(users: int) -> ProducerReport:
    """Send ``chunks()`` of the first ``users`` active users' e-mails."""
    with Session(create_engine(os.environ[DB_VARIABLE])) as session:
        ids = active_ids(session, users)
    email.chunks(((user_id,) for user_id in ids), CHUNK_SIZE).apply_async()
    return ProducerReport.of_this_process(sent=len(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("strategy", choices=("chunks",))
    parser.add_argument("users", type=int)
    produce(parser.parse_args().users).emit()


if __name__ == "__main__":
    main()
