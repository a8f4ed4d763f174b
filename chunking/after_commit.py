"""Sending messages only once the transaction that justifies them has committed.

A chunk's next message, and the per-item messages it produces, must not exist before the
cursor and the items' effects are committed: a message about uncommitted state is a race,
and one sent for a transaction that then rolls back is a lie. The library never sends
directly; it hands messages to a :class:`SendAfterCommit` *inside* the transaction.

The default, :class:`EnqueueAfterCommit`, enqueues right after the session's commit returns,
through :class:`AfterCommit`, the session hooks that hold anything until a commit.
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
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from dramatiq import Broker, Message
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from chunking.bulk import enqueue_many

T = TypeVar("T")

_Batch = tuple[list[Message[Any]], int | None]


class AfterCommit(Generic[T]):
    """Holds items added in a session's transaction until its outermost commit, then flushes them.

    ``flush(session, items)`` runs right after the outermost transaction commits (releasing a
    savepoint is not a commit), with the items in the order they were added; what it raises
    propagates from ``commit()``, the transaction being committed by then. Items of an outermost
    transaction that ends without a commit (a rollback, a close) are dropped. Items added inside
    a savepoint that then rolled back are kept and flushed with the outer commit.

    Parameters:
      flush: called with the session and the committed transaction's items.
    """

    def __init__(self, *, flush: Callable[[Session, list[T]], None]) -> None:
        self.flush = flush
        self._key = f"{__name__}.{type(self).__name__}.{id(self)}"

    def add(self, session: Session, item: T) -> None:
        """Hold ``item`` until ``session``'s transaction commits."""
        pending: list[T] | None = session.info.get(self._key)
        if pending is None:
            pending = session.info[self._key] = []
            event.listen(session, "after_commit", self._after_commit)
            event.listen(session, "after_transaction_end", self._after_transaction_end)
        pending.append(item)

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a savepoint was released; the transaction itself has not committed
        pending: list[T] = session.info[self._key]
        items = list(pending)
        pending.clear()
        if items:
            self.flush(session, items)

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        # The outermost transaction ended: after a commit its items are flushed already; after a
        # rollback or a close they must never be.
        if transaction.parent is None:
            session.info[self._key].clear()


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
        self._after_commit: AfterCommit[_Batch] = AfterCommit(flush=self._enqueue)

    def __call__(
        self, session: Session, messages: Sequence[Message[Any]], *, delay_ms: int | None = None
    ) -> None:
        if messages:
            self._after_commit.add(session, (list(messages), delay_ms))

    def _enqueue(self, session: Session, batches: list[_Batch]) -> None:
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
