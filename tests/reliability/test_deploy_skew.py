"""Old and new message shapes across a deploy, through a real worker on a real Redis.

During a deploy the queues hold messages from the release before (queued before it stopped) and
from the release after (its web and scheduler start sending before every worker is replaced).
This release's worker (the Procfile's ``worker`` line word for word) must:

- run what the previous release sent, in the shapes it sent them (from ``git log``):
  ``send_email``, the email actor's name before its rename (an alias now); ``send_daily_digests``
  with only ``tick``, before it took ``day`` and ``after``; ``recalculate_insights`` without
  the ``unique_claim`` option, sent before the actor had a ``unique_key``;
- dead-letter what a newer release sent and this one cannot read, with a reason ``fintask dlq
  show`` prints, its payload kept for a worker that can (a message of a newer ``schema``, a
  message for an actor this release does not have), and run the neighbours in the same batch;
- run a newer release's message that only adds an optional keyword at the same schema: every
  actor takes ``**kwargs`` (the house rules) for this.

The messages are enqueued as each release's broker enqueues them (Dramatiq's dispatch, the
wake-up token, a ``schema`` stamp), before the worker starts, so that one prefetch holds them
all. About 30 s.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Message
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.orm import Session

from app.db.migrate import upgrade
from app.db.models import (
    MonthlySpending,
    Notification,
    NotificationStatus,
    ProviderAccount,
    Transaction,
    User,
)
from app.local.seed import seed
from app.local.sinks import SmtpSink, read_records
from app.middleware.guardrails import SCHEMA_VERSION
from app.senders import email_message_id
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import VENV_BIN, running, wait_until
from tests.support.procfile import booted_processes, procfile_command, procfile_env

pytestmark = [pytest.mark.reliability, pytest.mark.quick, pytest.mark.timeout(300)]

USERS = 20
#: The tick of a daily digest the previous release's scheduler sent: the digest of the day before.
TICK = "2026-11-30T06:00:00+00:00"
DIGEST_DAY = "2026-11-29"
NEWER = SCHEMA_VERSION + 1


def email(session: Session, user_id: int, key: str) -> int:
    """A pending email notification for ``user_id``, keyed ``key``; its id."""
    notification = Notification(
        dedup_key=key,
        user_id=user_id,
        kind="statement",
        channel="email",
        subject=f"Statement {key}",
        body="Your statement is ready.",
        status=NotificationStatus.PENDING,
        attempts=0,
    )
    session.add(notification)
    session.flush()
    return notification.id


def spend(session: Session, account_id: int) -> None:
    """Three card payments on ``account_id`` last month: what insights sum up."""
    session.execute(
        insert(Transaction),
        [
            {
                "account_id": account_id,
                "provider_transaction_id": f"skew-{account_id}-{n}",
                "posted_on": dt.date(2026, 11, 3 + n),
                "amount": -10 - n,
                "currency": "USD",
                "description": "coffee",
                "category": "food",
            }
            for n in range(3)
        ],
    )


def fintask(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "fintask"), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_old_shapes_run_and_newer_ones_wait_in_the_dead_letters_with_their_reason(
    redis_url: str,
    client: redis.Redis,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    # Given a database with 20 users (18 active), their accounts, and a mail relay
    database_url = f"sqlite:///{tmp_path / 'fintask.db'}"
    upgrade(database_url)
    engine = create_engine(database_url)
    seed(engine, users=USERS)
    with Session(engine) as session, session.begin():
        active = set(session.scalars(select(User.id).where(User.is_active)))
        account = {
            user_id: session.scalars(
                select(ProviderAccount.id).where(ProviderAccount.user_id == user_id).limit(1)
            ).one()
            for user_id in (1, 2)
        }
        spend(session, account[1])
        spend(session, account[2])
        alias_email = email(session, 1, "skew:alias")
        neighbours = [
            email(session, user_id, f"skew:neighbour:{user_id}") for user_id in range(2, 6)
        ]
        newer_email = email(session, 6, "skew:newer-schema")
        extra_kwarg_email = email(session, 7, "skew:extra-kwarg")
    mailbox = smtp_sink.path
    urls = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_sink.port}",
    }

    # And, queued before this release's worker starts, the previous release's messages, a
    # newer release's, and current ones between them
    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    sent: dict[str, Message[Any]] = {}

    def send(
        label: str, queue: str, actor: str, schema: int = SCHEMA_VERSION, **kwargs: Any
    ) -> None:
        producer.declare_queue(queue)
        sent[label] = producer.enqueue(Message(queue, actor, (), kwargs, {"schema": schema}))

    send("neighbour 2", "emails", "deliver_email", notification_id=neighbours[0])
    send("old: send_email", "emails", "send_email", notification_id=alias_email)
    send("neighbour 3", "emails", "deliver_email", notification_id=neighbours[1])
    send("newer: schema", "emails", "deliver_email", NEWER, notification_id=newer_email)
    send("neighbour 4", "emails", "deliver_email", notification_id=neighbours[2])
    send(
        "newer kwarg, same schema",
        "emails",
        "deliver_email",
        notification_id=extra_kwarg_email,
        locale="fr-FR",
    )
    send("neighbour 5", "emails", "deliver_email", notification_id=neighbours[3])
    send("old: digest by tick", "digests", "send_daily_digests", tick=TICK)
    send("old: insights, no claim", "insights", "recalculate_insights", account_id=account[1])
    send(
        "newer: schema (insights)", "insights", "recalculate_insights", NEWER, account_id=account[2]
    )
    send("newer: actor", "notifications", "deliver_sms", user_id=8, text="Your code is 123456")
    producer.client.close()
    old = [label for label in sent if label.startswith("old:")]
    newer = [label for label in sent if label.startswith("newer:")]

    expected_mail = {
        email_message_id(key): key
        for key in [
            "skew:alias",
            "skew:extra-kwarg",
            *(f"skew:neighbour:{user_id}" for user_id in range(2, 6)),
            *(f"digest:{DIGEST_DAY}:{user_id}" for user_id in active),
        ]
    }

    def mailed() -> set[str]:
        return {mail["message_id"] for mail in read_records(mailbox)}

    def insight_rows(account_id: int) -> int:
        with engine.connect() as connection:
            query = select(func.count()).select_from(MonthlySpending)
            return int(
                connection.scalar(query.where(MonthlySpending.account_id == account_id)) or 0
            )

    def dead_letters() -> int:
        return sum(int(client.zcard(key)) for key in client.scan_iter("dramatiq:*.XQ"))

    # When this release's worker runs them
    worker_env = procfile_env(var_dir=tmp_path / "worker", **urls)
    with running(procfile_command("worker"), worker_env, tmp_path / "worker.log") as worker:
        wait_until(lambda: booted_processes(client, worker) == 2, timeout_s=180, what="boot")
        wait_until(lambda: mailed() >= set(expected_mail), timeout_s=120, what="the emails")
        wait_until(lambda: insight_rows(account[1]) > 0, timeout_s=60, what="the insights")
        wait_until(lambda: dead_letters() == len(newer), timeout_s=60, what="dead letters")

    # Then every old shape and every neighbour ran, and the newer kwarg was ignored
    log = (tmp_path / "worker.log").read_text()
    mail = read_records(mailbox)
    received = {m["message_id"] for m in mail}
    processed = {
        "old: send_email": email_message_id("skew:alias") in received,
        "old: digest by tick": {
            email_message_id(f"digest:{DIGEST_DAY}:{user_id}") for user_id in active
        }
        <= received,
        "old: insights, no claim": insight_rows(account[1]) > 0,
    }
    assert received == set(expected_mail), "an email no message asked for was sent"
    assert len(mail) == len(expected_mail), "an email was sent twice"

    # And each newer shape is a dead letter, not run, whose reason `fintask dlq show` prints
    # with the message as it was sent
    reasons = {
        "newer: schema": f"its schema {NEWER} is newer than this release's {SCHEMA_VERSION}",
        "newer: schema (insights)": f"its schema {NEWER} is newer than this release's",
        "newer: actor": "this release has no actor 'deliver_sms'",
    }
    cli_env = procfile_env(var_dir=tmp_path / "cli", **urls)
    shown: dict[str, bool] = {}
    for label in newer:
        message = sent[label]
        result = fintask("dlq", "show", message.message_id, env=cli_env)
        assert result.returncode == 0, (label, result.stdout, result.stderr)
        fields, _, payload = result.stdout.partition("message: ")
        reason = next(line for line in fields.splitlines() if line.startswith("reason: "))
        print(f"\n  {label}: {reason}", end="")
        shown[label] = reasons[label] in reason and json.loads(payload) == json.loads(
            message.encode()
        )
    with Session(engine) as session:
        assert session.get_one(Notification, newer_email).status == NotificationStatus.PENDING
    assert insight_rows(account[2]) == 0
    assert email_message_id("skew:newer-schema") not in received

    # And no message was lost: each one ran or waits in the dead letters; nothing is left in a
    # queue or in a worker's ack set
    left = {
        key.decode(): int(client.hlen(key))
        for key in client.scan_iter("dramatiq:*.msgs")
        if not key.endswith(b".XQ.msgs")
    }
    acked_late = [
        key.decode() for key in client.scan_iter("dramatiq:__acks__.*") if client.scard(key)
    ]
    lost = sum(not ok for ok in processed.values()) + sum(not ok for ok in shown.values())
    lost += sum(left.values())
    engine.dispose()

    record_property("old_shapes_processed", f"{sum(processed.values())}/{len(old)}")
    record_property("newer_shapes_dead_lettered", f"{sum(shown.values())}/{len(newer)}")
    record_property("lost", lost)
    print(
        f"\ndeploy skew: old shapes processed {sum(processed.values())}/{len(old)}, newer shapes "
        f"dead-lettered {sum(shown.values())}/{len(newer)} with reason, lost {lost}"
    )
    assert processed == dict.fromkeys(old, True)
    assert shown == dict.fromkeys(newer, True)
    assert left == dict.fromkeys(left, 0)
    assert acked_late == []
    assert lost == 0
    assert "Traceback" not in log, log[-5000:]
