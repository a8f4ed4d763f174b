"""A consumer that loses its connection mid-work, on a real Redis: it reconnects, and what it
had fetched but not handed to a worker thread goes back to the queue instead of waiting, in
its ack set, for the process to die.

Redis stays up; the broker raises the error a stalled socket on a managed Redis raises
(``redis.TimeoutError``) at a chosen call.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.common import current_millis

from app.wakeup_broker import Fetched, WakeupRedisBroker
from tests.support.processes import wait_until
from tests.support.workers import fintask_broker, push, worker_on

pytestmark = [pytest.mark.reliability, pytest.mark.quick]
pytest_plugins = ["tests.support.inspection_fixtures"]

QUEUE = "maintenance"


class StallingBroker(WakeupRedisBroker):
    """Raises ``redis.TimeoutError`` on the next fetch of, or dead-letter in, a chosen queue, or
    loses the answer of a fetch that went through, as Redis closing its connections while it
    shuts down does."""

    stall_fetch_of: str | None = None
    lose_fetch_answer_of: str | None = None
    stall_dead_letter = False

    def fetch(self, queue_name: str, count: int) -> list[Fetched]:
        if queue_name == self.stall_fetch_of:
            self.stall_fetch_of = None
            raise redis.TimeoutError("Timeout reading from socket")
        fetched = super().fetch(queue_name, count)
        if queue_name == self.lose_fetch_answer_of and fetched:
            self.lose_fetch_answer_of = None
            raise redis.ConnectionError("Connection closed by server.")
        return fetched

    def dead_letter(self, queue_name: str, redis_id: str, reason: str) -> bool:
        if self.stall_dead_letter:
            self.stall_dead_letter = False
            raise redis.TimeoutError("Timeout reading from socket")
        return super().dead_letter(queue_name, redis_id, reason)


@pytest.fixture
def stalling(inspected_redis: redis.Redis, redis_url: str) -> tuple[StallingBroker, Counter[int]]:
    broker = fintask_broker(redis_url, StallingBroker)
    assert isinstance(broker, StallingBroker)
    runs: Counter[int] = Counter()

    def tally(n: int, **kwargs: Any) -> None:
        runs[n] += 1

    dramatiq.actor(tally, broker=broker, queue_name=QUEUE)
    return broker, runs


def test_a_timeout_mid_batch_loses_none_of_the_batch(stalling, inspected_redis, caplog):
    broker, runs = stalling
    client = inspected_redis

    # Given a batch of three good messages and a poisoned one, fetched together
    push(client, QUEUE, Message(QUEUE, "tally", (0,), {}, {}).encode())
    push(client, QUEUE, b"not json")
    for n in (1, 2):
        push(client, QUEUE, Message(QUEUE, "tally", (n,), {}, {}).encode())
    # And Redis stalls when the consumer dead-letters the poison, in the middle of the batch
    broker.stall_dead_letter = True

    with caplog.at_level(logging.WARNING), worker_on(broker, threads=1, prefetch=8):
        # Then the consumer reconnects and every good message runs, once
        wait_until(lambda: sum(runs.values()) == 3, what="the three good messages")
        wait_until(lambda: client.zcard(f"dramatiq:{QUEUE}.XQ") == 1, what="the poison")
    assert runs == {0: 1, 1: 1, 2: 1}
    assert not list(client.scan_iter("dramatiq:__acks__.*"))
    assert "Consumer encountered an unexpected error" not in caplog.text
    print("\nRedis timeout mid-batch: 3 of 3 good messages ran once, poison dead-lettered; lost 0")


def test_messages_a_fetch_took_as_its_answer_was_lost_run_once(stalling, inspected_redis, caplog):
    broker, runs = stalling
    client = inspected_redis

    # Given three messages, and a fetch that takes them into the worker's ack set and loses
    # its answer with the connection (the worker stays alive: recovery would never see them)
    for n in range(3):
        push(client, QUEUE, Message(QUEUE, "tally", (n,), {}, {}).encode())
    broker.lose_fetch_answer_of = QUEUE

    with caplog.at_level(logging.WARNING), worker_on(broker, threads=2, prefetch=8):
        # Then the restarted consumer returns them to the queue and each runs, once
        wait_until(lambda: sum(runs.values()) == 3, what="the three messages")
        broker.join(QUEUE, timeout=30_000)
    assert broker.lose_fetch_answer_of is None, "the fetch's answer was lost"
    assert runs == {0: 1, 1: 1, 2: 1}
    assert not list(client.scan_iter("dramatiq:__acks__.*"))
    assert "Returning 3 messages to 'maintenance' that a fetch lost" in caplog.text
    print("\nfetch answer lost with the connection: 3 of 3 taken messages ran once; lost 0")


def test_a_delayed_message_held_in_memory_survives_a_timeout(stalling, inspected_redis, caplog):
    broker, runs = stalling
    client = inspected_redis

    # Given a delayed message (a retry, say) due in 5 s, held in the worker's memory
    with caplog.at_level(logging.WARNING), worker_on(broker, threads=1):
        message = Message(f"{QUEUE}.DQ", "tally", (7,), {}, {"eta": current_millis() + 5_000})
        push(client, f"{QUEUE}.DQ", message.encode())
        broker.wake(f"{QUEUE}.DQ")
        wait_until(
            lambda: any(client.scan_iter(f"dramatiq:__acks__.*.{QUEUE}.DQ")),
            what="the delayed message to be fetched",
        )

        # When the delay-queue consumer's next fetch times out (Dramatiq then drops the delayed
        # messages it held in memory)
        broker.stall_fetch_of = f"{QUEUE}.DQ"

        # Then the message still runs, once, when due
        wait_until(lambda: runs[7] == 1, what="the delayed message to run")
        broker.join(QUEUE, timeout=30_000)
    assert runs == {7: 1}
    assert not list(client.scan_iter("dramatiq:__acks__.*"))
    assert "Consumer encountered an unexpected error" not in caplog.text
    print("\nRedis timeout with a delayed message in memory: it ran once when due; lost 0")
