"""Guardrails: a message carries small JSON scalars, or it does not leave the producer.

Model instances and blobs in arguments bloat Redis memory and network traffic, slow throughput,
and are stale by the time the message runs. Messages carry ids, ISO dates and short strings;
everything else is loaded by id when the message runs. Personal data above all: a message
copies its arguments into Redis, the dead letters, the logs and Sentry, so a string that looks
like an e-mail address, a phone number, an IBAN or a card number (``app.pii``) is refused too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dramatiq import Broker, Message, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.logging import get_logger
from dramatiq.message import get_encoder
from dramatiq.middleware import MiddlewareError, SkipMessage

from app.pii import PiiKind, pii_kind

#: The schema of fintask's messages; stamped on every message as the ``schema`` option. Raise
#: it when a release changes what messages mean in a way the release before would misread:
#: workers of that release then dead-letter the new messages instead of running them.
SCHEMA_VERSION = 1

MAX_STRING_CHARS = 1_000
MAX_LIST_ITEMS = 100
SCALAR_TYPES = (str, int, float, bool, type(None))


class MessageRejected(MiddlewareError, ValueError):
    """A message was refused at send time; the text names the actor, the argument and why.

    A ``MiddlewareError``, so that Dramatiq lets it reach the caller of ``send``.
    """


#: What a message carries instead of each kind of personal data.
PII_FIXES = {
    PiiKind.EMAIL: "send the user id and load the address in the actor",
    PiiKind.PHONE: "send the user id and load the number in the actor",
    PiiKind.IBAN: "send the account id and load the IBAN in the actor",
    PiiKind.CARD: "send the account id and load the card number in the actor",
}


def argument_problems(args: Iterable[Any], kwargs: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """Each argument that is not a small JSON scalar free of personal data (or a short list of
    them), with the reason; a list's item is named by its index (``recipients[1]``)."""
    named = [(f"args[{i}]", value) for i, value in enumerate(args)] + list(kwargs.items())
    for name, value in named:
        problem = _value_problem(name, value)
        if problem is not None:
            yield problem


def _value_problem(name: str, value: Any) -> tuple[str, str] | None:
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            return name, f"is a list of {len(value)} items; the limit is {MAX_LIST_ITEMS}"
        if not all(isinstance(item, SCALAR_TYPES) for item in value):
            return name, "is a list holding non-scalar items; pass ids or short strings"
        items = (_value_problem(f"{name}[{i}]", item) for i, item in enumerate(value))
        return next(filter(None, items), None)
    if not isinstance(value, SCALAR_TYPES):
        hint = "pass an ISO 8601 string" if hasattr(value, "isoformat") else "pass its id"
        return name, f"is a {type(value).__name__}, not a JSON scalar; {hint}"
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            return name, (
                f"is a string of {len(value):,} characters; the limit is {MAX_STRING_CHARS:,} "
                "(store the data and pass its id)"
            )
        kind = pii_kind(value)
        if kind is not None:
            return name, f"looks like {kind.description}; {PII_FIXES[kind]}"
    return None


def validate_message(message: Message[Any], *, max_bytes: int) -> None:
    """Raise ``MessageRejected`` unless ``message`` has small scalar arguments free of personal
    data and fits.

    This is the one check of a message's arguments, wherever a message enters fintask: the
    ``Guardrails`` middleware at send (``actor.send``, ``chunking.enqueue_many``, which runs
    each message through ``before_enqueue``) and the outbox when it records a row
    (``app.outbox.check_sendable``). A path still to come that takes messages without a
    broker's send (a batch API, a bridge taking Celery tasks) must call it too, before it
    stores or forwards anything. The error names the actor, the argument and the fix, never
    the argument's value: it ends up in logs and in the outbox's ``error`` column.
    """
    for name, problem in argument_problems(message.args, message.kwargs):
        raise MessageRejected(f"actor {message.actor_name!r}: argument {name!r} {problem}")
    # The process's encoder: the bytes the broker will store (``setup_broker`` sets it).
    size = len(get_encoder().encode(message.asdict()))
    if size > max_bytes:
        raise MessageRejected(
            f"actor {message.actor_name!r}: the encoded message is {size:,} bytes; "
            f"the limit is {max_bytes:,} (MAX_MESSAGE_BYTES)"
        )


def schema_problem(schema: object) -> str | None:
    """Why this release cannot run a message stamped ``schema`` (``None`` when it can).

    A message without a stamp was not sent through a fintask broker (one pushed by hand) and is
    read as the current schema.
    """
    if schema is None:
        return None
    if isinstance(schema, bool) or not isinstance(schema, int):
        return f"its schema {schema!r} is not a version number"
    if schema > SCHEMA_VERSION:
        return (
            f"its schema {schema} is newer than this release's {SCHEMA_VERSION}: "
            "a newer release sent it"
        )
    return None


class Guardrails(Middleware):
    """Validates every message at send time and stamps it with the schema version; a worker
    dead-letters a message whose schema it does not know.

    Retries and deferrals re-enqueue messages that already passed; they carry the ``schema``
    option and are not validated again. A message from a newer release (during a deploy, or a
    rollback) is failed before its actor runs, so it waits in the dead letters, with the reason
    logged, for a worker that reads it, instead of running with arguments this release misreads.
    """

    def __init__(self, *, max_message_bytes: int) -> None:
        self.logger = get_logger(__name__, type(self))
        self.max_message_bytes = max_message_bytes

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if "schema" in message.options:
            return
        validate_message(message, max_bytes=self.max_message_bytes)
        message.options["schema"] = SCHEMA_VERSION

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        problem = schema_problem(message.options.get("schema"))
        if problem is None:
            return
        self.logger.error(
            "Dead-lettering message %s of %r: %s.",
            message.message_id,
            message.actor_name,
            problem,
        )
        message.fail()
        raise SkipMessage(problem)
