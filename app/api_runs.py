"""``GET /api/runs/{run_id}``: a chunked run's progress, as JSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.db.session import new_session
from chunking import run_progress

router = APIRouter(prefix="/api/runs", tags=["runs"])


class RunProgress(BaseModel):
    """Where a fan-out stands: ``percent`` and ``eta_s`` are null while the total is unknown."""

    run_id: int
    name: str
    status: str
    processed: int
    estimated_total: int | None
    percent: float | None
    rate_per_s: float | None
    eta_s: float | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None


def _session() -> Iterator[Session]:
    with new_session() as session:
        yield session


@router.get("/{run_id}", response_model=RunProgress, responses={404: {"description": "no run"}})
def get_run(
    run_id: Annotated[int, Path(ge=1, description="the run's id")],
    session: Annotated[Session, Depends(_session)],
) -> RunProgress:
    """The progress of run ``run_id``."""
    progress = run_progress(session, run_id)
    if progress is None:
        raise HTTPException(status_code=404, detail=f"run {run_id} does not exist")
    return RunProgress.model_validate(progress, from_attributes=True)
