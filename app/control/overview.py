"""The fleet at a glance: what Flower's and Sidekiq Web's first pages showed, read in one go.

Each declared queue with its messages by state (``app.control.queue_counts``), the worker
processes consuming it, and its messages done and failed per minute over the last hour
(``app.minute_counts``, which each worker's ``FleetControl`` adds to); the workers alive; the
chunked runs in progress. The console's Overview draws it and its alerts are evaluated over it
(``app.control.alerts``). Each figure is read by the readers the API and ``/metrics`` use
(``queue_stats``, under ``queue_counts``; ``list_workers``; ``consumers_alive``), so that
they agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
from dramatiq.common import current_millis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.control.queue_counts import QueueCounts, queue_counts
from app.control.workers import WorkerView, list_workers
from app.inspection import consumers_alive
from app.middleware.fleet import queue_series
from app.minute_counts import read_many_minutes
from chunking import ChunkRun, Progress, RunStatus

#: The minutes of counts each queue's sparkline draws, oldest first, the last one in progress.
MINUTES = 60
#: Runs whose chunks are still to come: an operator may resume a paused one.
IN_PROGRESS = (RunStatus.RUNNING, RunStatus.PAUSED)
#: The most runs in progress listed (the newest); the Runs page lists them all.
RUNS_LISTED = 20


@dataclass(frozen=True)
class QueueOverview:
    """One queue: its messages by state, who consumes it, and what it did per minute."""

    counts: QueueCounts
    #: Worker processes alive whose consumers include this queue.
    consumers: int
    #: Messages done (no exception) and failed (any exception, retried or not) in each of the
    #: last ``MINUTES`` minutes, oldest first; the last minute is still being counted.
    done: Sequence[int]
    failed: Sequence[int]

    @property
    def queue_name(self) -> str:
        return self.counts.queue_name

    @property
    def done_per_min(self) -> int:
        """Messages done in the last whole minute (the current one is still counting)."""
        return last_whole_minute(self.done)

    @property
    def failed_per_min(self) -> int:
        """Messages failed in the last whole minute."""
        return last_whole_minute(self.failed)


@dataclass(frozen=True)
class Overview:
    """The whole fleet as read at ``read_at_ms``."""

    queues: list[QueueOverview]
    #: Worker processes whose broker heartbeat is fresh: ``fintask_consumers_alive``.
    consumers_alive: int
    #: The worker processes whose record is live, newest heartbeat first.
    workers: list[WorkerView]
    #: Workers whose record expired without a shutdown (what they held awaits recovery).
    workers_gone: int
    #: The newest ``RUNS_LISTED`` runs in progress, and how many there are in all.
    runs: list[Progress]
    runs_in_progress: int
    read_at_ms: int

    @property
    def read_at(self) -> dt.datetime:
        """When it was read, as an aware UTC datetime."""
        return _utc(self.read_at_ms)


def read_overview(
    client: redis.Redis,
    session: Session,
    queue_names: Iterable[str],
    *,
    heartbeat_timeout_ms: int,
    now_ms: int | None = None,
) -> Overview:
    """Read the overview of ``queue_names`` (the broker's declared queues) from Redis and the
    database; ``now_ms`` is the moment the counts per minute and the runs are read as of."""
    now_ms = current_millis() if now_ms is None else now_ms
    names = list(queue_names)
    workers = list_workers(client, names)
    alive = [worker for worker in workers if worker.state == "alive"]
    minutes = read_many_minutes(
        client, [queue_series(name) for name in names], minutes=MINUTES, now_ms=now_ms
    )
    queues = [
        _queue(counts, alive, minutes[queue_series(counts.queue_name)])
        for counts in queue_counts(client, names)
    ]
    runs, in_progress = _runs_in_progress(session, _utc(now_ms))
    return Overview(
        queues=queues,
        consumers_alive=consumers_alive(
            client, heartbeat_timeout_ms=heartbeat_timeout_ms, now_ms=now_ms
        ),
        workers=alive,
        workers_gone=sum(worker.state == "gone" for worker in workers),
        runs=runs,
        runs_in_progress=in_progress,
        read_at_ms=now_ms,
    )


def last_whole_minute(counts: Sequence[int]) -> int:
    """The count of the minute before the one in progress (0 without one)."""
    return counts[-2] if len(counts) > 1 else 0


def _queue(
    counts: QueueCounts, alive: list[WorkerView], minutes: dict[str, list[int]]
) -> QueueOverview:
    name = counts.queue_name
    none = [0] * MINUTES
    return QueueOverview(
        counts=counts,
        consumers=sum(name in worker.record.get("queues", []) for worker in alive),
        done=minutes.get("done", none),
        failed=minutes.get("failed", none),
    )


def _runs_in_progress(session: Session, now: dt.datetime) -> tuple[list[Progress], int]:
    in_progress = ChunkRun.status.in_(IN_PROGRESS)
    rows = session.scalars(
        select(ChunkRun).where(in_progress).order_by(ChunkRun.id.desc()).limit(RUNS_LISTED)
    ).all()
    count = session.scalar(select(func.count()).select_from(ChunkRun).where(in_progress))
    return [Progress.of(run, now=now) for run in rows], int(count or 0)


def _utc(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
