"""Soft time limits: a deadline a flow checks, before the hard ``time_limit`` kills it.

Dramatiq's ``TimeLimit`` raises ``TimeLimitExceeded`` asynchronously in the worker thread,
wherever it happens to be: in the middle of a transaction, between an HTTP call and the write
of its result. Celery users had ``soft_time_limit`` for that: an earlier, catchable signal. Here
an actor declares ``soft_time_limit_ms`` below its ``time_limit``, and its flow calls
``check_deadline()`` at safe points (between chunks, pages, items) to checkpoint and stop
cleanly, or reads ``deadline_remaining_ms()`` to size its next step or an HTTP timeout. The
check is cooperative: nothing is interrupted between two checks.

The same check stops a message an operator revoked while it runs (``fintask messages cancel``):
``check_deadline()`` raises ``MessageRevoked`` once ``app.middleware.fleet`` has set the
current message's abort signal. A revoked message is acknowledged, not retried.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

from dramatiq import Actor, Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import TimeLimit

from app.middleware import InvalidActorOption, option

#: The monotonic time, in seconds, at which the current message's soft limit passes.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "fintask_soft_deadline", default=None
)


#: The current message's abort signal: set when an operator revokes it while it runs.
_ABORT: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "fintask_abort_signal", default=None
)


class MessageRevoked(Exception):
    """An operator revoked the current message: stop, leaving things consistent, and return.

    Not a ``SoftTimeLimitExceeded``: a flow that continues its work in a new message when
    time runs out must not continue a revoked one. ``DurableRetries`` never retries it.
    """


def watch_abort_signal(signal: threading.Event | None) -> None:
    """Make ``signal`` the current message's abort signal (``None`` after the message)."""
    _ABORT.set(signal)


class SoftTimeLimitExceeded(Exception):
    """The current message ran past its ``soft_time_limit_ms``; checkpoint and return.

    If the flow lets it propagate, the message fails like any other and ``Retries`` retries it.
    """


def deadline_remaining_ms() -> float | None:
    """Milliseconds left before the current message's soft limit (negative once past it);
    ``None`` outside a message or for an actor without a soft limit."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    return (deadline - time.monotonic()) * 1000


def check_deadline() -> None:
    """Raise ``MessageRevoked`` if the current message was revoked, or
    ``SoftTimeLimitExceeded`` if it is past its soft limit."""
    signal = _ABORT.get()
    if signal is not None and signal.is_set():
        raise MessageRevoked("revoked by an operator while it ran")
    remaining = deadline_remaining_ms()
    if remaining is not None and remaining <= 0:
        raise SoftTimeLimitExceeded(f"soft time limit passed {-remaining:.0f} ms ago")


class SoftTimeLimit(Middleware):
    """Starts the current message's soft deadline when it starts, and clears it after.

    Actor option:
      soft_time_limit_ms(int): must be below the actor's ``time_limit`` (or the ``TimeLimit``
        middleware's default); checked when the actor is declared.

    Parameters:
      soft_time_limit_ms: the default for actors that do not state one (``None``: no limit).
    """

    def __init__(self, *, soft_time_limit_ms: int | None = None) -> None:
        self.soft_time_limit_ms = soft_time_limit_ms

    @property
    def actor_options(self) -> set[str]:
        return {"soft_time_limit_ms"}

    def before_declare_actor(self, broker: Broker, actor: Actor[..., Any]) -> None:
        soft = actor.options.get("soft_time_limit_ms")
        if soft is None:
            return
        if not isinstance(soft, int | float) or isinstance(soft, bool) or soft <= 0:
            raise InvalidActorOption(
                actor.actor_name, "soft_time_limit_ms", soft, "must be a positive number of ms"
            )
        hard = actor.options.get("time_limit", _default_time_limit(broker))
        if hard is not None and soft >= hard:
            reason = f"must be below time_limit={hard} ms, or the hard limit strikes first"
            raise InvalidActorOption(actor.actor_name, "soft_time_limit_ms", soft, reason)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        soft = option(message, actor, "soft_time_limit_ms") or self.soft_time_limit_ms
        _DEADLINE.set(None if soft is None else time.monotonic() + soft / 1000)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        _DEADLINE.set(None)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        _DEADLINE.set(None)


def _default_time_limit(broker: Broker) -> float | None:
    """The time limit of the broker's ``TimeLimit`` middleware, if it has one."""
    for middleware in broker.middleware:
        if isinstance(middleware, TimeLimit):
            return middleware.time_limit
    return None
