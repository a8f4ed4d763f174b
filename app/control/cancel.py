"""Cancel messages Redis holds: one by its id, or every one of an actor with given arguments.

Cancelling takes a waiting message out of Redis atomically and always revokes it too
(``app.control_state``): a copy of it may be in flight (a retry) or already with a worker.
Where messages are and how they are found is ``app.control.stored``. A batch member taken out
of Redis before any worker fetched it is recorded in its batch as cancelled
(``app.control.batches.settle_taken_out``): no worker would ever record it. One a worker holds
is recorded by that worker, which skips it as revoked (``chunking.BatchMembers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis
from dramatiq.common import current_millis

from app.broker_features import require_redis_broker
from app.control.batches import settle_taken_out
from app.control.stored import (
    SCAN_SLICE,
    Place,
    State,
    Stored,
    as_bytes,
    hash_key,
    held,
    list_key,
    locate,
    read_slice,
)
from app.control_state import AbortMode, revoke
from chunking import Batches

#: A revocation outlives its message's ``max_age`` by this much: ``AgeLimit`` drops it after.
REVOKE_MARGIN_MS = 3_600_000

# KEYS: a list, its messages hash. ARGV: a Redis id. Takes the id out of the list, and its
# payload out of the hash only if the id was still listed: one a consumer fetched meanwhile
# keeps its payload for the worker holding it. 1 removed, 0 no longer listed.
_REMOVE = """
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call("HDEL", KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Cancelled:
    """What cancelling one message did: the state it was found in (None: not found), whether it
    was taken out of Redis, and whether it was revoked."""

    message_id: str
    state: State | None
    removed: bool
    revoked: bool


def cancel_message(
    client: redis.Redis,
    queue_names: Iterable[str],
    message_id: str,
    *,
    mode: AbortMode = "soft",
    max_age_ms: Callable[[str], int],
    batches: Batches,
    by_message_id: bool = True,
) -> Cancelled:
    """Stop one message (by Redis id, or message id unless ``by_message_id`` is False) from
    running, or from running on.

    It is revoked (``mode`` says how a running copy stops) until an hour past its actor's
    ``max_age_ms``: any copy in flight, a retry or one a worker fetched meanwhile, never starts.
    A ready, delayed or retrying one is also taken out of Redis, unless a consumer fetched it
    meanwhile (``removed`` is then False: the revocation stops it). A dead letter is left alone
    (``Operator.delete_dead`` and ``fintask dlq purge`` are for those); a payload that is not
    a message has no message id to revoke, only its removal. A batch member removed is
    recorded in ``batches`` as cancelled. Finding it by message id costs what
    ``stored.locate`` says.
    """
    require_redis_broker("cancelling a message")
    found = locate(client, list(queue_names), message_id, by_message_id=by_message_id)
    if found is None:
        return Cancelled(message_id, None, removed=False, revoked=False)
    stored = found.stored
    if found.state == "dead":
        return Cancelled(stored.message_id, "dead", removed=False, revoked=False)
    revoked = _revoke(client, [stored], mode=mode, max_age_ms=max_age_ms)
    removed = found.state != "held" and bool(_remove(client, [stored], batches))
    return Cancelled(stored.message_id, found.state, removed=removed, revoked=revoked)


def cancel_matching(
    client: redis.Redis,
    queue_names: Iterable[str],
    *,
    actor_name: str,
    arguments: Mapping[str, object],
    dry_run: bool,
    mode: AbortMode = "soft",
    max_age_ms: Callable[[str], int],
    batches: Batches,
) -> int:
    """Cancel, as ``cancel_message`` does, every ready, delayed, retrying and held message of
    ``actor_name`` whose keyword arguments include ``arguments`` (equal as JSON decodes them);
    how many were found. ``dry_run`` only counts.

    Lists are read from the tail, ``SCAN_SLICE`` entries a round trip: consumers pop the head,
    so no entry is skipped, and one read twice (producers push the tail) counts once. The delay
    queue is read before the queue, and held messages last, the way a message moves; one that
    moves against the reading (a worker returning what it prefetched) can still be missed, and
    a second run finds it. A retry waiting beside its running original counts twice.
    """
    require_redis_broker("cancelling an actor's messages")

    def wanted(stored: Stored) -> bool:
        return stored.matches(actor_name, arguments)

    count = 0
    for queue_name in queue_names:
        for place in ("delay", "queue"):
            count += _cancel_listed(
                client,
                queue_name,
                place,
                wanted,
                dry_run=dry_run,
                mode=mode,
                max_age_ms=max_age_ms,
                batches=batches,
            )
        holding = [found.stored for found in held(client, queue_name) if wanted(found.stored)]
        if not dry_run:
            _revoke(client, holding, mode=mode, max_age_ms=max_age_ms)
        count += len(holding)
    return count


def _cancel_listed(
    client: redis.Redis,
    queue_name: str,
    place: Place,
    wanted: Callable[[Stored], bool],
    *,
    dry_run: bool,
    mode: AbortMode,
    max_age_ms: Callable[[str], int],
    batches: Batches,
) -> int:
    """Cancel the wanted messages of one list, read from its tail; how many were found.

    Taking out entries already read moves the unread ones nearer the tail: the next slice
    starts that much sooner.
    """
    count, offset = 0, 0
    seen: set[bytes] = set()
    while True:
        entries = read_slice(client, queue_name, place, offset, SCAN_SLICE, True)
        matched = [
            stored
            for stored in entries
            if stored is not None and as_bytes(stored.redis_id) not in seen and wanted(stored)
        ]
        seen.update(as_bytes(stored.redis_id) for stored in matched)
        removed = 0
        if matched and not dry_run:
            _revoke(client, matched, mode=mode, max_age_ms=max_age_ms)
            removed = len(_remove(client, matched, batches))
        count += len(matched)
        if len(entries) < SCAN_SLICE:
            return count
        offset += len(entries) - removed


def _remove(client: redis.Redis, messages: Sequence[Stored], batches: Batches) -> list[Stored]:
    """Take listed messages out of their list and their payloads out of Redis; those that were
    (the batch members among them recorded as cancelled: no worker will see them).

    One script a message, so each is atomic and other clients run between them: each LREM
    reads the whole list.
    """
    script = client.register_script(_REMOVE)
    pipe = client.pipeline(transaction=False)
    for stored in messages:
        keys = [
            list_key(stored.queue_name, stored.place),
            hash_key(stored.queue_name, stored.place),
        ]
        script(keys=keys, args=[stored.redis_id], client=pipe)
    removed = [stored for stored, done in zip(messages, pipe.execute(), strict=True) if done]
    settle_taken_out(batches, (stored.message for stored in removed), how="message cancelled")
    return removed


def _revoke(
    client: redis.Redis,
    messages: Iterable[Stored],
    *,
    mode: AbortMode,
    max_age_ms: Callable[[str], int],
) -> bool:
    """Revoke the messages by message id until an hour past their ``max_age``; False when none
    has a message id."""
    expiries: dict[str, int] = {}
    for stored in messages:
        if stored.revocable:
            sent_at = stored.sent_at_ms or current_millis()
            expiry = sent_at + max_age_ms(stored.actor_name) + REVOKE_MARGIN_MS
            expiries[stored.message_id] = max(expiry, expiries.get(stored.message_id, 0))
    if expiries:
        revoke(client, expiries, mode=mode)
    return bool(expiries)
