"""The systems every scenario compares, and how to run their workers and producers.

- ``fintask``: fintask's broker as ``app.broker`` builds it for a worker process: the wake-up
  consumer and the full middleware stack (guardrails, unique enqueue, Dramatiq's defaults,
  Prometheus, rate limits, mutex, message metrics, soft time limits).
- ``dramatiq``: Dramatiq's own ``RedisBroker`` with its default middleware, nothing else;
  ``wakeup-dramatiq`` and ``redis-fintask`` swap one of the two, for the middleware tax.
- ``celery``: Celery on the Redis transport, configured fairly (JSON, no result backend,
  ``acks_late`` as Dramatiq acknowledges after the run, remote control off).
- ``taskiq`` (taskiq-redis's ``RedisStreamBroker``), ``huey`` (``RedisHuey``), ``arq`` (in its
  own venv, ``bench/peers/arq``) and ``rq``: each as its documentation runs it, with the
  delivery guarantee :meth:`System.guarantee` states.

Workers run as the real command lines (``dramatiq ...``, ``celery ... worker``, ``taskiq
worker``, ``huey_consumer``, ``arq``, ``rq worker-pool``) against the benchmark's private
Redis, in their own process groups, and are stopped by pid. A worker module (``bench/apps/*``)
builds its system's broker or app and declares its tasks (bodies in :mod:`bench.work`); the
harness starts it with :func:`workers`.
"""

from bench.systems.brokers import (
    celery_app,
    dramatiq_broker,
    huey_app,
    producer_broker,
    purge,
    taskiq_broker,
    worker_broker,
)
from bench.systems.producers import Producer
from bench.systems.redis_cost import CountedReads, RedisCost, queue_depth, wait_until_count
from bench.systems.running import Workers, workers
from bench.systems.system import (
    DRAMATIQ_KINDS,
    PEER_KINDS,
    RQ_FORK_VARIABLE,
    SYSTEM_VARIABLE,
    VENV_BIN,
    System,
)
from bench.work import REDIS_VARIABLE

__all__ = [
    "DRAMATIQ_KINDS",
    "PEER_KINDS",
    "REDIS_VARIABLE",
    "RQ_FORK_VARIABLE",
    "SYSTEM_VARIABLE",
    "VENV_BIN",
    "CountedReads",
    "Producer",
    "RedisCost",
    "System",
    "Workers",
    "celery_app",
    "dramatiq_broker",
    "huey_app",
    "producer_broker",
    "purge",
    "queue_depth",
    "taskiq_broker",
    "wait_until_count",
    "worker_broker",
    "workers",
]
