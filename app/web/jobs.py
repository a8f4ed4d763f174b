"""The asynchronous API: start a provider refresh, then poll its job.

``POST /api/accounts/{account_id}/refresh`` answers at once with the job and a ``Location``
to poll: 202 when it started a refresh, 200 with the running job when one is already active
(a client that retries its POST gets the same job, not a second refresh). ``GET
/api/jobs/{job_id}`` shows status, progress and, once failed, why. Errors carry a readable
``detail``: 404 for an unknown account or job, 409 for a blocked account, 422 for a malformed
or out-of-range id, 503 when the job is recorded but the queue cannot be reached (the outbox
relay starts it once the queue answers).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field

from app.db.models import Job
from app.outbox import send_failure
from app.web.deps import MAX_ID, ErrorOut, SessionDep
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


@router.post(
    "/accounts/{account_id}/refresh",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "A refresh is already active: that job."},
        404: {"model": ErrorOut, "description": "No such account."},
        409: {"model": ErrorOut, "description": "The account is blocked."},
        503: {
            "model": ErrorOut,
            "description": "The job is recorded (see Location) but the queue is unreachable; "
            "it starts once the queue answers.",
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
    return JobOut.of(job)


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
