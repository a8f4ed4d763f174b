"""Guardrails: a message carries small JSON scalars, or it does not leave the producer.

The seed service learned this the hard way: model instances and blobs in task arguments blew
up Redis memory, the network and throughput, and arrived stale. Messages carry ids, ISO dates
and short strings; everything else is loaded by id when the message runs.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from dramatiq import Broker, Message, Middleware
from dramatiq.middleware import MiddlewareError

#: The schema of fintask's messages; stamped on every message as the ``schema`` option.
SCHEMA_VERSION = 1

MAX_STRING_CHARS = 1_000
MAX_LIST_ITEMS = 100
SCALAR_TYPES = (str, int, float, bool, type(None))


class MessageRejected(MiddlewareError, ValueError):
    """A message was refused at send time; the text names the actor, the argument and why.

    A ``MiddlewareError``, so that Dramatiq lets it reach the caller of ``send``.
    """


def argument_problems(args: Iterable[Any], kwargs: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """Each argument that is not a small JSON scalar (or short list of them), with the reason."""
    named = [(f"args[{i}]", value) for i, value in enumerate(args)] + list(kwargs.items())
    for name, value in named:
        problem = _value_problem(value)
        if problem is not None:
            yield name, problem


def _value_problem(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            return f"is a list of {len(value)} items; the limit is {MAX_LIST_ITEMS}"
        if not all(isinstance(item, SCALAR_TYPES) for item in value):
            return "is a list holding non-scalar items; pass ids or short strings"
        return next(filter(None, map(_value_problem, value)), None)
    if not isinstance(value, SCALAR_TYPES):
        hint = "pass an ISO 8601 string" if hasattr(value, "isoformat") else "pass its id"
        return f"is a {type(value).__name__}, not a JSON scalar; {hint}"
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        return (
            f"is a string of {len(value):,} characters; the limit is {MAX_STRING_CHARS:,} "
            "(store the data and pass its id)"
        )
    return None


def validate_message(message: Message[Any], *, max_bytes: int) -> None:
    """Raise ``MessageRejected`` unless ``message`` has small scalar arguments and fits."""
    for name, problem in argument_problems(message.args, message.kwargs):
        raise MessageRejected(f"actor {message.actor_name!r}: argument {name!r} {problem}")
    size = len(json.dumps(message.asdict(), separators=(",", ":")).encode())
    if size > max_bytes:
        raise MessageRejected(
            f"actor {message.actor_name!r}: the encoded message is {size:,} bytes; "
            f"the limit is {max_bytes:,} (MAX_MESSAGE_BYTES)"
        )


class Guardrails(Middleware):
    """Validates every message at send time and stamps it with the schema version.

    Retries and deferrals re-enqueue messages that already passed; they carry the ``schema``
    option and are not validated again.
    """

    def __init__(self, *, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if "schema" in message.options:
            return
        validate_message(message, max_bytes=self.max_message_bytes)
        message.options["schema"] = SCHEMA_VERSION


def accepts_any_kwargs(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes ``**kwargs`` (a "rubber signature")."""
    parameters = inspect.signature(fn).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def house_rule_problems(actor: dramatiq.Actor[Any, Any]) -> list[str]:
    """Why ``actor`` breaks the house rules (empty when it follows them).

    Every actor takes ``**kwargs`` (old and new releases exchange messages during a deploy)
    and states its limits instead of inheriting Dramatiq's defaults (a 10 minute time limit,
    20 retries spread over about 30 days, no max age).
    """
    problems = []
    if not accepts_any_kwargs(actor.fn):
        problems.append("does not accept **kwargs")
    for option in REQUIRED_ACTOR_OPTIONS:
        if option not in actor.options:
            problems.append(f"does not state {option}")
    return problems


REQUIRED_ACTOR_OPTIONS = ("time_limit", "max_age", "max_retries", "min_backoff", "max_backoff")
