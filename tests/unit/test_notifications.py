"""Notifications: one email per notification, however many times its message is delivered."""

from __future__ import annotations

import datetime as dt
import os

import dramatiq
import pytest
from sqlalchemy import update

from app.db.models import Notification, NotificationStatus, User
from app.db.session import transaction
from app.local.ports import free_port
from app.senders import (
    HttpSender,
    Outgoing,
    Sender,
    SendFailed,
    email_message_id,
    idempotency_key,
)
from pipelines import notifications
from pipelines.notifications import Channel, DeliveryOutcome, NotificationInFlight, notify

SECRET = "pushpw-Zq81"


def _notify(user, *, channel=Channel.EMAIL, urgent=False, dedup_key="weekly:1") -> int:
    with transaction() as session:
        return notify(
            session,
            user_id=user.id,
            kind="weekly_report",
            channel=channel,
            dedup_key=dedup_key,
            subject="Your week",
            body="You spent less than last week.",
            urgent=urgent,
        )


def test_an_email_delivered_twice_is_sent_once(user, sinks, stub_broker):
    # Given a notification whose message is delivered twice (a redelivery after a lost ack),
    _notify(user)
    (message,) = list(stub_broker.queues["emails"].queue)
    stub_broker.queues["emails"].put(message)

    # when a worker has handled both deliveries (one after the other: the concurrent case is
    # test_a_notification_claimed_by_a_live_worker_is_retried_not_sent_twice),
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    stub_broker.join("emails", fail_fast=True)
    worker.join()
    worker.stop()

    # then the sink received exactly one email, addressed and identified as the notification.
    (mail,) = sinks.mail()
    assert mail["to"] == ["ada@example.com"]
    assert mail["subject"] == "Your week"
    assert mail["message_id"] == email_message_id("weekly:1")
    with transaction() as session:
        (row,) = session.query(Notification).all()
        assert (row.status, row.attempts) == (NotificationStatus.SENT, 1)


def test_creating_the_same_notification_twice_sends_one(user, sinks, stub_broker, stub_worker):
    first = _notify(user)
    second = _notify(user)

    stub_broker.join("emails", fail_fast=True)
    stub_worker.join()

    assert first == second
    assert len(sinks.mail()) == 1


def test_urgent_and_push_notifications_go_to_their_own_queues(user, sinks, stub_broker):
    _notify(user, urgent=True, dedup_key="otp:1")
    _notify(user, channel=Channel.PUSH, dedup_key="push:1")

    assert stub_broker.queues["urgent_notifications"].qsize() == 1
    assert stub_broker.queues["notifications"].qsize() == 1
    assert stub_broker.queues["emails"].qsize() == 0


def test_a_push_notification_reaches_the_gateway_with_its_idempotency_key(user, sinks, database):
    notification_id = _notify(user, channel=Channel.PUSH, dedup_key="push:7")

    outcome = notifications.deliver(notification_id, senders=_senders())

    assert outcome is DeliveryOutcome.SENT
    (request,) = sinks.http()
    assert request["idempotency_key"] == idempotency_key("push:7")
    assert request["json"]["to"] == "push-ada"


class WorkerDied(BaseException):
    """The worker process ended mid-delivery (a SIGKILL, a lost machine)."""


