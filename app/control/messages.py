"""Browse and find the messages Redis holds, in whatever state each one is.

Operators ask "what is waiting, what is this message doing": Celery answered with ``inspect``,
Flower with its task pages. Here the ``fintask`` CLI, the HTTP API and the console list a
queue's messages in one state, a page at a time, filtered by actor, exception or age if asked
(``MessageFilter``), or find one by either of its ids, wherever it is (``app.control.stored``
says where each state is kept). Each message is shown as a ``MessageView``, its arguments
masked (``app.control.masking``). Cancelling is ``app.control.cancel``; moving a delayed
message to its ready queue is ``app.control.moves``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from dramatiq.common import current_millis

from app.broker_features import require_redis_broker
from app.control.masking import MaskPolicy, shape
from app.control.stored import (
    SCAN_SLICE,
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
from app.redaction import redact
from app.timestamps import rfc3339
from chunking.redis_keys import dead_letters_key, dead_messages_key

#: A page that filters (by actor, exception or age; delayed and retrying messages share a
#: list, so those states filter too) reads at most this many entries per item asked for, then
#: answers with what it found, how many it read and a cursor, so one call stays bounded.
MAX_SCAN_PER_ITEM = 20

_LISTED: tuple[State, ...] = ("ready", "delayed", "retrying")

#: A reason ``app.dead_letters.failure_reason`` wrote for an exception: ``Class: text``.
_REASON_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*): ")
#: The line of a traceback that names its exception: ``pkg.Class: text``, or ``Class`` alone.
_TRACEBACK_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*)(?:: |:?$)")


@dataclass(frozen=True)
class MessageView:
    """One message as operators see it: where it is, what it runs, its arguments masked.

    ``eta_ms`` is set for a message of the delay queue (delayed, retrying, or held there),
    ``worker_id`` for a held one, ``reason`` for a dead letter that kept why it died and
    ``dead_at_ms`` for any dead one. ``exception`` is the class of its last exception (from
    its reason, else from the traceback Dramatiq kept when it retried it); ``traceback`` that
    traceback. Free text (``reason``, ``traceback``) is redacted (``app.redaction``): it comes
    from exceptions, which quote arguments. ``options`` are masked like keyword arguments,
    numbers (counts, timestamps) shown.
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
    dead_at_ms: int | None = None
    exception: str | None = None
    traceback: str | None = None
    options: dict[str, object] = field(default_factory=dict)

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
            reason=None if found.reason is None else redact(found.reason),
            dead_at_ms=found.dead_at_ms,
            exception=exception_of(found),
            traceback=None if stored.traceback is None else redact(stored.traceback),
            options=_masked_options(stored.options, policy),
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
            "dead_at": rfc3339(self.dead_at_ms),
            "exception": self.exception,
            "traceback": self.traceback,
            "options": self.options,
        }


@dataclass(frozen=True)
class MessageFilter:
    """Which messages of a listing a page shows: of the actor ``actor``, whose last exception
    is ``exception`` (its class name, with or without its module, any case), sent at least
    ``min_age_s`` seconds ago. A field left None matches every message."""

    actor: str | None = None
    exception: str | None = None
    min_age_s: float | None = None

    @classmethod
    def of(
        cls, *, actor: str | None, exception: str | None, min_age_s: float | None
    ) -> MessageFilter:
        """The filter a form or a query string asks for: a blank field asks for nothing."""
        return cls(_given(actor), _given(exception), min_age_s)

    def __post_init__(self) -> None:
        if self.min_age_s is not None and not (
            math.isfinite(self.min_age_s) and self.min_age_s >= 0
        ):
            raise ValueError(
                f"min_age_s must be a number of seconds, 0 or more, not {self.min_age_s}"
            )

    @property
    def active(self) -> bool:
        """Whether it leaves any message out."""
        return (self.actor, self.exception, self.min_age_s) != (None, None, None)

    def matches(self, found: Found, now_ms: int) -> bool:
        """Whether ``found`` is kept, its age counted at ``now_ms``."""
        stored = found.stored
        if self.actor is not None and stored.actor_name != self.actor:
            return False
        if self.exception is not None and not _same_exception(self.exception, exception_of(found)):
            return False
        if self.min_age_s is not None:
            sent_at = stored.sent_at_ms
            return sent_at is not None and now_ms - sent_at >= self.min_age_s * 1000
        return True


