"""Sentry through sentry-sdk's DramatiqIntegration: one event per failed run, no user data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import sentry_sdk
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import default_middleware
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from app.sentry import FILTERED, init_sentry, scrub_event
from app.settings import load_settings


class Captured(Transport):
    """Keeps the events sentry-sdk would send, instead of sending them."""

    events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        Captured.events += [i.get_event() for i in envelope.items if i.type == "event"]


@pytest.fixture
def sentry() -> Iterator[list[dict[str, Any]]]:
    """sentry-sdk initialised the way fintask does it, capturing instead of sending."""
    Captured.events = []
    settings = load_settings({"SENTRY_DSN": "http://public@127.0.0.1:9/1", "BROKER_URL": "stub://"})
    assert init_sentry(settings, transport=Captured)
    yield Captured.events
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def test_a_failing_actor_reports_one_event_naming_the_message_without_its_arguments(sentry):
    # Built after init_sentry, as app.broker does: the integration patches Broker.__init__.
    broker = StubBroker(middleware=[m() for m in default_middleware])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, queue_name="s_fraud", max_retries=0)
    def s_check(account_id: int, **kwargs: Any) -> None:
        raise LookupError(f"account {account_id} is gone")

    # Built at run time: the event carries source lines, and this one must not match.
    email = "@".join(["ada", "example.com"])
    message = s_check.send(404, email=email)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    broker.join("s_fraud", fail_fast=False)
    worker.join()
    worker.stop()
    sentry_sdk.flush()

    [event] = sentry
    data = event["contexts"]["dramatiq"]["data"]
    assert (data["actor_name"], data["message_id"]) == ("s_check", message.message_id)
    assert event["extra"]["dramatiq_message_id"] == message.message_id
    assert (data["args"], data["kwargs"], data["options"]) == (FILTERED, FILTERED, FILTERED)
    assert event["exception"]["values"][-1]["type"] == "LookupError"
    assert email not in json.dumps(event)


def test_the_scrubber_keeps_what_identifies_a_failure_and_drops_the_rest():
    event: Any = {
        "contexts": {
            "dramatiq": {
                "type": "dramatiq",
                "data": {
                    "queue_name": "emails",
                    "actor_name": "send_email",
                    "message_id": "m-1",
                    "message_timestamp": 1,
                    "args": [7],
                    "kwargs": {"email": "ada@example.com"},
                    "options": {"traceback": "ValueError: ada@example.com"},
                },
            }
        },
        "user": {"email": "ada@example.com"},
        "request": {"data": "ada@example.com"},
    }

    scrubbed = scrub_event(event, {})

    assert scrubbed["contexts"]["dramatiq"]["data"] == {
        "queue_name": "emails",
        "actor_name": "send_email",
        "message_id": "m-1",
        "message_timestamp": 1,
        "args": FILTERED,
        "kwargs": FILTERED,
        "options": FILTERED,
    }
    assert "ada@example.com" not in json.dumps(scrubbed)
