"""Sending due ticks: claim each, enqueue its message, and keep it while Redis cannot answer.

A tick's message is built once, when the tick comes due, and kept until it is sent. Keeping
the message keeps its id, which is the claim's: after a claim that went through and a send that
did not (Redis went away between the two calls), the retry finds the claim its own
(``TickClaims.claim``) instead of losing the tick to itself.

While Redis or the broker is unreachable, due ticks wait here, oldest first, and the scheduler
tries them again every few seconds until each is sent or its job's ``max_age`` (Celery's
``expires``) has passed since it was first tried: the worker's age limit, which counts from the
message's creation, would drop it after that anyway. One unreachable call ends a pass: the
ticks behind it would only fail the same way, each after its own connection timeout.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq import Message
from dramatiq.errors import BrokerConnectionError

from app.middleware import RedisUnavailable
from app.middleware.ticks import TICK_ARGUMENT, tick_id
from scheduler.claims import TickClaims
from scheduler.jobs import Job

logger = logging.getLogger(__name__)

#: What an outage raises: Redis (claims, the Redis broker, a middleware asking Redis) or another
#: broker losing its connection. Anything else refuses the message for good.
UNREACHABLE = (redis.RedisError, RedisUnavailable, BrokerConnectionError)


class TickOutcome(enum.StrEnum):
    SENT = "sent"  # this scheduler sent the tick's message
    TAKEN = "taken"  # another scheduler had claimed the tick: nothing sent
    PENDING = "pending"  # Redis or the broker is unreachable: kept, tried again
    EXPIRED = "expired"  # still unsent when its job's max_age ran out: dropped (logged)
    FAILED = "failed"  # the message was refused for another reason: dropped (logged)


@dataclass(frozen=True)
class Sent:
    """What one pass did with one due tick of one job."""

    job: str
    tick: dt.datetime
    outcome: TickOutcome


@dataclass
class _Due:
    job: Job
    tick: dt.datetime
    message: Message[Any]
    due_at: dt.datetime
    expires_at: dt.datetime
    unsent_logged: bool = False


class TickDelivery:
    """The due ticks of one scheduler, sent once each across all schedulers, kept in an outage.

    Parameters:
      claims: the Redis claims that make a tick's first message its only one.
    """

    def __init__(self, *, claims: TickClaims) -> None:
        self.claims = claims
        self._due: list[_Due] = []

    def __len__(self) -> int:
        """How many due ticks are waiting to be sent."""
        return len(self._due)

    def add(self, job: Job, tick: dt.datetime, *, now: dt.datetime) -> None:
        """Queue ``tick`` of ``job``, due at ``now``, with the one message it will be sent as."""
        message = job.actor.message_with_options(kwargs={TICK_ARGUMENT: tick_id(tick)})
        max_age = dt.timedelta(milliseconds=job.actor.options["max_age"])
        self._due.append(_Due(job, tick, message, due_at=now, expires_at=now + max_age))

    def send(self, *, now: dt.datetime) -> list[Sent]:
        """Try every waiting tick, oldest first; keep those Redis or the broker could not take."""
        results: list[Sent] = []
        kept: list[_Due] = []
        unreachable: Exception | None = None
        for due in self._due:
            if now >= due.expires_at:
                _log_expired(due)
                outcome = TickOutcome.EXPIRED
            elif unreachable is not None:
                outcome = self._keep(due, unreachable)
            else:
                try:
                    outcome = self._send(due, now=now)
                except UNREACHABLE as error:
                    unreachable = error
                    outcome = self._keep(due, error)
                except Exception:
                    logger.exception("Tick %s of %s was NOT sent", tick_id(due.tick), due.job.name)
                    outcome = TickOutcome.FAILED
            if outcome is TickOutcome.PENDING:
                kept.append(due)
            results.append(Sent(due.job.name, due.tick, outcome))
        self._due = kept
        return results

    def _send(self, due: _Due, *, now: dt.datetime) -> TickOutcome:
        stamp, name, message_id = tick_id(due.tick), due.job.name, due.message.message_id
        if not self.claims.claim(name, stamp, message_id):
            logger.info("Tick %s of %s: already sent by another scheduler", stamp, name)
            return TickOutcome.TAKEN
        due.job.actor.broker.enqueue(due.message)
        if due.unsent_logged:
            late_s = (now - due.due_at).total_seconds()
            logger.info(
                "Tick %s of %s: sent as message %s, %.0f s late (Redis answers again)",
                stamp,
                name,
                message_id,
                late_s,
            )
        else:
            logger.info("Tick %s of %s: sent as message %s", stamp, name, message_id)
        return TickOutcome.SENT

    @staticmethod
    def _keep(due: _Due, error: Exception) -> TickOutcome:
        """Keep ``due`` for the next pass; say so once per tick, in one line."""
        if not due.unsent_logged:
            due.unsent_logged = True
            logger.warning(
                "Tick %s of %s not sent yet: %s: %s; kept and tried again until %s (max_age)",
                tick_id(due.tick),
                due.job.name,
                type(error).__name__,
                error,
                f"{due.expires_at.astimezone(dt.UTC):%H:%M:%S} UTC",
            )
        return TickOutcome.PENDING


def _log_expired(due: _Due) -> None:
    logger.error(
        "Tick %s of %s was NOT sent: Redis or the broker stayed unreachable past its max_age "
        "(%d ms); dropped",
        tick_id(due.tick),
        due.job.name,
        due.job.actor.options["max_age"],
    )
