"""The middleware that records each batch member's outcome, once, before its message is settled.

A delivery of a member ends in one of these ways, and only a final one is recorded:

- it succeeded: recorded as a success when it is acknowledged;
- it failed and will be retried (``Retries`` enqueued it again), or it was deferred (a rate
  limit, a lock, a paused queue: a middleware or the actor re-sent it and raised
  ``SkipMessage``): nothing is recorded, the next delivery decides;
- it was dead-lettered (out of retries, a ``throws`` exception, a middleware that failed it,
  such as the guardrails refusing its schema, or the age limit): recorded as failed when it is
  rejected, as ``expired`` if it was older than its ``max_age``, else ``dead_lettered``, with
  the reason of the exception it carries;
- it was revoked by an operator (``revoked`` says so), before or while it ran: ``cancelled``;
- its batch was cancelled: it is skipped before its actor runs (the cancel counted it).

Recording happens in ``before_ack`` and ``before_nack``, so a worker killed before it records
leaves the message unacknowledged: it is redelivered and recorded then, and one killed after
it records counts once all the same (the batch's bit). A Redis that cannot be reached raises
``BatchStoreUnavailable``, which the worker takes for a lost connection: it tries the
acknowledgement again every 5 s rather than acknowledge an outcome never counted.

Place it before ``Retries`` in the stack, so that its ``after_process_message`` (run in reverse
order) sees whether ``Retries`` gave the message up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis
from dramatiq.logging import get_logger
from dramatiq.middleware import SkipMessage

from chunking.batch_progress import FailureKind
from chunking.batches import Batches, BatchStoreUnavailable, member_of

#: The longest reason kept for a failed member by default.
MAX_REASON_CHARS = 1_000


def describe_failure(exception: BaseException | None) -> str:
    """A failure's reason: the exception's class and text, capped (the default ``describe``)."""
    if exception is None:
        return "failed"
    return f"{type(exception).__name__}: {exception}"[:MAX_REASON_CHARS]


class BatchMembers(Middleware):
    """Records the outcome of every batch member's message (see the module's docstring).

    Parameters:
      batches: where the batches are kept.
      revoked: whether an operator revoked a message id (an unrevokable host: never).
      describe: a failed member's reason from its exception; a host that keeps personal data
        out of Redis redacts it here.
    """

    def __init__(
        self,
        *,
        batches: Batches,
        revoked: Callable[[str], bool] | None = None,
        describe: Callable[[BaseException | None], str] = describe_failure,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.batches = batches
        self.revoked = revoked or (lambda message_id: False)
        self.describe = describe
        # The outcome a worker thread noted for the delivery it is about to acknowledge.
        self._noted = threading.local()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        member = member_of(message)
        if member is None:
            return
        try:
            cancelled = self.batches.is_cancelled(member[0])
        except redis.RedisError as error:
            raise BatchStoreUnavailable(f"cannot read batch {member[0]}: {error}") from error
        if cancelled:
            self.logger.info(
                "Message %r: its batch %s was cancelled.", message.message_id, member[0]
            )
            raise SkipMessage(f"batch {member[0]} was cancelled")

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        if message.failed or member_of(message) is None:
            return
        if exception is None:
            self._note(message, None)
        elif self.revoked(message.message_id):
            self._note(message, FailureKind.CANCELLED)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if not message.failed and member_of(message) and self.revoked(message.message_id):
            self._note(message, FailureKind.CANCELLED)

    def before_ack(self, broker: Broker, message: MessageProxy) -> None:
        noted = getattr(self._noted, "outcome", None)
        self._noted.outcome = None
        if noted is None or noted[0] != message.message_id:
            return
        kind = noted[1]
        reason = "revoked by an operator" if kind is FailureKind.CANCELLED else ""
        self._settle(message, kind, reason)

    def before_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._noted.outcome = None
        if member_of(message) is None:
            return
        kind = FailureKind.EXPIRED if _expired(broker, message) else FailureKind.DEAD_LETTERED
        self._settle(message, kind, self.describe(message._exception))

    def _note(self, message: MessageProxy, kind: FailureKind | None) -> None:
        self._noted.outcome = (message.message_id, kind)

    def _settle(self, message: MessageProxy, kind: FailureKind | None, reason: str) -> None:
        member = member_of(message)
        if member is None:
            return
        batch_id, ordinal = member
        try:
            self.batches.settle(
                batch_id, ordinal, failed=kind, reason=reason, message_id=message.message_id
            )
        except redis.RedisError as error:
            raise BatchStoreUnavailable(
                f"cannot record member {ordinal} of batch {batch_id}: {error}"
            ) from error


def _expired(broker: Broker, message: MessageProxy) -> bool:
    """Whether ``message`` is past its ``max_age``, as Dramatiq's ``AgeLimit`` reads it."""
    actor = broker.actors.get(message.actor_name)
    max_age = message.options.get("max_age") or (actor.options.get("max_age") if actor else None)
    return max_age is not None and current_millis() - message.message_timestamp >= max_age
