"""The asynchronous refresh: a job its client polls while fintask polls the provider.

``request_refresh`` writes the job and, after commit, the first ``poll_refresh``. At most one
refresh job per account is active: the partial unique index on active jobs decides, inside the
INSERT, so two simultaneous requests get one job and no read-then-write race.

``poll`` is one poll. The first starts the provider's refresh; each one after asks how it
stands. While it runs, the poll re-sends itself after commit with a delay growing from 1 s to
5 s (never past the job's deadline); once the provider is done it starts the ETL
(``start_etl``, after commit); at the deadline it fails the job with ``deadline: ...`` and
sends nothing, so no message is left polling. Each message carries its poll number and only
the job's current number proceeds, so a duplicated message cannot fork a second chain.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import uuid
from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import (
    ACTIVE_JOB_STATUSES,
    AccountStatus,
    Job,
    JobStatus,
    ProviderAccount,
    utcnow,
)
from app.db.session import SessionFactory, new_session
from app.db.upsert import dialect_insert
from app.outbox import ActorRef, enqueue_after_commit
from app.provider import ProviderClient, ProviderRateLimited, RefreshStatus
from app.settings import load_settings
from pipelines import jobs
from pipelines.steps import Deferred, job_step

KIND = "refresh"
POLL = ActorRef("poll_refresh", queue_name="sync")
ETL = ActorRef("start_etl", queue_name="etl")
FIRST_POLL_DELAY_MS = 1_000
MAX_POLL_DELAY_MS = 5_000
POLL_DELAY_GROWTH = 1.5
#: One provider call per poll; well inside the poll actor's 30 s time limit.
POLL_TIMEOUT_S = 10.0


class AccountNotFound(LookupError):
    """No linked account has this id."""


class AccountBlocked(RuntimeError):
    """The account is blocked (the fraud check): fintask does not read it from the provider."""


class PollOutcome(enum.StrEnum):
    STALE = "stale"  # the job finished, or a newer poll took over: nothing done
    POLLING = "polling"  # the provider is still refreshing: the next poll is scheduled
    DONE = "done"  # the provider is done: the ETL is started
    DEADLINE = "deadline"  # the job failed at its deadline


def refresh_deadline(environ: Mapping[str, str] | None = None) -> dt.timedelta:
    """How long a refresh may take, from ``REFRESH_DEADLINE_S`` (default 300 s)."""
    return dt.timedelta(seconds=load_settings(environ).refresh_deadline_s)


def request_refresh(
    session: Session, account_id: int, *, deadline: dt.timedelta | None = None
) -> tuple[Job, bool]:
    """The account's active refresh job, made (and its first poll queued) if there was none.

    Returns the job and whether this call created it.
    """
    account = session.get(ProviderAccount, account_id)
    if account is None:
        raise AccountNotFound(f"account {account_id} does not exist")
    if account.status == AccountStatus.BLOCKED:
        raise AccountBlocked(f"account {account_id} is blocked; it cannot be refreshed")
    deadline = deadline or refresh_deadline()
    # Three tries: between our refused INSERT and our SELECT the active job can finish.
    for _ in range(3):
        job_id, now = str(uuid.uuid4()), utcnow()
        values = {
            "id": job_id,
            "kind": KIND,
            "account_id": account_id,
            "status": JobStatus.QUEUED.value,
            "progress": 0,
            "details": {"poll": 0},
            "deadline_at": now + deadline,
            "created_at": now,
            "updated_at": now,
        }
        insert = dialect_insert(session, Job).values(values).on_conflict_do_nothing()
        if session.execute(insert.returning(Job.id)).scalar_one_or_none() is not None:
            enqueue_after_commit(session, POLL, kwargs={"job_id": job_id, "poll": 0})
            return session.get_one(Job, job_id), True
        active = session.scalars(
            select(Job).where(
                Job.account_id == account_id,
                Job.kind == KIND,
                Job.status.in_([status.value for status in ACTIVE_JOB_STATUSES]),
            )
        ).first()
        if active is not None:
            return active, False
    raise RuntimeError(f"account {account_id}: no refresh job could be created or found")


def poll(
    job_id: str,
    poll_number: int,
    *,
    new_session: SessionFactory = new_session,
    now: Callable[[], dt.datetime] = utcnow,
) -> PollOutcome:
    """Run poll number ``poll_number`` of job ``job_id`` (see the module's docstring)."""
    with job_step(job_id, "poll", new_session=new_session):
        with new_session() as session, session.begin():
            job = jobs.locked(session, job_id)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            if not _is_current(job, poll_number):
                return PollOutcome.STALE
            if now() >= job.deadline_at:
                jobs.fail_locked(job, deadline_error(job))
                return PollOutcome.DEADLINE
            external_id = session.get_one(ProviderAccount, job.account_id).external_id
            refresh_id = job.details.get("refresh_id")
            refresh_id = None if refresh_id is None else str(refresh_id)
            deadline_at = job.deadline_at
        try:
            status = _ask_provider(external_id, refresh_id)
        except ProviderRateLimited as error:
            # Come back when the provider says, but not after the deadline.
            delay_ms = min(error.retry_after_ms, _ms_until(deadline_at, now()) + 1)
            raise Deferred(delay_ms, reason=str(error)) from error
        with new_session() as session, session.begin():
            job = jobs.locked(session, job_id)
            if job is None or not _is_current(job, poll_number):
                return PollOutcome.STALE
            return _record(session, job, status, poll_number, now())


def next_poll_delay_ms(poll_number: int, *, ms_until_deadline: int) -> int:
    """1 s after the first poll, growing by half each time up to 5 s, never past the deadline.

    At the deadline itself (+1 ms, so that the poll finds it passed) the last poll runs and
    fails the job.
    """
    delay = min(MAX_POLL_DELAY_MS, round(FIRST_POLL_DELAY_MS * POLL_DELAY_GROWTH**poll_number))
    return max(1, min(delay, ms_until_deadline + 1))


def deadline_error(job: Job) -> str:
    """The error of a job that reached its deadline, with how far the provider had come."""
    when = job.deadline_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    refresh_id = job.details.get("refresh_id")
    if refresh_id is None:
        return f"deadline: the provider refresh had not started by {when}"
    progress = job.details.get("provider_progress", 0)
    return (
        f"deadline: the provider refresh {refresh_id} was still in progress "
        f"({progress} %) at {when}"
    )


def _is_current(job: Job, poll_number: int) -> bool:
    return jobs.is_active(job) and job.details.get("poll", 0) == poll_number


def _ask_provider(external_id: str, refresh_id: str | None) -> RefreshStatus:
    with ProviderClient.from_settings(timeout_s=POLL_TIMEOUT_S) as provider:
        if refresh_id is None:
            return provider.start_refresh(external_id)
        return provider.get_refresh(refresh_id)


def _record(
    session: Session, job: Job, status: RefreshStatus, poll_number: int, now: dt.datetime
) -> PollOutcome:
    """Write what the provider said on the job and queue what comes next (after commit)."""
    job.details = {
        **job.details,
        "refresh_id": status.refresh_id,
        "provider_progress": status.progress_percent,
        "poll": poll_number + 1,
    }
    if status.done:
        job.status = JobStatus.RUNNING.value
        job.progress = jobs.PROVIDER_DONE
        enqueue_after_commit(session, ETL, kwargs={"job_id": job.id, "account_id": job.account_id})
        return PollOutcome.DONE
    job.status = JobStatus.POLLING.value
    job.progress = max(job.progress, status.progress_percent * jobs.PROVIDER_DONE // 100)
    delay_ms = next_poll_delay_ms(poll_number, ms_until_deadline=_ms_until(job.deadline_at, now))
    enqueue_after_commit(
        session, POLL, kwargs={"job_id": job.id, "poll": poll_number + 1}, delay_ms=delay_ms
    )
    return PollOutcome.POLLING


def _ms_until(moment: dt.datetime, now: dt.datetime) -> int:
    return max(0, math.ceil((moment - now).total_seconds() * 1000))
