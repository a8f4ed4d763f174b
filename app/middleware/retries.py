"""Retries that are never lost: a retry that cannot be enqueued sends its message to the
dead letters instead of the void.

Dramatiq's ``Retries`` re-enqueues a failed message, with a delay, in ``after_process_message``.
When that enqueue raises (Redis unreachable for a moment), the broker logs the exception as a
middleware failure and the worker acks the message: it is gone, though it never ran to the end.
Here the message is marked failed instead, with the reason, so the worker nacks it to the
dead-letter set, where ``fintask dlq show`` says why and ``fintask dlq requeue`` brings it
back. The nack needs Redis too: Dramatiq repeats it every 5 s until it lands, and a process that
dies meanwhile still holds the message in its ack set, which recovery returns to the queue.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Retries


class RetryNotEnqueued(Exception):
    """The retry of a failed message could not be enqueued; the text says why."""


class DurableRetries(Retries):
    """Dramatiq's ``Retries`` (the same options), failing a message whose retry it could not
    enqueue rather than letting it be acked."""

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        try:
            super().after_process_message(broker, message, result=result, exception=exception)
        except Exception as error:
            if message.failed:
                # Out of retries: the message is dead-lettered anyway; what failed is its
                # on_retry_exhausted message, which Dramatiq logs.
                raise
            self.logger.error(
                "Dead-lettering message %r: its retry could not be enqueued: %s",
                message.message_id,
                error,
            )
            message.fail()
            message.stuff_exception(
                RetryNotEnqueued(
                    f"it failed ({type(exception).__name__}: {exception}) and its retry "
                    f"could not be enqueued ({type(error).__name__}: {error})"
                )
            )
