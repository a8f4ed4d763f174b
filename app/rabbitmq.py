"""RabbitMQ as the broker (``BROKER_URL=amqp://...``): Dramatiq's ``RabbitmqBroker``, checked at
start, with consumers that obey a pause, and its queues' depths.

Only the messages move to RabbitMQ: rate limits, locks, ticks, worker records and the control
state stay on Redis (``REDIS_URL``). RabbitMQ keeps what Dramatiq's Redis broker keeps in Redis
keys as queues of its own: ``<queue>`` (ready), ``<queue>.DQ`` (delayed: a worker fetches them
at once and holds them, unacknowledged, until their eta) and ``<queue>.XQ`` (dead letters,
routed there by RabbitMQ when a worker rejects a message out of retries, kept 7 days). A
worker's unacknowledged messages go back to their queue the moment its connection closes, so
a killed worker needs no recovery on a clock (``app.middleware.recovery`` does nothing here).

What fintask reads from Redis keys of the Redis broker (browsing messages, the dead-letter
list, moving a message) has no RabbitMQ counterpart: RabbitMQ hands a message only to a
consumer. Those features say so (``app.broker_features``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from dramatiq import Middleware
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import q_name

from app.pruned_hooks import PrunedHooks
from app.settings import SettingsError, hide_credentials

#: How long a connection check waits for RabbitMQ to answer, in seconds.
CHECK_TIMEOUT_S = 10
#: How often a consumer of a paused queue looks whether it was resumed, in seconds.
PAUSED_WAIT_S = 0.5
#: The AMQP errors after which the calling thread's connection is dropped and made again.
_AMQP_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)


def check_connection(url: str) -> None:
    """Connect to RabbitMQ once; a ``SettingsError`` naming ``BROKER_URL`` and the cause if
    the URL is malformed, nothing answers, or RabbitMQ refuses the user or the virtual host.

    A worker would otherwise start, fail every connection of its consumers and retry forever,
    and a producer would fail its first ``send``.
    """
    shown = hide_credentials(url)
    try:
        parameters = pika.URLParameters(url)
    except (ValueError, TypeError) as error:
        raise SettingsError(
            f"BROKER_URL={shown!r}: not a RabbitMQ URL pika reads ({error})"
        ) from None
    parameters.connection_attempts = 1
    parameters.socket_timeout = CHECK_TIMEOUT_S
    parameters.stack_timeout = CHECK_TIMEOUT_S
    try:
        pika.BlockingConnection(parameters).close()
    except pika.exceptions.ProbableAuthenticationError:
        raise SettingsError(
            f"BROKER_URL={shown!r}: RabbitMQ refused the user or password "
            "(amqp://USER:PASSWORD@HOST:PORT/VHOST)"
        ) from None
    except pika.exceptions.ProbableAccessDeniedError:
        raise SettingsError(
            f"BROKER_URL={shown!r}: RabbitMQ has no virtual host {parameters.virtual_host!r} "
            "that this user may use"
        ) from None
    except pika.exceptions.AMQPError as error:
        reason = _first_reason(error)
        raise SettingsError(
            f"BROKER_URL={shown!r}: RabbitMQ did not answer at "
            f"{parameters.host}:{parameters.port} ({reason}): is it running?"
        ) from None


def _first_reason(error: BaseException) -> str:
    """The innermost reason pika gives (``ConnectionRefusedError: [Errno 111] ...``), on one
    line: pika wraps it in its errors' first argument or their ``exception``."""
    while True:
        inner = getattr(error, "exception", None)
        if not isinstance(inner, BaseException) and error.args:
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            break
        error = inner
    return " ".join(f"{type(error).__name__}: {error}".split())


class FintaskRabbitmqBroker(PrunedHooks, RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, publishing with confirms, whose consumers fetch nothing
    from a queue an operator paused, calling only the middleware hooks that do something
    (``app.pruned_hooks``).

    Publisher confirms (``confirm_delivery``): ``send`` returns once RabbitMQ has the
    message, as a Redis ``send`` returns once Redis has it; without them a message a node
    dropped on the way would be lost without an error.

    Parameters:
      url: the ``amqp://`` URL (``BROKER_URL``).
      middleware: the broker's middleware (``app.broker.middleware_stack``).
      paused: whether an operator paused a queue (``FleetControl.is_paused``); None in the
        processes that do not consume.
    """

    def __init__(
        self,
        *,
        url: str,
        middleware: list[Middleware],
        paused: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(url=url, middleware=middleware, confirm_delivery=True)
        self.paused = paused

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return PausableConsumer

    def purge_ready(self, queue_name: str) -> int:
        """Delete the messages waiting in ``queue_name`` (not its delay or dead-letter queue,
        nor what workers hold); how many."""
        self.declare_queue(queue_name, ensure=True)
        return int(self.channel.queue_purge(queue_name).method.message_count)

    def message_counts(self, queue_name: str) -> tuple[int, int, int]:
        """Ready, delayed and dead messages of ``queue_name`` that no consumer holds.

        Delayed messages a worker fetched (it holds each until its eta) are not counted, nor
        any a worker is running: RabbitMQ counts only what waits for a consumer. The queues
        are declared if they are not yet (as any consumer of them would). A connection the
        server closed meanwhile (an idle web thread's, past its heartbeat) is made again once.
        """
        try:
            return self.get_queue_message_counts(queue_name)
        except _AMQP_ERRORS:
            del self.connection
            self.queues_pending.add(q_name(queue_name))
            self.declare_queue(queue_name, ensure=True)
            return self.get_queue_message_counts(queue_name)


class PausableConsumer(_RabbitmqConsumer):
    """A consumer that takes no message out of its prefetch while its queue is paused.

    RabbitMQ still pushes up to ``prefetch`` messages to the channel; they wait there
    (unacknowledged, so no other worker gets them, and back on the queue if this process
    dies) until the pause ends. Waiting pumps the connection, so its heartbeats go on.
    """

    broker: FintaskRabbitmqBroker

    def __next__(self) -> MessageProxy | None:
        paused = self.broker.paused
        if paused is not None and paused(q_name(self.queue_name)):
            self.connection.sleep(PAUSED_WAIT_S)
            return None
        message: Any = super().__next__()
        return message
