"""After-commit enqueue through a transactional outbox.

A flow that writes rows and then starts work writes the message into the ``outbox`` table in
the same transaction. Nothing leaves before the commit (no message about a row that does not
exist yet) and nothing is lost after it (no row whose message was lost): right after the
commit the message is sent and marked sent; if the process dies in between, the periodic relay
finds the unsent row and sends it. Delivery is therefore at least once, which the consumers'
natural keys make harmless. A row that can never be sent (an actor no longer declared, a
message the broker refuses) is marked failed with the reason, so that it holds up no other
row; ``fintask outbox`` lists such rows and ``/metrics`` counts them.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import MiddlewareError
from sqlalchemy import ColumnElement, Engine, func, select, update
from sqlalchemy.orm import Session

from app.db.models import OutboxMessage, utcnow
from app.declarations import current_broker
from app.middleware import RedisUnavailable
from app.middleware.guardrails import Guardrails, MessageRejected, validate_message
from app.middleware.locks import AlreadyPending
from app.settings import load_settings
from chunking.after_commit import AfterCommit
from chunking.bulk import enqueue_many

logger = logging.getLogger(__name__)

#: An unsent row younger than this is still the committing process's to send.
RELAY_GRACE = dt.timedelta(seconds=30)
RELAY_BATCH = 500
#: The longest reason stored on a failed row (the ``error`` column).
ERROR_CHARS = 500

#: Where a session keeps why its last after-commit send failed (``send_failure``).
_SEND_FAILURE = f"{__name__}.send_failure"


@dataclass(frozen=True)
class ActorRef:
    """An actor as a flow names it, without importing ``actors/``: its name and its queue.

    The queue travels with the outbox row, so sending it needs no actor registry: any process
    can relay any row. ``tests/unit/test_house_rules.py`` checks each ref against the actor.
    """

    actor_name: str
    queue_name: str


def enqueue_after_commit(
    session: Session, actor: ActorRef, *, kwargs: dict[str, Any], delay_ms: int | None = None
) -> str:
    """Send ``actor(**kwargs)`` once ``session``'s transaction commits; return the message id.

    The message is checked now, as the broker's guardrails will check it at send time (its
    arguments, personal data among them, and its encoded size), so a bad one fails the
    caller's transaction instead of being written and then refused by the relay: an e-mail
    address is never stored in the ``outbox`` table.
    """
    message_id = str(uuid.uuid4())
    message = _outgoing(actor.queue_name, actor.actor_name, kwargs, message_id, current_millis())
    check_sendable(message, delay_ms=delay_ms, broker=current_broker())
    _record(session, message_id, actor.actor_name, actor.queue_name, kwargs, delay_ms)
    return message_id


def outbox_sender(
    session: Session, messages: Sequence[dramatiq.Message[Any]], *, delay_ms: int | None = None
) -> None:
    """Write prepared messages to the outbox (chunking's ``SendAfterCommit``).

    The chunk's next message and its per-item messages then share the chunk's transaction:
    a worker that dies after the commit leaves them for the relay instead of stalling the run.
    Each is checked as ``enqueue_after_commit`` checks its message.
    """
    broker = current_broker()
    for message in messages:
        if message.args:
            raise MessageRejected(
                f"actor {message.actor_name!r}: outbox messages take keyword arguments only"
            )
        check_sendable(message, delay_ms=delay_ms, broker=broker)
        _record(
            session,
            message.message_id,
            message.actor_name,
            message.queue_name,
            message.kwargs,
            delay_ms,
        )


def check_sendable(
    message: dramatiq.Message[Any], *, delay_ms: int | None, broker: dramatiq.Broker
) -> None:
    """Raise ``MessageRejected`` unless ``broker``'s guardrails will let ``message`` leave.

    It is checked as the broker's ``before_enqueue`` sees it, with the options the broker adds
    (the Redis id and, when delayed, the ETA), so a message at the size limit is judged the
    same here and at send time.
    """
    options: dict[str, Any] = {"redis_message_id": str(uuid.uuid4())}
    if delay_ms is not None:
        options["eta"] = current_millis() + delay_ms
        message = message.copy(queue_name=dq_name(message.queue_name))
    validate_message(message.copy(options=options), max_bytes=message_limit(broker))


def message_limit(broker: dramatiq.Broker) -> int:
    """The largest encoded message ``broker``'s guardrails let through, in bytes.

    Read from the broker, which was built from ``MAX_MESSAGE_BYTES``: validating the settings
    again for each of a chunk's hundreds of messages would cost more than writing them.
    """
    for middleware in broker.middleware:
        if isinstance(middleware, Guardrails):
            return middleware.max_message_bytes
    return load_settings().max_message_bytes


def send_failure(session: Session) -> Exception | None:
    """Why the messages ``session`` last committed could not leave at once (``None`` if they did).

    The rows are committed either way, and the relay sends them once the broker answers: an
    endpoint uses this to tell its client that the work is recorded but waits.
    """
    failure: Exception | None = session.info.get(_SEND_FAILURE)
    return failure


def _record(
    session: Session,
    message_id: str,
    actor_name: str,
    queue_name: str,
    kwargs: dict[str, Any],
    delay_ms: int | None,
) -> None:
    row = OutboxMessage(
        message_id=message_id,
        actor_name=actor_name,
        queue_name=queue_name,
        kwargs=kwargs,
        delay_ms=delay_ms,
    )
    session.add(row)
    session.flush()
    session.info.pop(_SEND_FAILURE, None)
    # A rolled-back SAVEPOINT leaves ids of rows that no longer exist: the relay skips them.
    _SEND_AFTER_COMMIT.add(session, row.id)


def _send_committed(session: Session, ids: list[int]) -> None:
    try:
        relay(session.get_bind(), ids=ids)  # type: ignore[arg-type]
    except Exception as error:
        # The rows are committed: the periodic relay sends them later.
        logger.exception("Sending %d outbox message(s) after commit failed", len(ids))
        session.info[_SEND_FAILURE] = error


_SEND_AFTER_COMMIT: AfterCommit[int] = AfterCommit(flush=_send_committed)


def relay(engine: Engine, *, ids: Sequence[int] | None = None) -> int:
    """Send unsent outbox messages (``ids``, or all older than the grace); return how many went.

    Messages leave ``RELAY_BATCH`` at a time, each batch in one Redis round trip per delay
    (``chunking.enqueue_many``): a chunk that notified 500 users costs one script call. A
    row that can never be sent is marked failed with the reason, and the others still leave; a
    broker that cannot be reached fails the batch, whose rows wait for the next relay.
    """
    if ids is None:
        sent = 0
        while True:
            taken, batch_sent = _relay_batch(
                engine, OutboxMessage.created_at < utcnow() - RELAY_GRACE
            )
            sent += batch_sent
            if taken < RELAY_BATCH:
                return sent
    return sum(
        _relay_batch(engine, OutboxMessage.id.in_(ids[start : start + RELAY_BATCH]))[1]
        for start in range(0, len(ids), RELAY_BATCH)
    )


def _relay_batch(engine: Engine, which: ColumnElement[bool]) -> tuple[int, int]:
    """Send one batch of the rows ``which`` selects; how many rows it took, and how many went."""
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_(None), which)
        .order_by(OutboxMessage.id)
        .limit(RELAY_BATCH)
        .with_for_update(skip_locked=True)
    )
    broker = dramatiq.get_broker()
    with Session(engine) as session, session.begin():
        rows = session.scalars(query).all()
        refused: dict[int, str] = {}
        by_delay: dict[int | None, list[tuple[OutboxMessage, dramatiq.Message[Any]]]] = {}
        for row in rows:
            try:
                message = _message(broker, row)
            except MessageRejected as error:
                refused[row.id] = _reason(error)
                continue
            by_delay.setdefault(row.delay_ms, []).append((row, message))
        for delay_ms, pairs in by_delay.items():
            refused |= _send(broker, pairs, delay_ms)
        now = utcnow()
        for row in rows:
            if row.id in refused:
                row.failed_at, row.error = now, refused[row.id]
                logger.error(
                    "Outbox message %s of %r cannot be sent; marked failed: %s",
                    row.message_id,
                    row.actor_name,
                    row.error,
                )
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([row.id for row in rows if row.id not in refused]))
            .values(sent_at=now)
        )
    return len(rows), len(rows) - len(refused)


def _send(
    broker: dramatiq.Broker,
    pairs: list[tuple[OutboxMessage, dramatiq.Message[Any]]],
    delay_ms: int | None,
) -> dict[int, str]:
    """Send the messages; the rows whose message the broker refused, with the reason.

    On Redis they leave in bulk. A refusal no check foresaw stops a bulk send before any of it
    goes out, so the batch is then sent one message at a time to set the refused one apart, as
    it is on brokers that send one at a time anyway: no message leaves twice.
    """
    if isinstance(broker, RedisBroker):
        try:
            enqueue_many(broker, [m for _, m in pairs], delay_ms=delay_ms, skip=(AlreadyPending,))
            return {}
        except RedisUnavailable:
            raise
        except MiddlewareError:
            pass
    refused = {}
    for row, message in pairs:
        try:
            # A message refused as already pending (unique_key) is done as far as its row
            # goes: the pending message does the work.
            enqueue_many(broker, [message], delay_ms=delay_ms, skip=(AlreadyPending,))
        except RedisUnavailable:
            raise
        except MiddlewareError as error:
            refused[row.id] = _reason(error)
    return refused


def _message(broker: dramatiq.Broker, row: OutboxMessage) -> dramatiq.Message[Any]:
    """The row's message, checked as the broker's guardrails will check it."""
    # A row of the release before the queue was stored finds it in this process's registry.
    queue_name = row.queue_name
    if queue_name is None:
        actor = broker.actors.get(row.actor_name)
        if actor is None:
            raise MessageRejected(
                f"actor {row.actor_name!r}: the row names no queue and this process declares "
                "no such actor"
            )
        queue_name = actor.queue_name
    timestamp_ms = int(row.created_at.timestamp() * 1000)
    message = _outgoing(queue_name, row.actor_name, row.kwargs, row.message_id, timestamp_ms)
    check_sendable(message, delay_ms=row.delay_ms, broker=broker)
    return message


def _outgoing(
    queue_name: str, actor_name: str, kwargs: dict[str, Any], message_id: str, timestamp_ms: int
) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=actor_name,
        args=(),
        kwargs=kwargs,
        options={},
        message_id=message_id,
        message_timestamp=timestamp_ms,
    )


def _reason(error: Exception) -> str:
    """What a failed row keeps of a refusal: its kind and text (which name no values)."""
    return f"{type(error).__name__}: {error}"[:ERROR_CHARS]


@dataclass(frozen=True)
class OutboxCounts:
    """Rows not sent: those waiting for a send or the relay, and those that failed for good."""

    unsent: int
    failed: int


@dataclass(frozen=True)
class FailedMessage:
    """An outbox row that can never be sent, and why (its arguments are not shown)."""

    id: int
    message_id: str
    actor_name: str
    queue_name: str | None
    created_at: dt.datetime
    failed_at: dt.datetime | None
    error: str | None

    @classmethod
    def of(cls, row: OutboxMessage) -> FailedMessage:
        return cls(
            id=row.id,
            message_id=row.message_id,
            actor_name=row.actor_name,
            queue_name=row.queue_name,
            created_at=row.created_at,
            failed_at=row.failed_at,
            error=row.error,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "actor_name": self.actor_name,
            "queue_name": self.queue_name,
            "created_at": self.created_at.isoformat(),
            "failed_at": None if self.failed_at is None else self.failed_at.isoformat(),
            "error": self.error,
        }


def outbox_counts(session: Session) -> OutboxCounts:
    """How many rows wait to be sent, and how many failed (read through the unsent index)."""
    failed = OutboxMessage.failed_at.is_not(None)
    rows = session.execute(
        select(failed, func.count()).where(OutboxMessage.sent_at.is_(None)).group_by(failed)
    ).all()
    counts = {bool(is_failed): count for is_failed, count in rows}
    return OutboxCounts(unsent=counts.get(False, 0), failed=counts.get(True, 0))


def failed_messages(session: Session, *, limit: int = 100) -> list[FailedMessage]:
    """The rows that failed, most recent failure first."""
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_not(None))
        .order_by(OutboxMessage.failed_at.desc(), OutboxMessage.id.desc())
        .limit(limit)
    )
    return [FailedMessage.of(row) for row in rows]
