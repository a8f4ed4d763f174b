"""Soft time limits: declared below the hard limit, checked cooperatively by the flow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import default_middleware

from app.middleware import InvalidActorOption
from app.middleware.deadlines import (
    SoftTimeLimit,
    SoftTimeLimitExceeded,
    check_deadline,
    deadline_remaining_ms,
)

EXPLICIT: dict[str, Any] = {"max_retries": 0, "max_age": 60_000}


@pytest.fixture
def broker() -> StubBroker:
    return StubBroker(middleware=[*(m() for m in default_middleware), SoftTimeLimit()])


@contextmanager
def working(broker: StubBroker) -> Iterator[Worker]:
    worker = Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_limit": 10_000, "soft_time_limit_ms": 10_000}, "must be below time_limit=10000"),
        ({"soft_time_limit_ms": 700_000}, "must be below time_limit=600000"),
        ({"time_limit": 10_000, "soft_time_limit_ms": "5s"}, "must be a positive number of ms"),
    ],
)
def test_a_soft_limit_must_be_a_number_below_the_hard_limit(broker, options, message):
    with pytest.raises(InvalidActorOption, match=message) as error:

        @dramatiq.actor(broker=broker, **options, **EXPLICIT)
        def sync_account(**kwargs: Any) -> None: ...

    assert str(error.value).startswith("actor 'sync_account': soft_time_limit_ms=")


def test_a_flow_checkpoints_and_stops_once_past_its_soft_limit(broker):
    # Given a flow that works through items and checks its deadline between them
    done: list[int] = []
    seen: dict[str, Any] = {}

    @dramatiq.actor(broker=broker, time_limit=30_000, soft_time_limit_ms=500, **EXPLICIT)
    def sync_account(**kwargs: Any) -> None:
        started = time.monotonic()
        seen["at_start"] = deadline_remaining_ms()
        try:
            for item in range(200):
                check_deadline()
                time.sleep(0.05)
                done.append(item)
        except SoftTimeLimitExceeded:
            seen["checkpoint"] = len(done)
            seen["stopped_after_ms"] = (time.monotonic() - started) * 1000

    # When it runs
    sync_account.send()
    with working(broker):
        broker.join(sync_account.queue_name)

    # Then it stopped cleanly once past its 500 ms (never before), long before the end of its
    # items, with no failure; how many it did depends on how fast the machine is
    assert 0 < seen["at_start"] <= 500
    assert seen["stopped_after_ms"] >= seen["at_start"]
    assert 1 <= seen["checkpoint"] < 200
    assert broker.dead_letters == []


def test_the_deadline_is_per_message_and_cleared_after_it(broker):
    remaining: list[float | None] = []

    @dramatiq.actor(broker=broker, time_limit=30_000, soft_time_limit_ms=10_000, **EXPLICIT)
    def bounded(**kwargs: Any) -> None:
        remaining.append(deadline_remaining_ms())

    @dramatiq.actor(broker=broker, time_limit=5_000, **EXPLICIT)
    def unbounded(**kwargs: Any) -> None:
        remaining.append(deadline_remaining_ms())
        check_deadline()

    bounded.send_with_options(soft_time_limit_ms=2_000)
    unbounded.send()
    with working(broker):
        broker.join(bounded.queue_name)

    # the message's 2 s, not the actor's 10 s
    assert remaining[0] is not None and 0 < remaining[0] <= 2_000
    assert remaining[1] is None
    assert deadline_remaining_ms() is None
    check_deadline()  # outside a message: nothing to check
