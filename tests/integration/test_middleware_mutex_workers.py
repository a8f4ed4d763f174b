"""fintask's mutex is owned and renewed; Dramatiq's ``ConcurrentRateLimiter(limit=1)`` is not."""

from __future__ import annotations

import time
from contextlib import ExitStack
from itertools import pairwise

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from app.middleware.locks import RedisMutex
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until

#: Both holders' TTL. The owned lock is renewed every TTL_MS / 3 (1 s), so it outlives a
#: renewal up to 2 s late, which a loaded machine keeps.
TTL_MS = 3_000


def test_a_ttl_counter_lets_a_second_holder_in_and_the_owned_lock_does_not(redis_url):
    client = redis.Redis.from_url(redis_url)
    limiter = ConcurrentRateLimiter(RedisBackend(client=client), "counter", limit=1, ttl=TTL_MS)
    owner = RedisMutex(client, "owned", ttl_ms=TTL_MS)

    # Given a first holder of each, still working once it has held for longer than the TTL
    with ExitStack() as first:
        assert first.enter_context(limiter.acquire(raise_on_failure=False))
        assert owner.acquire()
        first.callback(owner.release)
        time.sleep(TTL_MS / 1000 * 1.5)  # at least that long: a later wake only ages them more

        # When a second holder tries each
        with limiter.acquire(raise_on_failure=False) as second_in_the_counter:
            pass
        second_in_the_owned_lock = RedisMutex(client, "owned", ttl_ms=TTL_MS).acquire()

        # Then the counter let it in beside the first, and the owned lock, renewed, did not
        assert second_in_the_counter
        assert not second_in_the_owned_lock
        assert not owner.lost
    client.close()


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
        wait_until(lambda: client.hlen("locked:runs") >= 12, timeout_s=300, what="12 runs")

    # Then each ran once, without a retry, and the runs of one account never overlapped
    assert set(client.hgetall("locked:runs").values()) == {b"1"}
    assert client.zcard("dramatiq:locked.XQ") == 0
    for account_id in (1, 2):
        spans = sorted(
            tuple(map(float, s.split())) for s in client.lrange(f"locked:{account_id}", 0, -1)
        )
        assert len(spans) == 6
        assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
