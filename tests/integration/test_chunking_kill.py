"""A real worker SIGKILLed in the middle of a chunk: the run resumes, one effect per item."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

import chunking
from chunking import ChunkRun, RunStatus, start_run
from tests.support import chunking_actors
from tests.support.chunking_actors import Effect, Item
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until

pytestmark = pytest.mark.integration

#: Long enough that a poll on a loaded machine sees a chunk start well before it commits.
CHUNK_S = 3.0


def worker_command() -> list[str]:
    return [
        str(VENV_BIN / "dramatiq"),
        "tests.support.chunking_actors",
        "--processes",
        "1",
        "--threads",
        "1",
        "--worker-shutdown-timeout",
        "5000",
        "--queues",
        chunking_actors.QUEUE,
    ]


def started_chunks(log: Path) -> list[tuple[int, float]]:
    if not log.exists():
        return []
    return [
        (int(seq), float(at))
        for seq, at in (line.split() for line in log.read_text().split("\n") if line)
    ]


def test_a_worker_killed_mid_chunk_resumes_with_exactly_one_effect_per_item(redis_url, tmp_path):
    # Given 300 items with sparse ids and a run over them in chunks of 50 that take 3 s each
    db_url = f"sqlite:///{tmp_path / 'kill.db'}"
    engine = chunking_actors.sqlite_engine(db_url)
    chunking.metadata.create_all(engine)
    chunking_actors.Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    ids = [i * i for i in range(1, 301)]
    with sessions() as session, session.begin():
        session.add_all(Item(id=i) for i in ids)

    log = tmp_path / "started.log"
    local_broker = RedisBroker(url=redis_url)
    chunked_run = chunking_actors.declare(
        broker=local_broker, sessions=sessions, started_log=log, chunk_s=CHUNK_S
    )
    with sessions() as session, session.begin():
        run_id = start_run(session, chunked_run)

    def committed_seq() -> int:
        with sessions() as session:
            return session.scalars(select(ChunkRun.seq).where(ChunkRun.id == run_id)).one()

    env = fintask_env(
        CHUNKING_WORKER_REDIS_URL=redis_url,
        CHUNKING_DB_URL=db_url,
        CHUNKING_STARTED_LOG=str(log),
        CHUNKING_CHUNK_S=str(CHUNK_S),
    )

    # When the worker is SIGKILLed in the first half of a chunk, the third or a later one
    killed: list[int] = []

    def a_later_chunk_just_started() -> bool:
        chunks = started_chunks(log)
        if chunks and chunks[-1][0] >= 2 and time.time() - chunks[-1][1] < CHUNK_S / 2:
            killed.append(chunks[-1][0])
            return True
        return False

    with running(worker_command(), env, tmp_path / "worker-1.log") as worker:
        wait_until(a_later_chunk_just_started, timeout_s=90, what="a later chunk to start")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    (seq,) = killed
    assert committed_seq() == seq, "the chunk killed committed: the kill did not land mid-chunk"

    # And a new worker starts
    with running(worker_command(), env, tmp_path / "worker-2.log"):

        def run_is_done() -> bool:
            with sessions() as session:
                return (
                    session.get_one(ChunkRun, run_id, populate_existing=True).status
                    == RunStatus.DONE
                )

        wait_until(run_is_done, timeout_s=90, what="the run to finish after the kill")

    # Then the interrupted chunk was redone from the last committed cursor, and every item has
    # exactly one effect
    assert Counter(started for started, _ in started_chunks(log))[seq] >= 2
    with sessions() as session:
        assert Counter(session.scalars(select(Effect.item_id))) == Counter(ids)
        assert session.get_one(ChunkRun, run_id).processed == len(ids)
    local_broker.client.close()
    engine.dispose()
