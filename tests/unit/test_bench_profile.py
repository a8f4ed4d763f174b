"""The profile's table: each sample goes to the innermost frame's component, and shares turn
into microseconds per message by the CPU the processes spent."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.profile import OTHER, Profiled, component_of, render, shares

RAW = """\
run (dramatiq/worker.py:490);process_message (dramatiq/worker.py:520);emit_after \
(app/pruned_hooks.py:61);after_process_message (app/middleware/metrics.py:120);inc \
(prometheus_client/values.py:40) 30
run (dramatiq/worker.py:490);ack (app/wakeup_broker.py:455);execute (redis/client.py:600) 50
run (dramatiq/worker.py:490);decode (app/json_codec.py:60) 15
run (threading.py:1045);uuid4 (uuid.py:724) 5
"""


@pytest.mark.parametrize(
    ("stack", "component"),
    [
        (
            "a (dramatiq/worker.py:1);b (app/middleware/locks.py:2);c (redis/client.py:3)",
            "Redis client (redis-py, hiredis)",
        ),
        ("a (dramatiq/worker.py:1);b (app/middleware/locks.py:2)", "fintask middleware"),
        ("a (dramatiq/worker.py:1);b (dramatiq/middleware/retries.py:2)", "Dramatiq middleware"),
        (
            "a (dramatiq/worker.py:1);b (bench/apps/noop_dramatiq.py:9);c (redis/client.py:3)",
            "the task itself (its run's record included)",
        ),
        ("a (threading.py:1);b (uuid.py:2)", "threads and queues"),
        ("a (<string>:1);b (uuid.py:2)", OTHER),
    ],
)
def test_a_sample_belongs_to_its_innermost_known_component(stack: str, component: str) -> None:
    assert component_of(stack) == component


def test_shares_count_each_stack_by_its_sample_count() -> None:
    assert shares(RAW) == Counter(
        {
            "metrics (prometheus_client)": 30,
            "Redis client (redis-py, hiredis)": 50,
            "JSON (message codec)": 15,
            "threads and queues": 5,
        }
    )


def test_microseconds_per_message_split_the_measured_cpu_by_share() -> None:
    # 1,000 messages for 0.2 s of CPU: 200 µs each, of which Redis has half
    profiled = Profiled("worker", messages=1_000, cpu_s=0.2, samples=shares(RAW))

    assert profiled.rows()[0] == ("Redis client (redis-py, hiredis)", 0.5, pytest.approx(100.0))
    report = render([profiled], ["# Profile"])
    assert "## worker: 200.0 µs of CPU per message" in report
    assert "| Redis client (redis-py, hiredis) | 50.0% | 100.0 |" in report
