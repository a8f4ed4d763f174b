"""The fintask features that read or move Dramatiq's Redis queue keys, and what they say on
RabbitMQ, where those keys do not exist.

Browsing a queue's messages, finding one by id, cancelling, requeueing or deleting it, running
a delayed one now, and listing the dead letters all read the ready lists, delay lists, ack sets
and dead-letter sets of Dramatiq's Redis broker. RabbitMQ hands a message to a consumer and to
nobody else, so with ``BROKER_URL=amqp://...`` these features refuse with ``RedisBrokerOnly``,
in words an operator can act on: the CLI prints its one line, the API answers 409, the console
shows it as a page. What works on RabbitMQ is in the README's broker table.
"""

from __future__ import annotations

import dramatiq.broker

from app.rabbitmq import FintaskRabbitmqBroker


class RedisBrokerOnly(RuntimeError):
    """A feature that reads Dramatiq's Redis queue keys was asked for on RabbitMQ."""

    def __init__(self, feature: str) -> None:
        super().__init__(
            f"{feature} reads Dramatiq's Redis queue keys, and this fintask runs on RabbitMQ "
            "(BROKER_URL=amqp://...): look at the queues with RabbitMQ's own tools "
            "(rabbitmqctl list_queues, the management UI); `fintask queues` counts them"
        )
        self.feature = feature


def rabbitmq_broker() -> FintaskRabbitmqBroker | None:
    """This process's broker if it is RabbitMQ (None too before it is built)."""
    broker = dramatiq.broker.global_broker
    return broker if isinstance(broker, FintaskRabbitmqBroker) else None


def require_redis_broker(feature: str) -> None:
    """Raise ``RedisBrokerOnly`` naming ``feature`` when this process's broker is RabbitMQ."""
    if rabbitmq_broker() is not None:
        raise RedisBrokerOnly(feature)
