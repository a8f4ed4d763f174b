"""Daily digest actors: the periodic entry, its pages, one user's digest (``pipelines.digest``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.house_rules import fintask_actor
from pipelines import digest

_HOUR_MS = 3_600_000


# Scheduled (scheduler/schedule.py) with catch_up: a tick missed while no scheduler ran is sent
# on start. One id query and one send per 1,000 users (a thousand of each for 10^6 users), each
# well under a second: past the soft limit it sends itself the rest (``day`` and ``after``, no
# tick) after a page. Run again (a retry, a tick sent twice), it re-sends pages whose digests
# exist: no mail twice.
@fintask_actor(
    queue_name="digests",
    time_limit=10 * 60_000,
    soft_time_limit_ms=9 * 60_000,
    max_age=6 * _HOUR_MS,
    max_retries=3,
    min_backoff=10_000,
    max_backoff=60_000,
)
def send_daily_digests(
    tick: str | None = None, day: str | None = None, after: int | None = None, **kwargs: Any
) -> None:
    """Fan the digest of the day before ``tick`` (or of ``day``, continuing after user
    ``after``) out to every active user, in pages."""
    digest.start(dt.date.fromisoformat(day) if day else digest.digest_day(tick), after=after)


@fintask_actor(
    queue_name="digests",
    time_limit=60_000,
    max_age=6 * _HOUR_MS,
    max_retries=5,
    min_backoff=5_000,
    max_backoff=60_000,
)
def send_digest_page(day: str, first_id: int, last_id: int, **kwargs: Any) -> None:
    """Send one digest message per active user with an id in ``first_id..last_id``."""
    digest.send_page(dt.date.fromisoformat(day), first_id, last_id)


# Two short transactions; the e-mail itself goes out from `deliver_email` after the commit.
# A digest older than six hours is news no more (the e-mail's own expiry is six hours too).
@fintask_actor(
    queue_name="digests",
    time_limit=30_000,
    max_age=6 * _HOUR_MS,
    max_retries=5,
    min_backoff=5_000,
    max_backoff=300_000,
)
def send_digest(user_id: int, day: str, **kwargs: Any) -> None:
    """Create and queue user ``user_id``'s digest of ``day`` (once: keyed by day and user)."""
    digest.send_digest(user_id, dt.date.fromisoformat(day))
