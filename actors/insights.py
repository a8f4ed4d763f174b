"""Insights actors: the recalculation triggered by newly stored transactions."""

from __future__ import annotations

from typing import Any

from app.house_rules import fintask_actor
from pipelines import insights


# Reads one account's transactions and rewrites its insight rows in one transaction. A send
# while one is pending for the account is a no-op (unique_key): a burst of stores costs one run.
@fintask_actor(
    queue_name="insights",
    time_limit=60_000,
    max_age=3_600_000,
    max_retries=5,
    min_backoff=1_000,
    max_backoff=60_000,
    unique_key=insights.UNIQUE_KEY,
)
def recalculate_insights(account_id: int, **kwargs: Any) -> None:
    """Recompute the account's monthly spending and balances (debounced per account)."""
    insights.recalculate(account_id)
