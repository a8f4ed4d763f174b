"""Chunked runs on Dramatiq's StubBroker, a real ``dramatiq.Worker`` and a SQLite file.

Effects are rows without a unique constraint, so an item processed twice would show up as
two rows: exactly-once here is the fencing's doing, not the database's.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Middleware
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from sqlalchemy import Engine, ForeignKey, MetaData, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import chunking
from chunking import (
    ChunkContext,
    ChunkedRun,
    ChunkOutcome,
    ChunkRun,
    KeysetEnumerator,
    RunStatus,
    StubQueueDepth,
    cancel_run,
    pause_run,
    resume_run,
    run_progress,
    start_run,
)

CHUNKS = "chunks"
ITEMS = "items"


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    active: Mapped[bool]


class Effect(Base):
    """One item's effect; deliberately not unique per item."""

    __tablename__ = "effects"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey(ChunkRun.id))
    item_id: Mapped[int]


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=30000")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'runs.db'}", connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    chunking.metadata.create_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def active_ids(sessions: sessionmaker[Session]) -> list[int]:
    """237 items with sparse, gappy ids; about four in five are active."""
    rng = random.Random(4)
    ids = sorted(rng.sample(range(1, 100_000), 237))
    items = [Item(id=i, active=rng.random() < 0.8) for i in ids]
    with sessions() as session, session.begin():
        session.add_all(items)
    return [item.id for item in items if item.active]


class Delivered:
    """The item actor's inbox: ids it received, from any worker thread."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()

    def add(self, item_id: int) -> None:
        with self.lock:
            self.ids.append(item_id)


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.declare_queue(CHUNKS)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def delivered() -> Delivered:
    return Delivered()


@pytest.fixture
def deliver(broker: StubBroker, delivered: Delivered) -> dramatiq.Actor[Any, Any]:
    @dramatiq.actor(broker=broker, queue_name=ITEMS, max_retries=0, time_limit=10_000)
    def deliver(item_id: int, **kwargs: Any) -> None:
        delivered.add(item_id)

    return deliver


@pytest.fixture
def worker(broker: StubBroker, deliver: dramatiq.Actor[Any, Any]) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


def declare(
    broker: StubBroker, sessions: sessionmaker[Session], deliver: Any, **overrides: Any
) -> ChunkedRun:
    """A run over the active items that writes an effect and sends a message per item."""

    def process(ctx: ChunkContext, ids: list[int]) -> None:
        ctx.session.add_all(Effect(run_id=ctx.run_id, item_id=i) for i in ids)
        ctx.enqueue(*(deliver.message(i) for i in ids))

    enumerator = KeysetEnumerator(column=Item.id, where=lambda params: [Item.active])
    options: dict[str, Any] = {
        "name": "report_chunk",
        "enumerate": enumerator,
        "process": process,
        "estimate": enumerator.estimate,
        "session_factory": sessions,
        "broker": broker,
        "queue_name": CHUNKS,
        "chunk_size": 20,
        "time_limit": 30_000,
        "max_age": 3_600_000,
        "max_retries": 2,
        "min_backoff": 10,
        "max_backoff": 20,
        **overrides,
    }
    return ChunkedRun(**options)


def start(sessions: sessionmaker[Session], chunked_run: ChunkedRun) -> int:
    with sessions() as session, session.begin():
        return start_run(session, chunked_run, params={"week": "2024-W09"})


def drain(broker: StubBroker, worker: dramatiq.Worker, *, fail_fast: bool = True) -> None:
    broker.join(CHUNKS, fail_fast=fail_fast)
    broker.join(ITEMS, fail_fast=fail_fast)
    worker.join()


def effects_per_item(sessions: sessionmaker[Session]) -> Counter[int]:
    with sessions() as session:
        return Counter(session.scalars(select(Effect.item_id)))


def the_run(sessions: sessionmaker[Session], run_id: int) -> ChunkRun:
    with sessions() as session:
        return session.get_one(ChunkRun, run_id)


def record_outcomes(chunked_run: ChunkedRun) -> list[ChunkOutcome]:
    """Wrap the run's handler so the test sees what every chunk message did."""
    outcomes: list[ChunkOutcome] = []
    handle = chunked_run.handle

    def recording(run_id: int, seq: int) -> ChunkOutcome:
        outcome = handle(run_id, seq)
        outcomes.append(outcome)
        return outcome

    chunked_run.handle = recording  # type: ignore[method-assign]
    return outcomes


