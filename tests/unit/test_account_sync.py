"""The scheduled account sync: one refresh job per active account, through one chunked run."""

from __future__ import annotations

import dramatiq
import pytest
from sqlalchemy import func, select, update

from actors.sync import account_sync, start_account_sync
from app.db.models import Job, ProviderAccount
from app.db.session import default_engine, transaction
from app.local.seed import seed
from chunking import ChunkRun, RunStatus
from tests.support.stub_workers import run_until_idle

# The runs fan in through a batch kept in Redis (chunking.batches).
pytestmark = pytest.mark.usefixtures("redis_env")

TICK = "2026-11-24T06:00:00+00:00"


def _fan_out(broker) -> None:
    worker = dramatiq.Worker(broker, queues={"fanout"}, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        for _ in range(3):
            broker.join("fanout", fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def test_each_active_account_gets_one_refresh_and_blocked_ones_none(database, stub_broker):
    seed(default_engine(), users=300)
    with transaction() as session:
        session.execute(
            update(ProviderAccount).where(ProviderAccount.id <= 10).values(status="blocked")
        )
        active = session.scalar(select(func.count()).where(ProviderAccount.status == "active"))

    start_account_sync.send(tick=TICK)
    start_account_sync.send(tick=TICK)  # the same tick delivered twice
    _fan_out(stub_broker)

    with transaction() as session:
        refreshed = session.execute(
            select(Job.account_id, func.count()).group_by(Job.account_id)
        ).all()
        runs = session.scalar(select(func.count()).select_from(ChunkRun))
    assert len(refreshed) == active
    assert {count for _, count in refreshed} == {1}
    assert min(account_id for account_id, _ in refreshed) > 10
    assert runs == 1
    assert stub_broker.queues["sync"].qsize() == active


def _the_run() -> ChunkRun:
    with transaction() as session:
        return session.scalars(select(ChunkRun)).one()


def test_a_chunk_past_its_soft_time_limit_rolls_back_at_each_attempt_and_fails_the_run(
    database, stub_broker, monkeypatch: pytest.MonkeyPatch
):
    # Given active accounts, and chunks whose soft time limit (1 ms) passes mid-chunk (and
    # whose retries follow each other at once),
    seed(default_engine(), users=100)
    for option, value in {"soft_time_limit_ms": 1, "min_backoff": 1, "max_backoff": 1}.items():
        monkeypatch.setitem(account_sync.actor.options, option, value)

    # when the sync's first chunk runs, and is retried until its retries run out,
    start_account_sync.send(tick=TICK)
    run_until_idle(stub_broker, "fanout")

    # then each attempt stopped at a check between two accounts and its transaction rolled
    # back (no refresh job, no poll, the cursor where it was), and the run failed saying why
    # (``fintask runs resume`` restarts that chunk).
    run = _the_run()
    assert run.error is not None
    assert run.error.startswith("SoftTimeLimitExceeded: soft time limit passed")
    assert (run.status, run.seq, run.cursor, run.processed) == (RunStatus.FAILED, 0, None, 0)
    assert run.failures == account_sync.max_retries + 1
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert stub_broker.queues["sync"].qsize() == 0
