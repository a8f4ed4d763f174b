"""The weekly report: one email to every active user, sent through a chunked run.

The run walks active users by id (keyset, never OFFSET), ``CHUNK_SIZE`` at a time. Each chunk
reads last week's spending of its users in one grouped query and creates one notification per
user, keyed ``weekly-report:<week>:<user id>``: a chunk that runs twice (a redelivery, a
resume after a crash) finds its notifications there and sends nothing twice.

The run fans in (``chunking.FanIn``): every e-mail it creates is a member of the run's batch,
and when the last one is done (sent, expired or dead-lettered) ``record_tally`` keeps the
week's tally on the run, once, and posts it to ``OPS_WEBHOOK_URL`` through the outbox.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from contextlib import closing
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.db.models import Notification, NotificationStatus, ProviderAccount, Transaction, User
from app.db.session import SessionFactory, new_session
from app.middleware.deadlines import check_deadline
from app.outbox import ActorRef, enqueue_after_commit
from app.senders import HttpSender, Outgoing
from app.settings import load_settings
from chunking import ChunkContext, ChunkRun, record_summary
from pipelines.notifications import Channel, notify

POST_TALLY = ActorRef("post_report_tally", queue_name="notifications")

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
            member=ctx.member,
        )
    return len(user_ids)


def tally(session: Session, week: str) -> dict[str, int]:
    """The week's report e-mails by outcome: sent, expired, and failed (every other one: out
    of retries, or dropped past the delivery actor's ``max_age``)."""
    counts = dict(
        session.execute(
            select(Notification.status, func.count())
            .where(Notification.dedup_key.like(f"weekly-report:{week}:%"))
            .group_by(Notification.status)
        ).all()
    )
    sent = counts.pop(NotificationStatus.SENT.value, 0)
    expired = counts.pop(NotificationStatus.EXPIRED.value, 0)
    return {"sent": sent, "expired": expired, "failed": sum(counts.values())}


def record_tally(run_id: int, *, new_session: SessionFactory = new_session) -> bool:
    """Keep the report's final tally on its run and post it to the ops webhook, once: False
    if a callback delivered before recorded it already."""
    with new_session() as session, session.begin():
        run = session.get(ChunkRun, run_id)
        if run is None:
            return False
        week = str(run.params["week"])
        if not record_summary(session, run_id, {"week": week, **tally(session, week)}):
            return False
        if load_settings().ops_webhook_url:
            enqueue_after_commit(session, POST_TALLY, kwargs={"run_id": run_id})
    return True


def post_tally(run_id: int, *, new_session: SessionFactory = new_session) -> None:
    """POST a run's tally to ``OPS_WEBHOOK_URL`` under the idempotency key of its run: a
    post retried (or relayed twice) is one event for a receiver that honours the key."""
    url = load_settings().ops_webhook_url
    with new_session() as session:
        run = session.get(ChunkRun, run_id)
        summary = None if run is None else run.summary
    if not url or summary is None:
        return
    with closing(HttpSender(url=url)) as sender:
        sender.send(
            Outgoing(
                dedup_key=f"weekly-report-tally:{run_id}",
                recipient=url,
                subject=f"Weekly report {summary['week']}: final tally",
                body=json.dumps(summary, sort_keys=True),
            )
        )


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
