"""The brokers and apps the worker modules and the producers build, one function per system.

- Dramatiq kinds: fintask's broker as ``app.broker`` builds it (the wake-up consumer and the full
  middleware stack), Dramatiq's own ``RedisBroker`` with its default middleware, and the two
  mixes the middleware tax needs, composed from ``app.broker``'s public pieces
  (``middleware_stack``, ``WakeupRedisBroker``) with no change to ``app``.
- Celery on the Redis transport, configured fairly: JSON, no result backend, ``acks_late`` as
  Dramatiq acknowledges after the run, remote control off.
- taskiq's ``RedisStreamBroker`` (taskiq-redis), the one that acknowledges after the task.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from celery import Celery
from dramatiq import Broker, Middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.encoder import Encoder, JSONEncoder
from dramatiq.middleware import default_middleware

from bench.systems.system import DRAMATIQ_KINDS, RABBITMQ_VARIABLE, SYSTEM_VARIABLE
from bench.work import REDIS_VARIABLE


def dramatiq_broker(kind: str, redis_url: str, *, process_type: str) -> Broker:
    """The broker of Dramatiq kind ``kind`` for a process of ``process_type`` ("worker", or
    "cli" for a producer), with its middleware."""
    from app.broker import middleware_stack
    from app.rabbitmq import FintaskRabbitmqBroker
    from app.settings import load_settings
    from app.wakeup_broker import WakeupRedisBroker

    consumer, stack = DRAMATIQ_KINDS[kind]
    settings = load_settings({**os.environ, "REDIS_URL": redis_url})
    middleware: list[Middleware] = (
        middleware_stack(settings, for_process_type=process_type)
        if stack == "fintask"
        else [m() for m in default_middleware]
    )
    if consumer == "redis":
        return RedisBroker(url=redis_url, middleware=middleware)
    if consumer == "rabbitmq":
        return FintaskRabbitmqBroker(url=os.environ[RABBITMQ_VARIABLE], middleware=middleware)
    return WakeupRedisBroker(
        url=redis_url,
        middleware=middleware,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        maintenance_chance=settings.maintenance_chance_per_million,
    )


def process_encoder(kind: str) -> Encoder:
    """The message encoder a process of Dramatiq kind ``kind`` sets: fintask's
    (``app.json_codec``) where fintask's stack runs, as ``setup_broker`` sets it; else Dramatiq's
    default."""
    if DRAMATIQ_KINDS[kind][1] == "fintask":
        from app.json_codec import FastJSONEncoder

        return FastJSONEncoder()
    return JSONEncoder()


def worker_broker() -> Broker:
    """The broker of a Dramatiq-kind worker module, for the system named in the environment.

    fintask's is ``app.broker.setup_broker()``, exactly what its workers run; a mix with
    fintask's stack gets the same process set-up (JSON encoder, logging) around its broker.
    """
    kind = os.environ[SYSTEM_VARIABLE]
    if kind in ("fintask", "fintask-rabbitmq"):  # the latter's BROKER_URL names RabbitMQ
        from app.broker import setup_broker

        return setup_broker()
    if DRAMATIQ_KINDS[kind][1] == "fintask":
        from app.logs import configure_logging

        configure_logging()
        dramatiq.set_encoder(process_encoder(kind))
    broker = dramatiq_broker(kind, os.environ[REDIS_VARIABLE], process_type="worker")
    dramatiq.set_broker(broker)
    return broker


def producer_broker(kind: str, redis_url: str) -> Broker:
    """A broker for the harness to send through, as an application process of ``kind`` would.

    Messages are enqueued with ``broker.enqueue`` (no actor needs declaring here); fintask's
    gets its full enqueue-side stack, so guardrails and metrics cost what they cost in the app.
    """
    return dramatiq_broker(kind, redis_url, process_type="cli")


def purge(kind: str, queue: str) -> None:
    """Empty ``queue`` (and its delay and dead-letter queues) where ``kind`` keeps it outside
    the benchmark's Redis, which ``Bench.flush`` empties: on RabbitMQ, so that what a window
    left undrained never reaches the next workers of the queue."""
    if DRAMATIQ_KINDS.get(kind, ("", ""))[0] != "rabbitmq":
        return
    from app.rabbitmq import FintaskRabbitmqBroker

    broker = FintaskRabbitmqBroker(url=os.environ[RABBITMQ_VARIABLE], middleware=[])
    broker.declare_queue(queue, ensure=True)
    broker.flush(queue)
    broker.close()


def celery_app(name: str, redis_url: str | None = None, **conf: Any) -> Celery:
    """A Celery app on the benchmark's Redis, configured fairly; ``conf`` adds to it.

    Remote control is off (``worker_enable_remote_control``), as the workers' command lines
    turn off gossip, mingle and heartbeats: no broadcast traffic competes with the tasks.
    """
    url = redis_url or os.environ[REDIS_VARIABLE]
    app = Celery(name, broker=url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=4,
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.update(conf)
    return app


def taskiq_broker(redis_url: str, queue: str) -> Any:
    """taskiq-redis's ``RedisStreamBroker`` on ``queue`` (a stream with a consumer group).

    The group reads from the stream's start (``consumer_id="0"``; taskiq's default "$" would
    skip messages sent before the first worker created it), so a pre-filled queue is served
    as every other system's is.
    """
    from taskiq_redis import RedisStreamBroker

    return RedisStreamBroker(url=redis_url, queue_name=queue, consumer_id="0")


def huey_app(redis_url: str, queue: str) -> Any:
    """A ``RedisHuey`` on ``queue``: no result store (Celery's and Dramatiq's keep none
    either), blocking reads (BRPOP)."""
    from huey import RedisHuey

    return RedisHuey(queue, url=redis_url, results=False, blocking=True)
