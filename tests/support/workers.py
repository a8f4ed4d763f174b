"""An in-process Dramatiq worker on a real Redis broker built with fintask's middleware stack,
and messages pushed straight into Redis, the way a buggy producer or an old release would."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from app.broker import middleware_stack
from app.settings import load_settings
from app.wakeup_broker import WakeupRedisBroker


def fintask_broker(
    redis_url: str, broker_class: type[WakeupRedisBroker] = WakeupRedisBroker
) -> WakeupRedisBroker:
    """A wake-up broker with the middleware of fintask's producers and consumers."""
    stack = middleware_stack(load_settings(), for_process_type="cli")
    return broker_class(url=redis_url, middleware=stack)


@contextmanager
def worker_on(
    broker: RedisBroker,
    *,
    worker_timeout_ms: int = 1_000,
    threads: int = 2,
    prefetch: int | None = None,
) -> Iterator[dramatiq.Worker]:
    """A started Worker; stopped with wake-up tokens pushed, so it does not wait out a block."""
    worker = dramatiq.Worker(broker, worker_timeout=worker_timeout_ms, worker_threads=threads)
    worker.queue_prefetch = prefetch or worker.queue_prefetch
    worker.start()
    try:
        yield worker
    finally:
        stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 30_000})
        stopper.start()
        while stopper.is_alive():
            if isinstance(broker, WakeupRedisBroker):
                for name in broker.get_declared_queues() | broker.get_declared_delay_queues():
                    broker.wake(name)
            stopper.join(0.05)
        broker.client.close()


def push(client: redis.Redis, queue_name: str, payload: bytes) -> str:
    """Put ``payload`` on ``queue_name`` as Dramatiq's enqueue would; return its Redis id."""
    redis_id = str(uuid.uuid4())
    client.hset(f"dramatiq:{queue_name}.msgs", redis_id, payload)
    client.rpush(f"dramatiq:{queue_name}", redis_id)
    return redis_id
