"""The e-mail sender keeps one SMTP connection per thread, and loses no mail when it breaks.

Every test talks to a real SMTP sink (aiosmtpd) on a free port; the sink records the client
port each mail came from, which tells the connections apart.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.local.ports import free_port
from app.local.sinks import SmtpSink, read_records
from app.senders import EmailSender, Outgoing, SendFailed


class Relay:
    """A sink that can be stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "mail.jsonl"
        self.port = free_port()
        self.sink = SmtpSink(path=self.path, port=self.port).start()

    def restart(self) -> None:
        self.sink.stop()
        self.sink = SmtpSink(path=self.path, port=self.port).start()

    def mail(self) -> list[dict[str, object]]:
        return read_records(self.path)

    def connections(self) -> int:
        return len({mail["client_port"] for mail in self.mail()})


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    relay = Relay(tmp_path)
    yield relay
    relay.sink.stop()


def outgoing(n: int) -> Outgoing:
    return Outgoing(dedup_key=f"mail-{n}", recipient=f"user{n}@example.com", subject="s", body="b")


def recipients(relay: Relay) -> Counter[object]:
    return Counter(mail["to"][0] for mail in relay.mail())


def test_mails_from_one_thread_share_one_connection(relay: Relay) -> None:
    sender = EmailSender(smtp_url=f"smtp://127.0.0.1:{relay.port}")

    for n in range(5):
        sender.send(outgoing(n))

    assert recipients(relay) == Counter(f"user{n}@example.com" for n in range(5))
    assert relay.connections() == 1
    sender.close()


def test_each_thread_has_a_connection_of_its_own(relay: Relay) -> None:
    sender = EmailSender(smtp_url=f"smtp://127.0.0.1:{relay.port}")
    threads = [
        threading.Thread(target=lambda t=t: [sender.send(outgoing(t * 10 + n)) for n in range(3)])
        for t in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(relay.mail()) == 9
    assert relay.connections() == 3
    sender.close()


def test_a_connection_the_relay_closed_while_it_was_kept_costs_no_mail(relay: Relay) -> None:
    # Given a sender that keeps a connection, and a relay that restarted since its last use
    sender = EmailSender(smtp_url=f"smtp://127.0.0.1:{relay.port}")
    sender.send(outgoing(1))
    relay.restart()

    # When it sends again
    sender.send(outgoing(2))

    # Then the mail arrived once, over a new connection
    assert recipients(relay) == Counter(["user1@example.com", "user2@example.com"])
    assert relay.connections() == 2
    sender.close()


def test_a_relay_that_is_down_fails_the_send_and_the_next_one_reconnects(relay: Relay) -> None:
    sender = EmailSender(smtp_url=f"smtp://127.0.0.1:{relay.port}")
    sender.send(outgoing(1))
    relay.sink.stop()

    with pytest.raises(SendFailed, match=rf"SMTP 127\.0\.0\.1:{relay.port}"):
        sender.send(outgoing(2))

    relay.sink = SmtpSink(path=relay.path, port=relay.port).start()
    sender.send(outgoing(3))
    assert recipients(relay) == Counter(["user1@example.com", "user3@example.com"])
    sender.close()


def test_a_connection_is_renewed_after_its_mail_quota(relay: Relay) -> None:
    sender = EmailSender(smtp_url=f"smtp://127.0.0.1:{relay.port}", max_sends=2)

    for n in range(5):
        sender.send(outgoing(n))

    assert len(relay.mail()) == 5
    assert relay.connections() == 3
    sender.close()


def test_a_connection_idle_too_long_is_renewed_not_reused(relay: Relay) -> None:
    sender = EmailSender(smtp_url=f"smtp://127.0.0.1:{relay.port}", max_idle_s=0)

    for n in range(3):
        sender.send(outgoing(n))

    assert relay.connections() == 3
    sender.close()


def test_after_close_the_next_send_opens_a_new_connection(relay: Relay) -> None:
    sender = EmailSender(smtp_url=f"smtp://127.0.0.1:{relay.port}")
    sender.send(outgoing(1))

    sender.close()
    sender.send(outgoing(2))

    assert len(relay.mail()) == 2
    assert relay.connections() == 2
    sender.close()
