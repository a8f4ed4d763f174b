"""The weekly report: one email to every active user, sent through a chunked run.

The run walks active users by id (keyset, never OFFSET), ``CHUNK_SIZE`` at a time. Each chunk
reads last week's spending of its users in one grouped query and creates one notification per
user, keyed ``weekly-report:<week>:<user id>``: a chunk that runs twice (a redelivery, a
resume after a crash) finds its notifications there and sends nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select

from app.db.models import ProviderAccount, Transaction, User
from app.middleware.deadlines import check_deadline
from chunking import ChunkContext
from pipelines.notifications import Channel, notify

CHUNK_SIZE = 500
#: A chunk's two queries and 500 notifications take a second or two; its hard limit is 120 s.
CHUNK_SOFT_TIME_LIMIT_MS = 90_000
#: Chunks wait while this many emails are already queued: the queue stays bounded.
EMAIL_HIGH_WATER = 5_000


def active_users(params: Mapping[str, Any]) -> Sequence[ColumnElement[bool]]:
    """Which users get the report: the active ones."""
    return [User.is_active.is_(True)]


def iso_week(day: dt.date) -> str:
    """The ISO week of ``day`` (``2026-W48``): the report's identity, in its dedup keys."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def report_week(tick: str | None, *, today: dt.date | None = None) -> str:
    """The week a report covers: the ISO week before its tick (before today, by hand)."""
    day = dt.datetime.fromisoformat(tick).date() if tick else (today or dt.date.today())
    return iso_week(day - dt.timedelta(days=7))


def run_key(week: str) -> str:
    """The identity of a week's report run: one run per week, however often started."""
    return f"weekly-report:{week}"


def week_bounds(week: str) -> tuple[dt.date, dt.date]:
    """Monday of ``week`` and the Monday after (a half-open interval)."""
    start = dt.datetime.strptime(f"{week}-1", "%G-W%V-%u").date()
    return start, start + dt.timedelta(days=7)


def send_chunk(ctx: ChunkContext, user_ids: list[int], /) -> int:
    """Create the week's report notification for each user of the chunk.

    Past the chunk's soft time limit it stops between two users: the chunk's transaction rolls
    back whole (no notification, no e-mail) and the chunk is retried, instead of the hard limit
    striking mid-commit.
    """
    week = str(ctx.params["week"])
    start, end = week_bounds(week)
    spent = _spending(ctx, user_ids, start, end)
    rows = ctx.session.execute(select(User.id, User.name).where(User.id.in_(user_ids)))
    names = {user_id: name for user_id, name in rows}
    for user_id in user_ids:
        check_deadline()
        notify(
            ctx.session,
            user_id=user_id,
            kind="weekly_report",
            channel=Channel.EMAIL,
            dedup_key=f"weekly-report:{week}:{user_id}",
            subject=f"Your week in money ({week})",
            body=(
                f"Hi {names.get(user_id, 'there')}, from {start} to {end - dt.timedelta(days=1)} "
                f"you spent {spent.get(user_id, Decimal('0.00')):.2f}."
            ),
        )
    return len(user_ids)


def _spending(
    ctx: ChunkContext, user_ids: list[int], start: dt.date, end: dt.date
) -> dict[int, Decimal]:
    query = (
        select(ProviderAccount.user_id, func.sum(-Transaction.amount))
        .join(ProviderAccount, ProviderAccount.id == Transaction.account_id)
        .where(
            ProviderAccount.user_id.in_(user_ids),
            Transaction.amount < 0,
            Transaction.posted_on >= start,
            Transaction.posted_on < end,
        )
        .group_by(ProviderAccount.user_id)
    )
    return {user_id: Decimal(total) for user_id, total in ctx.session.execute(query)}
