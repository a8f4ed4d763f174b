"""Rate limits: options fail at declaration, and a message over the limit waits for a slot
without spending a retry. On Dramatiq's StubBroker, with the limiters in the test's own Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware
from hypothesis import given, settings
from hypothesis import strategies as st

from app.local.ports import free_port
from app.middleware import InvalidActorOption, RedisUnavailable
from app.middleware.rate_limits import SLOT_OPTION, RateLimits, parse_rate

EXPLICIT: dict[str, Any] = {"max_retries": 0, "time_limit": 10_000, "max_age": 60_000}


def stub_broker(*middleware: Middleware) -> StubBroker:
    """A StubBroker with Dramatiq's defaults, CurrentMessage, then ``middleware``."""
    stack = [m() for m in default_middleware]
    return StubBroker(middleware=[*stack, CurrentMessage(), *middleware])


@contextmanager
def working(broker: StubBroker, threads: int = 2) -> Iterator[Worker]:
    worker = Worker(broker, worker_timeout=50, worker_threads=threads)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("text", "count", "period_ms"),
    [
        ("70/s", 70, 1_000),
        ("100/m", 100, 60_000),
        ("5000/h", 5_000, 3_600_000),
        (" 3 / s ", 3, 1_000),
    ],
)
def test_a_rate_is_a_count_per_second_minute_or_hour(text, count, period_ms):
    rate = parse_rate(text)

    assert (rate.count, rate.period_ms) == (count, period_ms)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["s", "m", "h"]))
@settings(deadline=None)
def test_the_interval_between_starts_spreads_the_count_over_the_period(count, unit):
    rate = parse_rate(f"{count}/{unit}")

    assert rate.interval_us * count == pytest.approx(rate.period_ms * 1000)


@pytest.mark.parametrize("text", ["fast", "0/s", "10/d", "1.5/s", "10 per second", "", 70])
def test_anything_else_is_not_a_rate(text):
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)


def test_a_bad_rate_fails_the_actor_declaration_naming_actor_and_option(client):
    broker = stub_broker(RateLimits(client=client))

    with pytest.raises(InvalidActorOption) as error:

        @dramatiq.actor(broker=broker, rate_limit="fast", **EXPLICIT)
        def fetch_balances(**kwargs: Any) -> None: ...

    assert str(error.value).startswith("actor 'fetch_balances': rate_limit='fast' is not a rate")


def test_messages_over_the_limit_wait_for_their_slot_and_spend_no_retry(client):
    # Given an actor limited to 5 starts a second that must never be retried
    deferrals: list[int] = []
    limits = RateLimits(
        client=client, on_defer=lambda message, delay_ms: deferrals.append(delay_ms)
    )
    broker = stub_broker(limits)
    starts: list[tuple[float, dict[str, Any]]] = []

    @dramatiq.actor(broker=broker, rate_limit="5/s", **EXPLICIT)
    def notify(**kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        starts.append((time.monotonic(), dict(message.options)))

    # When ten messages arrive at once
    for _ in range(10):
        notify.send()
    with working(broker, threads=4):
        broker.join(notify.queue_name)

    # Then all ran, one every 200 ms, none dead-lettered or retried, nine of them deferred once
    times = sorted(start for start, _ in starts)
    assert len(times) == 10
    assert times[-1] - times[0] >= 9 * 0.2 * 0.9
    assert broker.dead_letters == []
    assert all(options.get("retries", 0) == 0 for _, options in starts)
    assert sorted(options.get("rate_limit_deferrals", 0) for _, options in starts) == [0] + [1] * 9
    assert limits.deferred["notify"] == len(deferrals) == 9


class RecordDelayedEnqueues(Middleware):
    """Records the arguments, options (a copy) and delay of each message enqueued with a delay
    (a deferral or a retry), in order; not the worker moving it to its queue once due."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[tuple[Any, ...], dict[str, Any], int]] = []

    def after_enqueue(self, broker: Any, message: Any, delay: int | None) -> None:
        if delay is not None:
            self.enqueued.append((tuple(message.args), dict(message.options), delay))


def test_a_retry_queues_for_a_new_slot(client):
    # Given a limited actor whose second message fails once after waiting for its slot
    # (one worker thread, so the first message takes the free slot and the second waits)
    enqueues = RecordDelayedEnqueues()
    broker = stub_broker(RateLimits(client=client), enqueues)
    seen: list[dict[str, Any]] = []

    @dramatiq.actor(broker=broker, rate_limit="2/s", max_retries=1, min_backoff=1, max_backoff=1)
    def push(attempt: int, **kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        seen.append(dict(message.options))
        if attempt == 1 and message.options.get("retries", 0) == 0:
            raise RuntimeError("provider hiccup")

    push.send(0)
    push.send(1)
    with working(broker, threads=1):
        broker.join(push.queue_name)

    # Then the slot it waited for was spent on the failed run, and the retry carries none
    assert len(seen) == 3
    assert all(SLOT_OPTION not in options for options in seen)
    assert seen[-1]["retries"] == 1
    first_tries = [(args, o) for args, o, _ in enqueues.enqueued if not o.get("retries")]
    assert [args for args, _ in first_tries] == [(1,)]
    spent = first_tries[0][1][SLOT_OPTION]
    retries = [(o, delay) for _, o, delay in enqueues.enqueued if o.get("retries") == 1]
    retry, backoff = retries[0]
    assert SLOT_OPTION not in retry
    assert backoff == 1
    # so when it has to wait again, it waits for a later slot of its own
    assert all(o[SLOT_OPTION] > spent for o, _ in retries if SLOT_OPTION in o)


def test_without_redis_the_message_fails_instead_of_running_unchecked():
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    broker = stub_broker(RateLimits(client=unreachable))
    ran = []

    @dramatiq.actor(broker=broker, rate_limit="5/s", **EXPLICIT)
    def notify(**kwargs: Any) -> None:
        ran.append(1)

    notify.send()
    with working(broker), pytest.raises(RedisUnavailable):
        broker.join(notify.queue_name)

    assert ran == []
