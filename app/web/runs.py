"""``GET /api/runs/{run_id}``: a chunked run's progress, as JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from app.web.deps import MAX_ID, ErrorOut, SessionDep
from chunking import Progress, run_progress

router = APIRouter(prefix="/api/runs", tags=["runs"])


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
