"""SIGKILL of the Celery bridge in the middle of a stream of Celery tasks loses none.

The bridge acks a Celery message only after its fintask message is enqueued; the message it
held when killed waits in its unacked hash and is put back by the next bridge once it is
``--visibility-timeout-ms`` old (the Procfile's default, 60 s: the setting this test is about,
left as it is). It may then run twice, never zero times.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.support.celery_bridge_actors import QUEUE, RUNS_KEY
from tests.support.celery_producer import celery_producer
from tests.support.processes import dramatiq_worker, running, wait_until
from tests.support.procfile import procfile_command, procfile_env

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TASKS = 300
TEST_TASKS = ("--tasks", "tests.support.celery_bridge_actors:TASKS")
UNACKED = "fintask.celery_bridge.celery.unacked"


def test_sigkill_of_the_bridge_mid_stream_loses_no_task(
    redis_url: str, client: redis.Redis, tmp_path: Path
):
    # Given 300 tasks a Celery producer published, a fintask worker, and the bridge,
    producer = celery_producer(redis_url)
    record = producer.tasks["shop.tasks.record"]
    ids = [record.delay(f"task-{n}").id for n in range(TASKS)]
    env = procfile_env(var_dir=tmp_path, REDIS_URL=redis_url)
    bridge = procfile_command("bridge_celery", *TEST_TASKS)
    worker = dramatiq_worker(QUEUE, modules=("actors", "tests.support.celery_bridge_actors"))
    with running(worker, env, tmp_path / "worker.log"):
        with running(bridge, env, tmp_path / "bridge-1.log") as first:
            # when it is killed once it has handed on some of them,
            wait_until(lambda: client.hlen(RUNS_KEY) >= 30, timeout_s=120, what="30 runs")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
            left_in_celery = client.llen("celery")
            held = client.hlen(UNACKED)
        # and a new bridge starts (as the platform restarts a dead process),
        with running(bridge, env, tmp_path / "bridge-2.log"):
            wait_until(
                lambda: client.hlen(RUNS_KEY) == TASKS and client.hlen(UNACKED) == 0,
                timeout_s=240,
                what=f"all {TASKS} tasks to run",
            )
            recovered_s = time.monotonic() - killed_at

    # then every task ran, and at most the one the killed bridge held ran twice
    runs = {key.decode(): int(count) for key, count in client.hgetall(RUNS_KEY).items()}
    lost = [task_id for task_id in ids if task_id not in runs]
    doubled = [task_id for task_id, count in runs.items() if count > 1]
    print(
        f"\ncelery bridge SIGKILL: {TASKS} tasks, {left_in_celery} still in Celery's queue and "
        f"{held} held unacked at the kill; lost {len(lost)}, doubled {len(doubled)}; all ran "
        f"{recovered_s:.1f} s after the kill"
    )
    assert lost == []
    assert len(doubled) <= held <= 1
