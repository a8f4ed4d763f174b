"""The wake-up broker on a real Redis, with Dramatiq's own Worker in this process.

The latency tests give their consumers a 30 s timeout (``LongBlockingBroker``): a consumer that
waited for its next poll would then start a message about 30 s late, so a start within a
generous 10 s can only come from the wake-up token (or a delayed message's own eta), however
loaded the machine is.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Consumer, Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware

from app.wakeup_broker import WAKE_TOKENS_MAX, WakeupRedisBroker
from chunking import enqueue_many
from tests.support.processes import wait_until
from tests.support.workers import worker_on

pytestmark = pytest.mark.integration

QUEUE = "wakeup"
LONG_TIMEOUT_MS = 30_000
#: Far below LONG_TIMEOUT_MS (a consumer that just blocked polls again ~30 s later), far above
#: a start on a 2-core machine whose cores are both busy.
GENEROUS_S = 10.0


def middleware() -> list[Middleware]:
    return [*(m() for m in default_middleware), CurrentMessage()]


class LongBlockingBroker(WakeupRedisBroker):
    """Consumers that block for 30 s, in a worker whose threads still stop within 1 s.

    (A 30 s ``worker_timeout`` would also make each worker thread wait 30 s on shutdown.)
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return super().consume(queue_name, prefetch, LONG_TIMEOUT_MS)


