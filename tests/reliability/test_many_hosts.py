"""Many worker hosts on one Redis: the control plane shows them apart, and a host's SIGKILLed
worker has its messages recovered by the other host.

Two real worker processes (the ``worker`` type's production stack and settings: 60 s heartbeat
timeout) on two host names, each as a deploy gets one: host-a's by ``FINTASK_HOSTNAME``,
host-b's by the default, the machine's name, which ``unshare --uts`` sets for its process alone
(a UTS namespace, as a container has; it needs root, as CI runs).
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import VENV_BIN, run_to_exit, running, wait_until
from tests.support.recovery import consumers, done, runs, send_work, worker_env, worker_process
from tests.support.reliability_actors import QUEUE

pytestmark = pytest.mark.reliability

HEARTBEAT_TIMEOUT_S = 60
#: Recovery's interval (5 s), a fetch, two process starts' worth of a loaded machine.
MARGIN_S = 30


def workers_listed(redis_url: str) -> list[dict[str, object]]:
    """What ``fintask workers --json`` lists."""
    status, output = run_to_exit(
        [str(VENV_BIN / "fintask"), "workers", "--json"], REDIS_URL=redis_url
    )
    assert status == 0, output
    items: list[dict[str, object]] = json.loads(output)["items"]
    return items


def test_two_hosts_are_listed_apart_and_one_recovers_the_other_hosts_killed_worker(
    redis_url, client, tmp_path
):
    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    producer.declare_queue(QUEUE)
    env_a = {**worker_env(redis_url, tmp_path / "a", prefetch=8), "FINTASK_HOSTNAME": "host-a"}
    env_b = worker_env(redis_url, tmp_path / "b", prefetch=8)
    on_host_b = ["unshare", "--uts", "sh", "-c", 'hostname host-b && exec "$@"', "sh"]

    # Given a worker on host-a running a message that holds its first run
    with running(worker_process(threads=2), env_a, tmp_path / "a.log") as a:
        wait_until(lambda: consumers(client) == 1, timeout_s=90, what="host-a's worker")
        held = send_work(producer, hold_first_run=True)
        wait_until(lambda: runs(client).get(held) == 1, what="the held run")

        # And a worker on host-b beside it
        with running([*on_host_b, *worker_process(threads=2)], env_b, tmp_path / "b.log"):
            wait_until(lambda: consumers(client) == 2, timeout_s=90, what="host-b's worker")

            # Then the control plane lists the two hosts' workers apart
            listed = workers_listed(redis_url)
            assert sorted(w["host"] for w in listed if w["state"] == "alive") == [
                "host-a",
                "host-b",
            ]
            [on_a] = [w for w in listed if w["host"] == "host-a"]
            assert [r["message_id"] for r in on_a["running"]] == [held]  # type: ignore[union-attr]

            # When host-a's worker is killed (SIGKILL)
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
            killed_at = time.monotonic()

            # Then host-b runs its message to the end, and host-a's worker is listed as gone
            wait_until(
                lambda: done(client).get(held) == 1,
                timeout_s=HEARTBEAT_TIMEOUT_S + 3 * MARGIN_S,
                what="host-b to recover and run it",
            )
            recovered_s = time.monotonic() - killed_at
            listed = workers_listed(redis_url)
    producer.client.close()
    print(f"\nhost-a's worker killed: its message done on host-b {recovered_s:.1f} s after")

    assert recovered_s < HEARTBEAT_TIMEOUT_S + MARGIN_S
    assert runs(client)[held] == 2
    states = {w["host"]: w["state"] for w in listed}
    assert states["host-b"] == "alive"
    assert states["host-a"] == "gone"
