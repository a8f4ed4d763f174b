"""Starting, pausing, resuming and cancelling runs, and reading their progress.

Every function works in the caller's session and transaction and commits nothing: the run's
state changes with whatever else the caller does, and the messages they imply (the first
chunk, a resumed chunk) leave through the run's after-commit sender once the caller commits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import suppress
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from chunking.after_commit import AfterCommit
from chunking.batches import Batches, UnknownBatch
from chunking.models import ChunkRun, RunStatus, utcnow
from chunking.progress import Progress
from chunking.run import ChunkedRun

#: The largest encoded ``params`` a run accepts: parameters, not data.
MAX_PARAMS_BYTES = 4_096


def start_run(
    session: Session,
    chunked_run: ChunkedRun,
    *,
    params: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> int:
    """Create a run of ``chunked_run`` and send its first chunk on commit; return its id.

    ``params`` (small JSON: ids, ISO dates, short strings) reach the enumerator and processor
    of every chunk. ``chunked_run.estimate``, if any, sets the expected total now. With a
    ``key``, a run that already has it is returned instead, whatever its state: starting the
    same work twice (a redelivered message, a second click) makes one run. A run with a
    fan-in gets its batch now (a transaction that then rolls back leaves it empty and open,
    never filled). Two concurrent
    starts race on the key's unique constraint; the loser's transaction fails and, retried,
    finds the winner's run.
    """
    if key is not None:
        existing = session.scalar(select(ChunkRun.id).where(ChunkRun.key == key))
        if existing is not None:
            return existing
    stored = _json_params(params or {})
    run = ChunkRun(
        key=key,
        name=chunked_run.name,
        params=stored,
        cursor=None,
        seq=0,
        status=RunStatus.RUNNING,
        processed=0,
        processed_at_resume=0,
        failures=0,
        estimated_total=chunked_run.estimate(session, stored) if chunked_run.estimate else None,
    )
    session.add(run)
    session.flush()
    if chunked_run.fan_in is not None:
        run.batch_id = chunked_run.fan_in.create(chunked_run.name, run.id)
    chunked_run.send_chunk(session, run.id, run.seq)
    return run.id


def pause_run(session: Session, run_id: int) -> bool:
    """Stop a running run after its current chunk; False if it was not running."""
    return _transition(session, run_id, {RunStatus.RUNNING}, RunStatus.PAUSED)


def cancel_run(session: Session, run_id: int, *, batches: Batches | None = None) -> bool:
    """End a run for good (no chunk runs after this commits); False if it had already ended.

    A run with a fan-in gets no more members once it ends, so its batch would wait forever for
    those no chunk will add: given the ``batches`` its fan-in keeps it in, the batch is
    cancelled once the caller commits (``on_failure`` and ``on_complete`` fire once; members
    still queued are skipped). After the commit, not before: a rolled-back cancel leaves the
    run going with its batch open. A crash between the two leaves the batch open; cancel it
    then with ``Batches.cancel``.
    """
    changed = _transition(
        session,
        run_id,
        {RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.FAILED},
        RunStatus.CANCELLED,
        finished=True,
    )
    if changed and batches is not None:
        batch_id = session.scalar(select(ChunkRun.batch_id).where(ChunkRun.id == run_id))
        if batch_id is not None:
            _CANCEL_AFTER_COMMIT.add(session, (batches, batch_id))
    return changed


def _cancel_batches(session: Session, batches: list[tuple[Batches, str]]) -> None:
    # A batch that had completed (cancel answers False) or expired a week after that
    # (UnknownBatch) has nothing left to cancel.
    for store, batch_id in batches:
        with suppress(UnknownBatch):
            store.cancel(batch_id)


#: The fan-in batches of runs cancelled in a transaction, cancelled once it commits.
_CANCEL_AFTER_COMMIT: AfterCommit[tuple[Batches, str]] = AfterCommit(flush=_cancel_batches)


def resume_run(session: Session, chunked_run: ChunkedRun, run_id: int) -> bool:
    """Restart a paused or failed run at its cursor by re-sending its current chunk.

    On a running run this re-sends the current chunk too: the way to restart a run whose next
    message was lost (a crash between commit and send). If that message was not lost, the
    duplicate is fenced off and ignored. False for a finished, cancelled or unknown run.
    """
    run = session.get(ChunkRun, run_id, with_for_update=True, populate_existing=True)
    resumable = (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.FAILED)
    if run is None or run.name != chunked_run.name or run.status not in resumable:
        return False
    if run.status != RunStatus.RUNNING:
        now = utcnow()
        run.status = RunStatus.RUNNING
        run.failures = 0
        run.finished_at = None
        run.updated_at = run.resumed_at = now
        run.processed_at_resume = run.processed
    session.flush()
    chunked_run.send_chunk(session, run.id, run.seq)
    return True


def record_summary(session: Session, run_id: int, summary: Mapping[str, Any]) -> bool:
    """Keep ``summary`` (plain JSON) on a run, once: False if the run has one already, so a
    callback delivered twice records the first one only."""
    result = session.execute(
        update(ChunkRun)
        .where(ChunkRun.id == run_id, ChunkRun.summary.is_(None))
        .values(summary=_json_params(summary), updated_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return cast(CursorResult[Any], result).rowcount == 1


def run_progress(session: Session, run_id: int) -> Progress | None:
    """Processed, estimated total, percent, rate and ETA of a run (None if unknown)."""
    run = session.get(ChunkRun, run_id, populate_existing=True)
    return None if run is None else Progress.of(run, now=utcnow())


def _transition(
    session: Session,
    run_id: int,
    from_statuses: set[RunStatus],
    to_status: RunStatus,
    *,
    finished: bool = False,
) -> bool:
    # One conditional UPDATE: it waits for a chunk in progress to commit, then applies.
    now = utcnow()
    values: dict[str, Any] = {"status": to_status, "updated_at": now}
    if finished:
        values["finished_at"] = now
    result = session.execute(
        update(ChunkRun)
        .where(ChunkRun.id == run_id, ChunkRun.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
    return cast(CursorResult[Any], result).rowcount == 1


def _json_params(params: Mapping[str, Any]) -> dict[str, Any]:
    # Store what JSON gives back, so every chunk sees the same values the first one did.
    try:
        encoded = json.dumps(dict(params), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run params must be plain JSON: {exc}") from None
    if len(encoded.encode()) > MAX_PARAMS_BYTES:
        raise ValueError(f"run params are {len(encoded)} bytes; the limit is {MAX_PARAMS_BYTES}")
    return cast(dict[str, Any], json.loads(encoded))
