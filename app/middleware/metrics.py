"""What Dramatiq's ``Prometheus`` middleware does not measure, and who is consuming.

``Prometheus`` counts errors per actor but not which exception, and times a run but not the
wait before it. ``MessageMetrics`` adds both to the instruments of ``app.metrics``; in a worker
process they are written to the multiprocess directory Dramatiq's exposition server reads, the
waits through the ``MetricBatch`` the stack's ``BatchedPrometheus`` shares (one per message,
batched like Dramatiq's own; failures are rare and written at once).

The wait is measured from when a message became due, which Dramatiq does not keep: its
``eta`` option is deleted when a worker moves a delayed message (a retry, a deferral) to its
ready queue, and ``message_timestamp`` is the first send. So ``MessageMetrics`` stamps each
enqueue with the ``due_at_ms`` option (now, or the end of the delay).

Every Dramatiq broker instance, producer or consumer, refreshes its id in the
``__heartbeats__`` sorted set on each Redis call, so a fresh heartbeat there does not prove a
consumer: the web process and the scheduler heartbeat whenever they send. ``ConsumerRegistry``
records which broker ids belong to worker processes, so that "consumers alive" counts only
those (``app.inspection.consumers_alive``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

import redis
from dramatiq import Broker, Message, Middleware, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis
from dramatiq.logging import get_logger

from app.metric_batch import MetricBatch
from app.metrics import MESSAGE_FAILURES, MESSAGE_WAIT

#: The exception label of every exception class past the cap.
OTHER_EXCEPTION = "other"

#: The Redis hash of consumer broker ids: id -> JSON {host, pid, booted_at_ms}.
CONSUMERS_KEY = "fintask:consumers"

#: The message option holding when the message became (or becomes) due, in ms since the epoch.
DUE_AT_OPTION = "due_at_ms"


def due_at_ms(message_timestamp: int, options: Mapping[str, Any]) -> int:
    """When a message became due: its ``due_at_ms`` stamp, else its first send."""
    due = options.get(DUE_AT_OPTION)
    return due if isinstance(due, int) else message_timestamp


class MessageMetrics(Middleware):
    """Counts failures by exception class and observes how long messages waited to start.

    Put it in every process type's stack (producers stamp ``due_at_ms`` on the first send; a
    message sent without it counts from ``message_timestamp``), and after the middleware that
    defer messages (rate limits, locks), so that a deferred delivery is not timed: its wait is
    measured once, from its new slot, when it really runs.

    Parameters:
      batch: where the waits are gathered until written; it is written at worker shutdown.
      max_exception_names: distinct exception class names this process labels; later ones are
        counted as ``"other"``, so a bug that raises ever new classes cannot grow the series.
    """

    def __init__(self, *, batch: MetricBatch, max_exception_names: int = 20) -> None:
        self.batch = batch
        self.max_exception_names = max_exception_names
        self._exception_names: set[str] = set()
        self._lock = threading.Lock()

    def exception_label(self, exception: BaseException) -> str:
        """The class name of ``exception``, or ``"other"`` once the cap is reached."""
        name = type(exception).__name__
        with self._lock:
            if name in self._exception_names:
                return name
            if len(self._exception_names) < self.max_exception_names:
                self._exception_names.add(name)
                return name
        return OTHER_EXCEPTION

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if delay:
            message.options[DUE_AT_OPTION] = message.options.get("eta", current_millis() + delay)
        else:
            # A worker moving a delayed message to its ready queue enqueues it without a delay:
            # it has been due since the stamp of its delayed enqueue.
            message.options.setdefault(DUE_AT_OPTION, current_millis())

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.batch.start()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.batch.close()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        waited_ms = current_millis() - due_at_ms(message.message_timestamp, message.options)
        self.batch.observe(MESSAGE_WAIT, (message.queue_name,), max(0, waited_ms) / 1000)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        label = self.exception_label(exception)
        MESSAGE_FAILURES.labels(message.actor_name, message.queue_name, label).inc()


class ConsumerRegistry(Middleware):
    """Records this worker process's broker id as a consumer while its worker runs.

    Only a Redis broker has heartbeats; on any other broker this does nothing. A process killed
    without shutdown leaves its entry behind; its heartbeat goes stale, so it no longer counts,
    and the next worker that boots removes it.
    """

    def __init__(self, *, key: str = CONSUMERS_KEY) -> None:
        self.logger = get_logger(__name__, type(self))
        self.key = key

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        client = _redis_of(broker)
        if client is None:
            return
        entry = {"host": socket.gethostname(), "pid": os.getpid(), "booted_at_ms": current_millis()}
        try:
            prune_consumers(
                client,
                key=self.key,
                heartbeat_timeout_ms=int(broker.heartbeat_timeout),  # type: ignore[attr-defined]
                heartbeats=heartbeats_key(broker.namespace),  # type: ignore[attr-defined]
            )
            client.hset(self.key, _broker_id(broker), json.dumps(entry))
        except redis.RedisError as error:
            # A metric must not stop a worker from booting; the gauge shows the gap instead.
            self.logger.warning("Could not register consumer %s: %s", _broker_id(broker), error)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        client = _redis_of(broker)
        if client is None:
            return
        try:
            client.hdel(self.key, _broker_id(broker))
        except redis.RedisError as error:
            self.logger.warning("Could not unregister consumer %s: %s", _broker_id(broker), error)


def prune_consumers(
    client: redis.Redis,
    *,
    key: str = CONSUMERS_KEY,
    heartbeat_timeout_ms: int,
    heartbeats: str,
) -> int:
    """Forget consumers whose heartbeat is stale or gone; return how many were removed.

    An entry younger than the timeout is kept even without a heartbeat: its worker may not
    have fetched yet.
    """
    entries: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    if not entries:
        return 0
    ids = list(entries)
    scores = client.zmscore(heartbeats, ids)  # type: ignore[arg-type]
    cutoff = current_millis() - heartbeat_timeout_ms
    stale = [
        consumer_id
        for consumer_id, score in zip(ids, scores, strict=True)
        if (score is None or score < cutoff)
        and json.loads(entries[consumer_id]).get("booted_at_ms", 0) < cutoff
    ]
    return int(client.hdel(key, *stale)) if stale else 0


def heartbeats_key(namespace: str = "dramatiq") -> str:
    """The sorted set where every Redis broker instance stamps its id on each call."""
    return f"{namespace}:__heartbeats__"


def _redis_of(broker: Broker) -> redis.Redis | None:
    client = getattr(broker, "client", None)
    return client if isinstance(client, redis.Redis) else None


def _broker_id(broker: Broker) -> str:
    return str(broker.broker_id)  # type: ignore[attr-defined]
