"""Linking provider accounts: the event the fraud check looks at."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.models import ProviderAccount, utcnow
from app.db.upsert import insert_once
from app.outbox import ActorRef, enqueue_after_commit

CHECK_NEW_ACCOUNT = ActorRef("check_new_account", queue_name="fraud")


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
        enqueue_after_commit(session, CHECK_NEW_ACCOUNT, kwargs={"account_id": account_id})
    return account_id
