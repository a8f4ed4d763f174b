"""A revocation outlives the worker that held the message (Celery's revokes live in worker
memory and are forgotten on restart unless ``--statedb`` is set).

A worker holds a message it has not started (its only thread is busy) when an operator cancels
it: it is revoked. The worker is then killed with SIGKILL and a new one starts, with the
Procfile's settings: after the heartbeat timeout (60 s) recovery puts both messages back, the
busy one runs again to its end, and the revoked one never starts.
"""

from __future__ import annotations

import os
import signal

import pytest
import redis
from dramatiq import Message

import tests.support.control_actors  # noqa: F401  (declares the actors the operator names)
from app.control import cancel
from app.control.actions import max_age_of
from app.control.workers import list_workers
from app.redis_access import BATCH_PREFIX
from app.wakeup_broker import WakeupRedisBroker
from chunking import Batches
from tests.support.control_actors import ENDED_KEY, QUEUE, RELEASE_KEY, STARTED_KEY
from tests.support.processes import running, wait_until
from tests.support.recovery import counts, unacked, worker_env, worker_process

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(480)]

HEARTBEAT_TIMEOUT_S = 60
MODULES = ("actors", "tests.support.control_actors")


def alive(client: redis.Redis) -> int:
    return sum(w.state == "alive" for w in list_workers(client, [QUEUE]))


def test_a_message_revoked_in_a_killed_worker_stays_revoked_in_its_successor(
    redis_url, client, tmp_path
):
    import dramatiq

    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    producer.declare_queue(QUEUE)
    command = worker_process(threads=1, modules=MODULES, queue=QUEUE)

    # Given a worker with one thread, busy, and holding a second message it has not started
    first_env = worker_env(redis_url, tmp_path / "first", prefetch=2)
    with running(command, first_env, tmp_path / "first.log") as first:
        wait_until(lambda: alive(client) == 1, timeout_s=60, what="the first worker")
        busy = producer.enqueue(Message(QUEUE, "hold", (), {}, {})).message_id
        wait_until(lambda: busy in counts(client, STARTED_KEY), what="the busy message to start")
        held = producer.enqueue(Message(QUEUE, "quick", (), {}, {})).message_id
        wait_until(lambda: unacked(client, QUEUE) == 2, what="the second message to be held")

        # When an operator cancels the held message, and the worker is killed
        cancelled = cancel.cancel_message(
            client,
            [QUEUE],
            held,
            max_age_ms=max_age_of(dramatiq.get_broker()),
            batches=Batches(client=client, prefix=BATCH_PREFIX),
        )
        assert (cancelled.state, cancelled.revoked) == ("held", True)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    # Then its successor, once recovery returned both, runs the busy one and never the revoked
    client.set(RELEASE_KEY, 1)
    second_env = worker_env(redis_url, tmp_path / "second", prefetch=2)
    with running(command, second_env, tmp_path / "second.log"):
        wait_until(
            lambda: client.hget(ENDED_KEY, busy) == b"done",
            timeout_s=HEARTBEAT_TIMEOUT_S + 120,
            what="the busy message to run again to its end",
        )
        wait_until(
            lambda: unacked(client, QUEUE) == 0 and client.llen(f"dramatiq:{QUEUE}") == 0,
            what="the revoked message to be dropped",
        )
    producer.client.close()
    assert counts(client, STARTED_KEY) == {busy: 2}
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
