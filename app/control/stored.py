"""The messages Redis holds, read where Dramatiq stores them, in whatever state each one is.

Browsing (``app.control.messages``) and cancelling (``app.control.cancel``) read the same keys
(``chunking.redis_keys``) for the queues the caller names (the broker's declared ones: never a
SCAN for queues), and each message is in one state:

- ``ready``: its Redis id is in the queue's list ``<ns>:<q>``;
- ``delayed`` / ``retrying``: in the delay queue's list ``<ns>:<q>.DQ``, sent with a delay /
  a retry waiting out its backoff (``retries`` > 0);
- ``held``: in a worker process's ack set (``<ns>:__acks__.<worker>.<q>``, or ``.<q>.DQ``):
  prefetched, running, or a delayed message the worker's delay consumer holds until its eta;
- ``dead``: in the dead letters ``<ns>:<q>.XQ``.

A message is known by two ids: the ``message_id`` logs, Sentry and people use (kept across
retries and deferrals), and the Redis id, the ``redis_message_id`` option each enqueue gets,
under which Redis lists and stores it. Both are accepted wherever one message is looked up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis
from dramatiq.common import dq_name

from app.dead_letters import reason_key
from app.middleware.fleet import SEEN_KEY
from app.middleware.metrics import heartbeats_key
from chunking.redis_keys import (
    NAMESPACE,
    acks_key,
    dead_letters_key,
    dead_messages_key,
    delay_queue_key,
    messages_key,
    queue_key,
)

State = Literal["ready", "delayed", "retrying", "held", "dead"]
STATES: tuple[State, ...] = ("ready", "delayed", "retrying", "held", "dead")

#: Entries read per round trip where every message of a list or hash is looked at.
SCAN_SLICE = 1_000

#: Where a payload is stored: the queue's hash, its delay queue's, or its dead letters'.
Place = Literal["queue", "delay", "dead"]
_PLACES: tuple[Place, ...] = ("queue", "delay", "dead")


@dataclass(frozen=True)
class Stored:
    """A payload as Redis stores it, and where: decoded once, masked only when shown."""

    queue_name: str
    redis_id: bytes | str
    place: Place
    message: dict[str, Any] | None
    size: int

    @classmethod
    def read(
        cls, queue_name: str, redis_id: bytes | str, data: bytes | str, place: Place
    ) -> Stored:
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            decoded = None
        message = decoded if isinstance(decoded, dict) else None
        return cls(queue_name, redis_id, place, message, len(data))

    @property
    def revocable(self) -> bool:
        """Whether it carries a message id a worker can be told to refuse."""
        return bool(self._field("message_id", str))

    @property
    def message_id(self) -> str:
        return self._field("message_id", str) or as_text(self.redis_id)

    @property
    def actor_name(self) -> str:
        return self._field("actor_name", str) or "?"

    @property
    def sent_at_ms(self) -> int | None:
        sent_at = self._field("message_timestamp", (int, float))
        return None if sent_at is None else int(sent_at)

    @property
    def eta_ms(self) -> int | None:
        """When a message of the delay queue is due; None anywhere else."""
        eta = self.options.get("eta")
        return eta if self.place == "delay" and isinstance(eta, int) else None

    @property
    def retries(self) -> int:
        retries = self.options.get("retries", 0)
        return retries if isinstance(retries, int) and not isinstance(retries, bool) else 0

    @property
    def kwargs(self) -> dict[str, Any]:
        return self._field("kwargs", dict) or {}

    @property
    def options(self) -> dict[str, Any]:
        """Its Dramatiq options as stored (unmasked: ``app.control.messages`` masks them)."""
        return self._field("options", dict) or {}

    @property
    def traceback(self) -> str | None:
        """The traceback Dramatiq's ``Retries`` kept of the last failure it retried, if any."""
        traceback = self.options.get("traceback")
        return traceback if isinstance(traceback, str) and traceback else None

    @property
    def listed_state(self) -> State:
        """Its state while its id is in its list."""
        if self.place == "queue":
            return "ready"
        return "retrying" if self.retries > 0 else "delayed"

    def matches(self, actor_name: str, arguments: Mapping[str, object]) -> bool:
        kwargs = self.kwargs
        return self.actor_name == actor_name and all(
            name in kwargs and kwargs[name] == value for name, value in arguments.items()
        )

    def _field(self, name: str, kind: type | tuple[type, ...]) -> Any:
        value = (self.message or {}).get(name)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Found:
    """A stored message and the state it was found in: ``worker_id`` for a held one,
    ``reason`` for a dead letter that kept why it died and ``dead_at_ms`` for any dead one."""

    stored: Stored
    state: State
    worker_id: str | None = None
    reason: str | None = None
    dead_at_ms: int | None = None