def test_a_run_processes_every_item_exactly_once(
    broker, worker, sessions, deliver, delivered, active_ids
):
    # Given a run over the active items among sparse ids, in chunks of 20
    chunked_run = declare(broker, sessions, deliver)

    # When it is started and the worker drains the queues
    run_id = start(sessions, chunked_run)
    drain(broker, worker)

    # Then every active item has exactly one effect and one message, and nothing else does
    assert effects_per_item(sessions) == Counter(active_ids)
    assert sorted(delivered.ids) == active_ids
    progress = run_progress(sessions(), run_id)
    assert progress is not None
    assert (progress.status, progress.processed) == (RunStatus.DONE, len(active_ids))
    assert (progress.estimated_total, progress.percent, progress.eta_s) == (
        len(active_ids),
        100.0,
        0.0,
    )


def test_duplicated_chunk_messages_neither_double_effects_nor_fork_the_run(
    broker, worker, sessions, deliver, delivered, active_ids
):
    # Given a run whose every chunk sends a copy of its own message while it works, as a
    # redelivery would
    copies_sent: list[int] = []

    def process(ctx: ChunkContext, ids: list[int]) -> None:
        chunked_run.actor.send(run_id=ctx.run_id, seq=ctx.seq)
        copies_sent.append(ctx.seq)
        ctx.session.add_all(Effect(run_id=ctx.run_id, item_id=i) for i in ids)
        ctx.enqueue(*(deliver.message(i) for i in ids))

    chunked_run = declare(broker, sessions, deliver, process=process)
    outcomes = record_outcomes(chunked_run)

    # When its first message is sent three times over
    run_id = start(sessions, chunked_run)
    chunked_run.actor.send(run_id=run_id, seq=0)
    chunked_run.actor.send(run_id=run_id, seq=0)
    drain(broker, worker)

    # Then each item still has one effect and one message, every copy was ignored, and the
    # run advanced exactly once per chunk: one chain
    assert effects_per_item(sessions) == Counter(active_ids)
    assert sorted(delivered.ids) == active_ids
    chunks = len(copies_sent)
    assert sorted(copies_sent) == list(range(chunks))
    assert Counter(outcomes) == {
        ChunkOutcome.ADVANCED: chunks - 1,
        ChunkOutcome.DONE: 1,
        ChunkOutcome.STALE: chunks + 2,
    }
    assert the_run(sessions, run_id).seq == chunks


def test_a_stale_message_after_the_run_is_ignored(broker, sessions, deliver, active_ids):
    # Given a run handled to the end, chunk by chunk, without a worker
    chunked_run = declare(broker, sessions, deliver, chunk_size=50)
    run_id = start(sessions, chunked_run)
    seq = 0
    while chunked_run.handle(run_id, seq) is ChunkOutcome.ADVANCED:
        seq += 1

    # When an old chunk message is delivered again
    outcome = chunked_run.handle(run_id, 1)

    # Then it is ignored and no item has a second effect
    assert outcome is ChunkOutcome.STALE
    assert effects_per_item(sessions) == Counter(active_ids)


def test_pause_stops_further_chunks_and_resume_finishes_the_run(
    broker, worker, sessions, deliver, delivered, active_ids
):
    # Given a run pausing 100 ms between chunks, paused once its third chunk is done
    third_chunk_done = threading.Event()

    def process(ctx: ChunkContext, ids: list[int]) -> None:
        ctx.session.add_all(Effect(run_id=ctx.run_id, item_id=i) for i in ids)
        ctx.enqueue(*(deliver.message(i) for i in ids))
        if ctx.seq == 2:
            third_chunk_done.set()

    chunked_run = declare(broker, sessions, deliver, process=process, pause_ms=100)
    run_id = start(sessions, chunked_run)
    assert third_chunk_done.wait(30)
    with sessions() as session, session.begin():
        assert pause_run(session, run_id)
        processed_when_paused = session.get_one(ChunkRun, run_id).processed

    # When the queues drain
    drain(broker, worker)

    # Then no chunk ran after the pause committed
    paused = the_run(sessions, run_id)
    assert (paused.status, paused.processed) == (RunStatus.PAUSED, processed_when_paused)
    assert sum(effects_per_item(sessions).values()) == processed_when_paused < len(active_ids)

    # When it is resumed
    with sessions() as session, session.begin():
        assert resume_run(session, chunked_run, run_id)
    drain(broker, worker)

    # Then it finishes from its cursor: every item once, none twice
    assert the_run(sessions, run_id).status == RunStatus.DONE
    assert effects_per_item(sessions) == Counter(active_ids)
    assert sorted(delivered.ids) == active_ids


