"""Reading a Celery task message (protocol 2, JSON) without trusting it.

A Celery producer (``task.delay``, ``apply_async``, ``send_task``) publishes a kombu envelope:
its headers name the task (``task``, ``id``, ``eta``, ``expires``, ...) and are JSON whatever
the serializer, while its body is ``[args, kwargs, embed]`` encoded by the producer's
serializer. Only a JSON body is ever decoded here: a pickle, YAML or msgpack body is refused by
its content type before a byte of it is read, because unpickling a message runs whatever code
its sender chose (``read_task`` never calls kombu's ``decode``).

``countdown`` reaches the wire as an ``eta`` (Celery converts it at the producer); ``expires``
as an ISO 8601 instant. ``delivery_of`` turns both into Dramatiq's terms: a delay and a
``max_age``, both in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The fintask queue whose dead letters hold the tasks the bridge refused (no actor runs on it).
BRIDGE_QUEUE = "celery_bridge"

#: The one serializer the bridge reads: Celery's default since 4.0.
JSON_CONTENT_TYPE = "application/json"

#: What a Celery envelope keeps in its ``embed`` (the body's third item) that the bridge cannot
#: honour: work to start after the task, which fintask expresses in its flows instead.
_WORKFLOW_FIELDS = ("callbacks", "errbacks", "chain", "chord")


@dataclass(frozen=True)
class CeleryTask:
    """One task a Celery producer sent: its name and id, its arguments, and when it may run."""

    name: str
    task_id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """How a task becomes a fintask message: after ``delay_ms``, and dropped past ``max_age``
    (from now); ``expired`` when its ``expires`` has already passed."""

    delay_ms: int | None
    max_age: int | None
    expired: bool = False


def task_identity(headers: Mapping[str, Any]) -> tuple[str, str]:
    """The task name and id a Celery envelope's headers give (``"?"`` for a missing one).

    Headers are JSON for every serializer, so this is safe to read on any message.
    """
    name, task_id = headers.get("task"), headers.get("id")
    return (
        name if isinstance(name, str) and name else "?",
        task_id if isinstance(task_id, str) and task_id else "?",
    )


def read_task(
    headers: Mapping[str, Any], content_type: str | None, body: bytes
) -> CeleryTask | str:
    """The task a Celery message carries, or why the bridge will not take it.

    The content type is checked before the body is looked at: only JSON is decoded.
    """
    name, task_id = task_identity(headers)
    if name == "?":
        return (
            "it has no 'task' header: not a Celery protocol 2 message (protocol 1 puts the task "
            "in the body; set task_protocol = 2, Celery's default since 4.0)"
        )
    if content_type != JSON_CONTENT_TYPE:
        return (
            f"its serializer is {content_type!r}, not JSON: the bridge never deserializes "
            "other formats (pickle runs code of the sender's choosing); set "
            "task_serializer = 'json' on the producer"
        )
    try:
        decoded = json.loads(body)
    except ValueError as error:
        return f"its body is not JSON ({error})"
    if not (isinstance(decoded, list) and len(decoded) == 3):
        return "its body is not Celery's [args, kwargs, embed]"
    args, kwargs, embed = decoded
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(embed, dict):
        return "its body is not Celery's [args, kwargs, embed] (wrong types)"
    workflow = [field for field in _WORKFLOW_FIELDS if embed.get(field)]
    if workflow:
        return (
            f"it carries {', '.join(workflow)}, which the bridge does not run: start the "
            "follow-up work from the fintask flow (docs/migrating-from-celery.md, chains)"
        )
    times: dict[str, dt.datetime | None] = {}
    for header in ("eta", "expires"):
        value = headers.get(header)
        times[header] = parsed = _instant(value)
        if value is not None and parsed is None:
            return f"its {header} header {value!r} is not an ISO 8601 time"
    return CeleryTask(name, task_id, tuple(args), kwargs, times["eta"], times["expires"])


def delivery_of(task: CeleryTask, *, now: dt.datetime, actor_max_age: int | None) -> Delivery:
    """The delay (``countdown``/``eta``) and ``max_age`` of ``task``'s fintask message.

    ``max_age`` counts from the message's timestamp, ``now``: a delayed message keeps its
    actor's own ``max_age`` after its delay (Dramatiq would count it from the send and drop a
    task whose countdown is longer), and ``expires`` shortens it, never lengthens it.
    """
    delay_ms = _ms(task.eta - now) if task.eta is not None and task.eta > now else None
    guard = None
    if actor_max_age is not None and delay_ms is not None:
        guard = actor_max_age + delay_ms
    if task.expires is None:
        return Delivery(delay_ms, guard)
    left_ms = _ms(task.expires - now)
    if left_ms <= 0:
        return Delivery(delay_ms, None, expired=True)
    ceiling = guard if guard is not None else actor_max_age
    return Delivery(delay_ms, left_ms if ceiling is None else min(left_ms, ceiling))


def _instant(value: object) -> dt.datetime | None:
    """An ISO 8601 time as an aware datetime (a naive one is UTC: Celery's ``enable_utc``)."""
    if not isinstance(value, str):
        return None
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=dt.UTC)


def _ms(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() * 1000)
