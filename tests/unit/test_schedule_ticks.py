"""Ticks: once per tick across schedulers, missed ticks caught up or logged, duplicates skipped by
workers, periodiq's own scheduler's included. Schedulers run on a clock the test moves, against
the test's own Redis."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dramatiq
import pendulum
import periodiq
import pytest
import redis
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker

from app.middleware.ticks import TickGuard, message_tick, tick_key
from scheduler.claims import TickClaims
from scheduler.delivery import TickOutcome
from scheduler.jobs import Schedule, every
from scheduler.ticker import TickScheduler
from tests.support.clock import Clock
from tests.support.scheduler_actors import QUEUE, SCHEDULE, declare_noop_actor

START = dt.datetime(2024, 6, 3, 9, 29, 40, tzinfo=dt.UTC)


@pytest.fixture
def declared(stub_broker):
    """Declare do-nothing actors on the stub broker; forgotten after the test."""
    names: list[str] = []

    def declare(name: str) -> dramatiq.Actor[..., Any]:
        names.append(name)
        return declare_noop_actor(name)

    yield declare
    for name in names:
        del stub_broker.actors[name]


def queued(broker: StubBroker) -> list[Message[Any]]:
    return [Message.decode(data) for data in list(broker.queues[QUEUE].queue)]


def ticks_queued(broker: StubBroker) -> Counter[tuple[str, str]]:
    return Counter((m.actor_name, m.kwargs["tick"]) for m in queued(broker))


def tick(hour: int, minute: int, day: int = 3) -> str:
    return dt.datetime(2024, 6, day, hour, minute, tzinfo=dt.UTC).isoformat()


# Two schedulers


def wake(
    scheduler: TickScheduler, barrier: threading.Barrier, outcomes: Counter[TickOutcome]
) -> None:
    """Wake ``scheduler`` once all racers are ready; count what it did."""
    barrier.wait()
    outcomes.update(sent.outcome for sent in scheduler.wake())


def test_two_schedulers_send_each_tick_of_each_job_once(client, stub_broker):
    # Given two schedulers on one Redis, their clocks a few hundred ms apart
    clocks = [Clock(START), Clock(START + dt.timedelta(milliseconds=300))]
    schedulers = [
        TickScheduler(SCHEDULE, claims=TickClaims(client), clock=clock) for clock in clocks
    ]

    # When both wake at the same moments for five minutes, racing each other
    outcomes: Counter[TickOutcome] = Counter()
    for _ in range(5):
        for clock in clocks:
            clock.advance(minutes=1)
        barrier = threading.Barrier(len(schedulers))
        threads = [threading.Thread(target=wake, args=(s, barrier, outcomes)) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # Then each job has exactly one message per tick, stamped with it
    minutes = [tick(9, 30 + m) for m in range(5)]
    assert ticks_queued(stub_broker) == {
        (job.name, minute): 1 for job in SCHEDULE for minute in minutes
    }
    # and every tick was contended: one scheduler sent it, the other found it taken
    assert outcomes == {TickOutcome.SENT: 10, TickOutcome.TAKEN: 10}


def test_a_scheduler_wakes_at_each_minute_and_stops_when_asked(client, stub_broker):
    clock = Clock(START)
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.advance(seconds=seconds)
        return True  # stop after the first wait

    scheduler = TickScheduler(
        SCHEDULE, claims=TickClaims(client), clock=clock, wait=wait, poll_ms=60_000
    )

    scheduler.run_forever()

    assert waits == [pytest.approx(20.05)]  # 09:29:40 -> 09:30:00, plus the margin
    assert set(ticks_queued(stub_broker)) == {(job.name, tick(9, 29)) for job in SCHEDULE}


def test_between_minutes_a_scheduler_looks_for_run_now_requests_every_two_seconds(
    client, stub_broker
):
    # Given a scheduler started at 09:29:41 whose wait moves its clock
    clock = Clock(START + dt.timedelta(seconds=1))
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.advance(seconds=seconds)
        return len(waits) == 11

    # When it runs until 09:30:02
    TickScheduler(SCHEDULE, claims=TickClaims(client), clock=clock, wait=wait).run_forever()

    # Then it waited 2 s at a time, except the last wait before the minute, which ended on it
    # (plus the margin): 09:30 was sent when due, as if it had slept the whole minute
    assert waits == [pytest.approx(2.0)] * 9 + [pytest.approx(1.05), pytest.approx(2.0)]
    assert set(ticks_queued(stub_broker)) == {
        (job.name, minute) for job in SCHEDULE for minute in (tick(9, 29), tick(9, 30))
    }


# Missed ticks


@pytest.fixture
def daily_and_hourly(declared) -> Schedule:
    return Schedule(
        every("0 6 * * *", run=declared("daily_summary"), catch_up=True),
        every("0 * * * *", run=declared("hourly_cleanup")),
    )


def test_a_scheduler_starting_late_sends_the_latest_missed_tick_of_a_catch_up_job(
    client, stub_broker, daily_and_hourly, caplog
):
    # Given the last ticks sent before every scheduler stopped, on Saturday night
    claims = TickClaims(client)
    claims.claim("daily_summary", tick(6, 0, day=1), "m-1")
    claims.claim("hourly_cleanup", tick(23, 0, day=1), "m-2")

    # When a scheduler starts on Monday at 09:29
    scheduler = TickScheduler(daily_and_hourly, claims=claims, clock=Clock(START))
    sent = scheduler.wake()

    # Then only Monday's 06:00 summary is sent, and recorded as the newest tick
    assert [(s.job, s.tick.isoformat(), s.outcome) for s in sent] == [
        ("daily_summary", tick(6, 0), TickOutcome.SENT)
    ]
    assert ticks_queued(stub_broker) == {("daily_summary", tick(6, 0)): 1}
    assert claims.last_ticks(["daily_summary"]) == {
        "daily_summary": dt.datetime(2024, 6, 3, 6, tzinfo=dt.UTC)
    }
    # and the ticks not sent are logged with their times
    assert (
        "daily_summary: 1 tick(s) since 2024-06-01T06:00:00+00:00 were missed while no scheduler "
        "ran, not sent (only the most recent is sent): 2024-06-02T06:00:00+00:00" in caplog.text
    )
    assert (
        "hourly_cleanup: 34 tick(s) since 2024-06-01T23:00:00+00:00 were missed while no "
        "scheduler ran, not sent (catch_up is off): 2024-06-02T00:00:00+00:00, "
        "2024-06-02T01:00:00+00:00, 2024-06-02T02:00:00+00:00, 2024-06-02T03:00:00+00:00, "
        "2024-06-02T04:00:00+00:00, ... (24 more) ..., 2024-06-03T05:00:00+00:00, "
        "2024-06-03T06:00:00+00:00, 2024-06-03T07:00:00+00:00, 2024-06-03T08:00:00+00:00, "
        "2024-06-03T09:00:00+00:00" in caplog.text
    )


def test_two_schedulers_starting_late_catch_up_once(client, stub_broker, daily_and_hourly):
    claims = TickClaims(client)
    claims.claim("daily_summary", tick(6, 0, day=1), "m-1")
    schedulers = [
        TickScheduler(daily_and_hourly, claims=TickClaims(client), clock=Clock(START))
        for _ in range(2)
    ]

    outcomes = [sent.outcome for scheduler in schedulers for sent in scheduler.wake()]

    # The second finds the tick sent (the newest tick sent is read at each wake-up)
    assert outcomes == [TickOutcome.SENT]
    assert ticks_queued(stub_broker) == {("daily_summary", tick(6, 0)): 1}


def test_without_a_record_of_earlier_ticks_nothing_is_caught_up(
    client, stub_broker, daily_and_hourly
):
    scheduler = TickScheduler(daily_and_hourly, claims=TickClaims(client), clock=Clock(START))

    assert scheduler.wake() == []
    assert queued(stub_broker) == []


def test_a_late_wake_up_logs_the_minutes_it_slept_through(client, stub_broker, caplog):
    # Given a running scheduler that sent 09:30
    clock = Clock(START + dt.timedelta(seconds=20))
    scheduler = TickScheduler(SCHEDULE, claims=TickClaims(client), clock=clock)
    scheduler.wake()

    # When it next wakes three minutes later (a paused process)
    clock.advance(minutes=3)
    scheduler.wake()

    # Then 09:33 is sent, and 09:31 and 09:32 are logged, not lost silently
    assert ticks_queued(stub_broker) == {
        (job.name, minute): 1 for job in SCHEDULE for minute in (tick(9, 30), tick(9, 33))
    }
    assert (
        "every_minute: 2 tick(s) since 2024-06-03T09:30:00+00:00 were missed while no scheduler "
        "ran, not sent (catch_up is off): 2024-06-03T09:31:00+00:00, 2024-06-03T09:32:00+00:00"
    ) in caplog.text


def test_ticks_another_scheduler_sent_while_one_was_paused_are_not_missed(
    client, stub_broker, caplog
):
    # Given two schedulers; the first is paused after 09:30 while the second keeps waking
    paused, running = (
        Clock(START + dt.timedelta(seconds=20)),
        Clock(START + dt.timedelta(seconds=20)),
    )
    first, second = (
        TickScheduler(SCHEDULE, claims=TickClaims(client), clock=clock)
        for clock in (paused, running)
    )
    for scheduler in (first, second):
        scheduler.wake()
    for _ in range(3):
        running.advance(minutes=1)
        second.wake()

    # When the first wakes again at 09:33
    paused.advance(minutes=3)
    outcomes = [sent.outcome for sent in first.wake()]

    # Then it finds 09:33 taken and reports nothing missed: every tick went out once
    assert outcomes == [TickOutcome.TAKEN, TickOutcome.TAKEN]
    assert "missed" not in caplog.text
    assert ticks_queued(stub_broker) == {
        (job.name, tick(9, 30 + m)): 1 for job in SCHEDULE for m in range(4)
    }


# The worker side


@pytest.fixture
def guarded(client: redis.Redis) -> Iterator[tuple[StubBroker, dramatiq.Actor[..., Any], list]]:
    """A StubBroker with the TickGuard, a worker, and an actor recording its ticks."""
    broker = StubBroker()
    broker.add_middleware(TickGuard(client=client))
    ran: list[Any] = []

    @dramatiq.actor(broker=broker, queue_name="ticks", max_retries=0)
    def nightly(**kwargs: Any) -> None:
        ran.append(kwargs.get("tick"))

    worker = Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield broker, nightly, ran
    worker.stop()


def test_a_worker_skips_a_second_message_for_a_tick_the_scheduler_claimed(client, guarded):
    broker, nightly, ran = guarded
    # Given the scheduler's message for tick 02:00, claimed
    first = nightly.message_with_options(kwargs={"tick": tick(2, 0)})
    assert TickClaims(client).claim("nightly", tick(2, 0), first.message_id)

    # When it arrives, then a copy with another id (a scheduler without claims), then a
    # redelivery of the first (same id)
    broker.enqueue(first)
    broker.enqueue(first.copy(message_id=str(uuid.uuid4())))
    broker.enqueue(first)
    broker.join("ticks")

    # Then the scheduler's message runs, twice as delivered, and the copy never does
    assert ran == [tick(2, 0), tick(2, 0)]


def test_a_worker_runs_the_first_message_of_an_unclaimed_tick_and_any_untimed_one(client, guarded):
    broker, nightly, ran = guarded

    nightly.send(tick=tick(3, 0))
    broker.join("ticks")
    nightly.send(tick=tick(3, 0))
    nightly.send()
    broker.join("ticks")

    assert sorted(ran, key=str) == [tick(3, 0), None]
    assert client.get(tick_key("nightly", tick(3, 0))) is not None


# periodiq's own scheduler: its messages carry scheduled_at, not a tick argument


def periodiq_sends(actor: dramatiq.Actor[..., Any], moment: str) -> None:
    """Send ``actor`` the way periodiq's ``Scheduler`` does for a wake-up at ``moment``."""
    periodiq.Scheduler(actors=[actor]).send_actors([actor], now=pendulum.parse(moment))


