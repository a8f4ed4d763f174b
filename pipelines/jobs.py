"""A job's state as its client sees it: progress while active, then done or failed with a reason.

Only an active job moves. A late, duplicated or retried message that finds its job finished
changes nothing, so a client never sees a failed job turn running again, and the error of the
first failure stays the one it reads. A job that is a batch member (an account sync's)
reports its end to its batch when it finishes or fails (``pipelines.batches``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, object_session

from app.db.models import ACTIVE_JOB_STATUSES, Job, JobStatus, utcnow
from app.db.session import SessionFactory, new_session
from pipelines.batches import report_job

MAX_ERROR_CHARS = 1_000

# Progress in percent at each milestone of a refresh. The provider's own percentage is scaled
# into 0..PROVIDER_DONE; the ETL steps share the rest.
PROVIDER_DONE = 60
DOWNLOADED = 75
TRANSFORMED = 90
DONE = 100


def is_active(job: Job) -> bool:
    """Whether ``job`` still has work pending (queued, polling or running)."""
    return job.status in {status.value for status in ACTIVE_JOB_STATUSES}


def locked(session: Session, job_id: str) -> Job | None:
    """The job, re-read and locked for the rest of the transaction (``None`` if it is gone)."""
    return session.get(Job, job_id, with_for_update=True, populate_existing=True)


def advance(
    session: Session,
    job_id: str,
    *,
    status: JobStatus | None = None,
    progress: int | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Move an active job forward; ``details`` are merged into its own. False if not active."""
    job = locked(session, job_id)
    if job is None or not is_active(job):
        return False
    if status is not None:
        job.status = status.value
    if progress is not None:
        job.progress = max(job.progress, progress)
    if details:
        job.details = {**job.details, **details}  # a new dict: SQLAlchemy sees the change
    return True


def finish(session: Session, job_id: str, *, details: dict[str, Any] | None = None) -> bool:
    """Mark an active job done at 100 %; False if it had already finished (or failed)."""
    if not advance(session, job_id, status=JobStatus.DONE, progress=DONE, details=details):
        return False
    job = session.get_one(Job, job_id)
    job.finished_at = utcnow()
    report_job(session, job)
    return True


def fail_locked(job: Job, error: str) -> bool:
    """Fail ``job`` (locked by the caller) with ``error``, unless it already finished."""
    if not is_active(job):
        return False
    job.status = JobStatus.FAILED.value
    job.error = error[:MAX_ERROR_CHARS]
    job.finished_at = utcnow()
    session = object_session(job)
    if session is not None:
        report_job(session, job)
    return True


def fail(job_id: str, error: str, *, new_session: SessionFactory = new_session) -> bool:
    """Fail an active job in a transaction of its own (the step's own one may be broken)."""
    with new_session() as session, session.begin():
        job = locked(session, job_id)
        return job is not None and fail_locked(job, error)
