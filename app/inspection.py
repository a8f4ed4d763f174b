"""Looking into the broker and the work in flight: what Celery's inspect, purge and Flower gave.

It reads and moves what Dramatiq's Redis broker keeps per queue (``chunking.redis_keys``): the
ready list and its messages, the delayed ones, and the dead letters with their messages.

Every function takes the queue names to look at, which callers read from the broker's declared
queues: listings and metric labels stay bounded by the code, never by what is in Redis. The
``fintask`` CLI and the web process's ``/metrics`` both read through here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis
from dramatiq.common import current_millis
from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.orm import Session

from app.broker_features import rabbitmq_broker, require_redis_broker
from app.db.models import Job, JobStatus
from app.dead_letters import reason_key
from app.middleware.fleet import SEEN_KEY, live_key
from app.middleware.metrics import CONSUMERS_KEY, DUE_AT_OPTION, due_at_ms, heartbeats_key
from app.queues import queue_depths
from app.redaction import redact, redact_data
from app.redis_client import as_text
from app.timestamps import rfc3339
from chunking.models import ChunkRun
from chunking.redis_keys import (
    NAMESPACE,
    dead_letters_key,
    dead_messages_key,
    messages_key,
    queue_key,
)

# KEYS: the ready list, its messages hash. The oldest ready message's data, or nil.
_HEAD = """
local id = redis.call("LINDEX", KEYS[1], 0)
if not id then return false end
return redis.call("HGET", KEYS[2], id)
"""

# KEYS: dead letters (sorted set), their messages, the ready list, its messages, the reason.
# ARGV: the Redis id, the data as read, the data to enqueue. Moves the message only if its data
# is unchanged (compare-and-move): 1 moved, 0 gone or changed, -1 its id is already queued
# (never overwrite a queued message, nor list its id twice: it would run twice).
_REQUEUE = """
if redis.call("HGET", KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call("HEXISTS", KEYS[4], ARGV[1]) == 1 then return -1 end
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("HDEL", KEYS[2], ARGV[1])
redis.call("DEL", KEYS[5])
redis.call("HSET", KEYS[4], ARGV[1], ARGV[3])
redis.call("RPUSH", KEYS[3], ARGV[1])
return 1
"""

#: Options that belong to a message's failed life and are dropped when it is requeued.
_FAILED_LIFE_OPTIONS = ("retries", "eta", "traceback", "requeue_timestamp", DUE_AT_OPTION)


@dataclass(frozen=True)
class QueueStats:
    """One queue: messages by state, and how long the oldest ready one has waited."""

    queue_name: str
    ready: int
    delayed: int
    dead: int
    #: None on RabbitMQ, which shows no message before a consumer takes it.
    oldest_age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_name": self.queue_name,
            "ready": self.ready,
            "delayed": self.delayed,
            "dead": self.dead,
            "oldest_age_s": None if self.oldest_age_s is None else round(self.oldest_age_s, 3),
        }


def queue_stats(
    client: redis.Redis, queue_names: Iterable[str], *, now_ms: int | None = None
) -> list[QueueStats]:
    """Depth by state and the age of the oldest ready message (0 when none) of each queue.

    On RabbitMQ the depths are RabbitMQ's and the age is None: it shows no message it has not
    handed to a consumer.
    """
    names = list(queue_names)
    if rabbitmq_broker() is not None:
        return [
            QueueStats(d.queue_name, d.ready, d.delayed, d.dead, None)
            for d in queue_depths(client, names)
        ]
    now_ms = current_millis() if now_ms is None else now_ms
    head = client.register_script(_HEAD)
    pipe = client.pipeline(transaction=False)
    for name in names:
        head(keys=[queue_key(name), messages_key(name)], client=pipe)
    heads = pipe.execute()
    return [
        QueueStats(
            depth.queue_name,
            depth.ready,
            depth.delayed,
            depth.dead,
            _age_s(_decode(data), now_ms),
        )
        for depth, data in zip(queue_depths(client, names), heads, strict=True)
    ]


def consumers_alive(
    client: redis.Redis, *, heartbeat_timeout_ms: int, now_ms: int | None = None
) -> int:
    """Worker processes whose broker heartbeat is younger than ``heartbeat_timeout_ms``.

    Producers heartbeat too, so only ids that ``ConsumerRegistry`` recorded count. RabbitMQ's
    consumers have no such heartbeat: there the workers with a live record count.
    """
    if rabbitmq_broker() is not None:
        seen = cast(list[bytes], client.zrange(SEEN_KEY, 0, -1))
        pipe = client.pipeline(transaction=False)
        for worker_id in seen:
            pipe.exists(live_key(as_text(worker_id)))
        return sum(int(n) for n in pipe.execute())
    now_ms = current_millis() if now_ms is None else now_ms
    ids = client.zrangebyscore(heartbeats_key(NAMESPACE), now_ms - heartbeat_timeout_ms, "+inf")
    if not ids:
        return 0
    registered = client.hmget(CONSUMERS_KEY, ids)  # type: ignore[arg-type]
    return sum(entry is not None for entry in registered)


@dataclass(frozen=True)
class DeadLetter:
    """A message that ran out of retries (or was rejected), as Redis holds it, its text
    redacted for whoever reads it (``app.redaction``).

    Redis keys it by ``redis_id``, the ``redis_message_id`` option the broker gives each enqueue
    (a retry gets a new one); people know it by ``message_id``, the id logs and Sentry show.
    ``reason`` says why it died (None for one dead-lettered by a broker that keeps no reason);
    ``payload`` is the stored text when it is not a message at all. Reasons are stored redacted
    (``app.dead_letters.kept_reason``), but not those an earlier release kept, nor the
    traceback Dramatiq's ``Retries`` puts in the message's options, nor its arguments: each is
    redacted as it is read.
    """

    queue_name: str
    redis_id: str
    dead_at_ms: int
    message: dict[str, Any]
    reason: str | None = None
    payload: str | None = None

    @property
    def message_id(self) -> str:
        return str(self.message.get("message_id", self.redis_id))

    @property
    def actor_name(self) -> str:
        return str(self.message.get("actor_name", "?"))

    @property
    def retries(self) -> int:
        return int(self.message.get("options", {}).get("retries", 0))

    def as_dict(self, *, with_message: bool = False) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "queue_name": self.queue_name,
            "message_id": self.message_id,
            "redis_message_id": self.redis_id,
            "actor_name": self.actor_name,
            "retries": self.retries,
            "dead_at": rfc3339(self.dead_at_ms),
            "sent_at": rfc3339(self.message.get("message_timestamp")),
            "reason": self.reason,
        }
        if not with_message:
            return summary
        if self.payload is not None:
            return {**summary, "payload": self.payload}
        return {**summary, "message": self.message}


def list_dead_letters(
    client: redis.Redis, queue_names: Iterable[str], *, limit: int = 100
) -> list[DeadLetter]:
    """The ``limit`` oldest dead letters of the queues, oldest first."""
    require_redis_broker("the dead-letter list")
    names = list(queue_names)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zrange(dead_letters_key(name), 0, limit - 1, withscores=True)
    found = [
        (score, name, as_text(redis_id))
        for name, members in zip(names, pipe.execute(), strict=True)
        for redis_id, score in members
    ]
    oldest = sorted(found)[:limit]
    pipe = client.pipeline(transaction=False)
    for _, name, redis_id in oldest:
        pipe.hget(dead_messages_key(name), redis_id)
        pipe.get(reason_key(name, redis_id))
    answers = pipe.execute()
    return [
        _dead_letter(name, redis_id, score, answers[2 * i], answers[2 * i + 1])
        for i, (score, name, redis_id) in enumerate(oldest)
        if answers[2 * i] is not None
    ]


def find_dead_letter(
    client: redis.Redis, queue_names: Iterable[str], message_id: str, *, by_message_id: bool = True
) -> DeadLetter | None:
    """The dead letter with this message id (or Redis id) in whichever queue holds it.

    A Redis id is one lookup per queue; a message id means reading the dead letters of each
    queue, which Dramatiq keeps for seven days at most: callers holding a Redis id (a page's
    selected rows) pass ``by_message_id=False`` and skip that read.
    """
    require_redis_broker("the dead-letter list")
    names = list(queue_names)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zscore(dead_letters_key(name), message_id)
        pipe.hget(dead_messages_key(name), message_id)
        pipe.get(reason_key(name, message_id))
    answers = pipe.execute()
    for i, name in enumerate(names):
        score, data, reason = answers[3 * i : 3 * i + 3]
        if score is not None and data is not None:
            return _dead_letter(name, message_id, score, data, reason)
    if not by_message_id:
        return None
    for name in names:
        for redis_id, data in client.hscan_iter(dead_messages_key(name), count=500):
            message = _decode(data)
            if message is None or message.get("message_id") != message_id:
                continue
            score = client.zscore(dead_letters_key(name), redis_id)
            if score is not None:
                reason = client.get(reason_key(name, as_text(redis_id)))
                return _dead_letter(name, as_text(redis_id), score, data, reason)
    return None


def requeue_dead_letter(
    client: redis.Redis, queue_name: str, redis_id: str, *, now_ms: int | None = None
) -> str:
    """Move one dead letter (by its Redis id) back to its ready queue, atomically, afresh.

    Its retries start again from zero, and its ``message_timestamp`` becomes now: ``max_age``
    (Celery's ``expires``) counts from it, and a dead letter is usually older than its actor's
    ``max_age``, so ``AgeLimit`` would drop it unrun. The first send time is kept in the
    ``first_sent_at`` option. Returns ``"requeued"``, ``"missing"``, ``"already_queued"``, or
    ``"changed"`` when it was nacked again between the read and the move (run it again).
    """
    now_ms = current_millis() if now_ms is None else now_ms
    dead_messages = dead_messages_key(queue_name)
    data = client.hget(dead_messages, redis_id)
    if data is None:
        return "missing"
    fresh = _revived(_decode(data) or {}, queue_name, now_ms)
    keys = [
        dead_letters_key(queue_name),
        dead_messages,
        queue_key(queue_name),
        messages_key(queue_name),
        reason_key(queue_name, redis_id),
    ]
    moved = int(client.register_script(_REQUEUE)(keys=keys, args=[redis_id, data, fresh]))
    return {1: "requeued", -1: "already_queued"}.get(moved, "changed")


def requeue_all(
    client: redis.Redis, queue_names: Iterable[str], *, now_ms: int | None = None
) -> dict[str, int]:
    """Requeue every dead letter of the queues; count the outcomes."""
    require_redis_broker("the dead-letter list")
    outcomes = dict.fromkeys(("requeued", "missing", "already_queued", "changed"), 0)
    for name in queue_names:
        redis_ids = cast(list[bytes], client.zrange(dead_letters_key(name), 0, -1))
        for redis_id in redis_ids:
            outcome = requeue_dead_letter(client, name, as_text(redis_id), now_ms=now_ms)
            outcomes[outcome] += 1
    return outcomes


def delete_dead_letter(client: redis.Redis, queue_name: str, redis_id: str) -> bool:
    """Delete one dead letter (by its Redis id) and the reason it died, in one transaction;
    False if it was not there (requeued, deleted or expired meanwhile)."""
    pipe = client.pipeline(transaction=True)
    pipe.zrem(dead_letters_key(queue_name), redis_id)
    pipe.hdel(dead_messages_key(queue_name), redis_id)
    pipe.delete(reason_key(queue_name, redis_id))
    removed, _, _ = pipe.execute()
    return bool(removed)


def dead_letter_counts(client: redis.Redis, queue_names: Iterable[str]) -> dict[str, int]:
    """How many dead letters each queue holds."""
    require_redis_broker("the dead-letter list")
    names = list(queue_names)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zcard(dead_letters_key(name))
    return {name: int(count) for name, count in zip(names, pipe.execute(), strict=True)}


def purge_dead_letters(client: redis.Redis, queue_names: Iterable[str]) -> dict[str, int]:
    """Delete every dead letter of the queues in one transaction; how many each queue lost.

    Their reasons go too; the reason of one dead-lettered while this runs outlives it until its
    own expiry.
    """
    require_redis_broker("the dead-letter list")
    names = list(queue_names)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zrange(dead_letters_key(name), 0, -1)
    reasons = [
        reason_key(name, as_text(redis_id))
        for name, redis_ids in zip(names, pipe.execute(), strict=True)
        for redis_id in redis_ids
    ]
    pipe = client.pipeline(transaction=True)
    for name in names:
        pipe.zcard(dead_letters_key(name))
        pipe.delete(dead_letters_key(name), dead_messages_key(name))
    if reasons:
        pipe.delete(*reasons)
    answers = pipe.execute()
    return {name: int(answers[2 * i]) for i, name in enumerate(names)}


@dataclass(frozen=True)
class JobRow:
    """One asynchronous API job as an operator lists it, its error redacted (it comes from an
    exception, as the console's jobs page shows it)."""

    id: str
    kind: str
    account_id: int
    status: str
    progress: int
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in ("id", "kind", "account_id", "status", "progress")},
            "error": self.error,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }


def job_counts(session: Session) -> dict[str, int]:
    """Jobs per status, every known status present (zero when none)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    counts = {status.value: 0 for status in JobStatus}
    for status, count in rows:
        if status in counts:
            counts[status] = int(count)
    return counts


def list_jobs(session: Session, *, status: str | None = None, limit: int = 50) -> list[JobRow]:
    """The most recently updated jobs, optionally of one status."""
    query = select(Job).order_by(Job.updated_at.desc()).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    return [
        JobRow(
            j.id,
            j.kind,
            j.account_id,
            j.status,
            j.progress,
            None if j.error is None else redact(j.error),
            j.created_at,
            j.updated_at,
        )
        for j in session.scalars(query)
    ]


@dataclass(frozen=True)
class RunTotals:
    """Chunked runs of one name and status, and their items done and expected."""

    name: str
    status: str
    runs: int
    processed: int
    estimated_total: int


def run_totals(connection: Connection) -> list[RunTotals] | None:
    """Runs grouped by name and status, or None while the chunking runs table does not exist."""
    if not inspect(connection).has_table(ChunkRun.__tablename__):
        return None
    rows = connection.execute(
        select(
            ChunkRun.name,
            ChunkRun.status,
            func.count(),
            func.coalesce(func.sum(ChunkRun.processed), 0),
            func.coalesce(func.sum(ChunkRun.estimated_total), 0),
        ).group_by(ChunkRun.name, ChunkRun.status)
    )
    return [RunTotals(name, status, n, int(p or 0), int(e or 0)) for name, status, n, p, e in rows]


def _revived(message: dict[str, Any], queue_name: str, now_ms: int) -> str:
    options = {k: v for k, v in message.get("options", {}).items() if k not in _FAILED_LIFE_OPTIONS}
    options.setdefault("first_sent_at", message.get("message_timestamp"))
    options["dlq_requeues"] = int(options.get("dlq_requeues", 0)) + 1
    options[DUE_AT_OPTION] = now_ms
    revived = {**message, "queue_name": queue_name, "message_timestamp": now_ms, "options": options}
    return json.dumps(revived, separators=(",", ":"))


def _age_s(message: dict[str, Any] | None, now_ms: int) -> float:
    if not message or not isinstance(message.get("message_timestamp"), int):
        return 0.0
    due = due_at_ms(message["message_timestamp"], message.get("options", {}))
    return max(0, now_ms - due) / 1000


def _dead_letter(
    queue_name: str, redis_id: str, score: float, data: bytes | str, reason: bytes | str | None
) -> DeadLetter:
    message = _decode(data)
    return DeadLetter(
        queue_name,
        redis_id,
        int(score),
        redact_data(message or {}),
        reason=None if reason is None else redact(as_text(reason)),
        payload=None if message is not None else _readable(data),
    )


def _readable(data: bytes | str, chars: int = 2_000) -> str:
    """Stored data as text for a reader (escaped unless printable), redacted, then cut to
    ``chars`` (cut first, an address could lose the end that makes it one)."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        text = repr(data)
    if not text.isprintable():
        text = repr(text)
    text = redact(text)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _decode(data: bytes | str | None) -> dict[str, Any] | None:
    """A stored message as a dict; None when absent or not fintask's JSON."""
    if data is None:
        return None
    try:
        decoded = json.loads(data)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None
