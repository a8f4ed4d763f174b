"""The daily digest: one e-mail per active user, summing up their transactions of one day.

The periodic entry walks active user ids in keyset pages (``chunking.KeysetEnumerator``) and
sends one message per page (the page is a range of ids: two integers, whatever its size); each
page sends one digest message per user. Nothing is written before these sends, so they go
straight to the broker rather than through the outbox (which is for messages about rows of the
sender's own transaction). Past its soft time limit the entry stops after a page and sends
itself the rest (``day`` and the last id paged), so no page is sent twice by a timeout.

Any step may run twice (a redelivery, a second scheduler's tick, a catch-up, a run by hand):
a user's digest is a notification keyed ``digest:<day>:<user_id>``, created once, sent once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import dramatiq
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from app.db.models import ProviderAccount, Transaction, User, utcnow
from app.db.session import SessionFactory, new_session
from app.middleware.deadlines import SoftTimeLimitExceeded, check_deadline
from chunking import JSONValue, Keyset, KeysetEnumerator
from pipelines.notifications import Channel, notify

logger = logging.getLogger(__name__)

KIND = "daily_digest"
START_ACTOR = "send_daily_digests"
PAGE_ACTOR = "send_digest_page"
DIGEST_ACTOR = "send_digest"
#: Users per page message: one query and this many sends, well inside the page's time limit.
PAGE_SIZE = 1_000

#: Sends actor ``name`` with keyword arguments now (tests pass a recorder).
Send = Callable[[str, dict[str, Any]], None]


def send_now(actor_name: str, kwargs: dict[str, Any]) -> None:
    """Send a message to the actor named ``actor_name`` (flows name actors, never import them)."""
    dramatiq.get_broker().get_actor(actor_name).send_with_options(kwargs=kwargs)


def digest_day(tick: str | None, *, now: Callable[[], dt.datetime] = utcnow) -> dt.date:
    """The day a digest covers: the UTC day before its tick (before now, when run by hand)."""
    moment = dt.datetime.fromisoformat(tick) if tick else now()
    return (moment.astimezone(dt.UTC) - dt.timedelta(days=1)).date()


def dedup_key(day: dt.date, user_id: int) -> str:
    return f"digest:{day.isoformat()}:{user_id}"


def active_users(params: Mapping[str, Any]) -> Sequence[ColumnElement[bool]]:
    """Who gets a digest: the active users."""
    return [User.is_active.is_(True)]


_active_user_ids = KeysetEnumerator(column=User.id, where=active_users)


def start(
    day: dt.date,
    *,
    after: int | None = None,
    page_size: int = PAGE_SIZE,
    send: Send = send_now,
    new_session: SessionFactory = new_session,
) -> int:
    """Send one page message per ``page_size`` active users with an id above ``after``;
    return how many pages this call sent."""
    cursor: JSONValue = None if after is None else Keyset(after=after, limit=page_size).to_json()
    pages = 0
    while True:
        with new_session() as session:
            batch = _active_user_ids(session, cursor, params={}, limit=page_size)
        if batch is None:
            break
        first_id, last_id = batch.items[0], batch.items[-1]
        send(PAGE_ACTOR, {"day": day.isoformat(), "first_id": first_id, "last_id": last_id})
        pages += 1
        if batch.last:
            break
        cursor = batch.cursor
        try:
            check_deadline()
        except SoftTimeLimitExceeded as error:
            send(START_ACTOR, {"day": day.isoformat(), "after": last_id})
            logger.info(
                "Daily digest of %s: %s; the rest continues after user %d", day, error, last_id
            )
            return pages
    logger.info("Daily digest of %s: %d page(s) of up to %d users sent", day, pages, page_size)
    return pages


def send_page(
    day: dt.date,
    first_id: int,
    last_id: int,
    *,
    send: Send = send_now,
    new_session: SessionFactory = new_session,
) -> int:
    """Send a digest message to each active user with an id in ``first_id..last_id``."""
    with new_session() as session:
        ids = list(
            session.scalars(
                select(User.id)
                .where(User.is_active, User.id.between(first_id, last_id))
                .order_by(User.id)
            )
        )
    for user_id in ids:
        send(DIGEST_ACTOR, {"user_id": user_id, "day": day.isoformat()})
    return len(ids)


def send_digest(
    user_id: int, day: dt.date, *, new_session: SessionFactory = new_session
) -> int | None:
    """Create (once) and queue user ``user_id``'s digest of ``day``; return the notification id,
    or ``None`` for a user who is gone or no longer active."""
    with new_session() as session, session.begin():
        user = session.get(User, user_id)
        if user is None or not user.is_active:
            return None
        return notify(
            session,
            user_id=user_id,
            kind=KIND,
            channel=Channel.EMAIL,
            dedup_key=dedup_key(day, user_id),
            subject=f"Your day in money: {day:%d %B %Y}",
            body=render_body(user.name, day, _day_totals(session, user_id, day)),
        )


@dataclass
class CurrencyTotals:
    """One currency's movements of one day: money in and out as positive amounts."""

    count: int = 0
    money_in: Decimal = Decimal("0")
    money_out: Decimal = Decimal("0")


def render_body(name: str, day: dt.date, totals: dict[str, CurrencyTotals]) -> str:
    """The digest's text: one line per currency, or a line saying the day was quiet."""
    lines = [f"Hello {name},", ""]
    if not totals:
        lines.append(f"No transactions on {day.isoformat()}.")
    for currency, total in sorted(totals.items()):
        lines.append(
            f"{day.isoformat()}: {total.count} transaction(s) in {currency}, "
            f"{total.money_in:.2f} in, {total.money_out:.2f} out."
        )
    return "\n".join(lines)


def _day_totals(session: Session, user_id: int, day: dt.date) -> dict[str, CurrencyTotals]:
    rows = session.execute(
        select(Transaction.currency, Transaction.amount)
        .join(ProviderAccount, ProviderAccount.id == Transaction.account_id)
        .where(ProviderAccount.user_id == user_id, Transaction.posted_on == day)
    )
    totals: dict[str, CurrencyTotals] = defaultdict(CurrencyTotals)
    for currency, amount in rows:
        total = totals[currency]
        total.count += 1
        if amount >= 0:
            total.money_in += amount
        else:
            total.money_out -= amount
    return dict(totals)
