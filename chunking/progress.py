"""Progress of a run as a reader wants it: done so far, percent, rate and time left."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from chunking.models import ChunkRun, RunStatus


@dataclass(frozen=True)
class Progress:
    """A snapshot of one run. ``rate_per_s`` counts since the run last started or resumed."""

    run_id: int
    name: str
    status: str
    seq: int
    processed: int
    estimated_total: int | None
    percent: float | None
    rate_per_s: float | None
    eta_s: float | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, run: ChunkRun, *, now: dt.datetime) -> Progress:
        """The progress of ``run`` as of ``now`` (aware UTC)."""
        rate = _rate_per_s(run, now)
        return cls(
            run_id=run.id,
            name=run.name,
            status=run.status,
            seq=run.seq,
            processed=run.processed,
            estimated_total=run.estimated_total,
            percent=_percent(run),
            rate_per_s=rate,
            eta_s=_eta_s(run, rate),
            error=run.error,
            created_at=run.created_at,
            updated_at=run.updated_at,
            finished_at=run.finished_at,
        )


def _percent(run: ChunkRun) -> float | None:
    if run.status == RunStatus.DONE:
        return 100.0
    if not run.estimated_total:
        return None
    return min(100.0, 100.0 * run.processed / run.estimated_total)


def _rate_per_s(run: ChunkRun, now: dt.datetime) -> float | None:
    # A running run's clock runs until now, so a stalled run's rate visibly decays; a paused
    # or finished one stops at its last update.
    until = now if run.status == RunStatus.RUNNING else (run.finished_at or run.updated_at)
    elapsed_s = (until - run.resumed_at).total_seconds()
    done = run.processed - run.processed_at_resume
    if elapsed_s <= 0 or done <= 0:
        return None
    return done / elapsed_s


def _eta_s(run: ChunkRun, rate: float | None) -> float | None:
    if run.status == RunStatus.DONE:
        return 0.0
    if run.status != RunStatus.RUNNING or not run.estimated_total or not rate:
        return None
    return max(0, run.estimated_total - run.processed) / rate