#: The filter that leaves nothing out.
EVERY_MESSAGE = MessageFilter()


@dataclass(frozen=True)
class Page:
    """Messages of one listing, the cursor of the next page (None after the last), and how
    many entries were read for it: a page that filters holds those of them that matched."""

    items: list[MessageView]
    next_cursor: str | None
    scanned: int


_DEFAULT_POLICY = MaskPolicy()

#: One entry of a listing as it is read: the message (None when it is not one of the state
#: asked for, or its payload went), and the position a page ending with it continues from.
_Entry = tuple[Found | None, object]


def list_messages(
    client: redis.Redis,
    queue_name: str,
    *,
    state: State,
    newest_first: bool = False,
    cursor: str | None = None,
    limit: int = 50,
    policy: MaskPolicy = _DEFAULT_POLICY,
    where: MessageFilter = EVERY_MESSAGE,
    now_ms: int | None = None,
) -> Page:
    """A page of ``queue_name``'s messages in ``state`` that ``where`` keeps, oldest first
    unless ``newest_first``.

    ``cursor`` is a page's ``next_cursor``, for the same state and order (else
    ``InvalidCursor``). Dead letters page by when they died, held messages by when they were
    sent: both stable. The lists (ready, delayed, retrying) page by offset from their head
    (oldest first) or tail (newest first), read while consumers pop the head and producers push
    the tail: oldest first, each message popped meanwhile makes the next page skip one; newest
    first, each one pushed makes it repeat one. A page reads on until it holds ``limit``
    messages or it read ``MAX_SCAN_PER_ITEM * limit`` entries: delayed and retrying messages
    share a list, and a filter leaves entries out, so a page may hold fewer than ``limit``
    (even none) and still have a cursor, which continues after the last entry read, never
    hiding a match. A message whose payload went meanwhile (it was acknowledged) is left out.
    Ages count from ``now_ms`` (now).
    """
    require_redis_broker("browsing a queue's messages")
    if state not in STATES:
        raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    position = None if cursor is None else _position(cursor, state, newest_first)
    now_ms = current_millis() if now_ms is None else now_ms
    if state == "dead":
        entries = _dead_entries(client, queue_name, newest_first, _key_of(position), limit)
    elif state == "held":
        entries = _held_entries(client, queue_name, newest_first, _key_of(position))
    else:
        start = position if isinstance(position, int) else 0
        entries = _list_entries(client, queue_name, state, newest_first, start, limit)
    return _page(
        entries,
        state,
        newest_first,
        limit,
        lambda found: where.matches(found, now_ms),
        policy,
    )


def find_message(
    client: redis.Redis,
    queue_names: Iterable[str],
    message_id: str,
    *,
    policy: MaskPolicy = _DEFAULT_POLICY,
) -> MessageView | None:
    """The message with this Redis id or message id, in whichever queue and state it is; None
    when no queue holds it. Finding it by message id costs what ``stored.locate`` says."""
    require_redis_broker("finding a message by id")
    found = locate(client, list(queue_names), message_id)
    return None if found is None else MessageView.of(found, policy)


def exception_of(found: Found) -> str | None:
    """The class of a message's last exception: from a dead letter's reason, else from the
    traceback ``Retries`` kept; None when neither names one (a middleware's refusal, a
    message that never failed)."""
    if found.reason is not None:
        named = _REASON_EXCEPTION.match(found.reason)
        if named:
            return named.group(1)
    traceback = found.stored.traceback
    if traceback is None:
        return None
    for line in reversed(traceback.splitlines()):
        named = _TRACEBACK_EXCEPTION.match(line)
        if named:
            return named.group(1)
    return None


