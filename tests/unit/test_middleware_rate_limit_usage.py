"""What the rate limits tell operators: each deferral counted per minute in its actor's series,
and how far ahead of now each limiter has booked its starts, read from its own key in the
test's Redis. The middleware is driven directly, one delivery at a time, so no deferred
message has to wait for its slot."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import SkipMessage

from app.middleware.rate_limits import (
    ALL_PARTITIONS,
    RateLimits,
    deferral_series,
    limiter_key,
    parse_rate,
    read_booked,
)
from app.minute_counts import MinuteTally, read_minutes


@pytest.fixture
def tally() -> MinuteTally:
    return MinuteTally()


@pytest.fixture
def limited(client, tally) -> tuple[StubBroker, RateLimits, dramatiq.Actor[..., Any]]:
    """A broker whose actor may start once a minute, its limits counting into ``tally``."""
    limits = RateLimits(client=client, tally=tally)
    broker = StubBroker(middleware=[limits])

    @dramatiq.actor(broker=broker, rate_limit="1/m")
    def sync_account(**kwargs: Any) -> None: ...

    return broker, limits, sync_account


def deliver(broker: StubBroker, limits: RateLimits, actor: dramatiq.Actor[..., Any]) -> bool:
    """Hand one new message of ``actor`` to the limits as a worker would: True if it may run,
    False if it was deferred."""
    try:
        limits.before_process_message(broker, MessageProxy(actor.message()))
    except SkipMessage:
        return False
    return True


def test_each_deferral_is_counted_in_the_actors_series_for_every_partition(client, tally, limited):
    broker, limits, actor = limited

    ran = [deliver(broker, limits, actor) for _ in range(3)]
    tally.flush(client)

    assert ran == [True, False, False]
    counts = read_minutes(client, deferral_series("sync_account"), minutes=2)
    assert list(counts) == [ALL_PARTITIONS]
    assert sum(counts[ALL_PARTITIONS]) == 2  # within this minute or, just past it, the last
    assert limits.deferred["sync_account"] == 2


def test_a_message_that_runs_is_not_counted(client, tally, limited):
    broker, limits, actor = limited

    assert deliver(broker, limits, actor)
    tally.flush(client)

    assert read_minutes(client, deferral_series("sync_account")) == {}


def test_the_booked_time_is_how_far_ahead_the_limiter_has_given_out_slots(client, limited):
    broker, limits, actor = limited
    interval_s = parse_rate("1/m").interval_us / 1_000_000

    idle = read_booked(client, ["sync_account"])
    deliver(broker, limits, actor)
    one = read_booked(client, ["sync_account"])
    deliver(broker, limits, actor)
    two = read_booked(client, ["sync_account"])

    assert idle == {"sync_account": 0.0}
    assert interval_s - 5 < one["sync_account"] <= interval_s
    assert 2 * interval_s - 5 < two["sync_account"] <= 2 * interval_s


def test_the_reader_reads_the_key_the_limiter_writes(client, limited):
    _, limits, actor = limited

    assert limiter_key(actor.actor_name) == limits.redis_key(actor)
    assert limiter_key("a", namespace="other") == "other:rate:a"


def test_a_limiter_whose_slots_are_all_in_the_past_is_idle(client):
    client.set(limiter_key("sync_account"), "1")  # a TAT in 1970: nothing booked

    assert read_booked(client, ["sync_account", "never_limited"]) == {
        "sync_account": 0.0,
        "never_limited": 0.0,
    }
