"""Insights: recalculated after new transactions commit, at most one pending per account."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import dramatiq
import pytest
import redis
from sqlalchemy import func, select

from app.db.models import (
    MonthlyBalance,
    MonthlySpending,
    OutboxMessage,
    ProviderAccount,
    Transaction,
)
from app.db.session import transaction
from pipelines import insights
from pipelines.insights import Move, monthly_balances, monthly_spending
from tests.support.refresh_fixtures import sent_to

# Its fixtures: sandbox, account, redis_env, sent.
pytest_plugins = ["tests.support.refresh_fixtures"]

pytestmark = pytest.mark.usefixtures("redis_env")

MOVES = [
    Move(dt.date(2024, 1, 5), Decimal("-10.00"), "groceries"),
    Move(dt.date(2024, 1, 20), Decimal("-2.50"), "groceries"),
    Move(dt.date(2024, 1, 31), Decimal("1000.00"), "income"),
    Move(dt.date(2024, 3, 1), Decimal("-40.00"), "transport"),
]


def test_spending_is_money_out_per_month_and_category():
    assert monthly_spending(MOVES) == [
        {"month": dt.date(2024, 1, 1), "category": "groceries", "spent": Decimal("12.50"),
         "transaction_count": 2},
        {"month": dt.date(2024, 3, 1), "category": "transport", "spent": Decimal("40.00"),
         "transaction_count": 1},
    ]  # fmt: skip


def test_closing_balances_are_worked_back_from_the_current_balance():
    rows = monthly_balances(MOVES, current_balance=Decimal("2000.00"))

    assert [(r["month"], r["closing_balance"]) for r in rows] == [
        (dt.date(2024, 1, 1), Decimal("2040.00")),
        (dt.date(2024, 2, 1), Decimal("2040.00")),  # a quiet month still has a balance
        (dt.date(2024, 3, 1), Decimal("2000.00")),
    ]
    assert (rows[0]["money_in"], rows[0]["money_out"]) == (Decimal("1000.00"), Decimal("12.50"))
    assert monthly_balances(MOVES, current_balance=None) == []


def _store_moves(account_id: int) -> None:
    with transaction() as session:
        session.get_one(ProviderAccount, account_id).balance = Decimal("2000.00")
        for n, move in enumerate(MOVES):
            session.add(
                Transaction(
                    account_id=account_id,
                    provider_transaction_id=f"tx-{n}",
                    posted_on=move.posted_on,
                    amount=move.amount,
                    currency="USD",
                    description="",
                    category=move.category,
                )
            )


def _rows(model) -> list[tuple]:
    with transaction() as session:
        if model is MonthlySpending:
            query = select(model.month, model.category, model.spent, model.transaction_count)
        else:
            query = select(model.month, model.closing_balance)
        return [tuple(row) for row in session.execute(query.order_by(model.id))]


def test_recalculating_twice_leaves_the_same_rows(account):
    _store_moves(account.id)

    insights.recalculate(account.id)
    first = (_rows(MonthlySpending), _rows(MonthlyBalance))
    insights.recalculate(account.id)

    assert (_rows(MonthlySpending), _rows(MonthlyBalance)) == first
    assert len(first[0]) == 2 and len(first[1]) == 3


def test_many_store_events_leave_one_pending_recalculation(account, stub_broker, sent):
    # Given ten transactions that each stored new rows for the same account,
    for _ in range(10):
        with transaction() as session:
            insights.request_recalculation(session, account.id)

    # then one recalculation is pending, and no store's message is left in the outbox (the
    # refused ones are covered by the pending one);
    assert len(sent_to(sent, "recalculate_insights")) == 1
    assert stub_broker.queues["insights"].qsize() == 1
    with transaction() as session:
        unsent = select(func.count()).where(OutboxMessage.sent_at.is_(None))
        assert session.scalar(unsent) == 0

    # once it has started, the next change gets a recalculation of its own.
    _run_insights(stub_broker)
    with transaction() as session:
        insights.request_recalculation(session, account.id)
    assert len(sent_to(sent, "recalculate_insights")) == 2


def _run_insights(broker) -> None:
    """Deliver the pending recalculations (a worker started now, so none ran before)."""
    worker = dramatiq.Worker(broker, queues={"insights"}, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join("insights", fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def test_a_rolled_back_store_holds_no_claim(account, stub_broker, redis_env):
    with pytest.raises(RuntimeError), transaction() as session:
        insights.request_recalculation(session, account.id)
        raise RuntimeError("the store failed after requesting")

    assert redis.Redis.from_url(redis_env).keys("fintask:unique:*") == []
    assert stub_broker.queues["insights"].qsize() == 0
    with transaction() as session:
        insights.request_recalculation(session, account.id)
    assert stub_broker.queues["insights"].qsize() == 1


def test_the_actor_recalculates_through_the_worker(account, stub_broker, stub_worker):
    _store_moves(account.id)
    with transaction() as session:
        insights.request_recalculation(session, account.id)

    stub_broker.join("insights")
    stub_worker.join()

    assert len(_rows(MonthlySpending)) == 2
