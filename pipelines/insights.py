"""Insights: monthly spending by category and monthly balances, recalculated on new data.

The trigger: a flow that committed new transactions calls ``request_recalculation`` inside its
transaction; ``recalculate_insights(account_id)`` is enqueued after the commit (outbox).

The debounce: at most one recalculation is pending per account. The request claims the Redis
key ``fintask:pending:insights:<account_id>`` with ``SET NX`` and enqueues only if it got it;
the recalculation deletes the key as it starts, before it reads, so data committed while it
runs claims the key again and gets a run of its own: nothing is missed, and a burst of stores
costs one run. A transaction that rolls back gives its claim back. If Redis cannot be asked,
the request enqueues anyway: a duplicate run is harmless, a missed one is not.

The recalculation recomputes every row of the account and replaces them in one transaction,
so running it twice, or late, leaves the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from sqlalchemy import delete, event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from app.db.models import MonthlyBalance, MonthlySpending, ProviderAccount, Transaction, utcnow
from app.db.session import SessionFactory, new_session
from app.outbox import enqueue_after_commit
from app.redis_client import get_redis

logger = logging.getLogger(__name__)

ACTOR = "recalculate_insights"
#: Longer than the actor's max_age (a message that expired unrun frees its account then).
PENDING_TTL_MS = 2 * 3_600_000
_CLAIMS = "fintask.insights.claims"
_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""

RedisFactory = Callable[[], redis.Redis]


def pending_key(account_id: int) -> str:
    """The Redis key held while a recalculation of ``account_id`` is pending."""
    return f"fintask:pending:insights:{account_id}"


def request_recalculation(
    session: Session, account_id: int, *, redis_client: RedisFactory = get_redis
) -> bool:
    """Enqueue a recalculation after ``session`` commits, unless one is pending already."""
    key, token = pending_key(account_id), secrets.token_hex(8)
    try:
        claimed = redis_client().set(key, token, nx=True, px=PENDING_TTL_MS)
    except redis.RedisError:
        logger.warning("Could not claim %s; enqueueing anyway", key, exc_info=True)
    else:
        if not claimed:
            return False
        _give_back_on_rollback(session, redis_client, key, token)
    enqueue_after_commit(session, ACTOR, kwargs={"account_id": account_id})
    return True


def recalculate(
    account_id: int,
    *,
    new_session: SessionFactory = new_session,
    redis_client: RedisFactory = get_redis,
) -> int:
    """Recompute and replace the account's insights; return how many rows it has now."""
    redis_client().delete(pending_key(account_id))
    with new_session() as session, session.begin():
        account = session.get(ProviderAccount, account_id, with_for_update=True)
        if account is None:
            return 0  # unlinked since: nothing to recalculate
        query = select(Transaction.posted_on, Transaction.amount, Transaction.category).where(
            Transaction.account_id == account_id
        )
        moves = [Move(*row) for row in session.execute(query)]
        now = utcnow()
        spending = [
            {**row, "account_id": account_id, "currency": account.currency, "computed_at": now}
            for row in monthly_spending(moves)
        ]
        balances = [
            {**row, "account_id": account_id, "currency": account.currency, "computed_at": now}
            for row in monthly_balances(moves, current_balance=account.balance)
        ]
        session.execute(delete(MonthlySpending).where(MonthlySpending.account_id == account_id))
        session.execute(delete(MonthlyBalance).where(MonthlyBalance.account_id == account_id))
        if spending:
            session.execute(insert(MonthlySpending), spending)
        if balances:
            session.execute(insert(MonthlyBalance), balances)
    return len(spending) + len(balances)


@dataclass(frozen=True)
class Move:
    """A transaction as the insights see it."""

    posted_on: dt.date
    amount: Decimal
    category: str


def month_of(day: dt.date) -> dt.date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def monthly_spending(moves: Iterable[Move]) -> list[dict[str, Any]]:
    """Money out per (month, category), as positive amounts, oldest month first."""
    spent: defaultdict[tuple[dt.date, str], Decimal] = defaultdict(Decimal)
    counts: defaultdict[tuple[dt.date, str], int] = defaultdict(int)
    for move in moves:
        if move.amount < 0:
            key = (month_of(move.posted_on), move.category)
            spent[key] -= move.amount
            counts[key] += 1
    return [
        {
            "month": month,
            "category": category,
            "spent": spent[month, category],
            "transaction_count": counts[month, category],
        }
        for month, category in sorted(spent)
    ]


def monthly_balances(
    moves: Iterable[Move], *, current_balance: Decimal | None
) -> list[dict[str, Any]]:
    """Money in, money out and the closing balance of every month from the first move on.

    Closing balances are worked back from the provider's current balance (which includes
    every move); without one there is nothing to work back from, and no rows.
    """
    moves = sorted(moves, key=lambda move: move.posted_on)
    if current_balance is None or not moves:
        return []
    money_in: defaultdict[dt.date, Decimal] = defaultdict(Decimal)
    money_out: defaultdict[dt.date, Decimal] = defaultdict(Decimal)
    for move in moves:
        if move.amount >= 0:
            money_in[month_of(move.posted_on)] += move.amount
        else:
            money_out[month_of(move.posted_on)] -= move.amount
    months = list(_months(month_of(moves[0].posted_on), month_of(moves[-1].posted_on)))
    rows = []
    closing = current_balance
    for month in reversed(months):
        rows.append(
            {
                "month": month,
                "money_in": money_in[month],
                "money_out": money_out[month],
                "closing_balance": closing,
            }
        )
        closing = closing - money_in[month] + money_out[month]
    return rows[::-1]


def _months(first: dt.date, last: dt.date) -> Iterable[dt.date]:
    month = first
    while month <= last:
        yield month
        month = (month + dt.timedelta(days=32)).replace(day=1)


def _give_back_on_rollback(
    session: Session, redis_client: RedisFactory, key: str, token: str
) -> None:
    """Delete the claim ``key`` if ``session``'s transaction ends without committing."""
    session.info.setdefault(_CLAIMS, {})[key] = (redis_client, token)
    if not event.contains(session, "after_commit", _claims_committed):
        event.listen(session, "after_commit", _claims_committed)
        event.listen(session, "after_transaction_end", _give_back_claims)


def _claims_committed(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint was released: the outer transaction has not committed yet
    # The messages go out now: the claims stay until their recalculation starts.
    session.info.pop(_CLAIMS, None)


def _give_back_claims(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a savepoint: the outer transaction decides
    claims: dict[str, tuple[RedisFactory, str]] = session.info.pop(_CLAIMS, {})
    for key, (redis_client, token) in claims.items():
        try:
            redis_client().eval(_RELEASE, 1, key, token)
        except redis.RedisError:
            logger.warning("Could not give back %s; it expires on its own", key, exc_info=True)
