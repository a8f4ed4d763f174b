"""A worker process's link to the control plane: it says what it is doing, and obeys.

Every few seconds, and at once when the control state changes, the process publishes a record
of itself (host, pid, process type, queues, threads, prefetch, counts, RSS, the messages it is
running and the control state version it obeys) under a key with a TTL, and
keeps its last record beside it: a record whose key expired is a worker that vanished, shown
with its last heartbeat; one that stopped cleanly says so.

It obeys the fleet's control state (``app.control_state``, read about once a second by a
``ControlWatcher``):

- a **revoked** message does not start (it is acknowledged and logged); one that is running
  when it is revoked is stopped: ``soft`` at its flow's next ``check_deadline()``, ``hard`` by
  ``MessageRevoked`` raised in its thread, as Dramatiq's ``time_limit`` raises its exception;
- a message of a **paused** queue that this process fetched before the pause went out is
  put back on its queue instead of starting (the consumers fetch nothing more:
  ``app.wakeup_broker``), so nothing of a paused queue starts once the pause has been seen;
- a delayed message it holds in memory until its eta that an operator asked to **run now** (its
  Redis id is in the state's ``released``) is made due now in its consumer thread's delay
  queue, and that thread enqueues it as it would at its eta (``release_delayed``). Releases are
  applied on each change and again at each record beat: the beat catches one the consumer
  thread had in hand at the change, and one this process fetched after it (a dead holder's
  message, returned by recovery).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import socket
import threading
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from queue import PriorityQueue
from typing import Any, cast

import psutil
import redis
from dramatiq import Broker, Middleware, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis, q_name
from dramatiq.logging import get_logger
from dramatiq.middleware import SkipMessage
from dramatiq.threading import raise_thread_exception
from dramatiq.worker import _WorkQueueItem

from app.control_state import ControlState, ControlWatcher
from app.middleware import defer_message
from app.middleware.deadlines import MessageRevoked, watch_abort_signal
from app.middleware.metrics import DUE_AT_OPTION
from app.minute_counts import TALLY, MinuteTally
from app.redis_client import as_text

#: How often a worker process publishes its record.
RECORD_INTERVAL_S = 5.0
#: How long a record outlives its last publication: three missed beats mean the worker is gone.
RECORD_TTL_MS = 15_000
#: How long the last record of a worker that vanished or stopped is kept for operators.
GONE_KEPT_MS = 24 * 3_600_000

#: The key of one worker process's live record (a JSON object, with a TTL).
LIVE_KEY = "fintask:workers:live:{worker_id}"
#: A sorted set: worker id -> its last heartbeat (ms since the epoch).
SEEN_KEY = "fintask:workers:seen"
#: A hash: worker id -> its last record, kept ``GONE_KEPT_MS`` after its last heartbeat.
LAST_KEY = "fintask:workers:last"


def live_key(worker_id: str) -> str:
    """The key of ``worker_id``'s live record."""
    return LIVE_KEY.format(worker_id=worker_id)


@dataclass
class Running:
    """A message a worker thread is running."""

    message_id: str
    actor_name: str
    queue_name: str
    started_at_ms: int
    thread_id: int
    abort: threading.Event = field(default_factory=threading.Event)
    hard_aborted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "actor_name": self.actor_name,
            "queue_name": self.queue_name,
            "started_at_ms": self.started_at_ms,
        }


