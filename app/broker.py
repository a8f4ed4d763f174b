"""The broker factory: one place builds the broker and its middleware stack for every process.

Each process's entry point calls ``setup_broker`` (the workers through ``dramatiq
app.broker:setup_broker actors``): Sentry is initialised first (its integration patches
``Broker.__init__``), then the broker is built, made global, and takes over the actors declared
so far (``app.declarations``).
"""

from __future__ import annotations

import functools

import dramatiq
from dramatiq import Broker, Middleware
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries, default_middleware

from app.control_state import ControlWatcher
from app.dead_letters import failure_reason, kept_reason
from app.declarations import adopt_declared_actors
from app.json_codec import FastJSONEncoder
from app.logs import configure_logging
from app.metric_batch import MetricBatch
from app.metrics import count_lock_contention, count_rate_limit_deferral
from app.middleware.deadlines import SoftTimeLimit
from app.middleware.fleet import FleetControl
from app.middleware.guardrails import Guardrails
from app.middleware.locks import Mutex, UniqueEnqueue
from app.middleware.memory_limit import MemoryLimit
from app.middleware.metrics import ConsumerRegistry, MessageMetrics
from app.middleware.rate_limits import RateLimits
from app.middleware.recovery import DeadWorkerRecovery
from app.middleware.retries import DurableRetries
from app.middleware.shutdown_signals import CoalesceShutdownSignals
from app.middleware.ticks import TickGuard
from app.rabbitmq import FintaskRabbitmqBroker, check_connection
from app.redis_access import BATCH_PREFIX, check_redis_access
from app.redis_client import get_redis
from app.sentry import init_sentry
from app.settings import (
    WORKER_PROCESS_TYPES,
    Settings,
    SettingsError,
    exit_on_settings_error,
    load_settings,
)
from app.wakeup_broker import WakeupRedisBroker
from chunking import Batches, BatchMembers


def middleware_stack(settings: Settings, *, for_process_type: str) -> list[Middleware]:
    """The middleware of every fintask broker, in the order that keeps their hooks balanced.

    - ``Guardrails`` first: a refused message never claims anything further down.
    - ``UniqueEnqueue`` before Dramatiq's ``AgeLimit``, so every delivery frees its claim,
      even one that ``AgeLimit`` drops.
    - Dramatiq's defaults, with ``DurableRetries`` in place of ``Retries`` (a retry that cannot
      be enqueued dead-letters its message instead of losing it), and right before it
      ``BatchMembers`` (``chunking.batch_members``): its after-hooks run after ``Retries``'
      and the age limit's, so it records a member only once the delivery's fate is final
      (retried: nothing; dead-lettered, expired, revoked: failed; done: succeeded), with the
      reason redacted as a dead letter's is; then ``CurrentMessage``; in
      worker processes, ``CoalesceShutdownSignals`` (the platform's SIGTERM and the master's
      forwarded copy count as one graceful stop), ``TickGuard`` (a periodic tick runs once even
      if two schedulers sent it) and Dramatiq's ``Prometheus`` metrics (``BatchedPrometheus``,
      sharing its writer with ``MessageMetrics``). ``DeadWorkerRecovery`` (a killed worker's
      unacked messages come back on a clock, not by chance) is in every stack: it starts only
      when a worker boots, so a worker recovers however it was started.
    - In worker processes ``FleetControl`` (the worker's record, revocations and paused queues:
      ``app.control_state``), then ``RateLimits`` and ``Mutex``: they skip (defer) messages,
      and placed later the earlier middleware's before/after-skip hooks stay paired. The rate
      limits are declared in every process type, since web and CLI declare the actors whose
      options they read; in workers they take the operators' runtime overrides.
    - ``SoftTimeLimit`` last, so its clock starts when the actor really does; then the
      per-process ``MemoryLimit``.
    """
    # One writer for the per-message metrics of Dramatiq's middleware and fintask's.
    metric_batch = MetricBatch()
    stack: list[Middleware] = [
        Guardrails(max_message_bytes=settings.max_message_bytes),
        UniqueEnqueue(client=get_redis),
    ]
    fleet = None
    if for_process_type in WORKER_PROCESS_TYPES:
        fleet = FleetControl(
            watcher=ControlWatcher(get_redis),
            client=get_redis,
            process_type=for_process_type,
            host=settings.hostname,
        )
    for middleware in default_middleware:
        if middleware is Retries:
            stack.append(_batch_members(fleet))
            stack.append(DurableRetries())
        else:
            stack.append(middleware())
    stack.append(CurrentMessage())
    if for_process_type in WORKER_PROCESS_TYPES:
        stack.append(CoalesceShutdownSignals())
        stack.append(TickGuard(client=get_redis))
        # Imported here: Dramatiq's module reads dramatiq_prom_db and dramatiq_prom_port at
        # import, which `fintask process` sets per process type before it starts the worker.
        from app.middleware.prometheus import BatchedPrometheus

        stack.append(BatchedPrometheus(batch=metric_batch))
        stack.append(ConsumerRegistry())
    stack.append(DeadWorkerRecovery())
    override = None
    if fleet is not None:
        stack.append(fleet)
        override = fleet.rate_limit_override
    stack += [
        RateLimits(client=get_redis, on_defer=count_rate_limit_deferral, override=override),
        Mutex(client=get_redis, on_contention=count_lock_contention),
        # After the limits, so a deferred delivery is neither timed nor counted as a failure.
        MessageMetrics(batch=metric_batch),
        SoftTimeLimit(),
    ]
    if for_process_type in WORKER_PROCESS_TYPES and settings.worker_max_memory_mb:
        stack.append(MemoryLimit(max_memory_mb=settings.worker_max_memory_mb))
    return stack


