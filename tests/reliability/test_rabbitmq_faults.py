"""Faults on RabbitMQ: two worker hosts on one node, a paused queue, a worker killed mid-task.

Real worker processes (the ``worker`` type's production stack and settings) with distinct
``FINTASK_HOSTNAME``s on the session's RabbitMQ node and Redis. RabbitMQ returns a connection's
unacknowledged messages the moment it closes, so a killed worker's message runs on the other
host without waiting for a heartbeat timeout.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from app.control_state import VERSION_KEY
from app.rabbitmq import FintaskRabbitmqBroker
from tests.support.processes import running, wait_until
from tests.support.rabbitmq_workers import (
    alive_workers,
    ended_at,
    fintask,
    fintask_json,
    rabbitmq_worker,
    rabbitmq_worker_env,
    runs,
    send,
)

pytestmark = pytest.mark.reliability

HOSTS = ("host-a", "host-b")
#: Long enough for a pause that did not hold to let a message through (not a bound).
PAUSED_FOR_S = 3


def test_two_hosts_show_apart_a_pause_holds_and_a_killed_hosts_message_runs_on_the_other(
    rabbitmq_server, redis_url, client: redis.Redis, tmp_path
):
    # The command line's environment; its pause and resume are audited in the database.
    env = {
        "REDIS_URL": redis_url,
        "BROKER_URL": rabbitmq_server.url(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fintask.db'}",
    }
    status, output = fintask("migrate", **env)
    assert status == 0, output
    producer = FintaskRabbitmqBroker(url=rabbitmq_server.url(), middleware=[])
    envs = {
        host: rabbitmq_worker_env(redis_url, env["BROKER_URL"], tmp_path / host, hostname=host)
        for host in HOSTS
    }
    # Given a worker on each of two hosts, on one RabbitMQ
    with (
        running(rabbitmq_worker(), envs["host-a"], tmp_path / "a.log") as a,
        running(rabbitmq_worker(), envs["host-b"], tmp_path / "b.log") as b,
    ):
        groups = {"host-a": a, "host-b": b}
        wait_until(
            lambda: len(alive_workers(client, a.pid, b.pid)) == 2, timeout_s=120, what="boot"
        )

        # Then the control plane lists them apart, each with its host
        listed = fintask_json("workers", **env)["items"]
        alive = {w["host"]: w for w in listed if w["state"] == "alive"}
        assert set(alive) == set(HOSTS)
        assert alive["host-a"]["worker_id"] != alive["host-b"]["worker_id"]
        assert {alive[h]["worker_id"].split(":")[0] for h in HOSTS} == set(HOSTS)

        # When the queue is paused and a message sent
        status, output = fintask("queues", "pause", "maintenance", **env)
        assert status == 0, output
        paused_version = int(client.get(VERSION_KEY) or 0)
        wait_until(
            lambda: all(
                w["control_version"] >= paused_version for w in alive_workers(client, a.pid, b.pid)
            ),
            what="both workers to obey the pause",
        )
        held_back = send(producer, "stamp")
        time.sleep(PAUSED_FOR_S)
        resumed_at = time.time()
        status, output = fintask("queues", "resume", "maintenance", **env)
        assert status == 0, output

        # Then it runs once, after the resume
        wait_until(lambda: ended_at(client, held_back) is not None, timeout_s=60, what="it")
        assert runs(client)[held_back] == 1
        ended = ended_at(client, held_back)
        assert ended is not None and ended >= resumed_at

        # When a message holds its first run and the host running it is killed (SIGKILL)
        doomed_message = send(producer, "stamp", hold_first_run=True)

        def holders() -> list[str]:
            return [
                w["host"]
                for w in alive_workers(client, a.pid, b.pid)
                if any(r["message_id"] == doomed_message for r in w["running"])
            ]

        wait_until(holders, what="a worker's record to show the held run")
        [holder] = holders()
        os.killpg(groups[holder].pid, signal.SIGKILL)
        groups[holder].wait()
        killed_at = time.monotonic()

        # Then the other host runs it to the end, once more
        wait_until(lambda: ended_at(client, doomed_message) is not None, timeout_s=120, what="it")
        recovered_s = time.monotonic() - killed_at
        assert runs(client)[doomed_message] == 2
    producer.close()
    print(f"\nRabbitMQ, SIGKILL of the worker running a message: done {recovered_s:.1f} s after")
