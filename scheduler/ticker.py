"""The scheduler loop: wake each minute, send each due job once per tick across all schedulers.

It replaces periodiq's ``Scheduler`` rather than subclassing it: that class sleeps until
``next_valid_date`` (wrong for some specs, see ``scheduler.cron``), reads the clock in the
process's local time, sends without asking anyone, and forgets ticks it slept through. This
loop keeps periodiq's cron specs and ``validate``, and adds:

- Once per tick. Each send is claimed in Redis first (``app.middleware.ticks``): a second scheduler
  (a rolling deploy, a dyno started by mistake) loses the claim and sends nothing.
- Missed ticks. At each wake-up the newest tick any scheduler sent for each job (kept in
  Redis) says what already ran; due ticks since then, other than the current minute, were
  missed: no scheduler ran (a deploy gap, a crash), or this one was paused alone. A job with
  ``catch_up`` gets the most recent one sent now; the others are logged with their times, never
  dropped silently.
- A clock and a wait that tests replace, so ticks can be driven without waiting for minutes.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from app.middleware.ticks import TICK_ARGUMENT, TickClaims, tick_id
from scheduler.cron import ONE_MINUTE, floor_minute, ticks_between
from scheduler.jobs import Job, Schedule

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
#: Waits up to the given seconds; returns True when the scheduler should stop.
Wait = Callable[[float], bool]

#: Missed ticks older than this are not looked for (it covers a monthly job).
LOOKBACK = dt.timedelta(days=35)
#: Wake this long after the minute starts, so a clock a little fast still sees the new minute.
WAKE_MARGIN_S = 0.05
#: How many missed tick times one log line lists.
LISTED_TICKS = 10


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Outcome(enum.StrEnum):
    SENT = "sent"  # this scheduler sent the tick's message
    TAKEN = "taken"  # another scheduler had claimed the tick: nothing sent
    FAILED = "failed"  # Redis or the broker failed: the tick is lost (logged with its error)


@dataclass(frozen=True)
class Sent:
    """What one wake-up did with one due tick of one job."""

    job: str
    tick: dt.datetime
    outcome: Outcome


class TickScheduler:
    """Runs a :class:`Schedule`; as many processes as you like may run one against one Redis."""

    def __init__(
        self,
        schedule: Schedule,
        *,
        claims: TickClaims,
        clock: Clock = utc_now,
        wait: Wait | None = None,
    ) -> None:
        self.schedule = schedule
        self.claims = claims
        self.clock = clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        #: Per job, the minute this scheduler last woke for.
        self._seen: dict[str, dt.datetime] = {}

    def wake(self) -> list[Sent]:
        """Send every job due at the current minute (and catch-up ticks); say what happened."""
        now = floor_minute(self.clock())
        newest = self._newest_sent()
        results = []
        for job in self.schedule:
            tick = self._tick_to_send(job, now, newest.get(job.name))
            self._seen[job.name] = now
            if tick is not None:
                results.append(Sent(job.name, tick, self._send(job, tick)))
        return results

    def run_forever(self) -> None:
        """Wake at each minute until :meth:`stop` (a signal handler may call it)."""
        logger.info("Running %d jobs; waking at each minute (UTC)", len(self.schedule))
        while True:
            self.wake()
            now = self.clock()
            next_minute = floor_minute(now) + ONE_MINUTE
            if self._wait((next_minute - now).total_seconds() + WAKE_MARGIN_S):
                return

    def stop(self) -> None:
        self._stop.set()

    def _newest_sent(self) -> dict[str, dt.datetime | None]:
        """The newest tick of each job any scheduler sent; none known if Redis fails."""
        try:
            return self.claims.last_ticks(job.name for job in self.schedule)
        except Exception:
            logger.exception("Could not read the last ticks sent; missed ticks may be misreported")
            return {}

    def _tick_to_send(
        self, job: Job, now: dt.datetime, newest_sent: dt.datetime | None
    ) -> dt.datetime | None:
        """The tick of ``job`` to send now, if any; logs the ticks missed since it last ran.

        The current minute is always tried (the claim decides). A tick is missed if it is due
        since this scheduler last looked and older than any tick a scheduler sent: a tick that
        another scheduler covered while this one was paused is not missed.
        """
        current = now if job.cron.validate(now) else None
        known = [moment for moment in (self._seen.get(job.name), newest_sent) if moment]
        if not known:
            return current  # never sent: nothing can have been missed
        since = max(known)
        if since < now - LOOKBACK:
            logger.warning(
                "%s: the last tick sent was %s; ticks before %s are not looked for",
                job.name,
                tick_id(since),
                tick_id(now - LOOKBACK),
            )
            since = now - LOOKBACK
        missed = [tick for tick in ticks_between(job.cron, since, now) if tick != now]
        send = missed.pop() if job.catch_up and missed and current is None else current
        if send is not None and send != now:
            logger.warning(
                "%s: catching up tick %s, missed while no scheduler ran", job.name, tick_id(send)
            )
        if missed:
            policy = "only the most recent is sent" if job.catch_up else "catch_up is off"
            logger.warning(
                "%s: %d tick(s) since %s were missed while no scheduler ran, not sent (%s): %s",
                job.name,
                len(missed),
                tick_id(since),
                policy,
                _list_ticks(missed),
            )
        return send

    def _send(self, job: Job, tick: dt.datetime) -> Outcome:
        stamp = tick_id(tick)
        message = job.actor.message_with_options(kwargs={TICK_ARGUMENT: stamp})
        try:
            if not self.claims.claim(job.name, stamp, message.message_id):
                logger.info("Tick %s of %s: already sent by another scheduler", stamp, job.name)
                return Outcome.TAKEN
            job.actor.broker.enqueue(message)
        except Exception:
            # One job's failure must not stop the others, nor the next minute's ticks.
            logger.exception("Tick %s of %s was NOT sent", stamp, job.name)
            return Outcome.FAILED
        logger.info("Tick %s of %s: sent as message %s", stamp, job.name, message.message_id)
        return Outcome.SENT


def _list_ticks(ticks: list[dt.datetime]) -> str:
    """The times of ``ticks``, at most ``LISTED_TICKS`` of them with a gap marked."""
    stamps = [tick_id(tick) for tick in ticks]
    if len(stamps) <= LISTED_TICKS:
        return ", ".join(stamps)
    half = LISTED_TICKS // 2
    hidden = len(stamps) - 2 * half
    return ", ".join([*stamps[:half], f"... ({hidden} more) ...", *stamps[-half:]])
