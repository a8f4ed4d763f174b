"""Fraud check: the stolen-account pattern blocks the account and alerts the user, once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update

from app.db.models import (
    AccountStatus,
    FraudCheck,
    FraudVerdict,
    Notification,
    ProviderAccount,
)
from app.db.session import transaction
from pipelines import fraud
from pipelines.accounts import link_account


def _link(user, n: int) -> int:
    with transaction() as session:
        return link_account(session, user_id=user.id, provider="sandbox", external_id=f"acc-{n}")


def test_the_rule_names_what_was_seen_and_the_limit():
    assert fraud.assess(links_in_window=3).verdict is FraudVerdict.CLEAN
    finding = fraud.assess(links_in_window=4)
    assert finding.verdict is FraudVerdict.SUSPICIOUS
    assert finding.reason == "4 accounts linked within 1:00:00; the limit is 3"


def test_linking_an_account_queues_its_check_after_commit(user, stub_broker):
    with transaction() as session:
        account_id = link_account(session, user_id=user.id, provider="sandbox", external_id="acc-1")
        # nothing is queued while the transaction is open
        assert list(stub_broker.queues["fraud"].queue) == []

    (message,) = list(stub_broker.queues["fraud"].queue)
    assert b'"account_id":%d' % account_id in message


def test_a_fourth_link_within_the_hour_is_blocked_and_alerted(user, stub_broker):
    verdicts = [fraud.check_account(_link(user, n)) for n in range(4)]

    assert verdicts == [FraudVerdict.CLEAN] * 3 + [FraudVerdict.SUSPICIOUS]
    with transaction() as session:
        statuses = session.scalars(select(ProviderAccount.status).order_by(ProviderAccount.id))
        assert list(statuses) == ["active"] * 3 + [AccountStatus.BLOCKED]
        (alert,) = session.scalars(select(Notification)).all()
        assert (alert.kind, alert.urgent) == ("fraud_alert", True)
    assert stub_broker.queues["urgent_notifications"].qsize() == 1


def test_links_spread_over_more_than_an_hour_are_clean(user, stub_broker):
    for n in range(4):
        account_id = _link(user, n)
        with transaction() as session:
            earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2 * (4 - n))
            session.execute(
                update(ProviderAccount)
                .where(ProviderAccount.id == account_id)
                .values(linked_at=earlier)
            )

    assert fraud.check_account(account_id) is FraudVerdict.CLEAN


def test_a_check_run_twice_records_one_verdict_and_one_alert(user, stub_broker):
    for n in range(3):
        _link(user, n)
    account_id = _link(user, 3)

    first = fraud.check_account(account_id)
    second = fraud.check_account(account_id)

    assert first == second == FraudVerdict.SUSPICIOUS
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(FraudCheck)) == 1
        assert session.scalar(select(func.count()).select_from(Notification)) == 1
