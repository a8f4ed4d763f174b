"""Notification senders: email over SMTP, push and webhooks over HTTP.

A worker that dies after the receiver accepted a send but before the notification is marked
sent leaves it to be sent again. Every send of one notification therefore carries the same
key, derived from its dedup key (the email's ``Message-ID``, the HTTP ``Idempotency-Key``), so
a receiver that deduplicates drops the repeat, and a sink can show it.
"""

from __future__ import annotations

import hashlib
import smtplib
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from app.settings import SMTP_MAX_IDLE_S, SMTP_MAX_SENDS, hide_credentials

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
    """Sends mail through ``SMTP_URL`` (``smtp://`` or ``smtps://``, user and password
    allowed), over one connection per thread, kept open from one send to the next.

    Opening a connection (TCP, the greeting, EHLO, the login, TLS for ``smtps``) costs more
    round trips than sending one mail, and a worker thread sends many. A kept connection the
    relay closed meanwhile (its idle timeout, a restart) fails at its first command, before the
    mail is sent: that send goes out once more on a new connection. (Were it closed after the
    relay took the mail and before it answered, the mail would go out twice with one
    Message-ID, as after any retry.) A connection is renewed after ``max_sends`` mails or
    ``max_idle_s`` seconds unused (relays cap both), dropped after any failure, and closed
    (QUIT) by :meth:`close`, which runs when the worker process exits.
    """

    def __init__(
        self,
        *,
        smtp_url: str,
        timeout_s: float = SEND_TIMEOUT_S,
        max_sends: int = SMTP_MAX_SENDS,
        max_idle_s: float = SMTP_MAX_IDLE_S,
    ) -> None:
        self.url = urlsplit(smtp_url)
        self.timeout_s = timeout_s
        self.max_sends = max_sends
        self.max_idle_s = max_idle_s
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()
        self._open_lock = threading.Lock()

    def send(self, outgoing: Outgoing) -> None:
        message = EmailMessage()
        message["From"] = SENDER_ADDRESS
        message["To"] = outgoing.recipient
        message["Subject"] = outgoing.subject
        message["Message-ID"] = email_message_id(outgoing.dedup_key)
        message.set_content(outgoing.body)
        try:
            kept = self._kept()
            if kept is not None:
                try:
                    self._send_on(kept, message)
                    return
                except smtplib.SMTPServerDisconnected:
                    pass  # the relay closed it while it was kept: a new connection sends it
            self._send_on(self._connect(), message)
        except (OSError, smtplib.SMTPException) as error:
            raise SendFailed(f"SMTP {self.url.hostname}:{self.url.port}: {error}") from error

    def close(self) -> None:
        """Close every kept connection, politely (QUIT) where the relay still listens."""
        with self._open_lock:
            connections, self._open = self._open, set()
        for smtp in connections:
            with suppress(OSError, smtplib.SMTPException):
                smtp.quit()
            smtp.close()

    def _kept(self) -> smtplib.SMTP | None:
        """This thread's connection, unless it is due for renewal (then closed)."""
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if smtp is None:
            return None
        idle_s = time.monotonic() - self._local.last_used
        if self._local.sends < self.max_sends and idle_s < self.max_idle_s:
            return smtp
        self._drop(smtp, polite=True)
        return None

    def _connect(self) -> smtplib.SMTP:
        smtp_class = smtplib.SMTP_SSL if self.url.scheme == "smtps" else smtplib.SMTP
        smtp = smtp_class(
            self.url.hostname or "127.0.0.1", self.url.port or 25, timeout=self.timeout_s
        )
        try:
            if self.url.username:
                smtp.login(self.url.username, self.url.password or "")
        except BaseException:
            smtp.close()
            raise
        self._local.smtp, self._local.sends = smtp, 0
        with self._open_lock:
            self._open.add(smtp)
        return smtp

    def _send_on(self, smtp: smtplib.SMTP, message: EmailMessage) -> None:
        try:
            smtp.send_message(message)
        except BaseException:
            self._drop(smtp, polite=False)
            raise
        self._local.sends += 1
        self._local.last_used = time.monotonic()

    def _drop(self, smtp: smtplib.SMTP, *, polite: bool) -> None:
        self._local.smtp = None
        with self._open_lock:
            self._open.discard(smtp)
        if polite:
            with suppress(OSError, smtplib.SMTPException):
                smtp.quit()
        smtp.close()


class HttpSender:
    """POSTs a JSON notification to a push gateway or a user's webhook, over pooled
    connections (httpx's, shared by the worker's threads), closed by :meth:`close`."""

    def __init__(self, *, url: str | None = None, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = httpx.Client(timeout=timeout_s)

    def send(self, outgoing: Outgoing) -> None:
        url = self.url or outgoing.recipient
        # A failure's text reaches logs, dead letters and Sentry: a push gateway's or a
        # webhook's URL may carry a password or a token.
        shown = hide_credentials(url)
        payload = {"to": outgoing.recipient, "subject": outgoing.subject, "body": outgoing.body}
        try:
            response = self._client.post(
                url,
                json=payload,
                headers={"Idempotency-Key": idempotency_key(outgoing.dedup_key)},
            )
        except httpx.HTTPError as error:
            raise SendFailed(f"POST {shown}: {type(error).__name__}: {error}") from error
        if response.status_code >= 300:
            raise SendFailed(f"POST {shown}: HTTP {response.status_code} {response.text[:200]}")

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()