def _given(text: str | None) -> str | None:
    return None if text is None or not text.strip() else text.strip()


def _same_exception(wanted: str, exception: str | None) -> bool:
    if exception is None:
        return False
    wanted = wanted.casefold()
    return wanted in (exception.casefold(), exception.rsplit(".", 1)[-1].casefold())


def _masked_options(options: Mapping[str, object], policy: MaskPolicy) -> dict[str, object]:
    """Options as operators may see them: numbers (retries, etas, counts) as they are, any
    other value as ``policy`` masks a keyword argument (a unique claim's key quotes arguments);
    the traceback is left out, it is shown apart."""
    kept = {name: value for name, value in options.items() if name != "traceback"}
    masked = policy.mask_kwargs(kept)
    return {name: kept[name] if _is_number(kept[name]) else masked[name] for name in kept}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _page(
    entries: Iterator[_Entry],
    state: State,
    newest_first: bool,
    limit: int,
    wanted: Callable[[Found], bool],
    policy: MaskPolicy,
) -> Page:
    """Up to ``limit`` wanted messages from ``entries``, reading at most the scan bound of
    entries; the cursor continues after the last entry read when any is left."""
    items: list[MessageView] = []
    scanned, position, budget = 0, None, MAX_SCAN_PER_ITEM * limit
    for found, after in entries:
        if len(items) == limit or scanned >= budget:
            return Page(items, _cursor(state, newest_first, position), scanned)
        scanned, position = scanned + 1, after
        if found is not None and wanted(found):
            items.append(MessageView.of(found, policy))
    return Page(items, None, scanned)


def _batch_sizes(limit: int) -> Iterator[int]:
    """Entries to read per round trip: a page and one more (when it is there, the next page
    starts at it), doubling while a filter reads on, up to ``SCAN_SLICE``."""
    size = limit + 1
    while True:
        yield size
        size = min(SCAN_SLICE, size * 2)


def _list_entries(
    client: redis.Redis,
    queue_name: str,
    state: State,
    newest_first: bool,
    start: int,
    limit: int,
) -> Iterator[_Entry]:
    place: Place = "queue" if state == "ready" else "delay"
    offset = start
    for size in _batch_sizes(limit):
        batch = read_slice(client, queue_name, place, offset, size, newest_first)
        for stored in batch:
            offset += 1
            if stored is not None and stored.listed_state == state:
                yield Found(stored, state), offset
            else:
                yield None, offset
        if len(batch) < size:
            return


def _dead_entries(
    client: redis.Redis,
    queue_name: str,
    newest_first: bool,
    after: tuple[float, bytes] | None,
    limit: int,
) -> Iterator[_Entry]:
    for size in _batch_sizes(limit):
        batch = _dead_keys(client, queue_name, newest_first, after, size)
        pipe = client.pipeline(transaction=False)
        for _, redis_id in batch:
            pipe.hget(dead_messages_key(queue_name), redis_id)
            pipe.get(reason_key(queue_name, as_text(redis_id)))
        answers = pipe.execute() if batch else []
        for (score, redis_id), data, reason in zip(batch, answers[::2], answers[1::2], strict=True):
            found = None
            if data is not None:
                found = Found(
                    Stored.read(queue_name, redis_id, data, "dead"),
                    "dead",
                    reason=None if reason is None else as_text(reason),
                    dead_at_ms=int(score),
                )
            yield found, _key_position((score, redis_id))
        if len(batch) < size:
            return
        after = batch[-1]


def _dead_keys(
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


def _held_entries(
    client: redis.Redis,
    queue_name: str,
    newest_first: bool,
    after: tuple[float, bytes] | None,
) -> Iterator[_Entry]:
    """Held messages, read whole (prefetch bounds each ack set), in order past ``after``."""
    for found in sorted(held(client, queue_name), key=_held_key, reverse=newest_first):
        key = _held_key(found)
        if after is None or _past(key, after, newest_first):
            yield found, _key_position(key)


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
