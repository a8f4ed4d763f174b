"""fintask's mutex is owned and renewed; Dramatiq's ``ConcurrentRateLimiter(limit=1)`` is not."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from itertools import pairwise

import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from app.middleware.locks import LockNotAcquired, redis_mutex
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until

TTL_MS = 200
WORK_S = 0.6


def holders(hold: Callable[[Callable[[], None]], None]) -> int:
    """How many of two threads get to work under ``hold`` when the first outlives the TTL."""
    inside = []

    def work() -> None:
        inside.append(threading.get_ident())
        time.sleep(WORK_S)

    first = threading.Thread(target=hold, args=(work,))
    first.start()
    time.sleep(TTL_MS / 1000 * 2)  # the first holder is past its TTL, still working
    hold(work)
    first.join()
    return len(inside)


def test_a_ttl_counter_lets_a_second_holder_in_and_the_owned_lock_does_not(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter = ConcurrentRateLimiter(RedisBackend(client=client), "mutex", limit=1, ttl=TTL_MS)

    def dramatiq_hold(work: Callable[[], None]) -> None:
        with limiter.acquire(raise_on_failure=False) as acquired:
            if acquired:
                work()

    def fintask_hold(work: Callable[[], None]) -> None:
        with suppress(LockNotAcquired), redis_mutex(client, "mutex", ttl_ms=TTL_MS):
            work()

    assert holders(dramatiq_hold) == 2
    assert holders(fintask_hold) == 1


def test_redis_mutex_gives_up_after_waiting_and_releases_on_exit(redis_url):
    client = redis.Redis.from_url(redis_url)
    with (
        redis_mutex(client, "account:1", ttl_ms=TTL_MS),
        pytest.raises(LockNotAcquired),
        redis_mutex(client, "account:1", wait_ms=100),
    ):
        pass
    with redis_mutex(client, "account:1", ttl_ms=TTL_MS) as mutex:
        assert not mutex.lost
    assert client.exists("fintask:lock:account:1") == 0


def test_real_workers_never_run_two_messages_of_one_account_at_once(redis_url, tmp_path):
    # Given six messages for each of two accounts, whose work outlasts the lock's TTL
    client = redis.Redis.from_url(redis_url)
    broker = RedisBroker(url=redis_url, middleware=[])
    for account_id in (1, 2) * 6:
        broker.enqueue(
            Message(
                queue_name="locked",
                actor_name="locked",
                args=(),
                kwargs={"account_id": account_id},
                options={},
            )
        )
    broker.close()

    # When two processes of four threads run them
    command = [str(VENV_BIN / "dramatiq"), "tests.support.middleware_actors", "--processes", "2"]
    command += ["--threads", "4", "--worker-shutdown-timeout", "5000", "--queues", "locked"]
    with running(command, fintask_env(REDIS_URL=redis_url), tmp_path / "worker.log"):
        wait_until(lambda: client.hlen("locked:runs") >= 12, timeout_s=60, what="12 runs")

    # Then each ran once, without a retry, and the runs of one account never overlapped
    assert set(client.hgetall("locked:runs").values()) == {b"1"}
    assert client.zcard("dramatiq:locked.XQ") == 0
    for account_id in (1, 2):
        spans = sorted(
            tuple(map(float, s.split())) for s in client.lrange(f"locked:{account_id}", 0, -1)
        )
        assert len(spans) == 6
        assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
