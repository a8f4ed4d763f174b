"""chunking on a real redis-server (the session's own): bulk enqueue, queue depth, a whole run.

The throughput comparison prints its numbers; see them with
``.venv/bin/pytest -s -k send_and_bulk_enqueue tests/integration/test_chunking_redis.py``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Message, Middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import chunking
from chunking import (
    ChunkContext,
    ChunkedRun,
    KeysetEnumerator,
    RedisQueueDepth,
    RunStatus,
    enqueue_many,
    run_progress,
    start_run,
)

pytestmark = pytest.mark.integration

QUEUE = "bulk"


class Counted:
    """What the consuming actor received, from any worker thread."""

    def __init__(self) -> None:
        self.values: Counter[Any] = Counter()
        self.lock = threading.Lock()

    def add(self, value: Any) -> None:
        with self.lock:
            self.values[value] += 1


class Hooks(Middleware):
    """Counts the enqueue hooks the broker runs."""

    def __init__(self) -> None:
        self.before = 0
        self.after = 0

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.before += 1

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.after += 1


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def broker(redis_url: str, hooks: Hooks) -> Iterator[RedisBroker]:
    broker = RedisBroker(url=redis_url)
    broker.add_middleware(hooks)
    yield broker
    broker.client.close()


@pytest.fixture
def counted() -> Counted:
    return Counted()


@pytest.fixture
def consume(broker: RedisBroker, counted: Counted) -> dramatiq.Actor[Any, Any]:
    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0, time_limit=10_000)
    def consume(value: Any, **kwargs: Any) -> None:
        counted.add(value)

    return consume


def run_worker_until_drained(broker: RedisBroker, *queues: str) -> None:
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=4)
    worker.start()
    try:
        for queue in queues:
            broker.join(queue, timeout=60_000)
        worker.join()
    finally:
        worker.stop()


def test_bulk_enqueued_messages_land_once_each_and_a_real_worker_consumes_them(
    broker, hooks, consume, counted
):
    # Given 2,500 messages and 300 delayed ones, bulk-enqueued in pipelines of 1,000
    sent = enqueue_many(broker, (consume.message(i) for i in range(2_500)), batch_size=1_000)
    delayed = enqueue_many(broker, (consume.message(i) for i in range(2_500, 2_800)), delay_ms=200)

    # Then they are all stored where Dramatiq keeps them, each past both middleware hooks
    depth = RedisQueueDepth(client=broker.client, namespace=broker.namespace)
    assert (sent, delayed, depth(QUEUE)) == (2_500, 300, 2_800)
    assert hooks.before == hooks.after == 2_800

    # When a real worker drains the queue
    run_worker_until_drained(broker, QUEUE)

    # Then every message was consumed exactly once
    assert counted.values == Counter(range(2_800))
    assert depth(QUEUE) == 0


def test_a_bulk_enqueue_stores_each_message_as_dramatiqs_own_enqueue_does(broker, client):
    # Given messages for two queues, interleaved, one of them with more messages than one Lua
    # unpack may spread (the broker's limit shrunk to 4 values: two messages per call)
    other = "bulk_other"
    messages = [Message(QUEUE if i % 3 else other, "consume", (i,), {}, {}) for i in range(9)]
    broker._max_unpack_size = lambda: 4

    # When they are bulk-enqueued in one batch
    assert enqueue_many(broker, messages) == 9

    # Then each queue lists its messages in the order sent, each under its own Redis id, with
    # the payload Dramatiq's enqueue stores, and the producer's heartbeat, as dispatch.lua keeps
    for queue in (QUEUE, other):
        sent = [m for m in messages if m.queue_name == queue]
        ids = [i.decode() for i in client.lrange(f"dramatiq:{queue}", 0, -1)]
        stored = [Message.decode(client.hget(f"dramatiq:{queue}.msgs", i)) for i in ids]
        assert [m.args for m in stored] == [m.args for m in sent]
        assert [m.message_id for m in stored] == [m.message_id for m in sent]
        assert [m.options["redis_message_id"] for m in stored] == ids
    assert client.zscore("dramatiq:__heartbeats__", broker.broker_id) is not None


def test_a_bulk_enqueue_runs_dramatiqs_maintenance_when_its_chance_hits(redis_url, client, consume):
    # Given a worker that died holding a fetched message (its heartbeat long stale), and a
    # broker whose maintenance chance is certain: the chance is what this test is about
    dead = "dead-worker"
    client.hset(f"dramatiq:{QUEUE}.msgs", "held-id", consume.message(-1).encode())
    client.sadd(f"dramatiq:__acks__.{dead}.{QUEUE}", "held-id")
    client.zadd("dramatiq:__heartbeats__", {dead: 0})
    certain = RedisBroker(url=redis_url, maintenance_chance=1_000_000)

    # When a batch is bulk-enqueued through it
    enqueue_many(certain, [consume.message(i) for i in range(3)])

    # Then the dead worker's message is back on the queue, ahead of the batch: the batch's
    # first message went through dispatch.lua, which runs the maintenance before its enqueue
    ids = [i.decode() for i in client.lrange(f"dramatiq:{QUEUE}", 0, -1)]
    assert len(ids) == 4 and ids[0] == "held-id"
    assert not client.exists(f"dramatiq:__acks__.{dead}.{QUEUE}")
    certain.client.close()


def test_send_and_bulk_enqueue_both_deliver_every_message(broker, consume, capsys):
    # Given 10,000 messages each way on the same Redis
    n = 10_000
    started = time.perf_counter()
    for i in range(n):
        consume.send(i)
    send_s = time.perf_counter() - started
    broker.flush(QUEUE)

    started = time.perf_counter()
    count = enqueue_many(broker, (consume.message(i) for i in range(n)))
    bulk_s = time.perf_counter() - started

    # Then both land in full; the rates are printed, not asserted (machines differ)
    assert count == n == RedisQueueDepth(client=broker.client)(QUEUE)
    with capsys.disabled():
        print(
            f"\n{n} messages: actor.send {n / send_s:,.0f} msg/s ({send_s:.2f} s), "
            f"enqueue_many {n / bulk_s:,.0f} msg/s ({bulk_s:.2f} s), x{send_s / bulk_s:.1f}"
        )


class Base(DeclarativeBase):
    metadata = MetaData()


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class Sent(Base):
    __tablename__ = "sent"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int]


class DepthSampler(Middleware):
    """Samples the target queue's depth in Redis right after each message is put on it, and
    counts the chunk messages sent with a delay."""

    def __init__(self, depth: RedisQueueDepth, *, target: str, chunks: str) -> None:
        self.depth = depth
        self.target = target
        self.chunks = chunks
        self.samples: list[int] = []
        self.delayed_chunks = 0

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if message.queue_name == self.target:
            self.samples.append(self.depth(self.target))
        elif message.queue_name == dq_name(self.chunks):
            self.delayed_chunks += 1


def test_a_run_on_redis_reaches_every_user_once_under_backpressure(broker, counted, tmp_path: Path):
    # Given 500 users with sparse ids in a SQLite file, a consumer slower than the producer
    # (20 ms a message on 4 threads), and a run feeding its queue under a high-water mark of
    # 100, its depth read from Redis
    engine = create_engine(f"sqlite:///{tmp_path / 'run.db'}", connect_args={"timeout": 30})
    chunking.metadata.create_all(engine)
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    ids = list(range(7, 7 * 501, 7))
    with sessions() as session, session.begin():
        session.add_all(User(id=i) for i in ids)

    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0, time_limit=10_000)
    def consume_slowly(value: Any, **kwargs: Any) -> None:
        time.sleep(0.020)
        counted.add(value)

    def process(ctx: ChunkContext, user_ids: list[int]) -> None:
        ctx.session.add_all(Sent(user_id=i) for i in user_ids)
        ctx.enqueue(*(consume_slowly.message(i) for i in user_ids))

    sampler = DepthSampler(
        RedisQueueDepth(client=broker.client, namespace=broker.namespace),
        target=QUEUE,
        chunks="fanout",
    )
    broker.add_middleware(sampler)
    enumerator = KeysetEnumerator(column=User.id)
    chunked_run = ChunkedRun(
        name="redis_report_chunk",
        enumerate=enumerator,
        estimate=enumerator.estimate,
        process=process,
        session_factory=sessions,
        broker=broker,
        queue_name="fanout",
        chunk_size=50,
        target_queue=QUEUE,
        high_water=100,
        backpressure_delay_ms=50,
        time_limit=30_000,
        max_age=3_600_000,
        max_retries=3,
        min_backoff=100,
        max_backoff=1_000,
    )

    # When it runs on a real worker
    with sessions() as session, session.begin():
        run_id = start_run(session, chunked_run)
    run_worker_until_drained(broker, "fanout", QUEUE)

    # Then every user got one message and one row
    assert counted.values == Counter(ids)
    with sessions() as session:
        assert sorted(session.scalars(select(Sent.user_id))) == ids
        progress = run_progress(session, run_id)
    assert progress is not None
    assert (progress.status, progress.processed, progress.percent) == (RunStatus.DONE, 500, 100.0)
    # and the producer was held back (no pause_ms is set: every delayed chunk is backpressure),
    # the queue never holding more than the mark plus one chunk
    assert sampler.delayed_chunks > 0, "the consumer kept up: backpressure never engaged"
    assert len(sampler.samples) == 500
    assert max(sampler.samples) <= 100 + 50
    engine.dispose()
