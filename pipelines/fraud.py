"""The stolen-account check run when a provider account is linked.

Fraudsters use aggregators to test stolen bank logins: many accounts linked by one user in a
short window. A suspicious link blocks the account and alerts the user at once; the verdict is
recorded once per link, however often the message runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, update

from app.db.models import (
    AccountStatus,
    FraudCheck,
    FraudVerdict,
    ProviderAccount,
    utcnow,
)
from app.db.session import SessionFactory, new_session
from app.db.upsert import insert_once
from pipelines.notifications import Channel, notify

WINDOW = dt.timedelta(hours=1)
MAX_LINKS_IN_WINDOW = 3


@dataclass(frozen=True)
class Finding:
    verdict: FraudVerdict
    reason: str


def assess(links_in_window: int) -> Finding:
    """The verdict for one user's recent links (pure, so the rule is tested on its own)."""
    if links_in_window > MAX_LINKS_IN_WINDOW:
        return Finding(
            FraudVerdict.SUSPICIOUS,
            f"{links_in_window} accounts linked within {WINDOW}; the limit is "
            f"{MAX_LINKS_IN_WINDOW}",
        )
    return Finding(FraudVerdict.CLEAN, "")


def check_account(account_id: int, *, new_session: SessionFactory = new_session) -> FraudVerdict:
    """Check the user who linked ``account_id``; block and alert on a suspicious verdict."""
    with new_session() as session, session.begin():
        account = session.get_one(ProviderAccount, account_id)
        since = account.linked_at - WINDOW
        links = session.scalar(
            select(func.count()).where(
                ProviderAccount.user_id == account.user_id,
                ProviderAccount.linked_at > since,
                ProviderAccount.linked_at <= account.linked_at,
            )
        )
        finding = assess(links or 0)
        check_id, created = insert_once(
            session,
            FraudCheck,
            {
                "account_id": account_id,
                "user_id": account.user_id,
                "verdict": finding.verdict.value,
                "reason": finding.reason,
                "checked_at": utcnow(),
            },
            key={"account_id": account_id},
        )
        if not created:
            return FraudVerdict(session.get_one(FraudCheck, check_id).verdict)
        if finding.verdict is FraudVerdict.SUSPICIOUS:
            session.execute(
                update(ProviderAccount)
                .where(ProviderAccount.id == account_id)
                .values(status=AccountStatus.BLOCKED.value)
            )
            notify(
                session,
                user_id=account.user_id,
                kind="fraud_alert",
                channel=Channel.EMAIL,
                dedup_key=f"fraud-alert:{account_id}",
                subject="We blocked a newly linked account",
                body=(
                    f"We blocked account {account.external_id} after unusual activity: "
                    f"{finding.reason}. If this was you, contact support."
                ),
                urgent=True,
            )
        return finding.verdict
