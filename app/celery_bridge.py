"""The Celery bridge: tasks Celery producers publish run on fintask actors.

A team cannot move every producer and worker in one deploy. The bridge consumes one Celery
queue through kombu (Celery's own transport library, Redis transport) and hands each task to
the fintask actor its name is mapped to (``actors.from_celery``), so producers keep calling
``.delay()`` while the workers move, then move one call site at a time.

Acknowledged only after the fintask message is enqueued. kombu's Redis transport takes a
message off the list with BRPOP and keeps it in its unacked hash until the ack; the bridge
asks for one message at a time (``prefetch_count=1``), enqueues it, then acks. A bridge killed
in between leaves the task in that hash, and a bridge puts it back on its queue once it is
``visibility_timeout`` old (kombu's ``restore_visible``, run here every few seconds): it is
enqueued a second time, which the actor's idempotency absorbs. The bridge keeps its unacked
entries under keys of its own, so its short visibility timeout never takes back a long task
a Celery worker on the same Redis is still running, and the Celery workers' sweeps never take
the bridge's. kombu itself loses a message killed in the instant between BRPOP and writing the
unacked hash, as Celery's workers do.

A task the bridge cannot hand on is dead-lettered at once with the reason, under the
``celery_bridge`` queue's dead letters (``fintask dlq``, the console): a serializer other than
JSON (never deserialized), a task name no actor is mapped to, arguments that do not fit the
actor, a chain or callbacks, or a message the guardrails refuse (``validate_message``, which
the broker's ``Guardrails`` runs at the enqueue: personal data, size). A dead letter keeps
the task's headers, not its arguments.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis
from dramatiq import Actor, Broker, Message
from dramatiq.brokers.redis import DEFAULT_DEAD_MESSAGE_TTL
from kombu import Connection, Consumer, Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.message import Message as KombuMessage

from app.celery_protocol import BRIDGE_QUEUE, CeleryTask, delivery_of, read_task, task_identity
from app.dead_letters import binding_problem, keep_dead_letter
from app.middleware.guardrails import MessageRejected
from app.middleware.locks import AlreadyPending
from app.settings import hide_credentials

T = TypeVar("T")

logger = logging.getLogger("celery_bridge")

#: How long the bridge may hold a Celery message before a bridge takes it back: far above one
#: enqueue, so only a dead bridge's messages come back (and a slow fintask Redis's, twice).
DEFAULT_VISIBILITY_TIMEOUT_MS = 60_000

#: How often the bridge looks for messages held longer than the visibility timeout.
RESTORE_INTERVAL_S = 5.0

#: How long one wait for a message lasts: how soon a SIGTERM is noticed between messages.
POLL_TIMEOUT_S = 1.0

#: How long the bridge waits before it tries fintask's Redis again.
RETRY_WAIT_S = 1.0

#: Headers a dead letter does not keep: Celery's ``repr`` of the arguments, personal data and all.
_ARGUMENT_HEADERS = frozenset({"argsrepr", "kwargsrepr"})

#: What a lost connection to fintask's Redis looks like.
_LOST = (redis.ConnectionError, redis.TimeoutError)


class BridgeError(Exception):
    """The bridge cannot start; the text is the one line to show."""


class CeleryBridge:
    """Hands the tasks of one Celery queue to fintask actors.

    Parameters:
      broker(Broker): fintask's broker, which enqueues (its middleware runs: the guardrails).
      tasks(Mapping[str, Actor]): the fintask actor of each Celery task name.
      client(redis.Redis): fintask's Redis, which keeps the dead letters.
      celery_url(str): the Celery producers' broker, ``redis://`` or ``rediss://``.
      queue_name(str): the Celery queue to consume (Celery's default is ``celery``).
      visibility_timeout_ms(int): how old a held message is when a bridge takes it back.
    """

    def __init__(
        self,
        *,
        broker: Broker,
        tasks: Mapping[str, Actor[Any, Any]],
        client: redis.Redis,
        celery_url: str,
        queue_name: str,
        visibility_timeout_ms: int = DEFAULT_VISIBILITY_TIMEOUT_MS,
    ) -> None:
        self.broker = broker
        self.tasks = tasks
        self.client = client
        self.celery_url = celery_url
        self.queue_name = queue_name
        self.visibility_timeout_ms = visibility_timeout_ms
        self.dead_message_ttl_ms: int = getattr(
            broker, "dead_message_ttl", DEFAULT_DEAD_MESSAGE_TTL
        )
        self.stopping = threading.Event()

    def connection(self) -> Connection:
        """A kombu connection to the Celery broker, the bridge's unacked keys its own."""
        prefix = f"fintask.celery_bridge.{self.queue_name}"
        return Connection(
            self.celery_url,
            transport_options={
                "visibility_timeout": self.visibility_timeout_ms / 1000,
                "unacked_key": f"{prefix}.unacked",
                "unacked_index_key": f"{prefix}.unacked_index",
                "unacked_mutex_key": f"{prefix}.unacked_mutex",
            },
        )

    def run(self) -> None:
        """Consume until ``stopping`` is set; ``BridgeError`` if the Celery broker is away."""
        with self.connection() as connection:
            try:
                connection.ensure_connection(max_retries=0)
            except (OperationalError, *connection.connection_errors) as error:
                raise BridgeError(
                    f"the Celery broker at {hide_credentials(self.celery_url)} did not answer "
                    f"({error}): is it running? Pass --broker-url or CELERY_BROKER_URL"
                ) from None
            self.client.ping()  # fintask's Redis not answering ends the command in one line
            logger.info(
                "Bridging Celery queue %r at %s to fintask: %s",
                self.queue_name,
                hide_credentials(self.celery_url),
                ", ".join(f"{name} -> {actor.actor_name}" for name, actor in self.tasks.items()),
            )
            while not self.stopping.is_set():
                try:
                    self._consume(connection)
                except connection.connection_errors as error:
                    logger.warning("The Celery broker did not answer (%s); retrying.", error)
                    self.stopping.wait(RETRY_WAIT_S)
        logger.info("Stopped")

    def _consume(self, connection: Connection) -> None:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        exchange = Exchange(self.queue_name, type="direct")
        queue = Queue(self.queue_name, exchange, routing_key=self.queue_name)
        # on_message: kombu hands over the raw message and decodes nothing (no unpickling).
        with Consumer(channel, queues=[queue], on_message=self.handle, accept=[]):
            restored_at = 0.0
            while not self.stopping.is_set():
                if time.monotonic() - restored_at > RESTORE_INTERVAL_S:
                    channel.qos.restore_visible(num=channel.unacked_restore_limit, interval=1)
                    restored_at = time.monotonic()
                try:
                    connection.drain_events(timeout=POLL_TIMEOUT_S)
                except TimeoutError:
                    continue

    def handle(self, message: KombuMessage) -> None:
        """Enqueue the task ``message`` carries, or dead-letter it; then ack it.

        While fintask's Redis does not answer, the enqueue is tried again every second and the
        message stays unacked; a bridge stopped meanwhile leaves it for the next one.
        """
        headers = message.headers or {}
        task = read_task(headers, message.content_type, message.body)
        if isinstance(task, str):
            self._retrying(lambda: self.refuse(message, task))
            return
        actor = self.tasks.get(task.name)
        if actor is None:
            reason = (
                f"no fintask actor is mapped to Celery task {task.name!r} (the bridge's task "
                "mapping: actors/from_celery.py)"
            )
            self._retrying(lambda: self.refuse(message, reason))
            return
        problem = binding_problem(actor.fn, task.args, task.kwargs)
        if problem is not None:
            self._retrying(lambda: self.refuse(message, problem))
            return
        self._retrying(lambda: self.forward(message, task, actor))

    def forward(self, message: KombuMessage, task: CeleryTask, actor: Actor[Any, Any]) -> None:
        """Enqueue ``task`` for ``actor`` (after its eta, dropped past its expiry), then ack."""
        now = dt.datetime.now(dt.UTC)
        delivery = delivery_of(task, now=now, actor_max_age=actor.options.get("max_age"))
        if delivery.expired:
            logger.warning(
                "Dropping Celery task %s %r: it expired at %s, before the bridge took it "
                "(a Celery worker would have revoked it).",
                task.task_id,
                task.name,
                task.expires,
            )
            message.ack()
            return
        options = {} if delivery.max_age is None else {"max_age": delivery.max_age}
        fintask_message: Message[Any] = Message(
            queue_name=actor.queue_name,
            actor_name=actor.actor_name,
            args=task.args,
            kwargs=task.kwargs,
            options=options,
            message_id=task.task_id,
            message_timestamp=int(now.timestamp() * 1000),
        )
        try:  # the broker's Guardrails check the message (validate_message) before it enqueues
            self.broker.enqueue(fintask_message, delay=delivery.delay_ms)
        except MessageRejected as error:
            self.refuse(message, str(error))
            return
        except AlreadyPending as error:
            logger.info("Celery task %s: %s", task.task_id, error)
        else:
            logger.debug("Celery task %s %r -> %s", task.task_id, task.name, actor.actor_name)
        message.ack()

    def refuse(self, message: KombuMessage, reason: str) -> None:
        """Dead-letter ``message`` with ``reason`` (its headers, never its body), then ack."""
        headers = message.headers or {}
        name, task_id = task_identity(headers)
        if task_id == "?":
            task_id = str(message.delivery_tag)
        now_ms = int(time.time() * 1000)
        kept = {key: value for key, value in headers.items() if key not in _ARGUMENT_HEADERS}
        dead = {
            "queue_name": BRIDGE_QUEUE,
            "actor_name": name,
            "args": [],
            "kwargs": {},
            "options": {
                "celery_queue": self.queue_name,
                "celery_headers": kept,
                "content_type": message.content_type,
                "body_bytes": len(message.body or b""),
            },
            "message_id": task_id,
            "message_timestamp": now_ms,
        }
        data = json.dumps(dead, separators=(",", ":"), default=str)
        keep_dead_letter(
            self.client,
            BRIDGE_QUEUE,
            f"celery-{task_id}",
            data,
            reason,
            ttl_ms=self.dead_message_ttl_ms,
            now_ms=now_ms,
        )
        logger.error("Dead-lettering Celery task %s %r: %s.", task_id, name, reason)
        message.ack()

    def _retrying(self, step: Callable[[], T]) -> T | None:
        """``step``, tried again every second while fintask's Redis does not answer (None if
        the bridge stops first: the message stays unacked, for the next bridge)."""
        while True:
            try:
                return step()
            except _LOST as error:
                logger.warning("fintask's Redis did not answer (%s); trying again.", error)
                if self.stopping.wait(RETRY_WAIT_S):
                    return None