def locate(
    client: redis.Redis, queue_names: list[str], wanted: str, *, by_message_id: bool = True
) -> Found | None:
    """The message with the Redis id or message id ``wanted``, and where it is now.

    A Redis id is one lookup per queue and place. A message id is searched in every stored
    payload of the queues (``HSCAN``, then one ``LPOS`` through its list): its cost grows with
    the queues' sizes, every stored message read once. Callers that hold a Redis id (a page's
    selected rows) pass ``by_message_id=False``: one that is gone then costs one lookup, not a
    scan. A live copy is preferred to a dead letter with the same message id; None when no
    queue holds it, or it was settled while looked for.
    """
    workers = _worker_ids(client)
    for stored in _candidates(client, queue_names, wanted, by_message_id):
        found = _state_of(client, stored, workers)
        if found is not None:
            return found
    return None


def held(client: redis.Redis, queue_name: str) -> list[Found]:
    """Every message of ``queue_name`` (or its delay queue) a worker process holds, with the
    worker's id. Prefetch bounds each ack set, so each is read whole."""
    places: tuple[Place, ...] = ("queue", "delay")
    holders = [(worker, place) for worker in _worker_ids(client) for place in places]
    pipe = client.pipeline(transaction=False)
    for worker, place in holders:
        pipe.smembers(acks_key(_acks_queue(queue_name, place), worker))
    sets = [
        (worker, place, sorted(ids))
        for (worker, place), ids in zip(holders, pipe.execute(), strict=True)
        if ids
    ]
    pipe = client.pipeline(transaction=False)
    for _, place, ids in sets:
        pipe.hmget(hash_key(queue_name, place), ids)
    return [
        Found(Stored.read(queue_name, redis_id, data, place), "held", worker_id=worker)
        for (worker, place, ids), payloads in zip(sets, pipe.execute(), strict=True)
        for redis_id, data in zip(ids, payloads, strict=True)
        if data is not None
    ]


def held_counts(client: redis.Redis, queue_names: list[str]) -> dict[str, int]:
    """How many messages of each queue (or its delay queue) worker processes hold, by the size
    of their ack sets: one ``SCARD`` per worker, queue and place, no payload read."""
    places: tuple[Place, ...] = ("queue", "delay")
    workers = _worker_ids(client)
    keys = [
        (queue_name, acks_key(_acks_queue(queue_name, place), worker))
        for queue_name in queue_names
        for worker in workers
        for place in places
    ]
    pipe = client.pipeline(transaction=False)
    for _, key in keys:
        pipe.scard(key)
    counts = dict.fromkeys(queue_names, 0)
    for (queue_name, _), size in zip(keys, pipe.execute(), strict=True):
        counts[queue_name] += int(size)
    return counts


def read_slice(
    client: redis.Redis,
    queue_name: str,
    place: Place,
    start: int,
    size: int,
    newest_first: bool,
) -> list[Stored | None]:
    """``size`` entries of a list from offset ``start`` (from its tail if ``newest_first``),
    in reading order, with their payloads (None where it is gone)."""
    key = list_key(queue_name, place)
    if newest_first:
        ids = client.lrange(key, -(start + size), -(start + 1))[::-1]
    else:
        ids = client.lrange(key, start, start + size - 1)
    if not ids:
        return []
    payloads = client.hmget(hash_key(queue_name, place), ids)
    return [
        None if data is None else Stored.read(queue_name, redis_id, data, place)
        for redis_id, data in zip(ids, payloads, strict=True)
    ]


