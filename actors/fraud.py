"""Fraud actors."""

from __future__ import annotations

from typing import Any

from app.house_rules import fintask_actor
from pipelines import fraud


@fintask_actor(
    queue_name="fraud",
    time_limit=30_000,
    max_age=24 * 3_600_000,
    max_retries=10,
    min_backoff=2_000,
    max_backoff=600_000,
)
def check_new_account(account_id: int, **kwargs: Any) -> None:
    """Check the user who just linked ``account_id`` for the stolen-account pattern."""
    fraud.check_account(account_id)
