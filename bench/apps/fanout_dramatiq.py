"""The Dramatiq side of the fan-out benchmark: the e-mail actor, fintask's run, and producers.

As a worker module (``dramatiq bench.apps.fanout_dramatiq``, ``BENCH_SYSTEM`` set) it declares
on the system's broker:

- ``fanout_email(user_id)`` on ``fanout_emails``: one e-mail, the effect in
  :mod:`bench.apps.fanout_users`;
- ``fanout_chunk``, fintask's :class:`~chunking.ChunkedRun` over ``bench_users`` on
  ``fanout_chunks``: each chunk reads the next ``CHUNK_SIZE`` active ids by keyset and
  bulk-enqueues their e-mails after its commit, held back while ``fanout_emails`` is above
  ``BENCH_FANOUT_HIGH_WATER`` (default ``HIGH_WATER``).

As a producer (``python -m bench.apps.fanout_dramatiq naive|run USERS``, no ``BENCH_SYSTEM``)
it builds fintask's application-side broker and either sends one message per user from a
list of every id (the naive loop) or starts the run and exits; it prints its peak memory.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq import Broker
from sqlalchemy import ColumnElement, create_engine
from sqlalchemy.orm import Session, sessionmaker

from bench.apps.fanout_users import (
    CHUNK_QUEUE,
    CHUNK_SIZE,
    DB_VARIABLE,
    EMAIL_QUEUE,
    HIGH_WATER,
    HIGH_WATER_VARIABLE,
    BenchUser,
    Mailbox,
    ProducerReport,
    active_ids,
    max_id,
)
from bench.systems import REDIS_VARIABLE, SYSTEM_VARIABLE, producer_broker, worker_broker
from chunking import ChunkContext, ChunkedRun, KeysetEnumerator, start_run

#: The limits every actor states (fintask's house rule), in milliseconds.
LIMITS: dict[str, Any] = {
    "time_limit": 60_000,
    "max_age": 3_600_000,
    "max_retries": 3,
    "min_backoff": 1_000,
    "max_backoff": 10_000,
}


def selected_users(params: Mapping[str, Any]) -> Sequence[ColumnElement[bool]]:
    """A case's users: the active ones up to the case's last id."""
    return [BenchUser.active.is_(True), BenchUser.id <= int(params["max_id"])]


def declare(broker: Broker, mailbox: Mailbox, sessions: sessionmaker[Session]) -> ChunkedRun:
    """Declare the e-mail actor and fintask's run on ``broker``; return the run."""

    @dramatiq.actor(actor_name="fanout_email", queue_name=EMAIL_QUEUE, broker=broker, **LIMITS)
    def email(user_id: int, **kwargs: Any) -> None:
        mailbox.send(user_id)

    @dramatiq.actor(actor_name="fanout_ready", queue_name=EMAIL_QUEUE, broker=broker, **LIMITS)
    def ready(**kwargs: Any) -> None:
        mailbox.mark_ready(os.getpid())

    def process(ctx: ChunkContext, user_ids: list[int]) -> None:
        ctx.enqueue(*(email.message(user_id) for user_id in user_ids))

    return ChunkedRun(
        name="fanout_chunk",
        enumerate=KeysetEnumerator(column=BenchUser.id, where=selected_users),
        process=process,
        session_factory=sessions,
        broker=broker,
        queue_name=CHUNK_QUEUE,
        chunk_size=CHUNK_SIZE,
        target_queue=EMAIL_QUEUE,
        high_water=int(os.environ.get(HIGH_WATER_VARIABLE, HIGH_WATER)),
        # A fifth of chunking's defaults (1 s, capped at 30 s): these e-mails run thousands a
        # second, so a queue at the mark drains in about a second and a longer hold idles them.
        backpressure_delay_ms=200,
        max_backpressure_delay_ms=2_000,
        time_limit=LIMITS["time_limit"],
        max_age=LIMITS["max_age"],
        max_retries=LIMITS["max_retries"],
        min_backoff=LIMITS["min_backoff"],
        max_backoff=LIMITS["max_backoff"],
    )


def _sessions() -> sessionmaker[Session]:
    return sessionmaker(create_engine(os.environ[DB_VARIABLE]), expire_on_commit=False)


def produce(strategy: str, users: int) -> ProducerReport:
    """Run one producer strategy for the first ``users`` active users."""
    redis_url = os.environ[REDIS_VARIABLE]
    broker = producer_broker("fintask", redis_url)
    sessions = _sessions()
    fanout = declare(broker, Mailbox(redis.Redis.from_url(redis_url)), sessions)
    if strategy == "naive":
        with sessions() as session:
            ids = active_ids(session, users)
        email = broker.get_actor("fanout_email")
        for user_id in ids:
            email.send(user_id)
        return ProducerReport.of_this_process(sent=len(ids))
    with sessions() as session, session.begin():
        start_run(session, fanout, params={"max_id": max_id(users)})
    return ProducerReport.of_this_process(sent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("strategy", choices=("naive", "run"))
    parser.add_argument("users", type=int)
    arguments = parser.parse_args()
    produce(arguments.strategy, arguments.users).emit()


if __name__ == "__main__":
    main()
elif os.environ.get(SYSTEM_VARIABLE):
    fanout_run = declare(
        worker_broker(), Mailbox(redis.Redis.from_url(os.environ[REDIS_VARIABLE])), _sessions()
    )
