"""A real worker process returns a dead worker's unacked messages on its recovery clock.

What a worker killed a minute ago leaves in Redis is its ack sets and a heartbeat a minute old.
Here a broker fetches messages into its ack sets and its heartbeat is then dated 61 s back,
past the production timeout of 60 s (unchanged): the test needs no minute-long wait, and
``tests/reliability`` kills a real worker instead. The live worker makes few Redis calls while
idle (its consumers block for wake-ups), so maintenance by chance would hardly ever run in the
time allowed: only the clock brings the messages back in it.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from dramatiq import Message
from dramatiq.common import current_millis

from app.settings import load_settings
from tests.support.processes import running, wait_until
from tests.support.recovery import consumers, done, runs, worker_env, worker_process
from tests.support.reliability_actors import QUEUE

pytestmark = [pytest.mark.reliability, pytest.mark.quick]

#: Recovery runs every 5 s; the rest is a loaded machine.
GENEROUS_S = 30


def left_by_a_dead_worker(
    client: redis.Redis,
    worker_id: str,
    queue_name: str,
    *,
    last_heartbeat_ms: int,
    eta: int | None = None,
) -> str:
    """Store one ``work`` message as fetched and never acked by ``worker_id``; return its id.

    That is what ``dispatch.lua``'s fetch leaves: the message in ``<q>.msgs``, its Redis id in
    the worker's ack set of the queue (not in the ready list), the worker's heartbeat.
    """
    redis_id = str(uuid.uuid4())
    options: dict[str, object] = {"redis_message_id": redis_id}
    if eta is not None:
        options["eta"] = eta
    message = Message(queue_name, "work", (), {}, options)
    client.hset(f"dramatiq:{queue_name}.msgs", redis_id, message.encode())
    client.sadd(f"dramatiq:__acks__.{worker_id}.{queue_name}", redis_id)
    client.zadd("dramatiq:__heartbeats__", {worker_id: last_heartbeat_ms})
    return message.message_id


def test_a_dead_workers_messages_come_back_on_the_clock_without_other_traffic(
    redis_url, client, tmp_path
):
    heartbeat_timeout_ms = load_settings().heartbeat_timeout_ms

    # Given a live worker, idle
    env = worker_env(redis_url, tmp_path / "worker", prefetch=4)
    with running(worker_process(threads=2), env, tmp_path / "worker.log"):
        wait_until(lambda: consumers(client) == 1, timeout_s=60, what="the worker to boot")

        # When a worker whose last heartbeat is a second older than the production timeout
        # is found holding three messages and a delayed one, already due
        stale_ms = current_millis() - heartbeat_timeout_ms - 1_000
        sent = [
            left_by_a_dead_worker(client, "dead-worker", QUEUE, last_heartbeat_ms=stale_ms)
            for _ in range(3)
        ]
        sent.append(
            left_by_a_dead_worker(
                client, "dead-worker", f"{QUEUE}.DQ", last_heartbeat_ms=stale_ms, eta=stale_ms
            )
        )

        # Then every message runs, once, within a few recovery intervals
        wait_until(
            lambda: set(done(client)) == set(sent),
            timeout_s=GENEROUS_S,
            what="the dead worker's messages to run",
        )
        assert runs(client) == dict.fromkeys(sent, 1)
    assert not list(client.scan_iter("dramatiq:__acks__.dead-worker.*"))
