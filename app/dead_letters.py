"""Dead letters with a reason: what a consumer cannot run goes there at once, and says why.

Dramatiq's Redis consumer decodes each fetched payload inside ``__next__``: one that is not
JSON, or JSON that is not a message, raises there, the consumer restarts 3 s later, and the
message stays in the worker's ack set until the process dies, then comes back to the next
worker, never dead-lettered. fintask's consumer (``app.wakeup_broker``) fetches ids with their
payloads and checks each one before a worker thread sees it (``runnable_message``): a payload
that is not a message, a message for another queue, an actor this release does not have,
arguments the actor's function cannot take. Retrying would not help, so such a message goes
straight to the dead-letter set ``<ns>:<q>.XQ``; its neighbours run as usual. A message from a
newer release (its ``schema``) is refused by ``Guardrails`` before its actor runs and is
dead-lettered the same way, as is one out of retries.

Dramatiq's nack records no reason; here every dead letter keeps one beside it, under
``reason_key``, for as long as Dramatiq keeps dead letters (``dead_message_ttl``), so the key
needs no cleanup. ``fintask dlq show`` prints it. The reason is kept redacted and capped
(``kept_reason``, which the broker's ``dead_letter`` applies to every reason it writes).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

from dramatiq import Broker, Message
from dramatiq.common import xq_name
from dramatiq.errors import DecodeError
from dramatiq.middleware import SkipMessage
from redis import Redis

from app.json_codec import FastJSONEncoder
from app.redaction import redact
from chunking.redis_keys import dead_letters_key, dead_messages_key

#: The longest reason kept: enough for an exception's first lines, not a whole payload.
MAX_REASON_CHARS = 1_000

#: The JSON type each field of a Dramatiq message must have.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": (int, float),
}

_MESSAGE_FIELDS = frozenset(field.name for field in dataclasses.fields(Message))

#: fintask's messages are JSON, read as ``setup_broker``'s encoder reads them.
_JSON = FastJSONEncoder()

# dispatch.lua's nack, keeping the reason beside the dead letter, in one atomic step.
# KEYS[1]: the namespace, KEYS[2]: the reason key. ARGV: now (ms), the queue (``q`` or
# ``q.DQ``), the worker (broker) id, the Redis message id, the reason, its TTL (ms).
# Returns 1 if the message was moved, 0 if this worker no longer held it.
DEAD_LETTER_SCRIPT = """
local namespace, now, queue_name, worker_id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local message_id = ARGV[4]
redis.call("zadd", namespace .. ":__heartbeats__", now, worker_id)
local canonical = queue_name
if string.sub(queue_name, -3) == ".DQ" then canonical = string.sub(queue_name, 1, -4) end
local acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name
local messages = namespace .. ":" .. queue_name .. ".msgs"
local dead = namespace .. ":" .. canonical .. ".XQ"
if redis.call("srem", acks, message_id) == 0 then return 0 end
local message = redis.call("hget", messages, message_id)
if not message then return 0 end
redis.call("zadd", dead, now, message_id)
redis.call("hset", dead .. ".msgs", message_id, message)
redis.call("hdel", messages, message_id)
redis.call("set", KEYS[2], ARGV[5], "px", ARGV[6])
return 1
"""


def reason_key(queue_name: str, redis_id: str, *, namespace: str = "dramatiq") -> str:
    """The key holding why the dead letter ``redis_id`` of ``queue_name`` (or ``q.DQ``) died."""
    return f"{namespace}:{xq_name(queue_name)}.reason.{redis_id}"


def keep_dead_letter(
    client: Redis,
    queue_name: str,
    redis_id: str,
    data: str,
    reason: str,
    *,
    ttl_ms: int,
    now_ms: int,
    namespace: str = "dramatiq",
) -> None:
    """Store ``data`` as a dead letter of ``queue_name`` with its ``reason``, as the consumer's
    nack would, for a message that never reached a queue (one the Celery bridge refused).

    Written again under the same ``redis_id`` it overwrites, so a refusal repeated after a
    crash leaves one dead letter, not two.
    """
    pipe = client.pipeline(transaction=True)
    pipe.zadd(dead_letters_key(queue_name, namespace=namespace), {redis_id: now_ms})
    pipe.hset(dead_messages_key(queue_name, namespace=namespace), redis_id, data)
    pipe.set(reason_key(queue_name, redis_id, namespace=namespace), kept_reason(reason), px=ttl_ms)
    pipe.execute()


def read_message(data: bytes) -> Message[Any] | str:
    """The message ``data`` encodes, or why it is not one."""
    try:
        fields = _JSON.decode(data)
    except DecodeError as error:
        return f"its payload is not JSON ({error.error}): {_preview(data)}"
    if not isinstance(fields, dict):
        return f"its payload is JSON but not a message object: {_preview(data)}"
    if fields.keys() != _MESSAGE_FIELDS:
        unfit = [f"no {name!r}" for name in sorted(_MESSAGE_FIELDS - set(fields))]
        unfit += [f"unknown field {name!r}" for name in sorted(set(fields) - _MESSAGE_FIELDS)]
        return f"its payload is JSON but not a message ({', '.join(unfit)})"
    for name, kind in _FIELD_TYPES.items():
        value = fields[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"its {name} is {type(value).__name__} {_preview(value)}, not a message's"
    return Message(**{**fields, "args": tuple(fields["args"])})


def runnable_message(broker: Broker, data: bytes, queue_name: str) -> Message[Any] | str:
    """The message ``data`` encodes, fetched from ``queue_name``, if this release can run it;
    else why not."""
    message = read_message(data)
    if isinstance(message, str):
        return message
    return runnable_problem(broker, message, queue_name) or message


def runnable_problem(broker: Broker, message: Message[Any], queue_name: str) -> str | None:
    """Why this release cannot run ``message``, fetched from ``queue_name`` (None if it can)."""
    if message.queue_name != queue_name:
        return f"it names queue {message.queue_name!r} but was fetched from {queue_name!r}"
    actor = broker.actors.get(message.actor_name)
    if actor is None:
        return f"this release has no actor {message.actor_name!r}"
    return binding_problem(actor.fn, message.args, message.kwargs)


def binding_problem(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """Why ``fn`` cannot be called with ``args`` and ``kwargs`` (None if it can)."""
    signature = _signature(fn)
    if signature is None:
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        return f"its arguments do not fit {fn.__name__}{_bare(signature)}: {error}"
    return None


def failure_reason(exception: BaseException | None) -> str:
    """Why a message failed with ``exception``: a middleware's skip reason as given, any other
    exception by its class and text."""
    if exception is None:
        return "failed"
    if isinstance(exception, SkipMessage):
        return str(exception) or "refused by a middleware"
    return f"{type(exception).__name__}: {exception}"


def kept_reason(reason: str) -> str:
    """``reason`` as a dead letter keeps it: redacted (``app.redaction``), then cut to
    ``MAX_REASON_CHARS``.

    An operator needs why a message died, never the address its exception quoted; kept
    redacted, no reader can show it and no dump of Redis holds it. Redacted first: cut
    first, an address could lose the end that makes it one.
    """
    reason = redact(reason)
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - 1] + "…"


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _bare(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` without annotations: the names are what a reader needs."""
    empty = inspect.Parameter.empty
    parameters = [p.replace(annotation=empty) for p in signature.parameters.values()]
    return signature.replace(parameters=parameters, return_annotation=empty)


def _preview(value: object, chars: int = 80) -> str:
    """``value`` for a reason, redacted before it is cut (as ``kept_reason`` does)."""
    text = redact(repr(value))
    return text if len(text) <= chars else text[: chars - 1] + "…"
