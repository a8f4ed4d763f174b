"""The scheduled account sync: one refresh job per active account, through one chunked run."""

from __future__ import annotations

import dramatiq
from sqlalchemy import func, select, update

from actors.sync import start_account_sync
from app.db.models import Job, ProviderAccount
from app.db.session import default_engine, transaction
from app.local.seed import seed
from chunking import ChunkRun

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