def test_two_periodiq_messages_for_one_scheduled_minute_run_once(client, guarded):
    broker, nightly, ran = guarded
    # Given two periodiq schedulers that woke for 02:00 a second apart, one in Kathmandu time
    periodiq_sends(nightly, "2024-06-03T02:00:00+00:00")
    periodiq_sends(nightly, "2024-06-03T07:45:01+05:45")

    # When a worker has processed both messages
    broker.join("ticks")

    # Then the actor ran once, and the tick's key names the message that ran
    assert ran == [None]  # periodiq passes no tick argument
    assert client.get(tick_key("nightly", tick(2, 0))) is not None


def test_periodiq_messages_of_different_minutes_each_run(client, guarded):
    broker, nightly, ran = guarded

    periodiq_sends(nightly, "2024-06-03T02:00:00+00:00")
    periodiq_sends(nightly, "2024-06-03T02:01:00+00:00")
    broker.join("ticks")

    assert len(ran) == 2


def test_a_periodiq_message_after_fintasks_tick_message_of_that_minute_is_skipped(client, guarded):
    broker, nightly, ran = guarded
    # Given fintask's scheduler sent 02:00, and a periodiq scheduler (mid-migration) did too
    nightly.send(tick=tick(2, 0))
    broker.join("ticks")
    periodiq_sends(nightly, "2024-06-03T02:00:00+00:00")

    # When the worker has processed both
    broker.join("ticks")

    # Then only fintask's message ran
    assert ran == [tick(2, 0)]


@pytest.mark.parametrize(
    ("kwargs", "options", "expected"),
    [
        ({"tick": tick(2, 0)}, {"scheduled_at": "2024-06-03 05:00:00+00:00"}, tick(2, 0)),
        ({}, {"scheduled_at": "2024-06-03 02:00:59.9+00:00"}, tick(2, 0)),
        ({}, {"scheduled_at": "2024-06-03T07:45:00+05:45"}, tick(2, 0)),
        ({}, {"scheduled_at": "yesterday"}, None),
        ({}, {}, None),
    ],
)
def test_a_messages_tick_is_its_argument_else_periodiqs_stamp_cut_to_the_utc_minute(
    kwargs, options, expected
):
    message = Message("ticks", "nightly", (), kwargs, options)

    assert message_tick(message) == expected
