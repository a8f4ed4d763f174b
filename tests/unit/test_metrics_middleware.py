"""fintask's metrics middleware: failures by exception class, time waited, live consumers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.middleware import default_middleware
from prometheus_client import REGISTRY

from app.inspection import consumers_alive
from app.metric_batch import MetricBatch
from app.metrics import count_lock_contention, count_rate_limit_deferral
from app.middleware.metrics import (
    CONSUMERS_KEY,
    ConsumerRegistry,
    MessageMetrics,
    due_at_ms,
    prune_consumers,
)
from tests.support.processes import wait_until


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    metrics = MessageMetrics(batch=MetricBatch(), max_exception_names=2)
    broker = StubBroker(middleware=[m() for m in default_middleware] + [metrics])
    broker.emit_after("process_boot")
    yield broker
    broker.close()


def run_all(broker: StubBroker, queue_name: str) -> None:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join(queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_a_failing_actor_counts_a_failure_labelled_with_its_exception_class(broker):
    @dramatiq.actor(broker=broker, queue_name="m_fail", max_retries=0)
    def m_explode(**kwargs: Any) -> None:
        raise KeyError("account 9")

    @dramatiq.actor(broker=broker, queue_name="m_fail", max_retries=0)
    def m_fine(**kwargs: Any) -> None:
        pass

    m_explode.send()
    m_explode.send()
    m_fine.send()
    run_all(broker, "m_fail")

    labels = {"actor_name": "m_explode", "queue_name": "m_fail"}
    assert sample("fintask_message_failures_total", **labels, exception="KeyError") == 2
    assert (
        sample(
            "fintask_message_failures_total",
            actor_name="m_fine",
            queue_name="m_fail",
            exception="KeyError",
        )
        == 0
    )


def test_exception_classes_past_the_cap_are_counted_as_other(broker):
    errors = iter([ValueError, TypeError, LookupError, ValueError])

    @dramatiq.actor(broker=broker, queue_name="m_cap", max_retries=0)
    def m_varied(**kwargs: Any) -> None:
        raise next(errors)("boom")

    for _ in range(4):
        m_varied.send()
    run_all(broker, "m_cap")

    labels = {"actor_name": "m_varied", "queue_name": "m_cap"}
    assert sample("fintask_message_failures_total", **labels, exception="ValueError") == 2
    assert sample("fintask_message_failures_total", **labels, exception="TypeError") == 1
    assert sample("fintask_message_failures_total", **labels, exception="LookupError") == 0
    assert sample("fintask_message_failures_total", **labels, exception="other") == 1


def test_wait_is_measured_from_when_a_message_was_due(broker):
    @dramatiq.actor(broker=broker, queue_name="m_wait", max_retries=0)
    def m_waited(**kwargs: Any) -> None:
        pass

    now = current_millis()
    # First sent two minutes ago, due again (after a retry's backoff) one minute ago.
    late = m_waited.message().copy(
        message_timestamp=now - 120_000, options={"due_at_ms": now - 60_000}
    )
    broker.enqueue(late)
    run_all(broker, "m_wait")

    assert sample("fintask_message_wait_seconds_count", queue_name="m_wait") == 1
    waited = sample("fintask_message_wait_seconds_sum", queue_name="m_wait")
    assert 60 <= waited < 120
    assert sample("fintask_message_wait_seconds_bucket", queue_name="m_wait", le="30.0") == 0


def test_a_retry_waits_from_the_end_of_its_backoff_not_from_the_first_send(broker):
    attempts: list[int] = []

    @dramatiq.actor(
        broker=broker, queue_name="m_retry", max_retries=1, min_backoff=20, max_backoff=20
    )
    def m_flaky(**kwargs: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("provider hiccup")

    ten_minutes_old = m_flaky.message().copy(message_timestamp=current_millis() - 600_000)
    broker.enqueue(ten_minutes_old)
    run_all(broker, "m_retry")

    assert len(attempts) == 2
    assert sample("fintask_message_wait_seconds_count", queue_name="m_retry") == 2
    assert sample("fintask_message_wait_seconds_sum", queue_name="m_retry") < 60


def test_due_time_is_the_stamp_else_the_first_send():
    assert due_at_ms(1_000, {}) == 1_000
    assert due_at_ms(1_000, {"due_at_ms": 5_000}) == 5_000
    assert due_at_ms(1_000, {"due_at_ms": None}) == 1_000


def test_the_hooks_other_middleware_call_count_by_actor():
    message: Message[Any] = Message("q", "m_limited", (), {}, {})

    count_rate_limit_deferral(message, 250)
    count_lock_contention(message, "defer")
    count_lock_contention(message, "defer")

    assert sample("fintask_rate_limit_deferrals_total", actor_name="m_limited") == 1
    assert sample("fintask_lock_contention_total", actor_name="m_limited", policy="defer") == 2


def alive(client: redis.Redis) -> int:
    return consumers_alive(client, heartbeat_timeout_ms=60_000)


def test_a_running_worker_counts_as_a_consumer_and_a_producer_does_not(client, redis_url):
    producer = RedisBroker(url=redis_url, middleware=[])
    producer.declare_queue("m_consumed")
    producer.enqueue(Message("m_consumed", "m_nothing", (), {}, {}))  # a fresh heartbeat
    consumer = RedisBroker(url=redis_url, middleware=[ConsumerRegistry()])
    consumer.declare_queue("m_consumed")
    worker = dramatiq.Worker(consumer, worker_timeout=50, worker_threads=1)

    producing_only = alive(client)
    worker.start()
    wait_until(lambda: alive(client) == 1, what="the worker's first heartbeat")
    worker.stop()
    stopped = alive(client)

    assert (producing_only, stopped) == (0, 0)
    assert client.hlen(CONSUMERS_KEY) == 0
    producer.close()
    consumer.close()


def test_a_consumer_that_died_without_shutdown_is_forgotten_once_stale(client):
    old = current_millis() - 600_000
    entry = json.dumps({"host": "h", "pid": 1, "booted_at_ms": old})
    client.hset(
        CONSUMERS_KEY,
        mapping={"dead": entry, "booting": json.dumps({"booted_at_ms": current_millis()})},
    )
    client.zadd("dramatiq:__heartbeats__", {"dead": old})

    removed = prune_consumers(
        client, heartbeat_timeout_ms=60_000, heartbeats="dramatiq:__heartbeats__"
    )

    assert removed == 1
    assert client.hkeys(CONSUMERS_KEY) == [b"booting"]
