"""Housekeeping: old raw blobs, jobs stuck past their deadline, dead letters, the outbox."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import Engine, delete, select, update

from app.db.models import ACTIVE_JOB_STATUSES, Job, JobStatus, RawBlob, utcnow
from app.db.session import SessionFactory, new_session
from app.outbox import relay
from app.queues import QueueDepth
from pipelines.batches import report_job

logger = logging.getLogger(__name__)

RAW_BLOB_RETENTION = dt.timedelta(days=30)
DELETE_BATCH = 1_000


def purge_raw_blobs(
    *, retention: dt.timedelta = RAW_BLOB_RETENTION, new_session: SessionFactory = new_session
) -> int:
    """Delete raw provider responses older than ``retention``, in small transactions."""
    cutoff = utcnow() - retention
    deleted = 0
    while True:
        with new_session() as session, session.begin():
            batch = select(RawBlob.id).where(RawBlob.fetched_at < cutoff).limit(DELETE_BATCH)
            result = session.execute(delete(RawBlob).where(RawBlob.id.in_(batch)))
        count: int = result.rowcount  # type: ignore[attr-defined]
        deleted += count
        if count < DELETE_BATCH:
            logger.info("Deleted %d raw blobs fetched before %s", deleted, cutoff.isoformat())
            return deleted


def fail_stuck_jobs(*, new_session: SessionFactory = new_session) -> int:
    """Fail every job still active past its deadline, saying so on the job."""
    now = utcnow()
    stuck = (Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]), Job.deadline_at < now)
    with new_session() as session, session.begin():
        members = session.scalars(select(Job).where(*stuck, Job.batch_id.is_not(None))).all()
        result = session.execute(
            update(Job)
            .where(*stuck)
            .values(
                status=JobStatus.FAILED.value,
                error="deadline: still unfinished at its deadline (failed by maintenance)",
                finished_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        for job in members:
            report_job(session, job)
    failed: int = result.rowcount  # type: ignore[attr-defined]
    if failed:
        logger.warning("Failed %d jobs stuck past their deadline", failed)
    return failed


def report_dead_letters(depths: list[QueueDepth]) -> dict[str, int]:
    """Log the dead-letter count of every queue that has any; return them all."""
    dead = {depth.queue_name: depth.dead for depth in depths}
    for queue_name, count in dead.items():
        if count:
            logger.warning("Queue %r holds %d dead-lettered messages", queue_name, count)
    return dead


def relay_outbox(engine: Engine) -> int:
    """Send outbox messages whose committing process died before sending them."""
    sent = relay(engine)
    if sent:
        logger.warning("Relayed %d outbox messages left unsent after commit", sent)
    return sent
