"""The scheduler loop: wake each minute, send each due job once per tick across all schedulers.

It replaces periodiq's ``Scheduler`` rather than subclassing it: that class sleeps until
``next_valid_date`` (wrong for some specs, see ``scheduler.cron``), reads the clock in the
process's local time, sends without asking anyone, and forgets ticks it slept through. This
loop keeps periodiq's cron specs and ``validate``, and adds:

- Once per tick. Each send is claimed in Redis first (``scheduler.claims``): a second scheduler
  (a rolling deploy, a dyno started by mistake) loses the claim and sends nothing.
- Kept through a Redis outage. A tick that comes due while Redis (or the broker) cannot answer
  is kept with its message and tried again every ``RETRY_MS`` until it is sent or its job's
  ``max_age`` has run out (``scheduler.delivery``); the Redis clients reconnect on their own.
- Kept through a Redis outage at start. A scheduler started while Redis is down waits for it
  (``scheduler.startup``); the ticks due while it waited are kept like an outage's, not missed:
  its first wake-up sends each one whose job's ``max_age`` has not run out since it came due.
- Missed ticks. At each wake-up the newest tick any scheduler sent for each job (kept in
  Redis) says what already ran; due ticks since then, other than the current minute, were
  missed: no scheduler ran (a deploy gap, a crash), or this one was paused alone. A job with
  ``catch_up`` gets the most recent one sent now; the others are logged with their times, never
  dropped silently.
- Operators' control, kept in Redis (``app.schedule_control``). A paused job's ticks are not
  sent, each logged; the pauses are read at each minute, and if Redis cannot answer the pauses
  last read stay in force. A pause means "do not run", not "run later": the ticks due while it
  lasted are not caught up when the job is resumed, not even by a scheduler started meanwhile
  (the resume time bounds the search for missed ticks). A pause applies to ticks as they come
  due: one already kept through an outage is still sent.
- Run now. Between minutes the scheduler wakes every ``POLL_MS`` to take run-now requests (one
  Redis call), so a run starts within seconds; scheduled ticks are still sent at the minute.
  Each request is sent as a tick of its own (``RunRequest.tick``), claimed like a scheduled one
  so it is sent once across schedulers, but recorded as no scheduled tick: the job's next tick
  still runs. A request runs a paused job too: an operator asked for that one run.
- A clock and a wait that tests replace, so ticks can be driven without waiting for minutes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping

import redis

from app.middleware.ticks import tick_id
from app.schedule_control import paused_jobs, resumed_times, take_run_requests
from scheduler.claims import TickClaims
from scheduler.cron import ONE_MINUTE, floor_minute, ticks_between
from scheduler.delivery import Sent, TickDelivery
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
#: How often ticks kept through an outage are tried again.
RETRY_MS = 2_000
#: How often run-now requests are looked for between minutes: "run now" starts within this.
POLL_MS = 2_000


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TickScheduler:
    """Runs a :class:`Schedule`; as many processes as you like may run one against one Redis."""

    def __init__(
        self,
        schedule: Schedule,
        *,
        claims: TickClaims,
        clock: Clock = utc_now,
        wait: Wait | None = None,
        retry_ms: int = RETRY_MS,
        poll_ms: int = POLL_MS,
        started_at: dt.datetime | None = None,
    ) -> None:
        self.schedule = schedule
        #: When the process started; ticks due since then, before its first wake-up, were due
        #: while it waited for Redis.
        self.started_at = started_at
        self.claims = claims
        self.clock = clock
        self.retry_ms = retry_ms
        self.poll_ms = poll_ms
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._delivery = TickDelivery(claims=claims)
        #: Per job, the minute this scheduler last woke for.
        self._seen: dict[str, dt.datetime] = {}
        #: The paused jobs and resume times last read, in force while Redis cannot answer.
        self._paused: frozenset[str] = frozenset()
        self._resumed: Mapping[str, dt.datetime] = {}
        #: Whether taking run-now requests failed last time (an outage is logged once).
        self._requests_failing = False

    @property
    def pending(self) -> int:
        """How many due ticks wait to be sent (Redis or the broker could not take them yet)."""
        return len(self._delivery)

    def wake(self) -> list[Sent]:
        """Send every job due at the current minute (and catch-up ticks) unless it is paused,
        and the run-now requests, after any tick still kept from an outage; say what happened
        to each."""
        moment = self.clock()
        now = floor_minute(moment)
        newest = self._newest_sent()
        self._read_pauses()
        for job in self.schedule:
            waited = self._waited_for(job, now)
            if job.name in self._paused:
                _log_paused(job, [*waited, now] if job.cron.validate(now) else waited)
            else:
                for due in waited:  # their max_age counts from when they came due, as in an outage
                    self._delivery.add(job, due, now=due)
                tick = self._tick_to_send(job, now, newest.get(job.name), waited=waited)
                if tick is not None:
                    self._delivery.add(job, tick, now=moment)
            self._seen[job.name] = now
        self._take_run_requests(moment)
        return self._delivery.send(now=moment)

    def poll(self) -> list[Sent]:
        """Between minutes: send the run-now requests, and try again the ticks kept from an
        outage; say what happened to each."""
        moment = self.clock()
        self._take_run_requests(moment)
        return self._delivery.send(now=moment)

    def run_forever(self) -> None:
        """Wake at each minute, and :meth:`poll` every ``poll_ms`` between (every ``retry_ms``
        while ticks are kept), until :meth:`stop` (a signal handler may call it)."""
        logger.info(
            "Running %d jobs; waking at each minute (UTC) and every %d ms for run-now requests",
            len(self.schedule),
            self.poll_ms,
        )
        woken: dt.datetime | None = None
        while True:
            minute = floor_minute(self.clock())
            if minute != woken:
                woken = minute
                self.wake()
            else:
                self.poll()
            now = self.clock()
            until_minute = (floor_minute(now) + ONE_MINUTE - now).total_seconds() + WAKE_MARGIN_S
            wait_s = min(until_minute, self.poll_ms / 1000)
            if self.pending:
                wait_s = min(wait_s, self.retry_ms / 1000)
            if self._wait(wait_s):
                return

    def stop(self) -> None:
        self._stop.set()

    def _newest_sent(self) -> dict[str, dt.datetime | None]:
        """The newest tick of each job any scheduler sent; none known if Redis fails."""
        try:
            return self.claims.last_ticks(job.name for job in self.schedule)
        except redis.RedisError as error:
            logger.warning(
                "Could not read the last ticks sent (%s: %s); missed ticks may be misreported",
                type(error).__name__,
                error,
            )
        except Exception:
            logger.exception("Could not read the last ticks sent; missed ticks may be misreported")
        return {}

    def _read_pauses(self) -> None:
        """Read the paused jobs and their resume times; if Redis fails, keep those last read."""
        client = self.claims.client
        try:
            self._paused, self._resumed = paused_jobs(client), resumed_times(client)
        except redis.RedisError as error:
            logger.warning(
                "Could not read the paused jobs (%s: %s); the pauses last read stay in force: %s",
                type(error).__name__,
                error,
                ", ".join(sorted(self._paused)) or "none",
            )

    def _take_run_requests(self, moment: dt.datetime) -> None:
        """Queue the run-now requests waiting in Redis; if it fails they wait there, and the
        failure is logged once until Redis answers again."""
        try:
            requests = take_run_requests(self.claims.client)
        except redis.RedisError as error:
            if not self._requests_failing:
                logger.warning(
                    "Could not take the run-now requests (%s: %s); they wait in Redis",
                    type(error).__name__,
                    error,
                )
            self._requests_failing = True
            return
        if self._requests_failing:
            logger.info("Run-now requests are taken again")
        self._requests_failing = False
        jobs = {job.name: job for job in self.schedule}
        for request in requests:
            job = jobs.get(request.job)
            if job is None:
                logger.error(
                    "Run-now request %s names %s, not a job of this schedule: dropped",
                    request.request_id,
                    request.job,
                )
                continue
            logger.info(
                "Run-now request %s of %s taken (asked by %s at %s)",
                request.request_id,
                job.name,
                request.requested_by,
                request.tick,
            )
            self._delivery.add_request(job, request, now=moment)

    def _waited_for(self, job: Job, now: dt.datetime) -> list[dt.datetime]:
        """Ticks of ``job`` due after this process started and before its first wake-up (the
        current minute aside): it was waiting for Redis to answer."""
        if self.started_at is None or job.name in self._seen:
            return []
        return [tick for tick in ticks_between(job.cron, self.started_at, now) if tick != now]

    def _tick_to_send(
        self,
        job: Job,
        now: dt.datetime,
        newest_sent: dt.datetime | None,
        *,
        waited: list[dt.datetime],
    ) -> dt.datetime | None:
        """The tick of ``job`` to send now, if any; logs the ticks missed since it last ran.

        The current minute is always tried (the claim decides). A tick is missed if it is due
        since this scheduler last looked and older than any tick a scheduler sent: a tick that
        another scheduler covered while this one was paused is not missed, nor one this
        scheduler was waiting for Redis to send (``waited``, kept and sent already), nor one
        due before an operator last resumed the job (paused, not missed).
        """
        current = now if job.cron.validate(now) else None
        known = [moment for moment in (self._seen.get(job.name), newest_sent) if moment]
        if not known:
            return current  # never sent: nothing can have been missed
        resumed = self._resumed.get(job.name)
        since = max(known) if resumed is None else max(*known, resumed)
        if since < now - LOOKBACK:
            logger.warning(
                "%s: the last tick sent was %s; ticks before %s are not looked for",
                job.name,
                tick_id(since),
                tick_id(now - LOOKBACK),
            )
            since = now - LOOKBACK
        due = ticks_between(job.cron, since, now)
        missed = [tick for tick in due if tick != now and tick not in waited]
        caught_up = current is not None or bool(waited)
        send = missed.pop() if job.catch_up and missed and not caught_up else current
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


def _log_paused(job: Job, ticks: list[dt.datetime]) -> None:
    for tick in ticks:
        logger.info("job %s is paused: tick %s not sent", job.name, tick_id(tick))


def _list_ticks(ticks: list[dt.datetime]) -> str:
    """The times of ``ticks``, at most ``LISTED_TICKS`` of them with a gap marked."""
    stamps = [tick_id(tick) for tick in ticks]
    if len(stamps) <= LISTED_TICKS:
        return ", ".join(stamps)
    half = LISTED_TICKS // 2
    hidden = len(stamps) - 2 * half
    return ", ".join([*stamps[:half], f"... ({hidden} more) ...", *stamps[-half:]])
