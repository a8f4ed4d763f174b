"""After-commit enqueue through a transactional outbox.

A flow that writes rows and then starts work writes the message into the ``outbox`` table in
the same transaction. Nothing leaves before the commit (no message about a row that does not
exist yet) and nothing is lost after it (no row whose message was lost): right after the
commit the message is sent and marked sent; if the process dies in between, the periodic relay
finds the unsent row and sends it. Delivery is therefore at least once, which the consumers'
natural keys make harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from sqlalchemy import ColumnElement, Engine, select, update
from sqlalchemy.orm import Session

from app.db.models import OutboxMessage, utcnow
from app.middleware.guardrails import MessageRejected, argument_problems
from app.middleware.locks import AlreadyPending
from chunking.after_commit import AfterCommit
from chunking.bulk import enqueue_many

logger = logging.getLogger(__name__)

#: An unsent row younger than this is still the committing process's to send.
RELAY_GRACE = dt.timedelta(seconds=30)
RELAY_BATCH = 500


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

    The arguments are checked now, so a bad one fails the caller's transaction, not the relay.
    """
    for name, problem in argument_problems((), kwargs):
        raise MessageRejected(f"actor {actor.actor_name!r}: argument {name!r} {problem}")
    message_id = str(uuid.uuid4())
    _record(session, message_id, actor.actor_name, actor.queue_name, kwargs, delay_ms)
    return message_id


def outbox_sender(
    session: Session, messages: Sequence[dramatiq.Message[Any]], *, delay_ms: int | None = None
) -> None:
    """Write prepared messages to the outbox (chunking's ``SendAfterCommit``).

    The chunk's next message and its per-item messages then share the chunk's transaction:
    a worker that dies after the commit leaves them for the relay instead of stalling the run.
    """
    for message in messages:
        if message.args:
            raise MessageRejected(
                f"actor {message.actor_name!r}: outbox messages take keyword arguments only"
            )
        _record(
            session,
            message.message_id,
            message.actor_name,
            message.queue_name,
            message.kwargs,
            delay_ms,
        )


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
    # A rolled-back SAVEPOINT leaves ids of rows that no longer exist: the relay skips them.
    _SEND_AFTER_COMMIT.add(session, row.id)


def _send_committed(session: Session, ids: list[int]) -> None:
    try:
        relay(session.get_bind(), ids=ids)  # type: ignore[arg-type]
    except Exception:
        # The rows are committed: the periodic relay sends them later.
        logger.exception("Sending %d outbox message(s) after commit failed", len(ids))


_SEND_AFTER_COMMIT: AfterCommit[int] = AfterCommit(flush=_send_committed)


def relay(engine: Engine, *, ids: Sequence[int] | None = None) -> int:
    """Send unsent outbox messages (``ids``, or all older than the grace) and mark them sent.

    Messages leave ``RELAY_BATCH`` at a time, each batch in one Redis round trip per delay
    (``chunking.enqueue_many``): a chunk that notified 500 users costs one pipelined call.
    """
    if ids is None:
        sent = 0
        while True:
            batch = _relay_batch(engine, OutboxMessage.created_at < utcnow() - RELAY_GRACE)
            sent += batch
            if batch < RELAY_BATCH:
                return sent
    return sum(
        _relay_batch(engine, OutboxMessage.id.in_(ids[start : start + RELAY_BATCH]))
        for start in range(0, len(ids), RELAY_BATCH)
    )


def _relay_batch(engine: Engine, which: ColumnElement[bool]) -> int:
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), which)
        .order_by(OutboxMessage.id)
        .limit(RELAY_BATCH)
        .with_for_update(skip_locked=True)
    )
    broker = dramatiq.get_broker()
    with Session(engine) as session, session.begin():
        rows = session.scalars(query).all()
        by_delay: dict[int | None, list[dramatiq.Message[Any]]] = {}
        for row in rows:
            by_delay.setdefault(row.delay_ms, []).append(_message(broker, row))
        for delay_ms, messages in by_delay.items():
            # A message refused as already pending (unique_key) is done as far as its row
            # goes: the pending message does the work.
            enqueue_many(broker, messages, delay_ms=delay_ms, skip=(AlreadyPending,))
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([row.id for row in rows]))
            .values(sent_at=utcnow())
        )
    return len(rows)


def _message(broker: dramatiq.Broker, row: OutboxMessage) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        # A row of the release before the queue was stored finds it in this process's registry.
        queue_name=row.queue_name or broker.get_actor(row.actor_name).queue_name,
        actor_name=row.actor_name,
        args=(),
        kwargs=row.kwargs,
        options={},
        message_id=row.message_id,
        message_timestamp=int(row.created_at.timestamp() * 1000),
    )