class Starts:
    """Start times of an actor's runs, by message id, that a test can wait for."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def record(self) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        with self.lock:
            self.by_id.setdefault(message.message_id, []).append(time.time())

    def of(self, message_id: str, *, runs: int = 1) -> list[float]:
        wait_until(lambda: len(self.by_id.get(message_id, ())) >= runs, what=f"{runs} run(s)")
        return self.by_id[message_id]


def wait_until_blocked(client: redis.Redis, consumers: int) -> None:
    """Wait until ``consumers`` clients sit in a blocking pop (an idle wake-up consumer)."""
    wait_until(
        lambda: int(client.info("clients")["blocked_clients"]) >= consumers,
        what=f"{consumers} consumer(s) blocked on their wake-up lists",
    )


@contextmanager
def idle_long_blocking_worker(
    redis_url: str, client: redis.Redis
) -> Iterator[tuple[LongBlockingBroker, Starts, dramatiq.Actor[..., None]]]:
    """A worker whose two consumers sit blocked on their wake-up lists for up to 30 s, and the
    ``ping`` actor it runs, whose starts are recorded."""
    broker = LongBlockingBroker(url=redis_url, middleware=middleware())
    starts = Starts()
    ping = dramatiq.actor(starts.record, actor_name="ping", queue_name=QUEUE, broker=broker)
    with worker_on(broker):
        wait_until_blocked(client, consumers=2)
        yield broker, starts, ping


def test_a_message_sent_to_an_idle_worker_starts_at_once_not_at_the_next_poll(redis_url, client):
    # Given a worker whose consumers sit idle, blocked on their wake-up lists for 30 s
    with idle_long_blocking_worker(redis_url, client) as (_, starts, ping):
        # When a message is sent
        sent_at = time.time()
        message = ping.send()

        # Then it starts well before the 30 s the consumer would otherwise have waited
        (started_at,) = starts.of(message.message_id)
        assert started_at - sent_at < GENEROUS_S


def test_a_bulk_enqueue_wakes_idle_consumers_too(redis_url, client):
    # Given a worker whose consumers sit idle, blocked on their wake-up lists for 30 s
    with idle_long_blocking_worker(redis_url, client) as (broker, starts, ping):
        # When a batch is enqueued in one pipelined round trip
        sent_at = time.time()
        messages = [ping.message() for _ in range(3)]
        enqueue_many(broker, messages)

        # Then every message starts well before the 30 s a poll would have taken
        for message in messages:
            (started_at,) = starts.of(message.message_id)
            assert started_at - sent_at < GENEROUS_S


def test_a_delayed_message_starts_at_its_eta_not_at_the_next_poll(redis_url, client):
    # Given an idle worker
    with idle_long_blocking_worker(redis_url, client) as (_, starts, ping):
        # When a message is sent with a 1 s delay
        sent_at = time.time()
        message = ping.send_with_options(delay=1_000)

        # Then it starts once the delay is over, and not a 30 s poll later
        (started_at,) = starts.of(message.message_id)
        assert 1.0 <= started_at - sent_at < 1.0 + GENEROUS_S


def test_a_retry_runs_after_its_backoff_not_at_the_next_poll(redis_url, client):
    # Given an actor that fails its first run and is retried after 100 to 200 ms
    broker = LongBlockingBroker(url=redis_url, middleware=middleware())
    starts = Starts()

    def fail_once() -> None:
        starts.record()
        message = CurrentMessage.get_current_message()
        if message is not None and not message.options.get("retries"):
            raise RuntimeError("first run fails")

    flaky = dramatiq.actor(
        fail_once, queue_name=QUEUE, broker=broker, max_retries=1, min_backoff=200, max_backoff=200
    )
    with worker_on(broker):
        wait_until_blocked(client, consumers=2)

        # When it runs
        message = flaky.send()

        # Then the retry, re-enqueued on the delay queue, starts soon after the backoff
        first, second = starts.of(message.message_id, runs=2)
        assert second - first < GENEROUS_S


def test_an_idle_consumer_makes_one_fetch_and_one_blpop_per_timeout(redis_url, client):
    # Given an idle worker with a 500 ms timeout: two consumers (the queue and its delay queue)
    broker = WakeupRedisBroker(url=redis_url, middleware=middleware())
    dramatiq.actor(lambda: None, actor_name="noop", queue_name=QUEUE, broker=broker)
    with worker_on(broker, worker_timeout_ms=500):
        wait_until_blocked(client, consumers=2)

        # When it stays idle for 3 s (or longer, if the machine is slow to wake this thread)
        client.config_resetstat()
        counting_since = time.monotonic()
        time.sleep(3.0)
        stats = client.info("commandstats")
        idle_ms = (time.monotonic() - counting_since) * 1000

    # Then each consumer made at most one fetch and one BLPOP per 500 ms of that time (where a
    # polling consumer's backoff restarts at 5 ms after every message)
    most = 2 * (math.ceil(idle_ms / 500) + 1)
    assert stats.get("cmdstat_evalsha", {"calls": 0})["calls"] <= most
    assert stats.get("cmdstat_blpop", {"calls": 0})["calls"] <= most


def test_a_plain_dramatiq_producer_is_still_served_at_the_poll(redis_url, client):
    # Given a wake-up worker polling every second, and a producer that pushes no tokens
    broker = WakeupRedisBroker(url=redis_url, middleware=middleware())
    starts = Starts()
    dramatiq.actor(starts.record, actor_name="ping", queue_name=QUEUE, broker=broker)
    plain = RedisBroker(url=redis_url)
    with worker_on(broker):
        wait_until_blocked(client, consumers=2)

        # When the plain producer enqueues
        message = plain.enqueue(Message(QUEUE, "ping", (), {}, {}))

        # Then the worker still runs it (at its next fetch)
        assert starts.of(message.message_id)
    plain.client.close()


def test_plain_dramatiq_workers_consume_what_it_sends_and_its_tokens_stay_bounded(
    redis_url, client
):
    # Given a plain Dramatiq worker, and a wake-up producer
    plain = RedisBroker(url=redis_url, middleware=middleware())
    starts = Starts()
    dramatiq.actor(starts.record, actor_name="ping", queue_name=QUEUE, broker=plain)
    producer = WakeupRedisBroker(url=redis_url)
    with worker_on(plain, worker_timeout_ms=100):
        # When it sends more messages than a wake-up list holds
        sent = [producer.enqueue(Message(QUEUE, "ping", (), {}, {})) for _ in range(200)]

        # Then the plain worker runs them all, and the unpopped tokens are capped and expire
        for message in sent:
            starts.of(message.message_id)
    assert client.llen(f"dramatiq:{QUEUE}.wake") == WAKE_TOKENS_MAX
    assert 0 < client.pttl(f"dramatiq:{QUEUE}.wake") <= producer.wake_tokens_ttl_ms
    producer.client.close()


#: The heartbeat timeout of the heartbeat test. The heartbeat is what it tests, so it is shorter
#: than the production 60 s, which would make it run for over a minute; still ten times the
#: consumers' 1 s block, so that a loaded machine keeps it, while a consumer that blocked
#: without heartbeating (for its 30 s, or until a token) would let it go stale.
HEARTBEAT_TIMEOUT_MS = 10_000


def test_a_blocked_consumer_keeps_heartbeating_so_its_messages_are_not_taken(redis_url, client):
    # Given a worker running a message for longer than its heartbeat timeout, its consumers
    # otherwise idle, blocked for wake-ups
    broker = WakeupRedisBroker(
        url=redis_url, middleware=middleware(), heartbeat_timeout=HEARTBEAT_TIMEOUT_MS
    )
    starts = Starts()
    finish = threading.Event()

    def slow(**kwargs: Any) -> None:
        starts.record()
        finish.wait(120)

    slow_actor = dramatiq.actor(slow, queue_name=QUEUE, broker=broker)
    # The probe, not the system under test: maintenance on every call returns the messages of
    # any worker whose heartbeat is older than the timeout, as soon as it is.
    watcher = RedisBroker(
        url=redis_url, heartbeat_timeout=HEARTBEAT_TIMEOUT_MS, maintenance_chance=1_000_000
    )
    with worker_on(broker, threads=1):
        message = slow_actor.send()
        starts.of(message.message_id)
        running_since = time.monotonic()

        # When another process runs queue maintenance every 100 ms until the message has run
        # for the timeout and a half
        while time.monotonic() - running_since < HEARTBEAT_TIMEOUT_MS / 1000 * 1.5:
            watcher.do_qsize(QUEUE)
            time.sleep(0.1)
        finish.set()

        # Then the message was never given back to the queue, and it ran once
        broker.join(QUEUE, timeout=60_000)
    assert len(starts.by_id[message.message_id]) == 1
    watcher.client.close()


def test_a_full_prefetch_refills_when_a_message_is_acked_not_at_the_next_poll(redis_url, client):
    # Given one thread and a prefetch of 1, busy with a 3 s message, a second one waiting
    broker = LongBlockingBroker(url=redis_url, middleware=middleware())
    starts = Starts()
    ends: list[float] = []

    def work(seconds: float) -> None:
        starts.record()
        time.sleep(seconds)
        ends.append(time.time())

    actor = dramatiq.actor(work, queue_name=QUEUE, broker=broker)
    with worker_on(broker, threads=1, prefetch=1):
        first = actor.send(3.0)
        starts.of(first.message_id)
        second = actor.send(0.0)

        # When the first one is acked
        (second_started,) = starts.of(second.message_id)
        assert len(starts.by_id[first.message_id]) == 1

    # Then the second, fetched only once the first was acked (prefetch 1 holds), starts at once
    assert 0 <= second_started - ends[0] < GENEROUS_S


def test_an_enqueue_survives_an_empty_script_cache_and_a_broken_wake_up_list(redis_url, client):
    # Given a Redis whose script cache was flushed, and a wake-up list that is not a list
    broker = WakeupRedisBroker(url=redis_url)
    client.script_flush()
    client.set(f"dramatiq:{QUEUE}.wake", "not a list")

    # When a message is enqueued
    broker.enqueue(Message(QUEUE, "ping", (), {}, {}))

    # Then it is stored once (the token could not be pushed: consumers poll it up)
    assert client.llen(f"dramatiq:{QUEUE}") == 1
    assert client.hlen(f"dramatiq:{QUEUE}.msgs") == 1
    broker.client.close()


def test_an_enqueue_that_fails_still_raises(redis_url, client):
    # Given a queue key of the wrong type, so that Dramatiq's enqueue script fails
    broker = WakeupRedisBroker(url=redis_url)
    client.set(f"dramatiq:{QUEUE}", "not a list")

    # When a message is enqueued, then the error reaches the caller, as with RedisBroker
    with pytest.raises(redis.ResponseError):
        broker.enqueue(Message(QUEUE, "ping", (), {}, {}))
    broker.client.close()


def test_acks_made_together_by_many_threads_each_settle_their_message(redis_url, client):
    # Given a worker of 8 threads sharing one consumer, whose acks leave in groups
    broker = WakeupRedisBroker(url=redis_url, middleware=middleware())
    starts = Starts()
    ping = dramatiq.actor(starts.record, actor_name="ping", queue_name=QUEUE, broker=broker)
    messages = [ping.message() for _ in range(2_000)]
    enqueue_many(broker, messages)

    with worker_on(broker, threads=8, prefetch=16):
        # When it drains the queue
        for message in messages:
            starts.of(message.message_id)

        # Then every message ran once, and its ack removed it from the ack set and the payloads
        acks = f"dramatiq:__acks__.{broker.broker_id}.{QUEUE}"
        wait_until(
            lambda: client.scard(acks) == 0 and client.hlen(f"dramatiq:{QUEUE}.msgs") == 0,
            what="every ack written",
        )
    assert all(len(starts.by_id[m.message_id]) == 1 for m in messages)
