"""The workloads' fan-in: the weekly report's tally and the account sync's insights, once."""

from __future__ import annotations

import json
import os

import dramatiq
import pytest
from sqlalchemy import func, select

from actors.reports import start_weekly_report
from actors.sync import start_account_sync
from app.db.models import Job, ProviderAccount
from app.db.session import default_engine, transaction
from app.local.seed import seed
from chunking import ChunkRun
from pipelines import jobs
from pipelines.batches import BATCHES

pytestmark = pytest.mark.usefixtures("redis_env")

WEEK = "2026-W47"
TICK = "2026-11-24T06:00:00+00:00"


def _drain(broker: dramatiq.Broker, *queues: str) -> None:
    """Run ``queues`` until none has work left (callbacks queue more work on them)."""
    worker = dramatiq.Worker(broker, queues=set(queues), worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        for _ in range(4):
            for queue in queues:
                broker.join(queue, fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def _the_run() -> ChunkRun:
    with transaction() as session:
        return session.scalars(select(ChunkRun)).one()


def test_the_weekly_report_keeps_its_tally_and_posts_it_once(
    database, stub_broker, sinks, monkeypatch
):
    # Given 40 users (36 active) and an ops webhook
    seed(default_engine(), users=40)
    monkeypatch.setenv("OPS_WEBHOOK_URL", os.environ["PUSH_URL"].replace("/push", "/ops"))

    # When the week's report runs, its e-mails are delivered, and its start arrives twice
    start_weekly_report.send(week=WEEK)
    start_weekly_report.send(week=WEEK)
    _drain(stub_broker, "fanout", "emails", "notifications")

    # Then the run keeps the final tally, and the webhook got it once
    run = _the_run()
    assert run.summary == {"week": WEEK, "sent": 36, "expired": 0, "failed": 0}
    progress = BATCHES.progress(run.batch_id or "")
    assert progress is not None and (progress.total, progress.succeeded) == (36, 36)
    posts = [record for record in sinks.http() if record["path"] == "/ops"]
    assert len(posts) == 1
    assert json.loads(posts[0]["json"]["body"]) == run.summary


def test_the_account_sync_recomputes_the_insights_of_the_refreshed_accounts(database, stub_broker):
    # Given a sync run over every account, whose refresh jobs are its batch's members
    seed(default_engine(), users=30)
    start_account_sync.send(tick=TICK)
    _drain(stub_broker, "fanout")
    with transaction() as session:
        job_ids = session.scalars(select(Job.id).order_by(Job.id)).all()
        accounts = session.scalar(select(func.count()).select_from(ProviderAccount))
    assert len(job_ids) == accounts
    stub_broker.queues["insights"].queue.clear()

    # When every job ends, one of them failed, and the member messages run
    jobs.fail(job_ids[0], "provider: HTTP 500")
    for job_id in job_ids[1:]:
        with transaction() as session:
            jobs.finish(session, job_id)
    _drain(stub_broker, "fanout")

    # Then the insights of every refreshed account are recomputed, and the failed one counts
    assert stub_broker.queues["insights"].qsize() == accounts - 1
    progress = BATCHES.progress(_the_run().batch_id or "")
    assert progress is not None and progress.state == "fired"
    assert (progress.succeeded, progress.failed) == (accounts - 1, 1)
