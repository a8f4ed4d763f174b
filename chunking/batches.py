"""Batches: "when all of these are done, do that", exactly once, at a million members.

A batch is created with its callbacks, gets its members in any number of steps, and is
sealed; once it is sealed and every member is done, its callbacks are enqueued::

    batches = Batches(client=redis_client)
    batch_id = batches.create(
        name="weekly-report",
        on_success=Callback("report_sent", "reports", {"week": "2026-W48"}),
        on_failure=Callback("report_incomplete", "reports", {"week": "2026-W48"}),
    )
    batches.add(batch_id, (deliver.message(user_id=i) for i in user_ids))  # page by page
    batches.seal(batch_id)

- ``on_success`` fires when every member succeeded, ``on_failure`` when at least one failed
  for good (dead-lettered, expired past its ``max_age``, cancelled, or reported failed), and
  ``on_complete`` in either case. Each gets its own keyword arguments and ``batch_id``,
  ``succeeded`` and ``failed``; ``failed_members`` pages through the failures' ids and reasons.
- A member is a message carrying ``batch_member=[batch_id, ordinal]`` in its keyword
  arguments (``member_kwargs``), so it survives any sender, an outbox that keeps only keyword
  arguments included; the ``BatchMembers`` middleware records its outcome when it is
  acknowledged or dead-lettered. A member may also be any unit of work its host reports with
  ``settle`` (a job that finished, a child batch: ``create(parent=...)``).
- Each step of ``add`` reserves a range of ordinals with one ``HINCRBY`` and enqueues its page
  in one round trip (``enqueue_many``): the producer holds one page, whatever the batch's size.
- Recording is idempotent: one bit per ordinal (``chunking.batch_scripts``), so a member
  redelivered, or recorded once by its worker and again after a crash, counts once, and the
  script that records the last one is the only caller told to fire.
- Firing is crash-safe: the batch stays ``firing`` until the callbacks' enqueue is confirmed,
  and every caller that touches it meanwhile (a redelivered last member, a repeated seal)
  enqueues them again, under the same message ids. So the callback actor gets each callback
  at least once (Dramatiq's delivery) and, rarely, twice: its effect must be idempotent.

Redis holds a batch's state: one bit per member (125 kB for 10^6 members) and one entry per
failed member; a completed batch expires after ``keep_ms``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, cast

import dramatiq
import redis
from dramatiq import Broker, Message
from dramatiq.common import current_millis

from chunking import batch_scripts as scripts
from chunking.batch_progress import BatchProgress, FailedMember, FailureKind
from chunking.bulk import DEFAULT_BATCH_SIZE, enqueue_many

#: The keyword argument that makes a message a member: ``[batch_id, ordinal]``.
MEMBER_KWARG = "batch_member"
#: The keyword arguments every callback gets, which its own arguments may not use.
CALLBACK_KWARGS = frozenset({"batch_id", "succeeded", "failed"})
#: A bitmap's largest offset is 2^32 - 1.
MAX_MEMBERS = 2**32
#: How long a completed batch's keys are kept for readers.
KEEP_MS = 7 * 86_400_000
#: How many batches the recent listing keeps.
LISTED = 10_000
#: The namespace of the callbacks' message ids (uuid5 of batch id and callback).
_CALLBACK_IDS = uuid.UUID("6f1b3c1e-2b7a-4c55-9a3e-5d0c8e7f9b21")

RedisSource = redis.Redis | Callable[[], redis.Redis]


class BatchStoreUnavailable(
    dramatiq.middleware.MiddlewareError, dramatiq.errors.BrokerConnectionError
):
    """Redis could not record a batch's member or fire its callbacks.

    A ``MiddlewareError``, so Dramatiq lets it out of the ack hooks, and a broker connection
    error, so the worker tries the acknowledgement (and the recording) again every 5 s instead
    of acknowledging a member whose outcome was never counted.
    """


class UnknownBatch(LookupError):
    """No batch has this id (never created, or expired ``keep_ms`` after it completed)."""


class BatchClosed(ValueError):
    """Members were added to a batch that is sealed or cancelled."""


@dataclass(frozen=True)
class Callback:
    """A callback by actor name and queue, with scalar keyword arguments (``options`` such as
    a pipeline's ``pipe_target`` travel with it: the callback may start a pipeline)."""

    actor_name: str
    queue_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, message: Message[Any]) -> Callback:
        """The callback that sends a message like ``message`` (``actor.message(...)``)."""
        if message.args:
            raise ValueError(
                f"callback {message.actor_name!r}: pass keyword arguments, not positional ones"
            )
        return cls(message.actor_name, message.queue_name, dict(message.kwargs), message.options)

    def message(self, batch_id: str, which: str, succeeded: int, failed: int) -> Message[Any]:
        """The callback's message for a batch: its id is the same every time it is built."""
        return Message(
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            args=(),
            kwargs={**self.kwargs, "batch_id": batch_id, "succeeded": succeeded, "failed": failed},
            options=dict(self.options),
            message_id=str(uuid.uuid5(_CALLBACK_IDS, f"{batch_id}:{which}")),
            message_timestamp=current_millis(),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "actor_name": self.actor_name,
            "queue_name": self.queue_name,
            "kwargs": self.kwargs,
            "options": self.options,
        }


