"""The asynchronous API: start a provider refresh, then poll its job.

``POST /api/accounts/{account_id}/refresh`` answers at once with the job and a ``Location``
to poll: 202 when it started a refresh, with a ``Retry-After`` for the first poll; 200 with the
running job when one is already active (a client that retries its POST gets the same job, not
a second refresh). ``GET /api/jobs/{job_id}`` shows status, progress and, once failed, why;
``GET /api/jobs`` lists the jobs, most recently updated first, a page at a time
(``app.web.pages``). Errors carry a readable ``detail``: 404 for an unknown account or job, 409
for a blocked account, 400 for a malformed cursor, 422 for a malformed or out-of-range id, 503
when the job is recorded but the queue cannot be reached (the outbox relay starts it once the
queue answers).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_, select

from app.db.models import Job, JobStatus
from app.outbox import send_failure
from app.web.deps import MAX_ID, ErrorOut, SessionDep
from app.web.pages import BAD_CURSOR_RESPONSE, Cursor, Limit, Page, decode_cursor, page_of
from pipelines import refresh

router = APIRouter(prefix="/api", tags=["refresh jobs"])


class JobOut(BaseModel):
    """A refresh job as its client polls it."""

    id: uuid.UUID
    kind: str
    account_id: int
    status: Literal["queued", "polling", "running", "done", "failed"]
    progress: int = Field(ge=0, le=100, description="Percent done: provider refresh, then ETL.")
    error: str | None = Field(description="Why the job failed, naming the step: 'deadline: ...'.")
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    deadline_at: dt.datetime = Field(description="The job fails if unfinished by then.")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls.model_validate(job, from_attributes=True)


#: Seconds a client is told to wait before asking again while the queue is unreachable: the
#: relay that sends the recorded message runs every minute.
QUEUE_DOWN_RETRY_AFTER_S = 60

#: Seconds a client is told to wait before it first polls a job it just started: the provider
#: takes seconds to refresh, and a poll sooner only finds the job still queued.
FIRST_POLL_AFTER_S = 2

_LOCATION = {"description": "Where to poll the job.", "schema": {"type": "string"}}
_RETRY_AFTER = {
    "description": "Seconds to wait before polling (or retrying).",
    "schema": {"type": "integer"},
}


@router.post(
    "/accounts/{account_id}/refresh",
    status_code=202,
    response_model=JobOut,
    responses={
        202: {
            "description": "A refresh started: the new job.",
            "headers": {"Location": _LOCATION, "Retry-After": _RETRY_AFTER},
        },
        200: {
            "model": JobOut,
            "description": "A refresh is already active: that job.",
            "headers": {"Location": _LOCATION},
        },
        404: {"model": ErrorOut, "description": "No such account."},
        409: {"model": ErrorOut, "description": "The account is blocked."},
        503: {
            "model": ErrorOut,
            "description": "The job is recorded (see Location) but the queue is unreachable; "
            "it starts once the queue answers.",
            "headers": {"Location": _LOCATION, "Retry-After": _RETRY_AFTER},
        },
    },
)
def refresh_account(
    account_id: Annotated[
        int, Path(ge=1, le=MAX_ID, description="fintask's id of the linked account")
    ],
    request: Request,
    response: Response,
    session: SessionDep,
) -> JobOut:
    """Start refreshing the account from the provider; poll ``Location`` for the job."""
    try:
        with session.begin():
            job, created = refresh.request_refresh(session, account_id)
    except refresh.AccountNotFound as error:
        raise HTTPException(404, str(error)) from None
    except refresh.AccountBlocked as error:
        raise HTTPException(409, str(error)) from None
    location = str(request.app.url_path_for("get_job", job_id=job.id))
    if (failure := send_failure(session)) is not None:
        raise HTTPException(
            503,
            f"job {job.id} is recorded, but the queue could not be reached "
            f"({type(failure).__name__}); it starts once the queue answers",
            headers={"Location": location, "Retry-After": str(QUEUE_DOWN_RETRY_AFTER_S)},
        )
    response.status_code = 202 if created else 200
    response.headers["Location"] = location
    if created:
        response.headers["Retry-After"] = str(FIRST_POLL_AFTER_S)
    return JobOut.of(job)


@router.get("/jobs", response_model=Page[JobOut], responses=BAD_CURSOR_RESPONSE)
def list_jobs(
    session: SessionDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[JobOut]:
    """Jobs, most recently updated first, a page at a time.

    A job that changes while a client pages moves to the front: a new first page shows it.
    """
    query = select(Job).order_by(Job.updated_at.desc(), Job.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(Job.status == status)
    after = decode_cursor(cursor, _job_key)
    if after is not None:
        updated_at, job_id = after
        query = query.where(
            or_(Job.updated_at < updated_at, and_(Job.updated_at == updated_at, Job.id < job_id))
        )
    jobs, next_cursor = page_of(
        session.scalars(query).all(), limit, lambda job: [job.updated_at.isoformat(), job.id]
    )
    return Page[JobOut](items=[JobOut.of(job) for job in jobs], next_cursor=next_cursor)


def _job_key(key: Any) -> tuple[dt.datetime, str]:
    """A job cursor's key: the last job's ``updated_at`` (aware) and id."""
    updated_at, job_id = key
    if not isinstance(updated_at, str) or not isinstance(job_id, str):
        raise TypeError(f"not a job's key: {key!r}")
    moment = dt.datetime.fromisoformat(updated_at)
    if moment.tzinfo is None:
        raise ValueError(f"a naive timestamp: {updated_at!r}")
    return moment, str(uuid.UUID(job_id))


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses={404: {"model": ErrorOut, "description": "No such job."}},
)
def get_job(job_id: uuid.UUID, session: SessionDep) -> JobOut:
    """Where a job stands: status, progress in percent, the error once it failed."""
    job = session.get(Job, str(job_id))
    if job is None:
        raise HTTPException(404, f"job {job_id} does not exist")
    return JobOut.of(job)
