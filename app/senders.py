"""Notification senders: email over SMTP, push and webhooks over HTTP.

A worker that dies after the receiver accepted a send but before the notification is marked
sent leaves it to be sent again. Every send of one notification therefore carries the same
key, derived from its dedup key (the email's ``Message-ID``, the HTTP ``Idempotency-Key``), so
a receiver that deduplicates drops the repeat, and a sink can show it.
"""

from __future__ import annotations

import hashlib
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from app.settings import hide_credentials

#: Seconds any single network call of a sender may take.
SEND_TIMEOUT_S = 10.0
SENDER_ADDRESS = "fintask <no-reply@fintask.example>"


@dataclass(frozen=True)
class Outgoing:
    """One notification, ready to go out."""

    dedup_key: str
    recipient: str
    subject: str
    body: str


def idempotency_key(dedup_key: str) -> str:
    """The key every send of a notification carries: the same for each send of one dedup key.

    A digest, not the dedup key itself: it is ASCII whatever the key holds (an HTTP header
    must be), and it tells a third party nothing of what fintask keys notifications by.
    """
    return hashlib.sha256(dedup_key.encode()).hexdigest()[:32]


def email_message_id(dedup_key: str) -> str:
    """The Message-ID of a notification's email: its idempotency key as an address."""
    return f"<{idempotency_key(dedup_key)}@fintask.example>"


class Sender(Protocol):
    def send(self, outgoing: Outgoing) -> None: ...


class SendFailed(RuntimeError):
    """The receiver refused or could not be reached; the message is retried."""


class EmailSender:
    """Sends mail through ``SMTP_URL`` (``smtp://`` or ``smtps://``, user and password allowed)."""

    def __init__(self, *, smtp_url: str, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.url = urlsplit(smtp_url)
        self.timeout_s = timeout_s

    def send(self, outgoing: Outgoing) -> None:
        message = EmailMessage()
        message["From"] = SENDER_ADDRESS
        message["To"] = outgoing.recipient
        message["Subject"] = outgoing.subject
        message["Message-ID"] = email_message_id(outgoing.dedup_key)
        message.set_content(outgoing.body)
        smtp_class = smtplib.SMTP_SSL if self.url.scheme == "smtps" else smtplib.SMTP
        try:
            with smtp_class(
                self.url.hostname or "127.0.0.1", self.url.port or 25, timeout=self.timeout_s
            ) as smtp:
                if self.url.username:
                    smtp.login(self.url.username, self.url.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            raise SendFailed(f"SMTP {self.url.hostname}:{self.url.port}: {error}") from error


class HttpSender:
    """POSTs a JSON notification to a push gateway or a user's webhook."""

    def __init__(self, *, url: str | None = None, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def send(self, outgoing: Outgoing) -> None:
        url = self.url or outgoing.recipient
        # A failure's text reaches logs, dead letters and Sentry: a push gateway's or a
        # webhook's URL may carry a password or a token.
        shown = hide_credentials(url)
        payload = {"to": outgoing.recipient, "subject": outgoing.subject, "body": outgoing.body}
        try:
            response = httpx.post(
                url,
                json=payload,
                headers={"Idempotency-Key": idempotency_key(outgoing.dedup_key)},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as error:
            raise SendFailed(f"POST {shown}: {type(error).__name__}: {error}") from error
        if response.status_code >= 300:
            raise SendFailed(f"POST {shown}: HTTP {response.status_code} {response.text[:200]}")
