"""Fixtures for the inspection tests: the session's Redis as REDIS_URL, and real dead letters.

A dead letter is made the way production makes one: a real ``RedisBroker``, an actor with
``max_retries=0`` that raises, and an in-process ``dramatiq.Worker`` that runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from app.redis_client import get_redis

#: What a test's actors do when run: ``fail`` raises, anything else succeeds.
Behaviour = dict[str, str]


@pytest.fixture
def inspected_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """``REDIS_URL`` at the session's own Redis, and a client on it."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_redis.cache_clear()
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
    get_redis.cache_clear()


class DeadLetters:
    """Test actors, one per queue, that fail while told to, run by real workers on Redis.

    Each run gets its own broker and worker: a Dramatiq broker serves one ``Worker`` in its life.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.behaviour: Behaviour = {}
        self.runs: list[dict[str, Any]] = []

    def _broker(self, queue_name: str) -> tuple[RedisBroker, dramatiq.Actor[Any, Any]]:
        def explode(account_id: int, **kwargs: Any) -> None:
            self.runs.append({"account_id": account_id, **kwargs})
            if self.behaviour.get(queue_name, "fail") == "fail":
                raise ValueError(f"account {account_id} exploded")

        broker = RedisBroker(url=self.url)
        actor = dramatiq.actor(
            explode,
            broker=broker,
            actor_name=f"explode_{queue_name}",
            queue_name=queue_name,
            max_retries=0,
        )
        return broker, actor

    def make(self, queue_name: str, account_id: int = 7) -> str:
        """Send one message that fails and dead-letters; return its id once it is dead."""
        broker, actor = self._broker(queue_name)
        message_id = actor.send(account_id).message_id
        self._work(broker, queue_name)
        return message_id

    def run_worker(self, queue_name: str) -> None:
        """Run a worker until ``queue_name`` is empty."""
        broker, _ = self._broker(queue_name)
        self._work(broker, queue_name)

    @staticmethod
    def _work(broker: RedisBroker, queue_name: str) -> None:
        worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
        worker.start()
        try:
            broker.join(queue_name, timeout=30_000)
            worker.join()
        finally:
            worker.stop()
            broker.close()


@pytest.fixture
def dead_letters(inspected_redis: redis.Redis, redis_url: str) -> Iterator[DeadLetters]:
    letters = DeadLetters(redis_url)
    yield letters
    letters.client.close()
