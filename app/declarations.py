"""Actors declared before the process's broker exists, taken over when it is built.

Dramatiq declares an actor on the global broker when its module is imported and, when no
broker was set, builds a default one (RabbitMQ, else Redis, on localhost): importing the
actors would configure the process. fintask's actors are declared on a placeholder instead,
which only remembers them; each process's entry point builds its broker explicitly
(``app.broker.setup_broker``), and the new broker takes every remembered actor over. An actor
imported after that is declared on the broker at once.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import dramatiq.broker
from dramatiq import Actor, Broker, Message


class BrokerNotBuilt(RuntimeError):
    """A message was sent before this process built its broker."""


class DeclaredActors(Broker):
    """The placeholder: holds the actors declared so far; it cannot send or consume.

    It notes the options each actor was declared with: those are checked against the real
    broker's middleware on adoption, while options set later (periodiq's ``periodic``, which
    ``scheduler.jobs`` adds to scheduled actors) are not declarations.
    """

    def __init__(self) -> None:
        super().__init__(middleware=[])
        self.declared_options: dict[str, dict[str, Any]] = {}
        self.declared_queues: set[str] = set()

    def declare_queue(self, queue_name: str) -> None:
        self.declared_queues.add(queue_name)

    def declare_actor(self, actor: Actor[Any, Any]) -> None:
        self.actors[actor.actor_name] = actor
        self.declared_options[actor.actor_name] = dict(actor.options)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        raise BrokerNotBuilt(
            f"cannot send {message.actor_name!r}: this process has not built its broker "
            "(its entry point calls app.broker.setup_broker() first)"
        )


_placeholder = DeclaredActors()


def current_broker() -> Broker:
    """The broker actors are declared on now: the process's, or the placeholder before it."""
    return dramatiq.broker.global_broker or _placeholder


def declare_queue(queue_name: str) -> None:
    """Declare a queue no actor runs on, on this process's broker (or the placeholder's):
    one whose dead letters operators must see, as the Celery bridge's refusals."""
    current_broker().declare_queue(queue_name)


def check_options(broker: Broker, actor_name: str, options: dict[str, Any]) -> None:
    """Refuse options that none of ``broker``'s middleware reads (checked again on adoption)."""
    if broker is _placeholder:
        return
    undefined = sorted(set(options) - broker.actor_options)
    if undefined:
        raise ValueError(
            f"actor {actor_name!r}: no middleware of the broker reads {', '.join(undefined)}"
        )


def adopt_declared_actors(broker: Broker) -> None:
    """Move every actor declared on the placeholder to ``broker``, the process's own."""
    for actor in list(_placeholder.actors.values()):
        check_options(broker, actor.actor_name, _placeholder.declared_options[actor.actor_name])
        actor.broker = broker
        broker.declare_actor(actor)
    for queue_name in _placeholder.declared_queues:
        broker.declare_queue(queue_name)
    _placeholder.actors.clear()
    _placeholder.declared_options.clear()
    _placeholder.declared_queues.clear()
