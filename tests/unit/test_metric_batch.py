"""Batched Prometheus updates: the same samples as prometheus_client's own calls, written later.

The multiprocess files a worker writes are read back by a real scrape in
``tests/integration/test_prometheus_stack.py``; here each metric lives in a private registry.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import default_middleware
from dramatiq.middleware.prometheus import Prometheus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.metric_batch import MetricBatch
from app.middleware.prometheus import BatchedPrometheus
from tests.support.processes import wait_until

BUCKETS = (0.5, 1, 5, 10)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("t_wait_seconds", "waits", ["queue"], buckets=BUCKETS, registry=registry)


def test_a_batched_histogram_reads_as_one_observed_value_by_value():
    direct, batched = CollectorRegistry(), CollectorRegistry()
    observed, gathered = histogram(direct), histogram(batched)
    batch = MetricBatch()
    # On the bounds, between them, past the last one, and zero, in two series.
    values = [0, 0.5, 0.7, 1, 1, 4.99, 5, 10, 10.01, 1e6]
    for queue in ("a", "b"):
        for value in values[: 7 if queue == "a" else None]:
            observed.labels(queue).observe(value)
            batch.observe(gathered, (queue,), value)

    assert samples(batched)[("t_wait_seconds_count", (("queue", "a"),))] == 0
    batch.flush()

    assert samples(batched) == samples(direct)
    assert samples(batched)[("t_wait_seconds_bucket", (("le", "1.0"), ("queue", "a")))] == 5


def test_counters_and_gauges_add_up_and_a_gauge_back_where_it_was_is_not_written():
    registry = CollectorRegistry()
    total = Counter("t_runs", "runs", ["actor"], registry=registry)
    running = Gauge("t_running", "in progress", ["actor"], registry=registry)
    batch = MetricBatch()
    for _ in range(3):
        batch.add(total, ("ping",))
        batch.add(running, ("ping",))
    batch.add(running, ("ping",), -3)
    batch.add(running, ("pong",), 2)
    batch.add(running, ("pong",), -1)

    assert registry.get_sample_value("t_runs_total", {"actor": "ping"}) == 0
    batch.flush()
    batch.flush()  # nothing new: nothing added twice

    assert registry.get_sample_value("t_runs_total", {"actor": "ping"}) == 3
    assert registry.get_sample_value("t_running", {"actor": "ping"}) == 0
    assert registry.get_sample_value("t_running", {"actor": "pong"}) == 1


def test_no_update_is_lost_between_threads_and_a_writer_that_writes_meanwhile():
    registry = CollectorRegistry()
    total = Counter("t_runs", "runs", ["actor"], registry=registry)
    waits = histogram(registry)
    batch = MetricBatch(flush_every_s=0.001)
    batch.start()

    def record() -> None:
        for i in range(5_000):
            batch.add(total, ("ping",))
            batch.observe(waits, ("q",), i % 12)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch.close()

    assert registry.get_sample_value("t_runs_total", {"actor": "ping"}) == 40_000
    assert registry.get_sample_value("t_wait_seconds_count", {"queue": "q"}) == 40_000
    past_the_last_bound = {"queue": "q", "le": "+Inf"}
    in_the_last_bound = {"queue": "q", "le": "10.0"}
    assert registry.get_sample_value("t_wait_seconds_bucket", in_the_last_bound) == 8 * 4_584
    assert registry.get_sample_value("t_wait_seconds_bucket", past_the_last_bound) == 40_000


def test_a_started_batch_writes_on_its_own_and_one_writer_runs_however_often_started():
    registry = CollectorRegistry()
    total = Counter("t_runs", "runs", ["actor"], registry=registry)
    batch = MetricBatch(flush_every_s=0.05)
    batch.start()
    batch.start()
    try:
        batch.add(total, ("ping",))
        wait_until(
            lambda: registry.get_sample_value("t_runs_total", {"actor": "ping"}) == 1,
            what="the writer thread to write the count",
        )
        writers = [t for t in threading.enumerate() if t.name == "fintask-metrics"]
        assert len(writers) == 1
    finally:
        batch.close()
    assert not [t for t in threading.enumerate() if t.name == "fintask-metrics"]


def test_close_writes_what_is_left_and_a_closed_batch_starts_again():
    registry = CollectorRegistry()
    total = Counter("t_runs", "runs", ["actor"], registry=registry)
    batch = MetricBatch(flush_every_s=3600)
    batch.start()
    batch.add(total, ("ping",))
    batch.close()
    assert registry.get_sample_value("t_runs_total", {"actor": "ping"}) == 1

    batch.start()
    batch.add(total, ("ping",))
    batch.close()
    assert registry.get_sample_value("t_runs_total", {"actor": "ping"}) == 2


@pytest.fixture(autouse=True)
def own_multiprocess_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dramatiq's ``after_process_boot`` points the multiprocess variables at its directory:
    the test's process gets them back, so that no later child inherits them."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))


def run_a_flaky_actor(prometheus: Prometheus) -> dict[str, float]:
    """Two runs that succeed, one that fails and is retried and dead-lettered, one delayed:
    what ``prometheus`` counted for them once the worker stopped."""
    broker = StubBroker(middleware=[m() for m in default_middleware] + [prometheus])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, queue_name="p_q", max_retries=1, min_backoff=1, max_backoff=1)
    def p_flaky(fail: bool) -> None:
        if fail:
            raise ValueError("boom")

    for fail in (False, False, True):
        p_flaky.send(fail)
    p_flaky.send_with_options(args=(False,), delay=1)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        broker.join("p_q", fail_fast=False)
        worker.join()
        unwritten = prometheus.total_messages.labels("p_q", "p_flaky")._value.get()
    finally:
        worker.stop()
        broker.close()
    counted = {
        name: metric.labels("p_q", "p_flaky")._value.get()
        for name, metric in (
            ("total", prometheus.total_messages),
            ("errored", prometheus.total_errored_messages),
            ("retried", prometheus.total_retried_messages),
            ("rejected", prometheus.total_rejected_messages),
            ("in progress", prometheus.inprogress_messages),
            ("delayed in progress", prometheus.inprogress_delayed_messages),
        )
    }
    durations = prometheus.message_durations.labels("p_q", "p_flaky")
    counted["timed"] = sum(bucket.get() for bucket in durations._buckets)
    counted["before the worker stopped"] = unwritten
    return counted


def test_the_batched_middleware_counts_what_dramatiqs_own_does_once_the_worker_stops():
    plain = run_a_flaky_actor(Prometheus())
    batched = run_a_flaky_actor(BatchedPrometheus(batch=MetricBatch(flush_every_s=3600)))

    assert plain["total"] == plain["before the worker stopped"] == 5
    assert plain["errored"] == 2 and plain["rejected"] == 1 and plain["retried"] >= 1
    assert batched == plain | {"before the worker stopped": 0}
