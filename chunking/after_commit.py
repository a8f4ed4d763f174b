"""Sending messages only once the transaction that justifies them has committed.

A chunk's next message, and the per-item messages it produces, must not exist before the
cursor and the items' effects are committed: a message about uncommitted state is a race,
and one sent for a transaction that then rolls back is a lie. The library never sends
directly; it hands messages to a :class:`SendAfterCommit` *inside* the transaction.

The default, :class:`EnqueueAfterCommit`, enqueues right after the session's commit returns.
A crash (or a Redis outage) between the commit and the enqueue then loses those messages:
the run stalls (``resume_run`` re-sends its chunk) and that chunk's item messages are gone.
A host with a transactional outbox plugs it in instead: a callable that writes each message
as an outbox row in the same session, for its relay to send after commit, e.g.::

    def outbox_sender(session, messages, *, delay_ms=None):
        for message in messages:
            session.add(OutboxMessage(queue_name=message.queue_name,
                                      actor_name=message.actor_name,
                                      message=message.asdict(), delay_ms=delay_ms))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from dramatiq import Broker, Message
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from chunking.bulk import enqueue_many

_Pending = list[tuple[list[Message[Any]], int | None]]


class SendAfterCommit(Protocol):
    """Arrange for ``messages`` to be enqueued once ``session``'s transaction commits.

    Called inside that transaction; must send nothing if it rolls back.
    """

    def __call__(
        self, session: Session, messages: Sequence[Message[Any]], *, delay_ms: int | None = None
    ) -> None: ...


class EnqueueAfterCommit:
    """Enqueue on ``broker`` (in bulk) right after the session's outermost commit.

    Messages registered inside a savepoint are sent with the outer commit, even if that
    savepoint rolled back: register them outside savepoints.
    """

    def __init__(self, *, broker: Broker) -> None:
        self.broker = broker
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self._key = f"chunking.after_commit.{id(self)}"

    def __call__(
        self, session: Session, messages: Sequence[Message[Any]], *, delay_ms: int | None = None
    ) -> None:
        if messages:
            self._pending(session).append((list(messages), delay_ms))

    def _pending(self, session: Session) -> _Pending:
        pending: _Pending | None = session.info.get(self._key)
        if pending is None:
            pending = session.info[self._key] = []
            event.listen(session, "after_commit", self._after_commit)
            event.listen(session, "after_transaction_end", self._after_transaction_end)
        return pending

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a savepoint was released; the transaction itself has not committed
        pending = session.info[self._key]
        batches = list(pending)
        pending.clear()
        for messages, delay_ms in batches:
            try:
                enqueue_many(self.broker, messages, delay_ms=delay_ms)
            except Exception:
                self.logger.exception(
                    "Committed, but could not enqueue %d message(s) (first: %s).",
                    len(messages),
                    messages[0],
                )
                raise

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        # The outermost transaction ended without a commit (rollback or close): drop its sends.
        if transaction.parent is None:
            session.info[self._key].clear()
