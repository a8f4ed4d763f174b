"""Refresh actors: the polling loop of the asynchronous API (``pipelines.refresh``)."""

from __future__ import annotations

from typing import Any

from app.db.models import ProviderAccount
from app.db.session import new_session, transaction
from app.house_rules import fintask_actor
from app.outbox import outbox_sender
from app.queues import pending_messages
from chunking import Callback, ChunkedRun, FanIn, KeysetEnumerator, start_run
from pipelines import batches, refresh, sync
from pipelines.steps import PROVIDER_RATE_LIMIT, StepAbandoned


# One provider call (10 s timeout) and two short transactions. A poll older than 15 min is
# past any deadline: the job has failed by then. 5xx and timeouts retry from 0.5 s to 10 s;
# a 429 re-sends the poll after Retry-After without spending one of these.
@fintask_actor(
    queue_name="sync",
    time_limit=30_000,
    max_age=15 * 60_000,
    max_retries=5,
    min_backoff=500,
    max_backoff=10_000,
    throws=(StepAbandoned,),
    rate_limit=PROVIDER_RATE_LIMIT,
)
def poll_refresh(job_id: str, poll: int = 0, **kwargs: Any) -> None:
    """Poll the provider for job ``job_id``; re-sends itself until done or the deadline."""
    refresh.poll(job_id, poll)


_accounts = KeysetEnumerator(column=ProviderAccount.id, where=sync.active_accounts)

account_sync = ChunkedRun(
    name="account_sync_chunk",
    queue_name="fanout",
    enumerate=_accounts,
    estimate=_accounts.estimate,
    process=sync.refresh_chunk,
    session_factory=new_session,
    declare=fintask_actor,
    send_after_commit=outbox_sender,
    fan_in=FanIn(batches.BATCHES, on_complete=Callback("account_sync_done", "fanout")),
    chunk_size=sync.CHUNK_SIZE,
    pause_ms=200,
    target_queue="sync",
    queue_depth=pending_messages,
    high_water=sync.POLL_HIGH_WATER,
    time_limit=120_000,
    actor_options={"soft_time_limit_ms": sync.CHUNK_SOFT_TIME_LIMIT_MS},
    max_age=6 * 3_600_000,
    max_retries=5,
    min_backoff=5_000,
    max_backoff=300_000,
)


@fintask_actor(
    queue_name="fanout",
    time_limit=60_000,
    max_age=3_600_000,
    max_retries=3,
    min_backoff=10_000,
    max_backoff=120_000,
)
def start_account_sync(tick: str | None = None, **kwargs: Any) -> None:
    """Start a sync run over every active account (the scheduler's job), once per tick."""
    key = sync.run_key(tick) if tick else None
    with transaction() as session:
        start_run(session, account_sync, key=key)


# One query and an outbox row per refreshed account, in one transaction.
@fintask_actor(
    queue_name="fanout",
    time_limit=120_000,
    max_age=6 * 3_600_000,
    max_retries=5,
    min_backoff=5_000,
    max_backoff=300_000,
)
def account_sync_done(batch_id: str, **kwargs: Any) -> None:
    """Every account of a sync is refreshed (or failed): recompute the refreshed ones'
    insights."""
    sync.recompute_refreshed(batch_id)


# One row read and one Redis script; a message delivered twice counts once (the batch's bit).
@fintask_actor(
    queue_name="fanout",
    time_limit=30_000,
    max_age=7 * 86_400_000,
    max_retries=10,
    min_backoff=1_000,
    max_backoff=300_000,
)
def settle_job_member(job_id: str, **kwargs: Any) -> None:
    """A job that is a batch member ended: record it in its batch."""
    batches.settle_job(job_id)
