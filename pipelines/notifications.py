"""Notifications: created once per dedup key, claimed before sending, sent at most once.

The claim is a row update committed before the network call: a redelivered message finds the
row sent (and stops) or being sent (and waits for the claim to go stale, which only happens
when the sender died, since the actor's time limit is shorter than the claim).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session

from app.db.models import Notification, NotificationStatus, User, utcnow
from app.db.session import SessionFactory
from app.db.session import new_session as default_new_session
from app.db.upsert import insert_once
from app.metrics import NOTIFICATIONS
from app.outbox import ActorRef, enqueue_after_commit
from app.senders import Outgoing, Sender, SendFailed
from app.settings import load_settings


class Channel(enum.StrEnum):
    EMAIL = "email"
    PUSH = "push"
    WEBHOOK = "webhook"


#: How long a notification is worth sending (Celery's ``expires``): a late alert is noise.
EXPIRY = {
    Channel.EMAIL: dt.timedelta(hours=6),
    Channel.PUSH: dt.timedelta(minutes=15),
    Channel.WEBHOOK: dt.timedelta(hours=1),
}
URGENT_EXPIRY = dt.timedelta(minutes=10)


@functools.cache
def claim_timeout() -> dt.timedelta:
    """How old a claim must be before another worker may take it over.

    ``NOTIFICATION_CLAIM_TIMEOUT_MS`` (45 s): longer than any delivery actor's time limit, so
    a claim this old belongs to a dead worker, never to a slow live one. Read once a process,
    as the database engine is: validating every setting again on each delivery held about a
    fifth of a delivery's GIL samples (py-spy during ``bench.weekly_report``).
    """
    return dt.timedelta(milliseconds=load_settings().notification_claim_timeout_ms)


class NotificationInFlight(RuntimeError):
    """Another worker claimed this notification and may still be sending it; retry later."""


class DeliveryOutcome(enum.StrEnum):
    """What one delivery of a notification did (the ``outcome`` label of its counter)."""

    SENT = "sent"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"


DELIVER_URGENT = ActorRef("deliver_urgent_notification", queue_name="urgent_notifications")
DELIVER_EMAIL = ActorRef("deliver_email", queue_name="emails")
DELIVER_OTHER = ActorRef("deliver_notification", queue_name="notifications")


def delivery_actor(channel: Channel, *, urgent: bool) -> ActorRef:
    """Which actor (and so which queue) delivers a notification."""
    if urgent:
        return DELIVER_URGENT
    return DELIVER_EMAIL if channel is Channel.EMAIL else DELIVER_OTHER


def expiry(notification: Notification) -> dt.timedelta:
    """How long after creation ``notification`` is still worth sending."""
    return URGENT_EXPIRY if notification.urgent else EXPIRY[Channel(notification.channel)]


def notify(
    session: Session,
    *,
    user_id: int,
    kind: str,
    channel: Channel,
    dedup_key: str,
    subject: str,
    body: str,
    urgent: bool = False,
    member: Callable[[], dict[str, Any] | None] | None = None,
) -> int:
    """Create the notification for ``dedup_key`` once and send it after commit; return its id.

    ``member`` (a chunk's ``ChunkContext.member``) makes the delivery a member of a batch; it
    is asked only when the notification is created, so one that existed is no member.
    """
    _recipient(channel, session.get_one(User, user_id))  # fail now, not in the worker
    values = {
        "dedup_key": dedup_key,
        "user_id": user_id,
        "kind": kind,
        "channel": channel.value,
        "urgent": urgent,
        "subject": subject,
        "body": body,
        "status": NotificationStatus.PENDING.value,
        "attempts": 0,
        "created_at": utcnow(),
    }
    notification_id, created = insert_once(
        session, Notification, values, key={"dedup_key": dedup_key}
    )
    if created:
        enqueue_after_commit(
            session,
            delivery_actor(channel, urgent=urgent),
            kwargs={"notification_id": notification_id, **((member and member()) or {})},
        )
    return notification_id


def deliver(
    notification_id: int,
    *,
    senders: Mapping[Channel, Sender],
    new_session: SessionFactory = default_new_session,
) -> DeliveryOutcome:
    """Send notification ``notification_id`` unless it was sent, expired, or is being sent."""
    with new_session() as session, session.begin():
        notification = session.get(Notification, notification_id)
        if notification is None:
            raise LookupError(f"notification {notification_id} does not exist")
        outcome = _claim(session, notification)
        if outcome is not None:
            NOTIFICATIONS.labels(notification.channel, outcome.value).inc()
            return outcome
        user = session.get_one(User, notification.user_id)
        outgoing = Outgoing(
            dedup_key=notification.dedup_key,
            recipient=_recipient(Channel(notification.channel), user),
            subject=notification.subject,
            body=notification.body,
        )
    channel = Channel(notification.channel)
    try:
        senders[channel].send(outgoing)
    except SendFailed as error:
        _release(new_session, notification_id, str(error))
        raise
    with new_session() as session, session.begin():
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(status=NotificationStatus.SENT.value, sent_at=utcnow(), last_error=None)
        )
    NOTIFICATIONS.labels(channel.value, DeliveryOutcome.SENT.value).inc()
    return DeliveryOutcome.SENT


def _claim(session: Session, notification: Notification) -> DeliveryOutcome | None:
    """Take the notification for this worker; an outcome instead when there is nothing to do."""
    now = utcnow()
    if notification.status in (NotificationStatus.SENT, NotificationStatus.EXPIRED):
        return DeliveryOutcome.DUPLICATE
    claimable = or_(
        Notification.status == NotificationStatus.PENDING.value,
        and_(
            Notification.status == NotificationStatus.SENDING.value,
            Notification.claimed_at < now - claim_timeout(),
        ),
    )
    if notification.created_at + expiry(notification) < now:
        expired = session.execute(
            update(Notification)
            .where(Notification.id == notification.id, claimable)
            .values(status=NotificationStatus.EXPIRED.value)
        )
        if expired.rowcount:  # type: ignore[attr-defined]
            return DeliveryOutcome.EXPIRED
        return DeliveryOutcome.DUPLICATE
    # The loaded row is not brought up to date (``synchronize_session``): a lost claim reloads
    # it below, and a won one is not read again; evaluating the condition in Python for the
    # session cost more than the UPDATE.
    claimed = session.execute(
        update(Notification)
        .where(Notification.id == notification.id, claimable)
        .values(
            status=NotificationStatus.SENDING.value,
            claimed_at=now,
            attempts=Notification.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount == 1:  # type: ignore[attr-defined]
        return None
    session.refresh(notification)
    if notification.status == NotificationStatus.SENDING:
        raise NotificationInFlight(
            f"notification {notification.id} is being sent by another worker "
            f"(claimed at {notification.claimed_at:%H:%M:%S}); retrying after the claim expires"
        )
    return DeliveryOutcome.DUPLICATE


def _release(new_session: SessionFactory, notification_id: int, error: str) -> None:
    """Give a failed send back to the queue's retries: pending again, with the reason."""
    with new_session() as session, session.begin():
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(status=NotificationStatus.PENDING.value, last_error=error[:1000])
        )


def _recipient(channel: Channel, user: User) -> str:
    if channel is Channel.EMAIL:
        return user.email
    address = user.push_token if channel is Channel.PUSH else user.webhook_url
    if not address:
        raise ValueError(f"user {user.id} has no {channel.value} address")
    return address
