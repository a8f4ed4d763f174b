"""Maintenance: old blobs go, stuck jobs fail with a reason, dead letters are reported."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select

from app.db.models import Job, JobStatus, ProviderAccount, RawBlob
from app.db.session import transaction
from app.queues import QueueDepth
from pipelines import maintenance

NOW = dt.datetime.now(dt.UTC)


def _account(user) -> int:
    with transaction() as session:
        account = ProviderAccount(user_id=user.id, provider="sandbox", external_id="acc-1")
        session.add(account)
    return account.id


def test_raw_blobs_past_retention_are_deleted_and_recent_ones_kept(user):
    account_id = _account(user)
    with transaction() as session:
        for days, digest in ((40, "old"), (31, "older"), (2, "recent")):
            session.add(
                RawBlob(
                    account_id=account_id,
                    kind="transactions",
                    sha256=digest,
                    body=b"{}",
                    fetched_at=NOW - dt.timedelta(days=days),
                )
            )

    deleted = maintenance.purge_raw_blobs(retention=dt.timedelta(days=30))

    assert deleted == 2
    with transaction() as session:
        assert list(session.scalars(select(RawBlob.sha256))) == ["recent"]


def test_jobs_past_their_deadline_fail_saying_why(user):
    account_id = _account(user)
    with transaction() as session:
        for status, deadline in (("polling", -1), ("running", +10), ("done", -1)):
            session.add(
                Job(
                    id=str(uuid.uuid4()),
                    kind=f"refresh-{status}",
                    account_id=account_id,
                    status=status,
                    deadline_at=NOW + dt.timedelta(minutes=deadline),
                )
            )

    assert maintenance.fail_stuck_jobs() == 1

    with transaction() as session:
        jobs = {job.kind: job for job in session.scalars(select(Job))}
    assert jobs["refresh-polling"].status == JobStatus.FAILED
    assert jobs["refresh-polling"].error.startswith("deadline: ")
    assert jobs["refresh-running"].status == JobStatus.RUNNING
    assert jobs["refresh-done"].status == JobStatus.DONE


def test_dead_letters_are_reported_per_queue(caplog):
    depths = [QueueDepth("emails", 0, 0, 3), QueueDepth("fraud", 5, 0, 0)]

    assert maintenance.report_dead_letters(depths) == {"emails": 3, "fraud": 0}
    assert "Queue 'emails' holds 3 dead-lettered messages" in caplog.text
    assert "fraud" not in caplog.text
