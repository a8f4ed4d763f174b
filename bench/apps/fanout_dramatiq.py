"""The Dramatiq side of the fan-out benchmark: the tasks, fintask's runs, a walker, producers.

As a worker module (``dramatiq bench.apps.fanout_dramatiq``, ``BENCH_SYSTEM`` set) it declares
on the system's broker:

- ``fanout_email(user_id)`` on ``fanout_emails``: one e-mail, the effect in
  :mod:`bench.apps.fanout_users`; ``fanout_page(user_ids)`` on ``fanout_pages``: a page's
  e-mails in one loop; ``fanout_page_range(first_id, last_id)``, the same for the active ids
  of a range, read by the task: fintask's guardrails refuse a list of more than 100 items in
  a message, so a fintask page carries its bounds, not its ids;
- two runs of fintask's :class:`~chunking.ChunkedRun` over ``bench_users`` on ``fanout_chunks``:
  each chunk reads the next ``CHUNK_SIZE`` active ids by keyset and, after its commit, sends
  their e-mails (``fanout_chunk``: one message per user, bulk-enqueued; ``fanout_chunk_pages``:
  one ``fanout_page_range`` message), held back while the queue it fills is above the mark;
- ``fanout_walk(after_id, last_id, per_page)``, what a Dramatiq team writes by hand: read the
  next page by keyset, hold back while the target queue is above the mark, send the page
  (one message per user through :func:`chunking.enqueue_many`, one round trip, or one page
  message), then send itself for the next page. Its cursor travels in the message, not in a table.

As a producer (``python -m bench.apps.fanout_dramatiq STRATEGY USERS [--kind dramatiq]``, no
``BENCH_SYSTEM``) it builds the kind's application-side broker and either sends one message per
user from a list of every id (the naive loop), starts a run, or sends the first walker message,
and exits; it prints its peak memory.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq import Actor, Broker
from sqlalchemy import ColumnElement, create_engine
from sqlalchemy.orm import Session, sessionmaker

from bench.apps.fanout_users import (
    BACKPRESSURE_MS,
    CHUNK_QUEUE,
    CHUNK_SIZE,
    DB_VARIABLE,
    EMAIL_QUEUE,
    PAGE_QUEUE,
    BenchUser,
    Mailbox,
    ProducerReport,
    active_ids,
    high_water,
    max_id,
    next_page,
)
from bench.systems import REDIS_VARIABLE, SYSTEM_VARIABLE, producer_broker, worker_broker
from chunking import (
    ChunkContext,
    ChunkedRun,
    KeysetEnumerator,
    RedisQueueDepth,
    enqueue_many,
    start_run,
)

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


@dataclass(frozen=True)
class FanoutActors:
    """What :func:`declare` declares: the tasks, the walker, and fintask's two runs."""

    email: Actor[..., None]
    page: Actor[..., None]
    walk: Actor[..., None]
    per_user_run: ChunkedRun
    per_page_run: ChunkedRun


