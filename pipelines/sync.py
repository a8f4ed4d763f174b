"""The regular sync of every provider account: a chunked run that requests a refresh of each
active account, paced so the polling queue stays bounded however many accounts there are.

Each refresh is the same job the async API starts (``pipelines.refresh``): an account that
already has an active refresh keeps it, so a chunk that runs twice starts nothing twice.

The run fans in (``chunking.FanIn``): each refresh job is a member of the run's batch (one an
earlier sync made a member of its own batch stays that batch's), and when every job has ended
``recompute_refreshed`` asks for the insights of every account whose refresh succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, select

from app.db.models import AccountStatus, Job, JobStatus, ProviderAccount
from app.db.session import SessionFactory, new_session
from app.middleware.deadlines import check_deadline
from chunking import ChunkContext
from pipelines.batches import attach_job
from pipelines.insights import request_recalculation
from pipelines.refresh import request_refresh

CHUNK_SIZE = 200
#: A chunk's 200 refresh requests take well under a second; its hard time limit is 120 s.
CHUNK_SOFT_TIME_LIMIT_MS = 90_000
#: Chunks wait while this many polls are queued (each refresh polls until the provider is done).
POLL_HIGH_WATER = 2_000


def active_accounts(params: Mapping[str, Any]) -> Sequence[ColumnElement[bool]]:
    """Which accounts are synced: those not blocked by the fraud check."""
    return [ProviderAccount.status == AccountStatus.ACTIVE.value]


def run_key(tick: str) -> str:
    """One sync run per scheduler tick, however often the tick's message arrives."""
    return f"account-sync:{tick}"


def refresh_chunk(ctx: ChunkContext, account_ids: list[int], /) -> int:
    """Request a refresh of each account of the chunk (after commit, through the outbox).

    Past the chunk's soft time limit it stops between two accounts: the chunk's transaction
    rolls back whole and the chunk is retried, instead of the hard limit striking mid-commit.
    """
    for account_id in account_ids:
        check_deadline()
        job, _ = request_refresh(ctx.session, account_id)
        if job.batch_id is None:
            attach_job(job, ctx.member())
    return len(account_ids)


def recompute_refreshed(batch_id: str, *, new_session: SessionFactory = new_session) -> int:
    """Ask for the insights of every account the sync's batch refreshed; how many.

    Delivered twice, it asks twice: the recalculation is debounced per account and rewrites
    the same rows, so the insights come out the same.
    """
    with new_session() as session, session.begin():
        account_ids = session.scalars(
            select(Job.account_id)
            .where(Job.batch_id == batch_id, Job.status == JobStatus.DONE.value)
            .distinct()
        ).all()
        for account_id in account_ids:
            request_recalculation(session, account_id)
    return len(account_ids)
