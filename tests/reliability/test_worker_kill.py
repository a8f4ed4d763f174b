"""SIGKILL of a worker holding unacked messages, with a healthy worker beside it, under the
Procfile's settings (60 s heartbeat timeout, maintenance by chance 1 in 1,000).

Nothing else is sent while the killed worker's messages wait: the healthy worker's consumers sit
blocked on their wake-up lists, so Dramatiq's maintenance by chance would hardly ever run. They
come back by ``DeadWorkerRecovery``'s clock, within the heartbeat timeout and a few seconds.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from app.settings import load_settings
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import running, wait_until
from tests.support.recovery import (
    consumers,
    done,
    runs,
    send_work,
    unacked,
    worker_env,
    worker_process,
)
from tests.support.reliability_actors import QUEUE

pytestmark = pytest.mark.reliability

HEARTBEAT_TIMEOUT_S = 60
#: Recovery's interval (5 s), a fetch, two process starts' worth of a loaded machine.
MARGIN_S = 30


def test_a_killed_workers_messages_all_run_on_the_healthy_worker_within_the_heartbeat_timeout(
    redis_url, client, tmp_path, record_property
):
    # The Procfile's settings, not a test's: the timeout is the production default.
    assert load_settings().heartbeat_timeout_ms == HEARTBEAT_TIMEOUT_S * 1000
    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    producer.declare_queue(QUEUE)

    # Given a worker (2 threads, prefetch 8) running two messages that hold their first run,
    # holding four more it has not started, and one delayed message due in 30 s
    doomed_env = worker_env(redis_url, tmp_path / "doomed", prefetch=8)
    with running(worker_process(threads=2), doomed_env, tmp_path / "doomed.log") as doomed:
        wait_until(lambda: consumers(client) == 1, timeout_s=60, what="the first worker")
        held = [send_work(producer, hold_first_run=True) for _ in range(2)]
        wait_until(lambda: len(runs(client)) == 2, what="both held messages to start")
        waiting = [send_work(producer) for _ in range(4)]
        delayed = send_work(producer, delay_ms=30_000)
        wait_until(lambda: unacked(client, QUEUE) == 6, what="six messages fetched")
        wait_until(lambda: unacked(client, f"{QUEUE}.DQ") == 1, what="the delayed one fetched")

        # And a healthy worker beside it, idle
        healthy_env = worker_env(redis_url, tmp_path / "healthy", prefetch=8)
        with running(worker_process(threads=2), healthy_env, tmp_path / "healthy.log"):
            wait_until(lambda: consumers(client) == 2, timeout_s=60, what="the second worker")

            # When the first worker is killed with SIGKILL
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait()
            killed_at = time.monotonic()

            # Then every message runs to the end on the healthy worker
            every = [*held, *waiting, delayed]
            wait_until(
                lambda: set(done(client)) == set(every),
                timeout_s=HEARTBEAT_TIMEOUT_S + 3 * MARGIN_S,
                what="every message to be done",
            )
            recovered_s = time.monotonic() - killed_at
    producer.client.close()

    record_property("time_to_recover_s", round(recovered_s, 1))
    print(f"\nkill -9 of a worker holding 7 messages: all done {recovered_s:.1f} s after")

    # Within the heartbeat timeout and a few seconds, none lost, none doubled; only the two that
    # were running when the worker died ran twice
    assert recovered_s < HEARTBEAT_TIMEOUT_S + MARGIN_S
    assert done(client) == dict.fromkeys(every, 1)
    assert runs(client) == {**dict.fromkeys(held, 2), **dict.fromkeys([*waiting, delayed], 1)}
    assert unacked(client, QUEUE) == unacked(client, f"{QUEUE}.DQ") == 0
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