def test_cancel_stops_the_run_for_good(broker, worker, sessions, deliver, active_ids):
    # Given a run cancelled once its second chunk is done
    second_chunk_done = threading.Event()

    def process(ctx: ChunkContext, ids: list[int]) -> None:
        ctx.session.add_all(Effect(run_id=ctx.run_id, item_id=i) for i in ids)
        if ctx.seq == 1:
            second_chunk_done.set()

    chunked_run = declare(broker, sessions, deliver, process=process, pause_ms=100)
    run_id = start(sessions, chunked_run)
    assert second_chunk_done.wait(30)
    with sessions() as session, session.begin():
        assert cancel_run(session, run_id)
        processed_when_cancelled = session.get_one(ChunkRun, run_id).processed

    # When the queues drain
    drain(broker, worker)

    # Then nothing ran after the cancel, and the run cannot be resumed
    cancelled = the_run(sessions, run_id)
    assert (cancelled.status, cancelled.processed) == (
        RunStatus.CANCELLED,
        processed_when_cancelled,
    )
    assert sum(effects_per_item(sessions).values()) == processed_when_cancelled < len(active_ids)
    with sessions() as session, session.begin():
        assert not resume_run(session, chunked_run, run_id)
        assert not pause_run(session, run_id)


def test_a_chunk_failing_past_its_retries_fails_the_run_and_resume_retries_it(
    broker, worker, sessions, deliver, delivered, active_ids
):
    # Given a run whose second chunk fails while the provider is down
    provider_down = threading.Event()
    provider_down.set()

    def process(ctx: ChunkContext, ids: list[int]) -> None:
        ctx.session.add_all(Effect(run_id=ctx.run_id, item_id=i) for i in ids)
        ctx.enqueue(*(deliver.message(i) for i in ids))
        if ctx.seq == 1 and provider_down.is_set():
            raise RuntimeError("provider down")

    chunked_run = declare(broker, sessions, deliver, process=process, max_retries=2)

    # When it runs out of retries
    run_id = start(sessions, chunked_run)
    drain(broker, worker, fail_fast=False)

    # Then the run is failed with the error, after one try and two retries, and the failed
    # chunk left no effect and sent no message
    failed = the_run(sessions, run_id)
    assert (failed.status, failed.failures, failed.seq) == (RunStatus.FAILED, 3, 1)
    assert failed.error == "RuntimeError: provider down"
    assert effects_per_item(sessions) == Counter(active_ids[:20])
    assert sorted(delivered.ids) == active_ids[:20]

    # When the provider is back and the run is resumed
    provider_down.clear()
    with sessions() as session, session.begin():
        assert resume_run(session, chunked_run, run_id)
    drain(broker, worker, fail_fast=False)  # the first failure's dead letter stays behind

    # Then it finishes, every item once
    done = the_run(sessions, run_id)
    assert (done.status, done.error, done.failures) == (RunStatus.DONE, None, 0)
    assert effects_per_item(sessions) == Counter(active_ids)


class DepthSampler(Middleware):
    """Samples the target queue's depth right after each message is put on it, and counts
    the chunk messages sent with a delay."""

    def __init__(self, depth: StubQueueDepth) -> None:
        self.depth = depth
        self.samples: list[int] = []
        self.delayed_chunks = 0

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if message.queue_name == ITEMS:
            self.samples.append(self.depth(ITEMS))
        elif message.queue_name == dq_name(CHUNKS):
            self.delayed_chunks += 1


def test_backpressure_keeps_the_target_queue_under_the_mark_plus_one_chunk(
    broker, sessions, active_ids
):
    # Given a slow consumer on the target queue and a run with a high-water mark of 12
    sampler = DepthSampler(StubQueueDepth(broker=broker))
    broker.add_middleware(sampler)
    consumed = Delivered()

    @dramatiq.actor(broker=broker, queue_name=ITEMS, max_retries=0, time_limit=10_000)
    def deliver(item_id: int, **kwargs: Any) -> None:
        threading.Event().wait(0.010)
        consumed.add(item_id)

    chunked_run = declare(
        broker,
        sessions,
        deliver,
        chunk_size=10,
        target_queue=ITEMS,
        high_water=12,
        backpressure_delay_ms=20,
        max_backpressure_delay_ms=100,
    )
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        # When the run goes through all the items
        start(sessions, chunked_run)
        drain(broker, worker)
    finally:
        worker.stop()

    # Then the queue never held more than the mark plus one chunk, the producer was held
    # back (no pause_ms is set: every delayed chunk is backpressure), and every item went once
    assert max(sampler.samples) <= 12 + 10
    assert sampler.delayed_chunks > 0, "the consumer kept up: backpressure never engaged"
    assert sorted(consumed.ids) == active_ids
