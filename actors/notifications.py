"""Notification actors: one per queue, so urgent ones have workers of their own."""

from __future__ import annotations

import atexit
import functools
from collections.abc import Mapping
from typing import Any

from app.house_rules import fintask_actor
from app.senders import EmailSender, HttpSender, Sender
from app.settings import load_settings
from pipelines import notifications
from pipelines.notifications import Channel

# Every delivery actor's time_limit (30 s) is above two SMTP/HTTP timeouts and below
# NOTIFICATION_CLAIM_TIMEOUT_MS (45 s), so a live sender's claim never looks stale.


@functools.cache
def _senders() -> Mapping[Channel, Sender]:
    """The process's senders, whose connections are kept between sends and closed at exit."""
    settings = load_settings()
    email = EmailSender(
        smtp_url=settings.smtp_url,
        max_sends=settings.smtp_max_sends,
        max_idle_s=settings.smtp_max_idle_s,
    )
    push = HttpSender(url=settings.push_url)
    webhook = HttpSender()
    for sender in (email, push, webhook):
        atexit.register(sender.close)
    return {Channel.EMAIL: email, Channel.PUSH: push, Channel.WEBHOOK: webhook}


@fintask_actor(
    queue_name="urgent_notifications",
    max_age=15 * 60_000,
    time_limit=30_000,
    max_retries=6,
    min_backoff=1_000,
    max_backoff=30_000,
)
def deliver_urgent_notification(notification_id: int, **kwargs: Any) -> None:
    """Fraud alerts and one-time codes: seconds matter, and a stale one is dropped."""
    notifications.deliver(notification_id, senders=_senders())


@fintask_actor(
    queue_name="emails",
    time_limit=30_000,
    max_age=7 * 3_600_000,
    max_retries=8,
    min_backoff=5_000,
    max_backoff=300_000,
    aliases=["send_email"],
)
def deliver_email(notification_id: int, **kwargs: Any) -> None:
    """Email notifications (``send_email`` in the release before the rename)."""
    notifications.deliver(notification_id, senders=_senders())


@fintask_actor(
    queue_name="notifications",
    time_limit=30_000,
    max_age=2 * 3_600_000,
    max_retries=8,
    min_backoff=5_000,
    max_backoff=300_000,
)
def deliver_notification(notification_id: int, **kwargs: Any) -> None:
    """Push and webhook notifications."""
    notifications.deliver(notification_id, senders=_senders())
