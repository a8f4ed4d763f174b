"""DeadWorkerRecovery on the session's own Redis: which messages come back, and who recovers.

A dead worker is what a killed one leaves: messages fetched into its ack sets by Dramatiq's own
fetch, and a heartbeat older than the production timeout (60 s), dated back here instead of
waited for.
"""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from app.middleware.recovery import DeadWorkerRecovery, recovered_queues
from app.settings import load_settings
from app.wakeup_broker import WakeupRedisBroker

HEARTBEATS = "dramatiq:__heartbeats__"


@pytest.fixture
def broker(redis_url: str) -> Iterator[WakeupRedisBroker]:
    """A broker with the production heartbeat timeout and two queues."""
    broker = WakeupRedisBroker(
        url=redis_url, middleware=[], heartbeat_timeout=load_settings().heartbeat_timeout_ms
    )
    for queue_name in ("emails", "fraud"):
        dramatiq.actor(lambda: None, broker=broker, actor_name=queue_name, queue_name=queue_name)
    yield broker
    broker.client.close()


def worker_holding(
    redis_url: str, client: redis.Redis, *, queue_name: str, count: int, age_ms: int
) -> RedisBroker:
    """A worker that fetched ``count`` messages of ``queue_name`` and last beat ``age_ms`` ago.

    The messages go straight into its ack set, in one transaction, as its fetch would have left
    them: never in the ready list, where a live worker of the test could take them first.
    """
    worker = RedisBroker(url=redis_url, middleware=[])
    canonical = queue_name.removesuffix(".DQ")
    options = {"eta": current_millis() + 60_000} if queue_name.endswith(".DQ") else {}
    pipe = client.pipeline(transaction=True)
    for _ in range(count):
        message = Message(queue_name, canonical, (), {}, dict(options))
        pipe.hset(f"dramatiq:{queue_name}.msgs", message.message_id, message.encode())
        pipe.sadd(f"dramatiq:__acks__.{worker.broker_id}.{queue_name}", message.message_id)
    pipe.zadd(HEARTBEATS, {worker.broker_id: current_millis() - age_ms})
    pipe.execute()
    worker.client.close()
    return worker


def test_every_queue_and_delay_queue_is_looked_in_once():
    assert recovered_queues(["b", "a"], ["a.DQ", "b.DQ", "a.DQ"]) == ["a", "a.DQ", "b", "b.DQ"]


def test_a_dead_workers_ready_and_delayed_messages_go_back_and_a_live_ones_stay(
    broker, redis_url, client
):
    # Given a worker dead for a second past the timeout, holding ready and delayed messages
    timeout_ms = broker.heartbeat_timeout
    dead_age_ms = timeout_ms + 1_000
    dead = worker_holding(redis_url, client, queue_name="emails", count=2, age_ms=dead_age_ms)
    worker_holding(redis_url, client, queue_name="fraud.DQ", count=1, age_ms=dead_age_ms)
    # And a live one that beat a second ago
    alive = worker_holding(redis_url, client, queue_name="fraud", count=1, age_ms=1_000)

    # When recovery runs
    returned = DeadWorkerRecovery().recover(broker)

    # Then the dead workers' messages are back on their queues, and the live worker keeps its
    assert returned == {"emails": 2, "fraud.DQ": 1}
    assert client.llen("dramatiq:emails") == 2
    assert client.llen("dramatiq:fraud.DQ") == 1
    assert client.llen("dramatiq:fraud") == 0
    assert client.scard(f"dramatiq:__acks__.{alive.broker_id}.fraud") == 1
    assert not list(client.scan_iter(f"dramatiq:__acks__.{dead.broker_id}.*"))


def test_a_message_settled_since_its_worker_died_does_not_come_back(broker, redis_url, client):
    # Given a dead worker holding two messages, one of which was dead-lettered meanwhile
    worker_holding(redis_url, client, queue_name="emails", count=2, age_ms=120_000)
    settled = client.hkeys("dramatiq:emails.msgs")[0]
    client.hdel("dramatiq:emails.msgs", settled)

    # When recovery runs
    returned = DeadWorkerRecovery().recover(broker)

    # Then only the other one is queued again
    assert returned == {"emails": 1}
    assert client.lrange("dramatiq:emails", 0, -1) == client.hkeys("dramatiq:emails.msgs")


def test_one_process_recovers_per_interval_across_the_fleet(broker, redis_url, client):
    # Given two worker processes' recoveries and a dead worker
    first, second = DeadWorkerRecovery(), DeadWorkerRecovery()
    worker_holding(redis_url, client, queue_name="emails", count=1, age_ms=120_000)

    # When both try in the same interval
    taken = first.recover(broker)
    refused = second.recover(broker)

    # Then the first does the work and the second leaves it, for an interval at most
    assert taken == {"emails": 1}
    assert refused is None
    assert 0 < client.pttl("fintask:recovery:dramatiq") <= first.interval_ms


def test_recovery_runs_on_its_clock_in_a_worker_and_stops_with_it(broker, redis_url, client):
    # Given a worker whose recovery looks every 100 ms, on a broker that never runs Dramatiq's
    # maintenance by chance (this test's subject is the clock, alone)
    broker.maintenance_chance = 0
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    recovery = DeadWorkerRecovery(interval_ms=100)
    broker.add_middleware(recovery)
    worker.start()
    thread = recovery.thread
    try:
        assert thread is not None and thread.is_alive()
        # When a worker is found dead after this one booted
        worker_holding(redis_url, client, queue_name="fraud", count=1, age_ms=120_000)

        # Then its message is taken back and run
        broker.join("fraud", timeout=30_000)
    finally:
        worker.stop()
    assert client.hlen("dramatiq:fraud.msgs") == 0
    # and the recovery thread ended with the worker
    assert not thread.is_alive()
    assert recovery.thread is None


def test_an_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval_ms must be positive"):
        DeadWorkerRecovery(interval_ms=0)
