"""fintask's batches: the library's store on fintask's Redis, with its guardrails, and the
members that are jobs.

Callbacks are checked as every message is (``validate_message``: scalars, no personal data,
the size limit) when the batch is created, not when it fires. A refresh job that is a member
reports itself once it finishes: ``report_job`` writes a ``settle_job_member`` message to the
outbox in the job's own transaction, so a worker that dies after the commit leaves it to the
relay, and the batch's bit makes a message delivered twice count once.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Message
from sqlalchemy.orm import Session

from app.db.models import Job, JobStatus
from app.db.session import SessionFactory, new_session
from app.declarations import current_broker
from app.middleware.guardrails import validate_message
from app.outbox import ActorRef, enqueue_after_commit, message_limit
from app.redaction import redact
from app.redis_access import BATCH_PREFIX
from app.redis_client import get_redis
from chunking import Batches, FailureKind

SETTLE_JOB = ActorRef("settle_job_member", queue_name="fanout")


def _check(message: Message[Any]) -> None:
    validate_message(message, max_bytes=message_limit(current_broker()))


#: The batches of every fintask process, under ``BATCH_PREFIX`` (the ACL users' key space; the
#: ``BatchMembers`` middleware records into the same keys: ``app.broker``).
BATCHES = Batches(client=get_redis, prefix=BATCH_PREFIX, check_message=_check)


def attach_job(job: Job, member: dict[str, Any] | None) -> bool:
    """Make ``job`` the batch member ``member`` names (``ChunkContext.member()``), unless it
    is one already (a job an earlier sync started and still runs); whether it did."""
    if member is None or job.batch_id is not None:
        return False
    job.batch_id, job.batch_ordinal = member["batch_member"]
    return True


def report_job(session: Session, job: Job) -> None:
    """Once ``session`` commits, record the end of ``job`` in its batch, if it is a member."""
    if job.batch_id is not None:
        enqueue_after_commit(session, SETTLE_JOB, kwargs={"job_id": job.id})


def settle_job(job_id: str, *, new_session: SessionFactory = new_session) -> bool:
    """Record a finished job's outcome in its batch; True if that completed the batch."""
    with new_session() as session:
        job = session.get(Job, job_id)
        if job is None or job.batch_id is None or job.batch_ordinal is None:
            return False
        failed = job.status != JobStatus.DONE.value
        batch_id, ordinal, error = job.batch_id, job.batch_ordinal, job.error
    return BATCHES.settle(
        batch_id,
        ordinal,
        failed=FailureKind.FAILED if failed else None,
        reason=redact(error or "") if failed else "",
        message_id=job_id,
    )
