"""Real ``dramatiq`` workers on the wake-up broker: kill -9 and SIGTERM while consumers block."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from app.settings import load_settings
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until

pytestmark = pytest.mark.integration

WORKER = [str(VENV_BIN / "dramatiq"), "tests.support.latency_actors", "--processes", "1"]
QUEUE = "wakeup"  # the queue of tests.support.latency_actors (it needs REDIS_URL to import)
#: DeadWorkerRecovery runs at boot and then every 5 s; the rest is a loaded machine starting a
#: worker and running two messages.
RECOVERY_TIMEOUT_S = 90
#: The 1 s message, a 1 s block and a process exit take a few seconds even on a loaded 2-core
#: machine; a consumer blocked until a token came would hold the stop for Dramatiq's 600 s.
SHUTDOWN_BOUND_S = 30


def send_hold(redis_url: str, seconds: float) -> str:
    """Enqueue a ``hold`` message through a plain broker; return its id."""
    broker = RedisBroker(url=redis_url)
    message = broker.enqueue(Message(QUEUE, "hold", (), {"seconds": seconds}, {}))
    broker.client.close()
    return message.message_id


def counts(client: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(key).items()}


def unacked(client: redis.Redis) -> int:
    """Messages fetched from the queue and not acked, across workers."""
    return sum(client.scard(key) for key in client.scan_iter(f"dramatiq:__acks__.*.{QUEUE}"))


def blocked(client: redis.Redis) -> int:
    return int(client.info("clients")["blocked_clients"])


def heartbeats(client: redis.Redis) -> dict[str, float]:
    """The last heartbeat of each worker (broker) Redis knows, in ms, by worker id."""
    return {
        k.decode(): v for k, v in client.zrange("dramatiq:__heartbeats__", 0, -1, withscores=True)
    }


def test_kill_9_of_a_blocked_consumer_still_returns_its_unacked_messages(
    redis_url, client, tmp_path
):
    # Given a worker (1 thread, prefetch 4, the production heartbeat timeout and recovery)
    # holding two unacked messages, one running (300 s) and one waiting, while its consumers
    # block for more
    heartbeat_timeout_ms = load_settings().heartbeat_timeout_ms
    env = fintask_env(REDIS_URL=redis_url, dramatiq_queue_prefetch="4")
    command = [*WORKER, "--threads", "1"]
    with running(command, env, tmp_path / "first.log") as first:
        wait_until(lambda: blocked(client) >= 2, what="the idle consumers to block")
        held = [send_hold(redis_url, seconds=300), send_hold(redis_url, seconds=0)]
        wait_until(lambda: client.llen("hold:starts") == 1, what="the first message to start")
        wait_until(lambda: unacked(client) == 2, what="both messages fetched")
        wait_until(lambda: blocked(client) >= 2, what="the consumers to block again")

        # When the worker is killed with SIGKILL
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    # and a minute passes: its last heartbeat is dated a second past the production timeout
    # (what the dead worker left is otherwise untouched), so the test needs no minute-long wait
    assert heartbeats(client), "the killed worker never heartbeated"
    stale_ms = current_millis() - heartbeat_timeout_ms - 1_000
    client.zadd("dramatiq:__heartbeats__", dict.fromkeys(heartbeats(client), stale_ms))
    assert unacked(client) == 2

    # Then a new worker gets both messages back, on its recovery clock, and runs them
    with running(command, env, tmp_path / "second.log"):
        wait_until(
            lambda: len(counts(client, "hold:done")) == 2,
            timeout_s=RECOVERY_TIMEOUT_S,
            what="both messages done",
        )
    assert counts(client, "hold:done") == dict.fromkeys(held, 1)
    assert counts(client, "hold:runs") == {held[0]: 2, held[1]: 1}
    assert client.hlen(f"dramatiq:{QUEUE}.msgs") == 0
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0


def test_sigterm_stops_a_blocked_worker_gracefully_within_its_timeout(redis_url, client, tmp_path):
    # Given a worker whose consumers block for up to 1 s (the default worker_timeout),
    # running one 1 s message, and Dramatiq's default --worker-shutdown-timeout of 600 s
    env = fintask_env(REDIS_URL=redis_url)
    with running([*WORKER, "--threads", "2"], env, tmp_path / "worker.log") as worker:
        wait_until(lambda: blocked(client) >= 2, what="the idle consumers to block")
        message_id = send_hold(redis_url, seconds=1.0)
        wait_until(lambda: client.llen("hold:starts") == 1, what="the message to start")

        # When it gets SIGTERM
        signalled_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(SHUTDOWN_BOUND_S * 2)
        took_s = time.monotonic() - signalled_at

    # Then it finished the message, acked it and exited cleanly: the blocked consumers woke
    # within their timeout, and did not hold the shutdown until Dramatiq gave up on them
    assert code == 0
    assert counts(client, "hold:done") == {message_id: 1}
    assert client.hlen(f"dramatiq:{QUEUE}.msgs") == 0
    assert took_s < SHUTDOWN_BOUND_S
    assert "Worker has been shut down" in (tmp_path / "worker.log").read_text()