def declare(broker: Broker, mailbox: Mailbox, sessions: sessionmaker[Session]) -> FanoutActors:
    """Declare every fan-out actor on ``broker``."""

    def actor(name: str, queue: str) -> Any:
        return dramatiq.actor(actor_name=name, queue_name=queue, broker=broker, **LIMITS)

    @actor("fanout_email", EMAIL_QUEUE)
    def email(user_id: int, **kwargs: Any) -> None:
        mailbox.send(user_id)

    @actor("fanout_page", PAGE_QUEUE)
    def page(user_ids: list[int], **kwargs: Any) -> None:
        mailbox.send_page(user_ids)

    @actor("fanout_page_range", PAGE_QUEUE)
    def page_range(first_id: int, last_id: int, **kwargs: Any) -> None:
        with sessions() as session:
            mailbox.send_page(next_page(session, first_id - 1, last_id))

    @actor("fanout_ready", EMAIL_QUEUE)
    def ready(**kwargs: Any) -> None:
        mailbox.mark_ready(os.getpid())

    depth = RedisQueueDepth(client=redis.Redis.from_url(os.environ[REDIS_VARIABLE]))

    @actor("fanout_walk", CHUNK_QUEUE)
    def walk(after_id: int, last_id: int, per_page: bool, **kwargs: Any) -> None:
        target = PAGE_QUEUE if per_page else EMAIL_QUEUE
        if depth(target) > high_water(per_page=per_page):
            walk.send_with_options(args=(after_id, last_id, per_page), delay=BACKPRESSURE_MS)
            return
        with sessions() as session:
            user_ids = next_page(session, after_id, last_id)
        if not user_ids:
            return
        if per_page:
            page.send(user_ids)
        else:
            enqueue_many(broker, (email.message(user_id) for user_id in user_ids))
        walk.send(user_ids[-1], last_id, per_page)

    def run(name: str, *, per_page: bool) -> ChunkedRun:
        def process(ctx: ChunkContext, user_ids: list[int]) -> None:
            if per_page:
                ctx.enqueue(page_range.message(user_ids[0], user_ids[-1]))
            else:
                ctx.enqueue(*(email.message(user_id) for user_id in user_ids))

        return ChunkedRun(
            name=name,
            enumerate=KeysetEnumerator(column=BenchUser.id, where=selected_users),
            process=process,
            session_factory=sessions,
            broker=broker,
            queue_name=CHUNK_QUEUE,
            chunk_size=CHUNK_SIZE,
            target_queue=PAGE_QUEUE if per_page else EMAIL_QUEUE,
            high_water=high_water(per_page=per_page),
            # The walkers' fixed pause, not chunking's default (1 s, grown with the excess
            # up to 30 s): these e-mails run thousands a second, a longer hold idles them.
            backpressure_delay_ms=BACKPRESSURE_MS,
            max_backpressure_delay_ms=BACKPRESSURE_MS,
            **LIMITS,
        )

    return FanoutActors(
        email=email,
        page=page,
        walk=walk,
        per_user_run=run("fanout_chunk", per_page=False),
        per_page_run=run("fanout_chunk_pages", per_page=True),
    )


def _sessions() -> sessionmaker[Session]:
    return sessionmaker(create_engine(os.environ[DB_VARIABLE]), expire_on_commit=False)


#: The producer strategies: a naive loop, fintask's runs, and the hand-written walker.
STRATEGIES = ("naive", "run", "run-pages", "walk", "walk-pages")


def produce(strategy: str, users: int, kind: str) -> ProducerReport:
    """Run one producer strategy for the first ``users`` active users, on ``kind``'s broker."""
    redis_url = os.environ[REDIS_VARIABLE]
    broker = producer_broker(kind, redis_url)
    sessions = _sessions()
    fanout = declare(broker, Mailbox(redis.Redis.from_url(redis_url)), sessions)
    if strategy == "naive":
        with sessions() as session:
            ids = active_ids(session, users)
        for user_id in ids:
            fanout.email.send(user_id)
        return ProducerReport.of_this_process(sent=len(ids))
    if strategy.startswith("walk"):
        fanout.walk.send(0, max_id(users), strategy == "walk-pages")
        return ProducerReport.of_this_process(sent=1)
    run = fanout.per_page_run if strategy == "run-pages" else fanout.per_user_run
    with sessions() as session, session.begin():
        start_run(session, run, params={"max_id": max_id(users)})
    return ProducerReport.of_this_process(sent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("strategy", choices=STRATEGIES)
    parser.add_argument("users", type=int)
    parser.add_argument("--kind", choices=("fintask", "dramatiq"), default="fintask")
    arguments = parser.parse_args()
    produce(arguments.strategy, arguments.users, arguments.kind).emit()


if __name__ == "__main__":
    main()
elif os.environ.get(SYSTEM_VARIABLE):
    fanout_actors = declare(
        worker_broker(), Mailbox(redis.Redis.from_url(os.environ[REDIS_VARIABLE])), _sessions()
    )
