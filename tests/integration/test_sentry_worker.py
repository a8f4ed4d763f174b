"""A real worker reports a failure to Sentry once, naming the message, without its arguments.

Sentry here is ``tests.support.fake_sentry``: no network, the SDK's real transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from app.db.migrate import upgrade
from tests.support.fake_sentry import FakeSentry, fake_sentry
from tests.support.processes import dramatiq_worker, fintask_env, running, wait_until


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    with fake_sentry() as server:
        yield server


def test_a_failing_message_gives_exactly_one_scrubbed_event(sentry, redis_url, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'fintask.db'}"
    upgrade(database_url)
    env = fintask_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        FINTASK_VAR_DIR=str(tmp_path),
        SENTRY_DSN=sentry.dsn,
        NO_PROXY="127.0.0.1,localhost",
    )
    producer = RedisBroker(url=redis_url, middleware=[])
    producer.declare_queue("fraud")
    email = "ada@example.com"

    def send_failing() -> Message[Any]:
        # The account does not exist: the fraud check raises NoResultFound.
        kwargs = {"account_id": 999_999, "email": email}
        message = Message("fraud", "check_new_account", (), kwargs, {"max_retries": 0})
        producer.enqueue(message)
        return message

    worker = dramatiq_worker("fraud", processes=1, threads=1)
    with running(worker, env, tmp_path / "worker.log"):
        first = send_failing()
        wait_until(lambda: sentry.events_for(first.message_id), what="the failure's event")
        # One thread runs one message at a time and the SDK sends in order: once the second
        # message's event is in, everything the first one could report has arrived too.
        second = send_failing()
        wait_until(lambda: sentry.events_for(second.message_id), what="the second event")
    producer.close()

    [event] = sentry.events_for(first.message_id)
    assert len(sentry.events()) == 2
    data = event["contexts"]["dramatiq"]["data"]
    assert (data["actor_name"], data["message_id"]) == ("check_new_account", first.message_id)
    assert (data["kwargs"], data["args"]) == ("[Filtered]", "[Filtered]")
    assert event["exception"]["values"][-1]["type"] == "NoResultFound"
    assert not any(email.encode() in body for body in sentry.raw)