def _batch_members(fleet: FleetControl | None) -> BatchMembers:
    """The recorder of batch members; a message an operator revoked counts as cancelled."""

    def revoked(message_id: str) -> bool:
        return fleet is not None and message_id in fleet.watcher.state.revoked

    return BatchMembers(
        batches=Batches(client=get_redis, prefix=BATCH_PREFIX),
        revoked=revoked,
        describe=lambda exception: kept_reason(failure_reason(exception)),
    )


def build_broker(settings: Settings, *, for_process_type: str = "cli") -> Broker:
    """A broker for ``settings``: Redis, RabbitMQ (``BROKER_URL=amqp://...``, with Redis still
    at ``REDIS_URL`` for everything but the messages), or Dramatiq's in-process stub for unit
    tests.

    A worker process type does not start without ``BLOB_KEYS``: its ETL steps could neither
    keep nor read a raw blob. Nor does any process start on a RabbitMQ that does not answer or
    refuses its credentials: one line names ``BROKER_URL`` and the cause.
    """
    if for_process_type in WORKER_PROCESS_TYPES:
        settings.blob_keyring()
    middleware = middleware_stack(settings, for_process_type=for_process_type)
    if settings.uses_stub_broker:
        return StubBroker(middleware=middleware)
    if settings.redis_url is None:
        raise SettingsError(
            "REDIS_URL is not set: run through `fintask run`, which starts a private Redis, "
            "or point REDIS_URL at your Redis (redis://HOST:PORT/DB)"
        )
    # Consumers fetch nothing from a queue an operator paused.
    fleet = next((m for m in middleware if isinstance(m, FleetControl)), None)
    paused = fleet.is_paused if fleet is not None else None
    if settings.rabbitmq_url is not None:
        check_connection(settings.rabbitmq_url)
        return FintaskRabbitmqBroker(
            url=settings.rabbitmq_url, middleware=middleware, paused=paused
        )
    # Dramatiq's Redis broker, with consumers that block for a wake-up instead of polling.
    return WakeupRedisBroker(
        url=settings.redis_url,
        middleware=middleware,
        paused=paused,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        maintenance_chance=settings.maintenance_chance_per_million,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )


@functools.cache
@exit_on_settings_error
def setup_broker() -> Broker:
    """Configure this process once: Sentry, the JSON encoder (``app.json_codec``) and the
    global broker, which takes over every actor declared before it.

    A bad setting ends the process with one line on stderr, and so does a Redis that answers
    but will not serve it (``app.redis_access``): Dramatiq's and gunicorn's workers
    call this, and would otherwise print the error with a traceback.
    """
    settings = load_settings()
    if settings.redis_url is not None and not settings.uses_stub_broker:
        check_redis_access(settings.redis_url, process_type=settings.process_type)
    init_sentry(settings)
    configure_logging()
    dramatiq.set_encoder(FastJSONEncoder())
    broker = build_broker(settings, for_process_type=settings.process_type)
    dramatiq.set_broker(broker)
    adopt_declared_actors(broker)
    return broker
