"""Chunked fan-out over big tables: paced, resumable, fenced runs on Dramatiq.

A library on its own: it imports dramatiq, redis and SQLAlchemy, nothing of its host.

Declare a run once, at import time of the host's actors module::

    weekly_report = ChunkedRun(
        name="weekly_report_chunk",
        enumerate=KeysetEnumerator(column=User.id, where=lambda p: [User.is_active]),
        process=send_reports,                 # (ctx, ids) -> int | None, in the chunk's tx
        session_factory=new_session,          # the host's sessions
        send_after_commit=outbox_sender,      # optional; default enqueues after commit
        queue_name="fanout", chunk_size=500, pause_ms=200,
        target_queue="notifications", high_water=5_000,
        time_limit=60_000, max_age=86_400_000, max_retries=5,
        min_backoff=1_000, max_backoff=60_000,
    )

then, in a transaction, ``run_id = start_run(session, weekly_report, params={...})``; control
it with :func:`pause_run`, :func:`resume_run`, :func:`cancel_run`, and read
:func:`run_progress`. Add :data:`metadata` (table ``chunking_runs``) to the host's Alembic.

Fan-in: a :class:`Batches` store makes batches ("when all of these are done, do that"): see
:mod:`chunking.batches`; install :class:`BatchMembers` in the broker's middleware, before
``Retries``; give a run ``fan_in=FanIn(...)`` to fan its members in.
"""

from chunking.after_commit import AfterCommit, EnqueueAfterCommit, SendAfterCommit
from chunking.batch_members import BatchMembers
from chunking.batch_progress import BatchProgress, FailedMember, FailureKind
from chunking.batches import (
    BatchClosed,
    Batches,
    BatchStoreUnavailable,
    Callback,
    UnknownBatch,
    member_kwargs,
    member_of,
)
from chunking.bulk import enqueue_many
from chunking.chunks import Chunk, chunk_from_json
from chunking.control import (
    cancel_run,
    pause_run,
    record_summary,
    resume_run,
    run_progress,
    start_run,
)
from chunking.depth import DepthSource, RedisQueueDepth, StubQueueDepth, queue_depth_for
from chunking.enumerators import Batch, Enumerator, Estimator, KeysetEnumerator, SpanEnumerator
from chunking.jsonvalue import JSONValue
from chunking.keyset import Keyset
from chunking.models import ChunkingBase, ChunkRun, RunStatus, metadata
from chunking.pacing import Backpressure
from chunking.progress import Progress
from chunking.run import ChunkContext, ChunkedRun, ChunkOutcome, FanIn, Processor
from chunking.spans import DateRange, DateTimeRange, IntRange, Span

__all__ = [
    "AfterCommit",
    "Backpressure",
    "Batch",
    "BatchClosed",
    "BatchMembers",
    "BatchProgress",
    "BatchStoreUnavailable",
    "Batches",
    "Callback",
    "Chunk",
    "ChunkContext",
    "ChunkOutcome",
    "ChunkRun",
    "ChunkedRun",
    "ChunkingBase",
    "DateRange",
    "DateTimeRange",
    "DepthSource",
    "EnqueueAfterCommit",
    "Enumerator",
    "Estimator",
    "FailedMember",
    "FailureKind",
    "FanIn",
    "IntRange",
    "JSONValue",
    "Keyset",
    "KeysetEnumerator",
    "Processor",
    "Progress",
    "RedisQueueDepth",
    "RunStatus",
    "SendAfterCommit",
    "Span",
    "SpanEnumerator",
    "StubQueueDepth",
    "UnknownBatch",
    "cancel_run",
    "chunk_from_json",
    "enqueue_many",
    "member_kwargs",
    "member_of",
    "metadata",
    "pause_run",
    "queue_depth_for",
    "record_summary",
    "resume_run",
    "run_progress",
    "start_run",
]
