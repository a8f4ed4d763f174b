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
from typing import Any

import dramatiq
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, SessionTransaction

from app.db.models import OutboxMessage, utcnow
from app.middleware.guardrails import MessageRejected, argument_problems

logger = logging.getLogger(__name__)

_PENDING_KEY = "fintask.outbox.pending"
_LISTENING_KEY = "fintask.outbox.listening"

#: An unsent row younger than this is still the committing process's to send.
RELAY_GRACE = dt.timedelta(seconds=30)
RELAY_BATCH = 500


def enqueue_after_commit(
    session: Session, actor_name: str, *, kwargs: dict[str, Any], delay_ms: int | None = None
) -> str:
    """Send ``actor_name(**kwargs)`` once ``session``'s transaction commits; return the id.

    Flows name the actor instead of importing it (pipelines never import ``actors/``). The
    arguments are checked now, so a bad one fails the caller's transaction, not the relay.
    """
    for name, problem in argument_problems((), kwargs):
        raise MessageRejected(f"actor {actor_name!r}: argument {name!r} {problem}")
    row = OutboxMessage(
        message_id=str(uuid.uuid4()), actor_name=actor_name, kwargs=kwargs, delay_ms=delay_ms
    )
    session.add(row)
    session.flush()
    if not session.info.get(_LISTENING_KEY):
        session.info[_LISTENING_KEY] = True
        event.listen(session, "after_commit", _send_pending)
        event.listen(session, "after_soft_rollback", _forget_pending)
    session.info.setdefault(_PENDING_KEY, []).append(row.id)
    return row.message_id


def _send_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT was released: the outer transaction has not committed yet
    ids = session.info.pop(_PENDING_KEY, [])
    if not ids:
        return
    try:
        relay(session.get_bind(), ids=ids)  # type: ignore[arg-type]
    except Exception:
        # The rows are committed: the periodic relay sends them later.
        logger.exception("Sending %d outbox message(s) after commit failed", len(ids))


def _forget_pending(session: Session, previous: SessionTransaction) -> None:
    # A rolled-back SAVEPOINT leaves ids of rows that no longer exist: the relay skips them.
    if not previous.nested:
        session.info.pop(_PENDING_KEY, None)


def relay(engine: Engine, *, ids: Sequence[int] | None = None) -> int:
    """Send unsent outbox messages (``ids``, or all older than the grace) and mark them sent."""
    query = select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    if ids is not None:
        query = query.where(OutboxMessage.id.in_(ids))
    else:
        query = query.where(OutboxMessage.created_at < utcnow() - RELAY_GRACE)
    query = query.order_by(OutboxMessage.id).limit(RELAY_BATCH).with_for_update(skip_locked=True)
    broker = dramatiq.get_broker()
    sent = 0
    with Session(engine) as session, session.begin():
        for row in session.scalars(query):
            actor = broker.get_actor(row.actor_name)
            message: dramatiq.Message[Any] = dramatiq.Message(
                queue_name=actor.queue_name,
                actor_name=row.actor_name,
                args=(),
                kwargs=row.kwargs,
                options={},
                message_id=row.message_id,
                message_timestamp=int(row.created_at.timestamp() * 1000),
            )
            broker.enqueue(message, delay=row.delay_ms)
            session.execute(
                update(OutboxMessage).where(OutboxMessage.id == row.id).values(sent_at=utcnow())
            )
            sent += 1
    return sent