class DiesAfterSending:
    """A sender whose worker dies right after the receiver accepted the send."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    def send(self, outgoing: Outgoing) -> None:
        self.sender.send(outgoing)
        raise WorkerDied("killed before the notification was marked sent")


@pytest.mark.parametrize("channel", list(Channel))
def test_a_send_repeated_after_a_crash_carries_the_same_key(user, sinks, database, channel):
    # Given a notification whose first worker died after the receiver accepted it,
    with transaction() as session:
        hook = os.environ["PUSH_URL"].replace("/push", "/hooks/ada")
        session.get_one(User, user.id).webhook_url = hook
    notification_id = _notify(user, channel=channel, dedup_key=f"relevé:{channel}")
    dying = {kind: DiesAfterSending(sender) for kind, sender in _senders().items()}
    with pytest.raises(WorkerDied):
        notifications.deliver(notification_id, senders=dying)

    # when its claim has gone stale and another worker delivers it,
    with transaction() as session:
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        session.execute(update(Notification).values(claimed_at=long_ago))
    assert notifications.deliver(notification_id, senders=_senders()) is DeliveryOutcome.SENT

    # then the receiver got it twice, and both sends carry the notification's one key.
    key = idempotency_key(f"relevé:{channel}")
    if channel is Channel.EMAIL:
        assert [mail["message_id"] for mail in sinks.mail()] == [f"<{key}@fintask.example>"] * 2
    else:
        assert [request["idempotency_key"] for request in sinks.http()] == [key] * 2


@pytest.mark.parametrize(("max_sends", "connections"), [(None, 1), ("1", 3), ("2", 2)])
def test_smtp_max_sends_bounds_the_mails_a_workers_connection_carries(
    user, sinks, database, monkeypatch, max_sends, connections
):
    if max_sends is not None:
        monkeypatch.setenv("SMTP_MAX_SENDS", max_sends)
    senders = _senders()
    for n in range(3):
        notification_id = _notify(user, dedup_key=f"weekly:{n}")
        assert notifications.deliver(notification_id, senders=senders) is DeliveryOutcome.SENT

    assert len(sinks.mail()) == 3
    assert len({mail["client_port"] for mail in sinks.mail()}) == connections


def test_a_stale_notification_is_dropped_and_counted_not_sent_late(user, sinks, database):
    notification_id = _notify(user, urgent=True, dedup_key="otp:2")
    with transaction() as session:
        an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        session.execute(update(Notification).values(created_at=an_hour_ago))
    expired_before = _count("email", "expired")

    outcome = notifications.deliver(notification_id, senders=_senders())

    assert outcome is DeliveryOutcome.EXPIRED
    assert sinks.mail() == []
    assert _count("email", "expired") == expired_before + 1
    with transaction() as session:
        assert session.get_one(Notification, notification_id).status == NotificationStatus.EXPIRED


def test_a_notification_claimed_by_a_live_worker_is_retried_not_sent_twice(user, sinks, database):
    notification_id = _notify(user)
    with transaction() as session:
        session.execute(
            update(Notification).values(status="sending", claimed_at=dt.datetime.now(dt.UTC))
        )

    with pytest.raises(NotificationInFlight, match=f"notification {notification_id} is being sent"):
        notifications.deliver(notification_id, senders=_senders())
    assert sinks.mail() == []


def test_a_claim_left_by_a_dead_worker_is_taken_over(user, sinks, database):
    notification_id = _notify(user)
    with transaction() as session:
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        session.execute(update(Notification).values(status="sending", claimed_at=long_ago))

    assert notifications.deliver(notification_id, senders=_senders()) is DeliveryOutcome.SENT
    assert len(sinks.mail()) == 1


def test_a_failed_send_is_released_for_the_retry_with_the_reason(user, database, monkeypatch):
    monkeypatch.setenv("SMTP_URL", "smtp://127.0.0.1:9")  # discard port: connection refused
    notification_id = _notify(user)

    with pytest.raises(SendFailed, match=r"SMTP 127\.0\.0\.1:9"):
        notifications.deliver(notification_id, senders=_senders())

    with transaction() as session:
        row = session.get_one(Notification, notification_id)
        assert row.status == NotificationStatus.PENDING
        assert "SMTP 127.0.0.1:9" in (row.last_error or "")


def test_a_user_without_a_webhook_gets_a_clear_error_at_creation(user, database):
    with pytest.raises(ValueError, match=f"user {user.id} has no webhook address"):
        _notify(user, channel=Channel.WEBHOOK)


def test_a_failed_webhook_send_names_the_url_without_its_credentials():
    # A push gateway's URL may carry a password: the failure's text is logged, kept as the
    # notification's last error and sent to Sentry.
    port = free_port()
    sender = HttpSender(url=f"http://push:{SECRET}@127.0.0.1:{port}/push", timeout_s=2)
    outgoing = Outgoing(dedup_key="weekly:1", recipient="7", subject="Your week", body="-")

    with pytest.raises(SendFailed) as failed:
        sender.send(outgoing)

    assert str(failed.value).startswith(f"POST http://***@127.0.0.1:{port}/push: ConnectError")
    assert SECRET not in str(failed.value)


def _senders():
    import actors.notifications

    actors.notifications._senders.cache_clear()
    return actors.notifications._senders()


def _count(channel: str, outcome: str) -> float:
    from app.metrics import NOTIFICATIONS

    return NOTIFICATIONS.labels(channel, outcome)._value.get()
