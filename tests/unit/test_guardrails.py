"""Guardrails: a message with big or non-JSON arguments is refused at send, with a clear error;
old and new releases exchange messages through rubber signatures."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dramatiq
import pytest

from actors.notifications import deliver_email
from app.house_rules import fintask_actor
from app.middleware.guardrails import SCHEMA_VERSION, MessageRejected, schema_problem


def test_a_two_megabyte_argument_is_refused_naming_actor_and_argument(stub_broker):
    with pytest.raises(MessageRejected) as error:
        deliver_email.send(notification_id=1, note="x" * 2_000_000)

    assert str(error.value) == (
        "actor 'deliver_email': argument 'note' is a string of 2,000,000 characters; "
        "the limit is 1,000 (store the data and pass its id)"
    )
    assert stub_broker.queues["emails"].qsize() == 0


def test_a_datetime_argument_is_refused_with_the_fix_in_the_message(stub_broker):
    with pytest.raises(MessageRejected) as error:
        deliver_email.send(notification_id=1, since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))

    assert str(error.value) == (
        "actor 'deliver_email': argument 'since' is a datetime, not a JSON scalar; "
        "pass an ISO 8601 string"
    )


def test_a_list_of_objects_is_refused(stub_broker):
    with pytest.raises(MessageRejected, match=r"argument 'args\[0\]' is a list holding non-scalar"):
        deliver_email.send([{"id": 1}])


def test_many_small_arguments_that_add_up_past_the_size_limit_are_refused(stub_broker):
    with pytest.raises(
        MessageRejected, match=r"the encoded message is .* bytes; the limit is 16,384"
    ):
        deliver_email.send(**{f"k{i}": "x" * 900 for i in range(20)})


def test_an_accepted_message_carries_the_schema_version(stub_broker):
    message = deliver_email.send(notification_id=7)

    assert message.options["schema"] == SCHEMA_VERSION


def test_a_message_from_a_newer_release_is_dead_lettered_with_the_reason_not_run(
    stub_broker, caplog
):
    # Given an actor of this release, and a message a newer release stamped with its schema,
    seen: list[dict[str, Any]] = []

    @fintask_actor(
        queue_name="compat",
        time_limit=1_000,
        max_age=60_000,
        max_retries=3,
        min_backoff=100,
        max_backoff=100,
    )
    def refresh_balance(account_id: int, **kwargs: Any) -> None:
        seen.append({"account_id": account_id, **kwargs})

    newer = refresh_balance.message(account_id=1).copy(options={"schema": SCHEMA_VERSION + 1})
    stub_broker.enqueue(newer)

    # when a worker of this release takes it,
    worker = dramatiq.Worker(stub_broker, queues={"compat"}, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        stub_broker.join("compat", fail_fast=False)
        worker.join()
    finally:
        worker.stop()
        del stub_broker.actors["refresh_balance"]

    # then the actor never ran, the message waits in the dead letters without retries, and the
    # log says why.
    assert seen == []
    (dead,) = stub_broker.dead_letters_by_queue["compat"]
    assert dead.message_id == newer.message_id
    assert dead.options.get("retries", 0) == 0
    assert (
        f"its schema {SCHEMA_VERSION + 1} is newer than this release's {SCHEMA_VERSION}"
        in caplog.text
    )


def test_which_schemas_a_worker_reads():
    assert schema_problem(SCHEMA_VERSION) is None
    assert schema_problem(None) is None  # not sent through a fintask broker
    assert "is newer than" in (schema_problem(SCHEMA_VERSION + 1) or "")
    assert "is not a version number" in (schema_problem("2") or "")


def test_old_and_new_releases_exchange_messages(stub_broker):
    # Given an actor as the new release declares it: it gained an optional argument.
    seen: list[dict[str, Any]] = []

    @fintask_actor(
        queue_name="compat",
        time_limit=1_000,
        max_age=60_000,
        max_retries=0,
        min_backoff=100,
        max_backoff=100,
    )
    def refresh_balance(account_id: int, *, include_pending: bool = False, **kwargs: Any) -> None:
        seen.append({"account_id": account_id, "include_pending": include_pending, **kwargs})

    # When the previous release sends it without the new argument, and a newer release sends it
    # with an argument this one does not know yet,
    stub_broker.enqueue(refresh_balance.message(account_id=1))
    stub_broker.enqueue(refresh_balance.message(account_id=2, currency_hint="EUR"))
    # (the worker starts after the declaration, so it consumes the new queue from the start)
    worker = dramatiq.Worker(stub_broker, queues={"compat"}, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        stub_broker.join("compat", fail_fast=True)
        worker.join()
    finally:
        worker.stop()
        del stub_broker.actors["refresh_balance"]

    # then both run.
    assert sorted(seen, key=lambda s: s["account_id"]) == [
        {"account_id": 1, "include_pending": False},
        {"account_id": 2, "include_pending": False, "currency_hint": "EUR"},
    ]


def test_a_message_queued_under_the_old_actor_name_still_runs(user, sinks, stub_broker):
    # Given a message the previous release queued for send_email, the name before the rename,
    from sqlalchemy import select

    from app.db.models import Notification
    from app.db.session import transaction
    from pipelines.notifications import Channel, notify

    with transaction() as session:
        notification_id = notify(
            session,
            user_id=user.id,
            kind="statement",
            channel=Channel.EMAIL,
            dedup_key="statement:1",
            subject="Your statement",
            body="",
        )
    stub_broker.flush("emails")
    stub_broker.enqueue(
        dramatiq.Message(
            queue_name="emails",
            actor_name="send_email",
            args=(),
            kwargs={"notification_id": notification_id},
            options={},
        )
    )

    # when a worker of this release takes it,
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    stub_broker.join("emails", fail_fast=True)
    worker.join()
    worker.stop()

    # then the email goes out.
    assert len(sinks.mail()) == 1
    with transaction() as session:
        assert session.scalar(select(Notification.status)) == "sent"
