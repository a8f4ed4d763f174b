"""Retries that are never lost: a retry that cannot be enqueued is tried again while Redis is
unreachable, and sends its message to the dead letters, not the void, if it never goes.

Dramatiq's ``Retries`` re-enqueues a failed message, with a delay, in ``after_process_message``.
When that enqueue raises (Redis unreachable for a moment), the broker logs the exception as a
middleware failure and the worker acks the message: it is gone, though it never ran to the end.

Here, when the enqueue failed because Redis could not be reached (a restart, a failover, a
stalled socket), the worker thread tries it again every ``every_ms`` for up to ``patience_ms``:
the thread could do nothing else while Redis is away, and the message then retries as if
nothing had happened. A run of chunks whose Redis restarts mid-chunk goes on by itself instead
of waiting in the dead letters for an operator. If the enqueue is refused for another reason,
Redis stays away past the patience, or the worker is shutting down, the message is marked
failed with the reason instead, so the worker nacks it to the dead-letter set, where
``fintask dlq show`` says why and ``fintask dlq requeue`` brings it back. The nack needs Redis
too: Dramatiq repeats it every 5 s until it lands, and a process that dies meanwhile still
holds the message in its ack set, which recovery returns to the queue.

An enqueue whose answer was lost after Redis had stored it can leave the retry queued twice
under one message id; effects are idempotent (README, "Idempotent effects").
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import redis
from dramatiq import Broker, Message, Worker
from dramatiq.broker import MessageProxy
from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import Retries

from app.middleware import RedisUnavailable
from app.middleware.deadlines import MessageRevoked

#: What an unreachable Redis (or broker) raises; anything else refuses the retry for good.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError, RedisUnavailable)
#: How often a retry that could not be enqueued is tried again.
EVERY_MS = 1_000
#: How long it is tried before its message is dead-lettered instead: longer than a Redis
#: restart or a managed failover (tens of seconds), short enough that a Redis gone for good
#: frees the worker's threads.
PATIENCE_MS = 600_000


class RetryNotEnqueued(Exception):
    """The retry of a failed message could not be enqueued; the text says why."""


class DurableRetries(Retries):
    """Dramatiq's ``Retries`` (the same options), trying a retry's enqueue again while Redis
    is unreachable, and failing a message whose retry never went rather than letting it be
    acked. A message an operator revoked while it ran (``MessageRevoked``) is not retried: it
    is acknowledged."""

    def __init__(
        self, *, every_ms: int = EVERY_MS, patience_ms: int = PATIENCE_MS, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.every_ms = every_ms
        self.patience_ms = patience_ms
        self._stopping = threading.Event()
        # The delay of the enqueue this thread last made: Retries computes a retry's delay and
        # enqueues at once, so a failed retry's delay is the last one seen here.
        self._last_delay = threading.local()

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        self._last_delay.ms = delay

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stopping.clear()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stopping.set()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self._last_delay.ms = None
        if isinstance(exception, MessageRevoked):
            self.logger.info("Message %r was revoked as it ran: no retry.", message.message_id)
            return
        try:
            super().after_process_message(broker, message, result=result, exception=exception)
        except Exception as error:
            if message.failed:
                # Out of retries: the message is dead-lettered anyway; what failed is its
                # on_retry_exhausted message, which Dramatiq logs.
                raise
            final: Exception | None = error
            if isinstance(error, UNREACHABLE):
                final = self._enqueue_once_back(broker, message, error)
                if final is None:
                    return
            self.logger.error(
                "Dead-lettering message %r: its retry could not be enqueued: %s",
                message.message_id,
                final,
            )
            message.fail()
            message.stuff_exception(
                RetryNotEnqueued(
                    f"it failed ({type(exception).__name__}: {exception}) and its retry "
                    f"could not be enqueued ({type(final).__name__}: {final})"
                )
            )

    def _enqueue_once_back(
        self, broker: Broker, message: MessageProxy, error: Exception
    ) -> Exception | None:
        """Enqueue the retry again until it goes (None) or cannot (the last error)."""
        delay = self._last_delay.ms
        if delay is None:  # refused before the broker saw it: the actor's shortest backoff
            actor = broker.get_actor(message.actor_name)
            delay = message.options.get("min_backoff", actor.options.get("min_backoff"))
        self.logger.warning(
            "The retry of message %r could not be enqueued (%s: %s); trying again every "
            "%d ms for up to %d s",
            message.message_id,
            type(error).__name__,
            error,
            self.every_ms,
            self.patience_ms // 1000,
        )
        give_up_at = time.monotonic() + self.patience_ms / 1000
        while time.monotonic() < give_up_at:
            if self._stopping.wait(self.every_ms / 1000):
                return error
            try:
                # A proxy, as Dramatiq's Retries sends it: the copy the broker makes is the
                # message with the retry's options.
                broker.enqueue(cast(Message[Any], message), delay=delay)
            except UNREACHABLE as again:
                error = again
            except Exception as refused:
                return refused
            else:
                self.logger.info("The retry of message %r is enqueued", message.message_id)
                return None
        return error
