"""``GET /api/runs``: chunked runs, newest first, a page at a time; ``GET /api/runs/{run_id}``:
one run's progress. Both as JSON, each run as ``chunking.Progress``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from sqlalchemy import select

from app.web.deps import MAX_ID, ErrorOut, SessionDep
from app.web.pages import BAD_CURSOR_RESPONSE, Cursor, Limit, Page, decode_cursor, page_of
from chunking import ChunkRun, Progress, run_progress
from chunking.models import utcnow

router = APIRouter(prefix="/api/runs", tags=["runs"])


@router.get("", response_model=Page[Progress], responses=BAD_CURSOR_RESPONSE)
def list_runs(session: SessionDep, cursor: Cursor = None, limit: Limit = 50) -> Page[Progress]:
    """Runs, newest first, a page at a time, each with its progress as ``GET /api/runs/{id}``."""
    query = select(ChunkRun).order_by(ChunkRun.id.desc()).limit(limit + 1)
    after = decode_cursor(cursor, _run_key)
    if after is not None:
        query = query.where(ChunkRun.id < after)
    runs, next_cursor = page_of(session.scalars(query).all(), limit, lambda run: [run.id])
    now = utcnow()
    return Page[Progress](
        items=[Progress.of(run, now=now) for run in runs], next_cursor=next_cursor
    )


@router.get("/{run_id}", responses={404: {"model": ErrorOut, "description": "No such run."}})
def get_run(
    run_id: Annotated[int, Path(ge=1, le=MAX_ID, description="the run's id")],
    session: SessionDep,
) -> Progress:
    """Where run ``run_id`` stands (``percent`` and ``eta_s`` are null while no total is known)."""
    progress = run_progress(session, run_id)
    if progress is None:
        raise HTTPException(status_code=404, detail=f"run {run_id} does not exist")
    return progress


def _run_key(key: Any) -> int:
    """A run cursor's key: the last run's id."""
    (run_id,) = key
    if not isinstance(run_id, int) or isinstance(run_id, bool) or not 1 <= run_id <= MAX_ID:
        raise ValueError(f"not a run id: {run_id!r}")
    return run_id
