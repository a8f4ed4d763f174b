"""ETL actors: download -> transform -> store, chained with a Dramatiq pipeline.

Each step returns the id the next one needs; the pipeline appends it as the next message's
last positional argument, so each step takes it first and everything else by keyword (and
``**kwargs``, for messages of other releases). See ``pipelines.etl`` for the steps and
``pipelines.steps`` for how they defer on 429, retry and fail the job.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from app.house_rules import fintask_actor
from pipelines import etl
from pipelines.steps import PROVIDER_RATE_LIMIT, StepAbandoned

_HOUR_MS = 3_600_000


def etl_pipeline(job_id: str, account_id: int) -> dramatiq.pipeline:
    """The three steps of one refresh's ETL, each message carrying ids only."""
    return dramatiq.pipeline(
        [
            download_transactions.message(job_id=job_id, account_id=account_id),
            transform_transactions.message(job_id=job_id),
            store_transactions.message(job_id=job_id),
        ]
    )


@fintask_actor(
    queue_name="etl",
    time_limit=10_000,
    max_age=_HOUR_MS,
    max_retries=5,
    min_backoff=1_000,
    max_backoff=60_000,
)
def start_etl(job_id: str, account_id: int, **kwargs: Any) -> None:
    """Start the ETL of a refresh the provider finished (sent after commit by the poll)."""
    etl_pipeline(job_id, account_id).run()


# A few provider calls of at most 10 s each (one page per 200 transactions, and the balance).
# The provider's quota is shared by every worker process: a global limit (half of it here, the
# other half for polls) defers the download instead of meeting 429s; a 429 still re-sends it.
# Past the soft limit (checked after each page, leaving room for one more page and the balance)
# the step keeps its pages and re-sends itself. One download per account at a time: a second
# one (a redelivery while the first still runs, or the next job's while the download of a job
# failed at its deadline lingers) is deferred until the lock is free, instead of spending the
# provider's quota on the same pages twice.
@fintask_actor(
    queue_name="etl",
    time_limit=120_000,
    soft_time_limit_ms=90_000,
    max_age=_HOUR_MS,
    max_retries=5,
    min_backoff=1_000,
    max_backoff=60_000,
    throws=(StepAbandoned,),
    rate_limit=PROVIDER_RATE_LIMIT,
    lock_key="account:{account_id}",
    lock_contention="defer",
)
def download_transactions(
    job_id: str, account_id: int, resume_blob_id: int | None = None, **kwargs: Any
) -> int:
    """Download an account's transactions into a raw blob; return the blob's id."""
    return etl.download(job_id, account_id, resume_blob_id=resume_blob_id)


# CPU only: parsing a few thousand transactions takes well under a second.
@fintask_actor(
    queue_name="etl",
    time_limit=30_000,
    max_age=_HOUR_MS,
    max_retries=3,
    min_backoff=1_000,
    max_backoff=30_000,
    throws=(StepAbandoned,),
)
def transform_transactions(raw_blob_id: int, job_id: str, **kwargs: Any) -> int:
    """Parse a raw blob into a normalised statement blob; return the statement's id."""
    return etl.transform(raw_blob_id, job_id)


# One transaction of batched upserts; retried on a busy or lost database.
@fintask_actor(
    queue_name="etl",
    time_limit=60_000,
    max_age=_HOUR_MS,
    max_retries=5,
    min_backoff=1_000,
    max_backoff=60_000,
    throws=(StepAbandoned,),
)
def store_transactions(statement_blob_id: int, job_id: str, **kwargs: Any) -> None:
    """Store a statement's transactions once each and finish the job."""
    etl.store(statement_blob_id, job_id)
