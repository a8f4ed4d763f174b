"""The console's Schedule page: every periodic job, its spec in words, its ticks, and the levers.

The rows are the scheduler's own (``scheduler.render``), as ``GET /api/schedule`` lists them:
the spec and next tick from the code, the last tick sent, pause and run-now requests from
Redis. Pause, resume and run now go through ``Operator``, audited like the CLI's.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.control.actions import UnknownTarget, check_job
from app.redis_client import get_redis
from app.web.console.access import ConsoleRefused, OperatorUser, User, operator_for
from app.web.console.confirm import confirm_or_act
from app.web.console.cron_words import cron_in_words
from app.web.console.render import render
from app.web.deps import SessionDep
from scheduler.render import default_schedule, job_names, read_live, schedule_data

router = APIRouter()

JobName = Annotated[str, Path(max_length=200, description="a job of the periodic schedule")]


@router.get("/console/schedule")
def schedule_page(request: Request, user: User) -> Response:
    """Each job, soonest first."""
    jobs = default_schedule()
    now = dt.datetime.now(dt.UTC)
    rows = schedule_data(now, jobs, live=read_live(get_redis(), jobs))
    words = {job.name: cron_in_words(job.spec) for job in jobs}
    return render(request, user, "schedule.html", jobs=rows, words=words, now=now)


@router.post("/console/schedule/{job}/run")
async def run_job(
    request: Request, job: JobName, user: OperatorUser, session: SessionDep
) -> Response:
    """Ask the schedulers to send one tick of ``job`` now (it runs even while paused)."""
    known = _known(job)
    operator = operator_for(user, session)

    def act() -> str:
        request_id = operator.run_job(job, known=known)
        return f"{job} will run within seconds: a scheduler takes run-now request {request_id}"

    return await confirm_or_act(
        request,
        user,
        title=f"Run {job} now?",
        consequence=f"A scheduler sends one tick of {job} now, as a run of its own (even if "
        "the job is paused); its scheduled ticks still run.",
        act=act,
    )


@router.post("/console/schedule/{job}/pause")
async def pause_job(
    request: Request, job: JobName, user: OperatorUser, session: SessionDep
) -> Response:
    """Stop sending ``job``'s ticks; those due while paused are not caught up."""
    known = _known(job)
    operator = operator_for(user, session)

    def act() -> str:
        if operator.pause_job(job, known=known):
            return f"{job} paused: no scheduler sends its ticks until it is resumed"
        return f"{job} was paused already"

    return await confirm_or_act(
        request,
        user,
        title=f"Pause {job}?",
        consequence=f"No scheduler sends {job}'s ticks until it is resumed, and the ticks due "
        "meanwhile are not caught up. Run now still works.",
        act=act,
    )


@router.post("/console/schedule/{job}/resume")
async def resume_job(
    request: Request, job: JobName, user: OperatorUser, session: SessionDep
) -> Response:
    """Send ``job``'s ticks again, from its next one."""
    known = _known(job)
    operator = operator_for(user, session)

    def act() -> str:
        if operator.resume_job(job, known=known):
            return f"{job} resumed: its next tick is sent"
        return f"{job} was not paused"

    return await confirm_or_act(
        request,
        user,
        title=f"Resume {job}?",
        consequence=f"The schedulers send {job}'s ticks again from its next one; those it "
        "missed while paused are not sent.",
        act=act,
    )


def _known(job: str) -> list[str]:
    """The schedule's job names, if ``job`` is one of them; a 404 page otherwise."""
    names = job_names()
    try:
        check_job(job, names)
    except UnknownTarget as error:
        raise ConsoleRefused(404, str(error)) from None
    return names
