"""Linking provider accounts and recording lookups: the events the fraud check looks at."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.models import AccountLookup, ProviderAccount, utcnow
from app.db.upsert import insert_once
from app.outbox import enqueue_after_commit


def link_account(
    session: Session, *, user_id: int, provider: str, external_id: str, name: str = ""
) -> int:
    """Link ``external_id`` to the user once; a new link gets a fraud check after commit."""
    values = {
        "user_id": user_id,
        "provider": provider,
        "external_id": external_id,
        "name": name or external_id,
        "currency": "USD",
        "status": "active",
        "linked_at": utcnow(),
    }
    account_id, created = insert_once(
        session,
        ProviderAccount,
        values,
        key={"provider": provider, "external_id": external_id},
    )
    if created:
        enqueue_after_commit(session, "check_new_account", kwargs={"account_id": account_id})
    return account_id


def record_lookup(session: Session, *, account_id: int, balance_only: bool) -> None:
    """Remember that the account's owner read it (balance-only reads are a fraud signal)."""
    account = session.get_one(ProviderAccount, account_id)
    session.add(
        AccountLookup(user_id=account.user_id, account_id=account_id, balance_only=balance_only)
    )
