"""Insights: monthly spending by category and monthly balances, recalculated on new data.

The trigger: a flow that committed new transactions calls ``request_recalculation`` inside its
transaction; ``recalculate_insights(account_id)`` is enqueued after the commit (outbox), so a
transaction that rolls back sends nothing.

The debounce is the actor's ``unique_key`` (``app.middleware.locks.UniqueEnqueue``): at most
one recalculation is pending per account. The key is freed when the pending message is
delivered, before the recalculation reads, so data committed while it runs gets a run of its
own: nothing is missed, and a burst of stores costs one run.

The recalculation recomputes every row of the account and replaces them in one transaction,
so running it twice, or late, leaves the same rows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.db.models import MonthlyBalance, MonthlySpending, ProviderAccount, Transaction, utcnow
from app.db.session import SessionFactory, new_session
from app.outbox import ActorRef, enqueue_after_commit

RECALCULATE = ActorRef("recalculate_insights", queue_name="insights")
#: The actor's ``unique_key``: one pending recalculation per account.
UNIQUE_KEY = "account:{account_id}"


def request_recalculation(session: Session, account_id: int) -> None:
    """Enqueue a recalculation of the account once ``session`` commits (a no-op at send time
    while one is pending)."""
    enqueue_after_commit(session, RECALCULATE, kwargs={"account_id": account_id})


def recalculate(account_id: int, *, new_session: SessionFactory = new_session) -> int:
    """Recompute and replace the account's insights; return how many rows it has now."""
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