class FleetControl(Middleware):
    """Publishes this worker process's record and applies revocations, pauses and releases.

    Parameters:
      watcher: the process's ``ControlWatcher``, shared with the rate limits and the consumers.
      client: a function returning the Redis client the records are written with.
      process_type: the Procfile process type, shown in the record.
      host: the host the record names (``FINTASK_HOSTNAME``; the machine's name by default).
      record_interval_s: how often the record is published.
      tally: the counts per minute flushed with the record (``app.minute_counts``); this
        middleware adds each queue's ``done`` and ``failed`` messages to ``queue:<name>``.
    """

    def __init__(
        self,
        *,
        watcher: ControlWatcher,
        client: Callable[[], redis.Redis],
        process_type: str,
        host: str | None = None,
        record_interval_s: float = RECORD_INTERVAL_S,
        tally: MinuteTally = TALLY,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.watcher = watcher
        self.client = client
        self.process_type = process_type
        self.host = host or socket.gethostname()
        self.record_interval_s = record_interval_s
        self.tally = tally
        self.processed = 0
        self.failed = 0
        self.revoked_skipped = 0
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._worker_id = ""
        self._booted_at_ms = 0
        self._stopped = threading.Event()
        self._publisher: threading.Thread | None = None
        watcher.on_change(self._apply)

    def is_paused(self, queue_name: str) -> bool:
        """Whether ``queue_name``'s consumers must not fetch (as this process last saw it)."""
        return queue_name in self.watcher.state.paused

    def rate_limit_override(self, actor_name: str) -> str | None:
        """The rate limit an operator set for ``actor_name`` at runtime, if any."""
        return self.watcher.state.limits.get(actor_name)

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._worker = worker
        self._worker_id = worker_id(broker, self.host)
        self._booted_at_ms = current_millis()
        self._stopped.clear()
        self.watcher.start()
        self._publish()
        self._publisher = threading.Thread(
            target=self._publish_forever, name="fintask-worker-record", daemon=True
        )
        self._publisher.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stopped.set()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stopped.set()
        if self._publisher is not None:
            self._publisher.join(timeout=5)
        self.watcher.stop()
        self._publish(stopped=True)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        running = Running(
            message.message_id,
            message.actor_name,
            message.queue_name,
            current_millis(),
            threading.get_ident(),
        )
        with self._lock:
            self.running[message.message_id] = running
        state = self.watcher.state
        if message.message_id in state.revoked:
            with self._lock:
                self.revoked_skipped += 1
            self.logger.info("Message %r was revoked: it does not run.", message.message_id)
            raise SkipMessage(f"message {message.message_id} was revoked")
        if message.queue_name in state.paused:
            defer_message(broker, message, delay_ms=0, count_option="pause_returns")
            self.logger.info(
                "Queue %r is paused: message %r goes back to it.",
                message.queue_name,
                message.message_id,
            )
            raise SkipMessage(f"queue {message.queue_name} is paused")
        watch_abort_signal(running.abort)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        watch_abort_signal(None)
        with self._lock:
            self.running.pop(message.message_id, None)
            if exception is None:
                self.processed += 1
            else:
                self.failed += 1
        self.tally.add(queue_series(message.queue_name), "done" if exception is None else "failed")

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        watch_abort_signal(None)
        with self._lock:
            self.running.pop(message.message_id, None)

    def record(self, *, stopped: bool = False) -> dict[str, Any]:
        """This process's record, as it is published."""
        worker = self._worker
        with self._lock:
            running = [r.as_dict() for r in self.running.values()]
            processed, failed = self.processed, self.failed
        return {
            "worker_id": self._worker_id,
            "host": self.host,
            "pid": os.getpid(),
            "process_type": self.process_type,
            "queues": sorted({q_name(q) for q in worker.consumers}) if worker is not None else [],
            "threads": worker.worker_threads if worker is not None else 0,
            "prefetch": worker.queue_prefetch if worker is not None else 0,
            "started_at_ms": self._booted_at_ms,
            "heartbeat_at_ms": current_millis(),
            "control_version": self.watcher.state.version,
            "stopped": stopped,
            "processed": processed,
            "failed": failed,
            "rss_bytes": psutil.Process().memory_info().rss,
            "running": running,
        }

    def _apply(self, state: ControlState) -> None:
        """Stop the running messages the new state revokes and release the delayed ones it
        asks to run now, then publish the record at once: its ``control_version`` tells
        operators (and tests) that this process obeys it."""
        with self._lock:
            revoked = [r for r in self.running.values() if r.message_id in state.revoked]
        for running in revoked:
            running.abort.set()
            if state.revoked[running.message_id] == "hard" and not running.hard_aborted:
                running.hard_aborted = True
                self.logger.warning(
                    "Message %r was revoked while it ran: interrupting its thread.",
                    running.message_id,
                )
                raise_thread_exception(running.thread_id, MessageRevoked)
            else:
                self.logger.info(
                    "Message %r was revoked while it ran: it stops at its next check.",
                    running.message_id,
                )
        self._release_held(state)
        if self._worker is not None and not self._stopped.is_set():
            self._publish()

    def _release_held(self, state: ControlState) -> None:
        """Release, in every consumer thread's delay queue (only those of delay queues hold
        any), the delayed messages ``state`` asks to run now."""
        worker = self._worker
        if worker is None or not state.released:
            return
        now_ms = current_millis()
        for consumer in list(worker.consumers.values()):
            for message in release_delayed(consumer.delay_queue, state.released, now_ms=now_ms):
                self.logger.info("Delayed message %r was released to run now.", message.message_id)

    def _publish_forever(self) -> None:
        while not self._stopped.wait(self.record_interval_s):
            self._release_held(self.watcher.state)
            self._publish()

    def _publish(self, *, stopped: bool = False) -> None:
        record = self.record(stopped=stopped)
        try:
            client = self.client()
            publish_record(client, record, stopped=stopped)
            self.tally.flush(client)
        except redis.RedisError as error:
            self.logger.warning("Could not publish this worker's record: %s", error)


def release_delayed(
    delay_queue: PriorityQueue[_WorkQueueItem], redis_ids: Set[str], *, now_ms: int
) -> list[MessageProxy]:
    """Make due now the messages of a consumer thread's ``delay_queue`` (those it holds until
    their eta) whose Redis id is in ``redis_ids``; the messages released.

    The thread's own ``handle_delayed_messages``, which runs after every turn of its consumer
    (at most ``worker_timeout`` apart: ``app.wakeup_broker`` blocks no longer), then does what
    it does at an eta: it enqueues a copy, without the ``eta`` option, on the canonical queue,
    and acknowledges the held copy. So the message runs once, keeping its message id, and
    nothing of it is left in the delay queue or the ack set. Its ``due_at_ms`` is stamped now,
    so that its wait is measured from the release, as a moved message's is from the move.

    Rewriting the heap from another thread is safe: every ``PriorityQueue`` method works under
    its ``mutex``, held here throughout; ``_WorkQueueItem`` (frozen) orders by ``priority``
    (the eta, in ms) then by when it was queued, never by the message, so its copy with
    priority 0 comes out before any eta once the heap is rebuilt; and the number of items does
    not change, so no waiter needs waking. A message the thread had taken out at that instant
    (it takes the head to compare its eta, then puts it back) is not seen: the next call
    releases it. One already due is left alone: the thread enqueues it anyway.
    """
    released: list[MessageProxy] = []
    with delay_queue.mutex:
        heap = delay_queue.queue
        for index, item in enumerate(heap):
            message = item.message
            if item.priority > now_ms and message.options.get("redis_message_id") in redis_ids:
                message.options[DUE_AT_OPTION] = now_ms
                heap[index] = dataclasses.replace(item, priority=0)
                released.append(message)
        if released:
            heapq.heapify(heap)
    return released


def worker_id(broker: Broker, host: str) -> str:
    """The id of this worker process's record: a Redis broker's ``broker_id`` (its ack sets are
    named for it, so a gone worker's are found by it), else ``host:pid``, unique across hosts
    whose pids coincide (every container's first process is pid 1)."""
    broker_id = getattr(broker, "broker_id", None)
    return str(broker_id) if broker_id is not None else f"{host}:{os.getpid()}"


def queue_series(queue_name: str) -> str:
    """The series of counts per minute (``app.minute_counts``) of ``queue_name``'s messages."""
    return f"queue:{q_name(queue_name)}"


def publish_record(client: redis.Redis, record: dict[str, Any], *, stopped: bool) -> None:
    """Write a worker's record: live (with its TTL) unless it stopped, and as its last one."""
    worker_id = record["worker_id"]
    text = json.dumps(record)
    pipe = client.pipeline(transaction=False)
    if stopped:
        pipe.delete(live_key(worker_id))
    else:
        pipe.set(live_key(worker_id), text, px=RECORD_TTL_MS)
    pipe.zadd(SEEN_KEY, {worker_id: record["heartbeat_at_ms"]})
    pipe.hset(LAST_KEY, worker_id, text)
    pipe.execute()


def forget_gone(client: redis.Redis, *, now_ms: int | None = None) -> list[str]:
    """Drop the records of workers last seen more than ``GONE_KEPT_MS`` ago; their ids."""
    now_ms = current_millis() if now_ms is None else now_ms
    old = cast(list[bytes], client.zrangebyscore(SEEN_KEY, "-inf", now_ms - GONE_KEPT_MS))
    ids = [as_text(worker_id) for worker_id in old]
    if ids:
        pipe = client.pipeline(transaction=False)
        pipe.zrem(SEEN_KEY, *ids)
        pipe.hdel(LAST_KEY, *ids)
        pipe.execute()
    return ids
