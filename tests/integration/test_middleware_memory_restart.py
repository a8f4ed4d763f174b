"""A worker process over its memory limit is replaced, and no message is lost or run twice.

A real ``dramatiq`` worker (2 processes x 2 threads) runs an actor that keeps ~1 MiB per
message on purpose, under a 120 MiB limit. Each replacement costs Dramatiq's graceful restart
(about 3.5 s here: the child's 1 s poll, its shutdown, the master's re-exec and boot), so the
message count is sized for about ten restarts.
"""

from __future__ import annotations

import time

import psutil
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from tests.support.processes import VENV_BIN, fintask_env, running

LIMIT_MB = 120
MARGIN_MB = 24  # two threads finishing their message after the check, and psutil's sampling
MESSAGES = 1_500


def test_a_leaking_worker_is_replaced_without_losing_or_repeating_a_message(redis_url, tmp_path):
    # Given a backlog of messages that each leak about 1 MiB in the worker that runs them
    client = redis.Redis.from_url(redis_url)
    broker = RedisBroker(url=redis_url, middleware=[])
    for _ in range(MESSAGES):
        broker.enqueue(
            Message(queue_name="leaky", actor_name="leak", args=(), kwargs={}, options={})
        )
    broker.close()

    # When a real worker runs them with a 120 MiB limit per process, sampled as it goes
    env = fintask_env(REDIS_URL=redis_url, FINTASK_TEST_MAX_MEMORY_MB=str(LIMIT_MB))
    command = [str(VENV_BIN / "dramatiq"), "tests.support.middleware_actors", "--processes", "2"]
    command += ["--threads", "2", "--worker-shutdown-timeout", "5000", "--queues", "leaky"]
    children: set[int] = set()
    largest = 0
    with running(command, env, tmp_path / "worker.log") as process:
        master = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        while client.hlen("leak:runs") < MESSAGES and time.monotonic() < deadline:
            assert process.poll() is None, "the dramatiq master exited"
            for child in master.children():
                try:
                    largest = max(largest, child.memory_info().rss)
                except psutil.Error:
                    continue
                children.add(child.pid)
            time.sleep(0.02)

    # Then every message ran exactly once, and none was dead-lettered
    runs = client.hgetall("leak:runs")
    print(f"\n{len(children)} worker processes over the run; largest RSS {largest >> 20} MiB")
    assert len(runs) == MESSAGES
    assert set(runs.values()) == {b"1"}
    assert client.zcard("dramatiq:leaky.XQ") == 0
    # and the master replaced its children while their memory stayed bounded
    assert len(children) > 2
    assert largest < (LIMIT_MB + MARGIN_MB) << 20
