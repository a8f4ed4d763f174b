"""fintask's own Dramatiq middleware: one concept per module, no knowledge of the workloads.

This package module holds the vocabulary its middleware share: reading an option the way
Dramatiq does, the errors a middleware raises so that Dramatiq does not swallow them, keys
built from a message's arguments, and deferral (enqueue again later, without spending a retry).
"""

from __future__ import annotations

import functools
import inspect
import string
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Actor, Broker, Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import MiddlewareError

#: A Redis client, or a function that makes one when first needed (after the worker forks).
RedisSource = redis.Redis | Callable[[], redis.Redis]
#: A key over a message's arguments: a template (``"account:{account_id}"``) or a callable
#: taking the actor's arguments.
KeySpec = str | Callable[..., object]


class InvalidActorOption(MiddlewareError, ValueError):
    """An actor option fintask's middleware cannot use; the text names the actor and option.

    A ``MiddlewareError``, so that Dramatiq lets it escape ``before_declare_actor`` and the
    actor's declaration fails at import instead of its first message failing at run time.
    """

    def __init__(self, actor_name: str, option: str, value: object, reason: str) -> None:
        super().__init__(f"actor {actor_name!r}: {option}={value!r} {reason}")


class RedisUnavailable(MiddlewareError):
    """Redis could not be asked whether a message may run, or could not take its deferral.

    A ``MiddlewareError``: Dramatiq would log any other exception raised by a middleware and run
    the actor anyway, unchecked. This one fails the message, and ``Retries`` retries it.
    """


def option(message: MessageProxy | Message[Any], actor: Actor[..., Any], name: str) -> Any:
    """An option from the message, else the actor, else ``None`` (Dramatiq's precedence)."""
    value = message.options.get(name)
    return actor.options.get(name) if value is None else value


def lazy_client(source: RedisSource) -> Callable[[], redis.Redis]:
    """A function returning the client, calling a factory only once, on first use."""
    if isinstance(source, redis.Redis):
        return lambda: source
    return functools.cache(source)


def check_key_spec(actor: Actor[..., Any], name: str, spec: object) -> None:
    """Raise ``InvalidActorOption`` unless ``spec`` is a callable or a template whose fields
    the actor's function can receive."""
    if callable(spec):
        return
    if not isinstance(spec, str) or not spec:
        reason = "must be a template such as 'account:{account_id}' or a callable"
        raise InvalidActorOption(actor.actor_name, name, spec, reason)
    try:
        fields = {
            f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(spec) if f
        }
    except ValueError as error:
        raise InvalidActorOption(
            actor.actor_name, name, spec, f"is not a template: {error}"
        ) from None
    parameters = _signature(actor.fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    if unknown := sorted(fields - set(parameters)):
        reason = f"names {', '.join(unknown)}, which {actor.actor_name}() does not take"
        raise InvalidActorOption(actor.actor_name, name, spec, reason)


def message_key(
    spec: KeySpec, actor: Actor[..., Any], message: MessageProxy | Message[Any], name: str
) -> str:
    """The key ``spec`` gives for ``message``'s arguments."""
    if callable(spec):
        return str(spec(*message.args, **message.kwargs))
    arguments = message_arguments(actor.fn, message.args, message.kwargs)
    try:
        return spec.format_map(arguments)
    except (KeyError, IndexError, AttributeError) as error:
        reason = f"needs argument {error}, which message {message.message_id} does not carry"
        raise InvalidActorOption(actor.actor_name, name, spec, reason) from None


def message_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """A message's arguments by parameter name, with the extras of ``**kwargs`` merged in."""
    signature = _signature(fn)
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError:
        return dict(kwargs)
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def defer_message(
    broker: Broker,
    message: MessageProxy | Message[Any],
    *,
    delay_ms: int,
    count_option: str,
    options: dict[str, Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Message[Any]:
    """Enqueue ``message`` again after ``delay_ms``; the caller then raises ``SkipMessage``.

    The copy keeps the ``message_id`` (it is the same piece of work: idempotency keys, results,
    unique-enqueue claims and logs follow it), the ``message_timestamp`` (so ``max_age``,
    Celery's ``expires``, still counts from the first send and bounds how long a message can
    be deferred) and every option, ``retries`` included; it adds ``options`` and one to
    ``options[count_option]``, and merges ``kwargs`` into its keyword arguments. It is enqueued
    here, before the worker acknowledges the current delivery (the ack happens once
    ``SkipMessage`` unwinds), so a crash in between leaves two deliveries of one message, which
    idempotent actors absorb, and never none.
    """
    count = int(message.options.get(count_option) or 0) + 1
    changes: dict[str, Any] = {"options": {**(options or {}), count_option: count}}
    if kwargs:
        changes["kwargs"] = {**message.kwargs, **kwargs}
    deferred = message.copy(**changes)
    try:
        return broker.enqueue(deferred, delay=delay_ms)
    except MiddlewareError:
        raise
    except Exception as error:
        raise RedisUnavailable(f"could not defer message {message.message_id}: {error}") from error


def check_positive_ms(actor: Actor[..., Any], name: str) -> None:
    """Raise ``InvalidActorOption`` unless the actor's option ``name`` is absent or a positive
    whole number of milliseconds."""
    value = actor.options.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidActorOption(actor.actor_name, name, value, "must be a positive number of ms")
