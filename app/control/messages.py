"""Browse and find the messages Redis holds, in whatever state each one is.

Operators ask "what is waiting, what is this message doing": Celery answered with ``inspect``,
Flower with its task pages. Here the ``fintask`` CLI and the HTTP API list a queue's messages
in one state, a page at a time, or find one by either of its ids, wherever it is
(``app.control.stored`` says where each state is kept). Each message is shown as a
``MessageView``, its arguments masked (``app.control.masking``). Cancelling is
``app.control.cancel``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis

from app.control.masking import MaskPolicy, shape
from app.control.stored import (
    STATES,
    Found,
    Place,
    State,
    Stored,
    as_bytes,
    as_text,
    held,
    locate,
    read_slice,
)
from app.cursors import InvalidCursor, decode_cursor, encode_cursor
from app.dead_letters import reason_key
from app.timestamps import rfc3339
from chunking.redis_keys import dead_letters_key, dead_messages_key

#: A page that filters (delayed vs retrying share a list) reads at most this many entries per
#: item asked for, then answers with what it found and a cursor, so one call stays bounded.
MAX_SCAN_PER_ITEM = 20

_LISTED: tuple[State, ...] = ("ready", "delayed", "retrying")


@dataclass(frozen=True)
class MessageView:
    """One message as operators see it: where it is, what it runs, its arguments masked.

    ``eta_ms`` is set for a message of the delay queue (delayed, retrying, or held there),
    ``worker_id`` for a held one, ``reason`` for a dead letter that kept why it died.
    """

    message_id: str
    redis_id: str
    queue_name: str
    actor_name: str
    state: State
    sent_at_ms: int | None
    eta_ms: int | None
    retries: int
    args: list[object]
    kwargs: dict[str, object]
    worker_id: str | None = None
    reason: str | None = None

    @classmethod
    def of(cls, found: Found, policy: MaskPolicy) -> MessageView:
        """The view of a message found in Redis, masked as ``policy`` says."""
        stored = found.stored
        if stored.message is None:
            args: list[object] = [f"<payload: {stored.size} bytes, not a message>"]
        else:
            raw_args = stored.message.get("args", [])
            args = policy.mask_args(raw_args) if isinstance(raw_args, list) else [shape(raw_args)]
        return cls(
            message_id=stored.message_id,
            redis_id=as_text(stored.redis_id),
            queue_name=stored.queue_name,
            actor_name=stored.actor_name,
            state=found.state,
            sent_at_ms=stored.sent_at_ms,
            eta_ms=stored.eta_ms,
            retries=stored.retries,
            args=args,
            kwargs=policy.mask_kwargs(stored.kwargs),
            worker_id=found.worker_id,
            reason=found.reason,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "redis_message_id": self.redis_id,
            "queue_name": self.queue_name,
            "actor_name": self.actor_name,
            "state": self.state,
            "sent_at": rfc3339(self.sent_at_ms),
            "eta": rfc3339(self.eta_ms),
            "retries": self.retries,
            "args": self.args,
            "kwargs": self.kwargs,
            "worker_id": self.worker_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Page:
    """Messages of one listing, and the cursor of the next page (None after the last)."""

    items: list[MessageView]
    next_cursor: str | None


_DEFAULT_POLICY = MaskPolicy()


def list_messages(
    client: redis.Redis,
    queue_name: str,
    *,
    state: State,
    newest_first: bool = False,
    cursor: str | None = None,
    limit: int = 50,
    policy: MaskPolicy = _DEFAULT_POLICY,
) -> Page:
    """A page of ``queue_name``'s messages in ``state``, oldest first unless ``newest_first``.

    ``cursor`` is a page's ``next_cursor``, for the same state and order (else
    ``InvalidCursor``). Dead letters page by when they died, held messages by when they were
    sent: both stable. The lists (ready, delayed, retrying) page by offset from their head
    (oldest first) or tail (newest first), read while consumers pop the head and producers push
    the tail: oldest first, each message popped meanwhile makes the next page skip one; newest
    first, each one pushed makes it repeat one. Delayed and retrying messages share a list: a
    page reads at most ``MAX_SCAN_PER_ITEM * limit`` entries, so it may hold fewer than
    ``limit`` (even none) and still have a cursor. A message whose payload went meanwhile (it
    was acknowledged) is left out.
    """
    if state not in STATES:
        raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    position = None if cursor is None else _position(cursor, state, newest_first)
    if state == "dead":
        return _dead_page(client, queue_name, newest_first, _key_of(position), limit, policy)
    if state == "held":
        return _held_page(client, queue_name, newest_first, _key_of(position), limit, policy)
    start = position if isinstance(position, int) else 0
    return _list_page(client, queue_name, state, newest_first, start, limit, policy)


def find_message(
    client: redis.Redis,
    queue_names: Iterable[str],
    message_id: str,
    *,
    policy: MaskPolicy = _DEFAULT_POLICY,
) -> MessageView | None:
    """The message with this Redis id or message id, in whichever queue and state it is; None
    when no queue holds it. Finding it by message id costs what ``stored.locate`` says."""
    found = locate(client, list(queue_names), message_id)
    return None if found is None else MessageView.of(found, policy)


def _list_page(
    client: redis.Redis,
    queue_name: str,
    state: State,
    newest_first: bool,
    start: int,
    limit: int,
    policy: MaskPolicy,
) -> Page:
    place: Place = "queue" if state == "ready" else "delay"
    items: list[MessageView] = []
    offset, budget = start, start + MAX_SCAN_PER_ITEM * limit
    while True:
        # One entry more than a page: when it is there, the next page starts at it.
        entries = read_slice(client, queue_name, place, offset, limit + 1, newest_first)
        for stored in entries:
            if len(items) == limit or offset >= budget:
                return Page(items, _cursor(state, newest_first, offset))
            offset += 1
            if stored is not None and stored.listed_state == state:
                items.append(MessageView.of(Found(stored, state), policy))
        if len(entries) <= limit:
            return Page(items, None)


def _dead_page(
    client: redis.Redis,
    queue_name: str,
    newest_first: bool,
    after: tuple[float, bytes] | None,
    limit: int,
    policy: MaskPolicy,
) -> Page:
    entries = _dead_entries(client, queue_name, newest_first, after, limit + 1)
    page = entries[:limit]
    pipe = client.pipeline(transaction=False)
    for _, redis_id in page:
        pipe.hget(dead_messages_key(queue_name), redis_id)
        pipe.get(reason_key(queue_name, as_text(redis_id)))
    answers = pipe.execute()
    items = [
        MessageView.of(
            Found(
                Stored.read(queue_name, redis_id, data, "dead"),
                "dead",
                reason=None if reason is None else as_text(reason),
            ),
            policy,
        )
        for (_, redis_id), data, reason in zip(page, answers[::2], answers[1::2], strict=True)
        if data is not None
    ]
    more = len(entries) > limit
    return Page(items, _cursor("dead", newest_first, _key_position(page[-1])) if more else None)


def _dead_entries(
    client: redis.Redis,
    queue_name: str,
    newest_first: bool,
    after: tuple[float, bytes] | None,
    count: int,
) -> list[tuple[float, bytes]]:
    """Up to ``count`` dead letters (score, Redis id) past ``after``, in order.

    The range starts at ``after``'s score, inclusive: those that died in the same millisecond
    and sort before it are skipped, reading on while a whole batch was skipped.
    """
    key = dead_letters_key(queue_name)
    found: list[tuple[float, bytes]] = []
    offset = 0
    while len(found) < count:
        if newest_first:
            top = "+inf" if after is None else after[0]
            answer = client.zrevrangebyscore(key, top, "-inf", offset, count, withscores=True)
        else:
            bottom = "-inf" if after is None else after[0]
            answer = client.zrangebyscore(key, bottom, "+inf", offset, count, withscores=True)
        batch = [(float(score), as_bytes(redis_id)) for redis_id, score in _scored(answer)]
        found += [entry for entry in batch if after is None or _past(entry, after, newest_first)]
        if len(batch) < count:
            break
        offset += len(batch)
    return found[:count]


def _held_page(
    client: redis.Redis,
    queue_name: str,
    newest_first: bool,
    after: tuple[float, bytes] | None,
    limit: int,
    policy: MaskPolicy,
) -> Page:
    holding = sorted(held(client, queue_name), key=_held_key, reverse=newest_first)
    if after is not None:
        holding = [found for found in holding if _past(_held_key(found), after, newest_first)]
    page = holding[:limit]
    items = [MessageView.of(found, policy) for found in page]
    next_cursor = None
    if len(holding) > limit:
        next_cursor = _cursor("held", newest_first, _key_position(_held_key(page[-1])))
    return Page(items, next_cursor)


def _held_key(found: Found) -> tuple[float, bytes]:
    return float(found.stored.sent_at_ms or 0), as_bytes(found.stored.redis_id)


def _cursor(state: State, newest_first: bool, position: object) -> str:
    return encode_cursor({"state": state, "newest_first": newest_first, "position": position})


def _position(cursor: str, state: State, newest_first: bool) -> object:
    """The position a cursor holds, checked against the listing it is used for."""
    decoded = decode_cursor(cursor)
    if not isinstance(decoded, dict) or "position" not in decoded:
        raise InvalidCursor()
    if (decoded.get("state"), decoded.get("newest_first")) != (state, newest_first):
        given = f"{decoded.get('state')} messages, {_order(decoded.get('newest_first'))}"
        raise InvalidCursor(
            f"this cursor continues a listing of {given}, not of {state} messages, "
            f"{_order(newest_first)}: list again without it"
        )
    if not _fits(decoded["position"], state):
        raise InvalidCursor()
    return decoded["position"]


def _fits(position: object, state: object) -> bool:
    """Whether ``position`` is an offset (the lists) or a (score, Redis id) key (the others)."""
    if state in _LISTED:
        return isinstance(position, int) and not isinstance(position, bool) and position >= 0
    return (
        isinstance(position, list)
        and len(position) == 2
        and isinstance(position[0], int | float)
        and not isinstance(position[0], bool)
        and isinstance(position[1], str)
    )


def _order(newest_first: object) -> str:
    return "newest first" if newest_first else "oldest first"


def _scored(answer: object) -> list[tuple[bytes | str, float]]:
    """A ``withscores`` range answer, as redis-py gives it for a synchronous client."""
    return cast(list[tuple[bytes | str, float]], answer)


def _key_position(key: tuple[float, bytes]) -> list[object]:
    # surrogateescape: any id's bytes come back exactly from the cursor's text.
    return [key[0], key[1].decode("utf-8", "surrogateescape")]


def _key_of(position: object) -> tuple[float, bytes] | None:
    if not isinstance(position, list):
        return None
    return float(position[0]), str(position[1]).encode("utf-8", "surrogateescape")


def _past(key: tuple[float, bytes], after: tuple[float, bytes], newest_first: bool) -> bool:
    return key < after if newest_first else key > after
