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

A run-now request goes the same way, as a tick of its own (``RunRequest.tick``): claimed, so it
is sent once however many schedulers hold it, and kept through an outage like a due tick.
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
from app.schedule_control import RunRequest
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
    """What one pass did with one due tick of one job (or one run-now request: ``tick`` is
    when it was requested)."""

    job: str
    tick: dt.datetime
    outcome: TickOutcome
    request_id: str | None = None


@dataclass
class _Due:
    job: Job
    tick: dt.datetime
    message: Message[Any]
    due_at: dt.datetime
    expires_at: dt.datetime
    #: The run-now request this is; None for a scheduled tick.
    request: RunRequest | None = None
    unsent_logged: bool = False

    @property
    def stamp(self) -> str:
        """The tick its message carries and its claim names."""
        return str(self.message.kwargs[TICK_ARGUMENT])

    @property
    def what(self) -> str:
        """The tick as log lines name it, at the start of a sentence."""
        if self.request:
            request_id = self.request.request_id
            return f"Run-now request {request_id} of {self.job.name} (tick {self.stamp})"
        return f"Tick {self.stamp} of {self.job.name}"


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
        self._add(job, tick, tick_id(tick), now=now)

    def add_request(self, job: Job, request: RunRequest, *, now: dt.datetime) -> None:
        """Queue a run-now ``request`` of ``job``, taken at ``now``, like a due tick."""
        self._add(job, request.requested_at, request.tick, now=now, request=request)

    def _add(
        self,
        job: Job,
        tick: dt.datetime,
        stamp: str,
        *,
        now: dt.datetime,
        request: RunRequest | None = None,
    ) -> None:
        message = job.actor.message_with_options(kwargs={TICK_ARGUMENT: stamp})
        max_age = dt.timedelta(milliseconds=job.actor.options["max_age"])
        self._due.append(_Due(job, tick, message, now, now + max_age, request=request))

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
                    logger.exception("%s was NOT sent", due.what)
                    outcome = TickOutcome.FAILED
            if outcome is TickOutcome.PENDING:
                kept.append(due)
            request_id = due.request.request_id if due.request else None
            results.append(Sent(due.job.name, due.tick, outcome, request_id))
        self._due = kept
        return results

    def _send(self, due: _Due, *, now: dt.datetime) -> TickOutcome:
        message_id = due.message.message_id
        scheduled = due.request is None
        if not self.claims.claim(due.job.name, due.stamp, message_id, scheduled=scheduled):
            logger.info("%s: already sent by another scheduler", due.what)
            return TickOutcome.TAKEN
        due.job.actor.broker.enqueue(due.message)
        if due.unsent_logged:
            late_s = (now - due.due_at).total_seconds()
            logger.info(
                "%s: sent as message %s, %.0f s late (Redis answers again)",
                due.what,
                message_id,
                late_s,
            )
        else:
            logger.info("%s: sent as message %s", due.what, message_id)
        return TickOutcome.SENT

    @staticmethod
    def _keep(due: _Due, error: Exception) -> TickOutcome:
        """Keep ``due`` for the next pass; say so once per tick, in one line."""
        if not due.unsent_logged:
            due.unsent_logged = True
            logger.warning(
                "%s not sent yet: %s: %s; kept and tried again until %s (max_age)",
                due.what,
                type(error).__name__,
                error,
                f"{due.expires_at.astimezone(dt.UTC):%H:%M:%S} UTC",
            )
        return TickOutcome.PENDING


def _log_expired(due: _Due) -> None:
    logger.error(
        "%s was NOT sent: Redis or the broker stayed unreachable past its max_age (%d ms); dropped",
        due.what,
        due.job.actor.options["max_age"],
    )
