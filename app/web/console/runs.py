"""The console's Runs and Jobs pages: chunked runs with their progress and levers, and the
provider refresh jobs of the asynchronous API.

Both lists are the API's own (``app.web.runs``, ``app.web.jobs``), called here so that a page
of the console and a page of ``GET /api/runs`` or ``/api/jobs`` hold the same rows, in the same
order, behind the same cursors. Pause, resume and cancel go through ``Operator``, audited like
``fintask runs``; resuming needs the run's declaration, looked up by its name as the CLI does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from actors.runs import CHUNKED_RUNS
from app.db.models import JobStatus
from app.inspection import job_counts
from app.web.console.access import ConsoleRefused, OperatorUser, User, operator_for
from app.web.console.confirm import confirm_or_act
from app.web.console.render import fragment, render
from app.web.deps import MAX_ID, SessionDep
from app.web.jobs import list_jobs
from app.web.pages import Cursor
from app.web.runs import list_runs
from chunking import Progress, run_progress

router = APIRouter()

#: Rows on one page of runs or jobs.
PAGE_SIZE = 50

RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="the run's id")]


@router.get("/console/runs")
def runs_page(request: Request, user: User, session: SessionDep, cursor: Cursor = None) -> Response:
    """Chunked runs, newest first; the table refreshes itself while the page is open."""
    return render(request, user, "runs.html", **_runs(session, cursor))


@router.get("/console/runs/live")
def runs_live(request: Request, user: User, session: SessionDep, cursor: Cursor = None) -> Response:
    """The runs table again, for the page's live region."""
    return fragment(request, "_runs_table.html", user=user, **_runs(session, cursor))


def _runs(session: Session, cursor: str | None) -> dict[str, Any]:
    """What the table shows: a page of runs, and the addresses it refreshes from and its
    actions come back to (this same page)."""
    page = list_runs(session, cursor=cursor, limit=PAGE_SIZE)
    query = f"?{urlencode({'cursor': cursor})}" if cursor else ""
    return {
        "runs": page.items,
        "next_cursor": page.next_cursor,
        "cursor": cursor,
        "resumable": set(CHUNKED_RUNS),
        "live": f"/console/runs/live{query}",
        "back": f"/console/runs{query}",
    }


@router.post("/console/runs/{run_id}/pause")
async def pause_run(
    request: Request, run_id: RunId, user: OperatorUser, session: SessionDep
) -> Response:
    """Stop the run after its current chunk."""
    progress = _run(session, run_id)
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title=f"Pause run {run_id}?",
        consequence=f"Run {run_id} ({progress.name}) stops after the chunk in progress; "
        "resumed, it goes on from where it stopped.",
        act=_changed(run_id, "paused", session, lambda: operator.pause_run(run_id)),
    )


@router.post("/console/runs/{run_id}/resume")
async def resume_run(
    request: Request, run_id: RunId, user: OperatorUser, session: SessionDep
) -> Response:
    """Restart a paused or failed run from its last committed cursor."""
    progress = _run(session, run_id)
    chunked_run = CHUNKED_RUNS.get(progress.name)
    if chunked_run is None:
        raise ConsoleRefused(
            409, f"run {run_id} is a {progress.name!r} run, which this release cannot resume"
        )
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title=f"Resume run {run_id}?",
        consequence=f"Run {run_id} ({progress.name}) goes on from its last committed chunk.",
        act=_changed(run_id, "resumed", session, lambda: operator.resume_run(run_id, chunked_run)),
    )


@router.post("/console/runs/{run_id}/cancel")
async def cancel_run(
    request: Request, run_id: RunId, user: OperatorUser, session: SessionDep
) -> Response:
    """End the run for good: no further chunk runs."""
    progress = _run(session, run_id)
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title=f"Cancel run {run_id}?",
        consequence=f"Run {run_id} ({progress.name}) ends for good after the chunk in "
        f"progress, at {progress.processed} processed; it cannot be resumed.",
        act=_changed(run_id, "cancelled", session, lambda: operator.cancel_run(run_id)),
    )


@router.get("/console/jobs")
def jobs_page(
    request: Request,
    user: User,
    session: SessionDep,
    status: JobStatus | None = None,
    cursor: Cursor = None,
) -> Response:
    """Provider refresh jobs, most recently updated first, of one status or all."""
    page = list_jobs(session, status=status, cursor=cursor, limit=PAGE_SIZE)
    return render(
        request,
        user,
        "jobs.html",
        jobs=page.items,
        next_cursor=page.next_cursor,
        cursor=cursor,
        status=None if status is None else status.value,
        counts=job_counts(session),
    )


def _run(session: Session, run_id: int) -> Progress:
    """Run ``run_id``'s progress, read in a transaction of its own (the action opens the next);
    a 404 page if there is no such run."""
    with session.begin():
        progress = run_progress(session, run_id)
    if progress is None:
        raise ConsoleRefused(404, f"run {run_id} does not exist")
    return progress


def _changed(
    run_id: int, done: str, session: Session, action: Callable[[], bool]
) -> Callable[[], str]:
    """The action as ``confirm_or_act`` runs it: its result line, or, when the run was not
    changed (it had moved on meanwhile), a failed one saying where it stands."""

    def act() -> str:
        if action():
            return f"run {run_id} {done}"
        with session.begin():
            progress = run_progress(session, run_id)
        status = "gone" if progress is None else progress.status
        raise ValueError(f"run {run_id} was not {done}: it is {status}")

    return act