def member_kwargs(batch_id: str, ordinal: int) -> dict[str, Any]:
    """The keyword argument that makes a message member ``ordinal`` of ``batch_id``."""
    return {MEMBER_KWARG: [batch_id, ordinal]}


def member_of(message: Message[Any] | Any) -> tuple[str, int] | None:
    """The batch and ordinal ``message`` is a member of (None if it is none, or the marker is
    not a ``[batch_id, ordinal]`` pair)."""
    marker = message.kwargs.get(MEMBER_KWARG)
    if not isinstance(marker, list | tuple) or len(marker) != 2:
        return None
    batch_id, ordinal = marker
    if not isinstance(batch_id, str) or not isinstance(ordinal, int) or isinstance(ordinal, bool):
        return None
    if not 0 <= ordinal < MAX_MEMBERS:
        return None
    return batch_id, ordinal


class Batches:
    """Creates, fills, seals, cancels and reads batches kept in one Redis.

    Parameters:
      client: the Redis client, or a function returning it (called once, on first use).
      broker: the broker callbacks are enqueued on (the global broker by default).
      prefix: the prefix of every key (``chunking.batch_scripts``).
      check_message: raises ``ValueError`` for a message the host would refuse to send (its
        guardrails): callbacks are checked when the batch is created, not when they fire.
      keep_ms: how long a completed batch stays readable.
    """

    def __init__(
        self,
        *,
        client: RedisSource,
        broker: Broker | None = None,
        prefix: str = "chunking:batch",
        check_message: Callable[[Message[Any]], None] | None = None,
        keep_ms: int = KEEP_MS,
    ) -> None:
        self._client = client
        self._broker = broker
        self.prefix = prefix
        self.check_message = check_message
        self.keep_ms = keep_ms
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> redis.Redis:
        if not isinstance(self._client, redis.Redis):
            self._client = self._client()
        return self._client

    @property
    def broker(self) -> Broker:
        return self._broker or dramatiq.get_broker()

    def create(
        self,
        *,
        name: str = "",
        on_success: Callback | None = None,
        on_failure: Callback | None = None,
        on_complete: Callback | None = None,
        parent: tuple[str, int] | None = None,
        batch_id: str | None = None,
    ) -> str:
        """Create an open batch; return its id.

        A child batch names its ``parent`` batch and the ordinal it holds there (reserved with
        ``reserve``): when the child completes, that member of the parent is done, succeeded
        if every member of the child did. A ``batch_id`` given twice creates one batch.
        """
        callbacks = {
            which: callback
            for which, callback in (
                ("on_success", on_success),
                ("on_failure", on_failure),
                ("on_complete", on_complete),
            )
            if callback is not None
        }
        batch_id = batch_id or uuid.uuid4().hex
        for which, callback in callbacks.items():
            self._check_callback(batch_id, which, callback)
        self._run(
            "create",
            [scripts.meta_key(self.prefix, batch_id), scripts.recent_key(self.prefix)],
            [
                batch_id,
                name,
                json.dumps({which: c.as_dict() for which, c in callbacks.items()}),
                json.dumps(list(parent)) if parent else "",
                current_millis(),
                LISTED,
            ],
        )
        return batch_id

    def reserve(self, batch_id: str, count: int) -> range:
        """Reserve ``count`` member ordinals of an open batch (one ``HINCRBY``)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count!r}")
        end = self._run("reserve", [scripts.meta_key(self.prefix, batch_id)], [count])
        self._raise_for(batch_id, end)
        if end > MAX_MEMBERS:
            raise BatchClosed(f"batch {batch_id} would have {end:,} members; at most 2^32")
        return range(end - count, end)

    def extend(self, batch_id: str, upto: int) -> None:
        """Count ``upto`` members added to an open batch whose ordinals the caller numbers
        (a chunked run numbers them from its row); repeating it changes nothing."""
        self._raise_for(batch_id, self._run("extend", [self._meta(batch_id)], [upto]))

    def add(
        self,
        batch_id: str,
        messages: Iterable[Message[Any]],
        *,
        page_size: int = DEFAULT_BATCH_SIZE,
    ) -> int:
        """Make ``messages`` members of an open batch and enqueue them, a page at a time (one
        ``HINCRBY`` and one round trip per page); return how many.

        Each message goes through the broker's ``before_enqueue`` (the host's guardrails).
        A producer that dies mid-way leaves the batch open with ordinals no message holds:
        ``cancel`` it, or add the rest and seal it.
        """
        added = 0
        for page in _pages(messages, page_size):
            ordinals = self.reserve(batch_id, len(page))
            members = [
                message.copy(kwargs={**message.kwargs, **member_kwargs(batch_id, ordinal)})
                for message, ordinal in zip(page, ordinals, strict=True)
            ]
            added += enqueue_many(self.broker, members, batch_size=page_size)
        return added

    def seal(self, batch_id: str, *, total: int | None = None) -> bool:
        """Close the batch to new members (``total`` of them, by default those added); True if
        this call completed it (its callbacks are then enqueued before it returns).

        Sealing again is safe, and a seal that finds the batch still firing (its first sealer
        died before the callbacks left) enqueues them.
        """
        answer = self._run(
            "seal", [self._meta(batch_id)], ["" if total is None else total, current_millis()]
        )
        self._raise_for(batch_id, answer)
        return self._fire_if_due(batch_id, answer)

    def settle(
        self,
        batch_id: str,
        ordinal: int,
        *,
        failed: FailureKind | None = None,
        reason: str = "",
        message_id: str = "",
    ) -> bool:
        """Record the outcome of member ``ordinal`` (a success unless ``failed`` says how it
        failed); True if this call completed the batch. Recording a member again changes
        nothing, but a batch still firing is fired again."""
        answer = self._run(
            "settle",
            self._member_keys(batch_id),
            [ordinal, failed or "", message_id, reason, current_millis()],
        )
        return self._fire_if_due(batch_id, answer)

    def settle_many(self, batch_id: str, ordinals: Iterable[int]) -> int:
        """Record the success of many members, one script call per ``DEFAULT_BATCH_SIZE``;
        return how many were new. Fires the batch if one of them completed it."""
        keys = self._member_keys(batch_id)
        counted = 0
        for page in _pages(ordinals, DEFAULT_BATCH_SIZE):
            new, fire = self._script("settle_many")(keys, [current_millis(), *page])
            counted += int(new)
            if fire:
                self._fire(batch_id)
        return counted

    def cancel(self, batch_id: str) -> bool:
        """Cancel a batch: it is sealed with the members it has, every member not yet done
        counts as failed (``cancelled``), and it completes now: ``on_failure`` and
        ``on_complete`` fire once. Members still queued are skipped when they come up
        (``BatchMembers``). False if it had completed already."""
        answer = self._run("cancel", [self._meta(batch_id)], [current_millis()])
        self._raise_for(batch_id, answer)
        return self._fire_if_due(batch_id, answer)

    def is_cancelled(self, batch_id: str) -> bool:
        """Whether ``batch_id`` was cancelled (False for an unknown batch)."""
        return bool(self.client.hexists(self._meta(batch_id), "cancelled_ms"))

    def progress(self, batch_id: str) -> BatchProgress | None:
        """The counts, state and times of a batch (None if unknown or expired)."""
        fields = cast(dict[bytes, bytes], self.client.hgetall(self._meta(batch_id)))
        return BatchProgress.of(batch_id, fields) if fields else None

    def recent(self, *, limit: int = 50) -> list[BatchProgress]:
        """The most recently created batches still kept, newest first."""
        ids = cast(
            list[bytes], self.client.zrevrange(scripts.recent_key(self.prefix), 0, limit - 1)
        )
        pipe = self.client.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self._meta(batch_id.decode()))
        return [
            BatchProgress.of(batch_id.decode(), fields)
            for batch_id, fields in zip(ids, pipe.execute(), strict=True)
            if fields
        ]

    def failed_members(
        self, batch_id: str, *, cursor: int = 0, count: int = 100
    ) -> tuple[int, list[FailedMember]]:
        """A page of a batch's failed members (``HSCAN``: about ``count``, in no set order),
        and the cursor of the next page (0: that was the last one). Start with 0."""
        next_cursor, entries = cast(
            tuple[int, dict[bytes, bytes]],
            self.client.hscan(
                scripts.failures_key(self.prefix, batch_id), cursor=cursor, count=count
            ),
        )
        members = [FailedMember.of(ordinal, record) for ordinal, record in entries.items()]
        return int(next_cursor), sorted(members, key=lambda member: member.ordinal)

    def _fire_if_due(self, batch_id: str, answer: int) -> bool:
        if answer != scripts.FIRE:
            return False
        self._fire(batch_id)
        return True

    def _fire(self, batch_id: str) -> None:
        """Enqueue the callbacks of a firing batch, record it in its parent, then mark it
        fired. A crash anywhere before the mark leaves it firing: the next caller redoes all
        of it, under the same message ids and the same parent ordinal."""
        progress = self.progress(batch_id)
        if progress is None:
            return
        meta = cast(dict[bytes, bytes], self.client.hgetall(self._meta(batch_id)))
        callbacks = json.loads(meta.get(b"callbacks", b"{}"))
        due = ["on_complete", "on_failure" if progress.failed else "on_success"]
        messages = [
            Callback(**callbacks[which]).message(
                batch_id, which, progress.succeeded, progress.failed
            )
            for which in due
            if which in callbacks
        ]
        enqueue_many(self.broker, messages)
        if progress.parent is not None:
            parent_id, ordinal = progress.parent
            self.settle(
                parent_id,
                ordinal,
                failed=FailureKind.FAILED if progress.failed else None,
                reason=f"child batch {batch_id}: {progress.failed} of its members failed",
                message_id=batch_id,
            )
        self._run("fired", self._member_keys(batch_id), [self.keep_ms])

    def _check_callback(self, batch_id: str, which: str, callback: Callback) -> None:
        if reserved := sorted(CALLBACK_KWARGS & set(callback.kwargs)):
            raise ValueError(
                f"{which} {callback.actor_name!r}: {', '.join(reserved)} are given to every "
                "callback; name its own arguments otherwise"
            )
        message = callback.message(batch_id, which, 0, 0)
        try:
            json.dumps(message.asdict(), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{which} {callback.actor_name!r}: not plain JSON: {error}") from None
        if self.check_message is not None:
            self.check_message(message)

    def _raise_for(self, batch_id: str, answer: int) -> None:
        if answer == scripts.UNKNOWN:
            raise UnknownBatch(f"no batch {batch_id!r} (never created, or expired)")
        if answer == scripts.NOT_A_MEMBER:
            raise BatchClosed(f"batch {batch_id} is sealed or cancelled: it takes no members")

    def _meta(self, batch_id: str) -> str:
        return scripts.meta_key(self.prefix, batch_id)

    def _member_keys(self, batch_id: str) -> list[str]:
        return [
            self._meta(batch_id),
            scripts.done_key(self.prefix, batch_id),
            scripts.failures_key(self.prefix, batch_id),
        ]

    def _script(self, name: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.client.register_script(getattr(scripts, name.upper()))
        return self._scripts[name]

    def _run(self, name: str, keys: list[str], args: list[Any]) -> int:
        try:
            return int(self._script(name)(keys, args))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise BatchStoreUnavailable(f"batch store unreachable ({name}): {error}") from error


def _pages(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if size <= 0:
        raise ValueError(f"page_size must be positive, not {size!r}")
    iterator = iter(items)
    while page := list(islice(iterator, size)):
        yield page