def list_key(queue_name: str, place: Place) -> str:
    """The list a place's waiting messages are in (the dead letters are a sorted set)."""
    return delay_queue_key(queue_name) if place == "delay" else queue_key(queue_name)


def hash_key(queue_name: str, place: Place) -> str:
    """The hash a place's payloads are stored in, by Redis id."""
    if place == "dead":
        return dead_messages_key(queue_name)
    return messages_key(_acks_queue(queue_name, place))


def as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def as_text(value: bytes | str) -> str:
    """``value`` for a reader: bytes that are not UTF-8 are shown escaped, never an error."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _worker_ids(client: redis.Redis) -> list[str]:
    """Every process that may hold messages: fleet records, and Dramatiq's heartbeats (which
    also list producers and workers that died with messages not yet recovered)."""
    pipe = client.pipeline(transaction=False)
    pipe.zrange(SEEN_KEY, 0, -1)
    pipe.zrange(heartbeats_key(NAMESPACE), 0, -1)
    seen, beating = pipe.execute()
    return sorted({as_text(worker) for worker in [*seen, *beating]})


def _candidates(
    client: redis.Redis, queue_names: list[str], wanted: str, by_message_id: bool
) -> Iterator[Stored]:
    """The payloads stored under the Redis id ``wanted``, then (``by_message_id``) those of
    message id ``wanted``.

    Live places come before the dead letters. The message id is looked for in the payload's
    bytes as Dramatiq's encoder writes it, and confirmed on the decoded message.
    """
    places = [(queue_name, place) for place in _PLACES for queue_name in queue_names]
    pipe = client.pipeline(transaction=False)
    for queue_name, place in places:
        pipe.hget(hash_key(queue_name, place), wanted)
    for (queue_name, place), data in zip(places, pipe.execute(), strict=True):
        if data is not None:
            yield Stored.read(queue_name, wanted, data, place)
    if not by_message_id:
        return
    needle = b'"message_id":' + json.dumps(wanted).encode()
    for queue_name, place in places:
        for redis_id, data in client.hscan_iter(hash_key(queue_name, place), count=SCAN_SLICE):
            if needle in as_bytes(data):
                stored = Stored.read(queue_name, redis_id, data, place)
                if stored.revocable and stored.message_id == wanted:
                    yield stored


def _state_of(client: redis.Redis, stored: Stored, workers: list[str]) -> Found | None:
    """Where ``stored`` is now (None: nowhere, it was settled meanwhile), read in one
    transaction, so that a consumer moving it from its list to an ack set cannot hide it."""
    queue_name, redis_id = stored.queue_name, stored.redis_id
    pipe = client.pipeline(transaction=True)
    if stored.place == "dead":
        pipe.zscore(dead_letters_key(queue_name), redis_id)
        pipe.get(reason_key(queue_name, as_text(redis_id)))
        score, reason = pipe.execute()
        if score is None:
            return None
        text = None if reason is None else as_text(reason)
        return Found(stored, "dead", reason=text, dead_at_ms=int(score))
    # redis-py types these values as str; Redis takes the bytes an id was read as.
    pipe.lpos(list_key(queue_name, stored.place), redis_id)  # type: ignore[arg-type]
    for worker in workers:
        acks = acks_key(_acks_queue(queue_name, stored.place), worker)
        pipe.sismember(acks, redis_id)  # type: ignore[arg-type]
    listed, *holds = pipe.execute()
    if listed is not None:
        return Found(stored, stored.listed_state)
    holder = next((worker for worker, has in zip(workers, holds, strict=True) if has), None)
    return None if holder is None else Found(stored, "held", worker_id=holder)


def _acks_queue(queue_name: str, place: Place) -> str:
    """The queue name Dramatiq's scripts use for a place: ``q``, or ``q.DQ`` for delayed."""
    return dq_name(queue_name) if place == "delay" else queue_name
