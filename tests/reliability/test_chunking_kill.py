"""A real worker SIGKILLed in the middle of a chunk: the run resumes, one effect per item.

The worker runs fintask's broker stack as the Procfile starts it (``fintask process worker --
dramatiq app.broker:setup_broker ...``) with the production settings: the killed chunk's
message comes back through ``DeadWorkerRecovery`` once the dead worker's heartbeat is 60 s old,
so the test takes 70 to 100 s. Its effects are deliberately not unique, so a chunk whose
effects committed twice would show. The weekly report, killed twice through the real workload,
is ``tests/reliability/test_chunked_run_kill.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

import chunking
from app.local.ports import free_port
from app.settings import load_settings
from chunking import ChunkRun, RunStatus, start_run
from tests.support import chunking_actors
from tests.support.chunking_actors import Effect, Item
from tests.support.processes import fintask_env, running, wait_until
from tests.support.recovery import worker_process
from tests.support.workers import fintask_broker

pytestmark = [pytest.mark.reliability, pytest.mark.quick, pytest.mark.timeout(480)]

#: Long enough that a poll on a loaded machine sees a chunk start well before it commits.
CHUNK_S = 3.0
#: The production heartbeat timeout: a killed worker's messages come back after it.
HEARTBEAT_TIMEOUT_S = 60


def worker_command() -> list[str]:
    """One worker process of the ``worker`` type, on the test's queue only."""
    return worker_process(
        threads=1, modules=("tests.support.chunking_actors",), queue=chunking_actors.QUEUE
    )


def started_chunks(log: Path) -> list[tuple[int, float]]:
    if not log.exists():
        return []
    return [
        (int(seq), float(at))
        for seq, at in (line.split() for line in log.read_text().split("\n") if line)
    ]


def test_a_worker_killed_mid_chunk_resumes_with_exactly_one_effect_per_item(
    redis_url: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    # The production recovery settings, not a test's: nothing below overrides them.
    assert load_settings().heartbeat_timeout_ms == HEARTBEAT_TIMEOUT_S * 1000

    # Given 200 items with sparse ids and a run over them in chunks of 50 that take 3 s each
    db_url = f"sqlite:///{tmp_path / 'kill.db'}"
    engine = chunking_actors.sqlite_engine(db_url)
    chunking.metadata.create_all(engine)
    chunking_actors.Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    ids = [i * i for i in range(1, 201)]
    with sessions() as session, session.begin():
        session.add_all(Item(id=i) for i in ids)

    log = tmp_path / "started.log"
    producer = fintask_broker(redis_url)
    chunked_run = chunking_actors.declare(
        broker=producer, sessions=sessions, started_log=log, chunk_s=CHUNK_S
    )

    def committed_seq() -> int:
        with sessions() as session:
            return session.scalars(select(ChunkRun.seq).where(ChunkRun.id == run_id)).one()

    def run_is_done() -> bool:
        with sessions() as session:
            run = session.get_one(ChunkRun, run_id, populate_existing=True)
            return run.status == RunStatus.DONE

    def env(name: str) -> dict[str, str]:
        return fintask_env(
            REDIS_URL=redis_url,
            FINTASK_VAR_DIR=str(tmp_path / name),
            METRICS_PORT_WORKER=str(free_port()),
            METRICS_HOST="127.0.0.1",
            CHUNKING_DB_URL=db_url,
            CHUNKING_STARTED_LOG=str(log),
            CHUNKING_CHUNK_S=str(CHUNK_S),
        )

    # When the worker is SIGKILLed in the first half of a chunk, the second or a later one
    killed: list[int] = []

    def a_later_chunk_just_started() -> bool:
        chunks = started_chunks(log)
        if chunks and chunks[-1][0] >= 1 and time.time() - chunks[-1][1] < CHUNK_S / 2:
            killed.append(chunks[-1][0])
            return True
        return False

    try:
        with running(worker_command(), env("worker-1"), tmp_path / "worker-1.log") as worker:
            with sessions() as session, session.begin():
                run_id = start_run(session, chunked_run)
            wait_until(a_later_chunk_just_started, timeout_s=120, what="a later chunk to start")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            killed_at = time.monotonic()
        (seq,) = killed
        assert committed_seq() == seq, "the chunk killed committed: the kill did not land mid-chunk"

        # And a new worker starts
        with running(worker_command(), env("worker-2"), tmp_path / "worker-2.log"):
            wait_until(
                lambda: committed_seq() > seq or run_is_done(),
                timeout_s=HEARTBEAT_TIMEOUT_S + 120,
                what="the interrupted chunk to be redone",
            )
            recovered_s = time.monotonic() - killed_at
            wait_until(run_is_done, timeout_s=120, what="the run to finish after the kill")
    finally:
        producer.client.close()

    record_property("time_to_recover_s", round(recovered_s, 1))
    print(
        f"\nchunked run (library), worker SIGKILL x1: chunk {seq} redone {recovered_s:.1f} s after"
    )

    # Then the interrupted chunk was redone from the last committed cursor, and every item has
    # exactly one effect
    assert Counter(started for started, _ in started_chunks(log))[seq] >= 2
    with sessions() as session:
        assert Counter(session.scalars(select(Effect.item_id))) == Counter(ids)
        assert session.get_one(ChunkRun, run_id).processed == len(ids)
    engine.dispose()
