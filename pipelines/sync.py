"""The regular sync of every provider account: a chunked run that requests a refresh of each
active account, paced so the polling queue stays bounded however many accounts there are.

Each refresh is the same job the async API starts (``pipelines.refresh``): an account that
already has an active refresh keeps it, so a chunk that runs twice starts nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement

from app.db.models import AccountStatus, ProviderAccount
from app.middleware.deadlines import check_deadline
from chunking import ChunkContext
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
        request_refresh(ctx.session, account_id)
    return len(account_ids)
