"""Redis going away under a running scheduler: a tick due meanwhile is kept with its message and
sent once when Redis answers again, unless its job's max_age runs out first; a scheduler started
while Redis is down waits for it. Schedulers run on a clock the test moves, against the test's
own Redis, with an outage switched on and off in front of it."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.claims import TickClaims
from scheduler.delivery import Sent, TickOutcome
from scheduler.jobs import Schedule, every
from scheduler.startup import wait_for_redis
from scheduler.ticker import TickScheduler
from tests.support.clock import Clock
from tests.support.scheduler_actors import QUEUE, declare_noop_actor

START = dt.datetime(2024, 6, 3, 9, 30, 0, 50_000, tzinfo=dt.UTC)
REFUSED = "Error 111 connecting to 127.0.0.1:6379. Connection refused."


class Outage:
    """Redis as the scheduler sees it: reachable, or refusing connections until it is back."""

    def __init__(self) -> None:
        self.down = False

    def check(self) -> None:
        if self.down:
            raise redis.ConnectionError(REFUSED)


class ClaimsBehindAnOutage(TickClaims):
    """The real claims, failing while the outage lasts, as a dropped connection does."""

    def __init__(self, client: redis.Redis, outage: Outage) -> None:
        super().__init__(client)
        self.outage = outage

    def claim(self, actor_name: str, tick: str, message_id: str, *, scheduled: bool = True) -> bool:
        self.outage.check()
        return super().claim(actor_name, tick, message_id, scheduled=scheduled)

    def last_ticks(self, actor_names: Iterable[str]) -> dict[str, dt.datetime | None]:
        self.outage.check()
        return super().last_ticks(actor_names)


@pytest.fixture
def every_minute(stub_broker):
    """A schedule of one job every minute whose max_age is ten minutes."""
    actor = declare_noop_actor("outage_every_minute", max_age=600_000)
    yield Schedule(every("* * * * *", run=actor))
    del stub_broker.actors[actor.actor_name]


def queued(broker: StubBroker) -> list[Message[Any]]:
    return [Message.decode(data) for data in list(broker.queues[QUEUE].queue)]


def queued_ticks(broker: StubBroker) -> Counter[str]:
    return Counter(message.kwargs["tick"] for message in queued(broker))


def outcomes(sent: list[Sent]) -> list[tuple[str, TickOutcome]]:
    return [(f"{s.tick:%H:%M}", s.outcome) for s in sent]


def test_a_tick_due_while_redis_is_down_is_sent_once_when_it_answers(
    client, stub_broker, every_minute, caplog
):
    caplog.set_level(logging.INFO, logger="scheduler")
    # Given a scheduler whose Redis goes away just before 09:31
    outage = Outage()
    clock = Clock(START)
    scheduler = TickScheduler(
        every_minute, claims=ClaimsBehindAnOutage(client, outage), clock=clock
    )
    assert outcomes(scheduler.wake()) == [("09:30", TickOutcome.SENT)]
    outage.down = True

    # When 09:31 comes due during the outage, and is tried again while it lasts
    clock.advance(minutes=1)
    during = [scheduler.wake(), *(clock.advance(seconds=2) or scheduler.poll() for _ in range(3))]

    # Then it is kept, said once in one line, and nothing is sent
    assert [outcomes(sent) for sent in during] == [[("09:31", TickOutcome.PENDING)]] * 4
    assert scheduler.pending == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    kept = [line for line in warnings if "not sent yet" in line]
    assert kept == [
        f"Tick 2024-06-03T09:31:00+00:00 of outage_every_minute not sent yet: ConnectionError: "
        f"{REFUSED}; kept and tried again until 09:41:00 UTC (max_age)"
    ]
    assert all("\n" not in line for line in warnings)
    assert queued_ticks(stub_broker) == {"2024-06-03T09:30:00+00:00": 1}

    # And when Redis answers again, the next retry sends it, once, with the message built at 09:31
    outage.down = False
    clock.advance(seconds=2)
    assert outcomes(scheduler.poll()) == [("09:31", TickOutcome.SENT)]
    assert scheduler.pending == 0
    assert scheduler.poll() == []
    assert queued_ticks(stub_broker) == {
        "2024-06-03T09:30:00+00:00": 1,
        "2024-06-03T09:31:00+00:00": 1,
    }
    assert "Tick 2024-06-03T09:31:00+00:00 of outage_every_minute: sent as message" in caplog.text
    assert "8 s late (Redis answers again)" in caplog.text


def test_ticks_kept_through_a_long_outage_go_out_oldest_first_and_once_each(
    client, stub_broker, every_minute
):
    # Given a scheduler whose Redis is down from 09:31 to 09:33:30
    outage = Outage()
    clock = Clock(START)
    scheduler = TickScheduler(
        every_minute, claims=ClaimsBehindAnOutage(client, outage), clock=clock
    )
    scheduler.wake()
    outage.down = True
    for _ in range(3):
        clock.advance(minutes=1)
        scheduler.wake()

    # When Redis answers again
    outage.down = False
    clock.advance(seconds=30)
    sent = scheduler.poll()

    # Then the three ticks of the outage are sent in order, and 09:34 as usual after them
    assert outcomes(sent) == [(f"09:3{m}", TickOutcome.SENT) for m in (1, 2, 3)]
    clock.advance(seconds=30)
    assert outcomes(scheduler.wake()) == [("09:34", TickOutcome.SENT)]
    assert queued_ticks(stub_broker) == {f"2024-06-03T09:3{m}:00+00:00": 1 for m in range(5)}


def test_a_claim_that_went_through_before_the_send_failed_is_the_retrys_own(
    client, stub_broker, every_minute, monkeypatch
):
    # Given a scheduler whose claim of 09:30 reaches Redis, and whose send then fails
    scheduler = TickScheduler(every_minute, claims=TickClaims(client), clock=Clock(START))
    enqueue = stub_broker.enqueue

    def lost_connection(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(stub_broker, "enqueue", lost_connection)
    assert outcomes(scheduler.wake()) == [("09:30", TickOutcome.PENDING)]

    # When Redis answers again and the tick is retried
    monkeypatch.setattr(stub_broker, "enqueue", enqueue)
    sent = scheduler.poll()

    # Then the retry finds the claim its own and sends the tick, not "already sent"
    assert outcomes(sent) == [("09:30", TickOutcome.SENT)]
    assert queued_ticks(stub_broker) == {"2024-06-03T09:30:00+00:00": 1}


def test_two_schedulers_holding_one_tick_through_an_outage_send_it_once(
    client, stub_broker, every_minute
):
    # Given two schedulers that both kept 09:30 while Redis was down
    outage = Outage()
    outage.down = True
    schedulers = [
        TickScheduler(every_minute, claims=ClaimsBehindAnOutage(client, outage), clock=Clock(START))
        for _ in range(2)
    ]
    for scheduler in schedulers:
        scheduler.wake()

    # When Redis answers and both retry
    outage.down = False
    results = [s.outcome for scheduler in schedulers for s in scheduler.poll()]

    # Then one sends it and the other finds it taken
    assert results == [TickOutcome.SENT, TickOutcome.TAKEN]
    assert queued_ticks(stub_broker) == {"2024-06-03T09:30:00+00:00": 1}


def test_a_tick_still_unsent_when_its_max_age_runs_out_is_dropped_saying_so(
    client, stub_broker, every_minute, caplog
):
    # Given a scheduler that kept 09:30 through an outage
    outage = Outage()
    outage.down = True
    clock = Clock(START)
    scheduler = TickScheduler(
        every_minute, claims=ClaimsBehindAnOutage(client, outage), clock=clock
    )
    scheduler.wake()

    # When Redis answers only after the job's max_age (ten minutes)
    clock.advance(minutes=10)
    outage.down = False
    sent = scheduler.poll()

    # Then the tick is dropped, not sent late, and the log says why
    assert outcomes(sent) == [("09:30", TickOutcome.EXPIRED)]
    assert scheduler.pending == 0
    assert queued(stub_broker) == []
    assert "Tick 2024-06-03T09:30:00+00:00 of outage_every_minute was NOT sent" in caplog.text


def test_a_message_refused_for_good_is_not_retried(client, stub_broker, every_minute, monkeypatch):
    def refused(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        raise ValueError("message too large")

    monkeypatch.setattr(stub_broker, "enqueue", refused)
    scheduler = TickScheduler(every_minute, claims=TickClaims(client), clock=Clock(START))

    assert outcomes(scheduler.wake()) == [("09:30", TickOutcome.FAILED)]
    assert scheduler.pending == 0


def test_while_ticks_are_kept_the_scheduler_retries_every_few_seconds(
    client, stub_broker, every_minute
):
    # Given a scheduler whose Redis is down
    outage = Outage()
    outage.down = True
    clock = Clock(START)
    claims = ClaimsBehindAnOutage(client, outage)
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.advance(seconds=seconds)
        if len(waits) == 3:
            outage.down = False  # Redis is back for the third retry
        return len(waits) == 5

    # When it runs until the fifth wait, looking for run-now requests only at the minute
    TickScheduler(
        every_minute, claims=claims, clock=clock, wait=wait, retry_ms=2_000, poll_ms=60_000
    ).run_forever()

    # Then it waited 2 s between retries while 09:30 was kept, then for the next minute
    assert waits[:3] == [2.0, 2.0, 2.0]
    assert waits[3] == pytest.approx(54.0)  # 09:30:06.05 -> 09:31:00, plus the margin
    assert queued_ticks(stub_broker) == {
        "2024-06-03T09:30:00+00:00": 1,
        "2024-06-03T09:31:00+00:00": 1,
    }


# Starting while Redis is down


def test_a_scheduler_started_while_redis_is_down_waits_for_it_in_one_line_a_minute(caplog):
    caplog.set_level(logging.INFO, logger="scheduler")
    # Given a Redis that answers on the fourth try, a minute and a half after the first
    answers = iter([False, False, False, True])
    seconds = iter([0.0, 45.0, 90.0, 91.0, 91.0])

    class Client(redis.Redis):
        def ping(self, **kwargs: Any) -> bool:
            if not next(answers):
                raise redis.ConnectionError(REFUSED)
            return True

    waits: list[float] = []

    # When the scheduler starts
    ready = wait_for_redis(
        Client(host="127.0.0.1", port=1),
        wait=lambda s: bool(waits.append(s)),
        retry_ms=2_000,
        monotonic=lambda: next(seconds),
    )

    # Then it waited, trying every 2 s, and logged the wait at its start and after a minute
    assert ready is True
    assert waits == [2.0, 2.0, 2.0]
    lines = [r.getMessage() for r in caplog.records if r.name == "scheduler.startup"]
    assert lines == [
        f"Redis at 127.0.0.1:1 does not answer (ConnectionError: {REFUSED}); waiting for it, "
        "trying every 2000 ms",
        f"Redis at 127.0.0.1:1 still does not answer after 90 s (ConnectionError: {REFUSED})",
        "Redis answers after 91 s",
    ]


def test_a_scheduler_waiting_for_redis_stops_when_told():
    client = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))

    assert wait_for_redis(client, wait=lambda _s: True) is False


def test_ticks_due_while_a_starting_scheduler_waited_for_redis_are_sent_within_max_age(
    client, stub_broker, caplog
):
    # Given a job every minute whose max_age is two and a half minutes, with 09:29 sent before
    # a deploy,
    actor = declare_noop_actor("outage_waited", max_age=150_000)
    schedule = Schedule(every("* * * * *", run=actor))
    TickClaims(client).claim(actor.actor_name, "2024-06-03T09:29:00+00:00", "before-the-deploy")
    # and a scheduler started at 09:30:00.05 that waited for Redis until 09:34:00.05
    clock = Clock(START + dt.timedelta(minutes=4))
    scheduler = TickScheduler(schedule, claims=TickClaims(client), clock=clock, started_at=START)

    # When it wakes for the first time
    sent = outcomes(scheduler.wake())
    del stub_broker.actors[actor.actor_name]

    # Then the ticks due while it waited are not missed ticks: those still within max_age are
    # sent, once, oldest first, with the current one; the older ones are dropped saying why,
    # and only 09:30, due before it started, was missed
    assert sent == [
        ("09:31", TickOutcome.EXPIRED),
        ("09:32", TickOutcome.SENT),
        ("09:33", TickOutcome.SENT),
        ("09:34", TickOutcome.SENT),
    ]
    assert queued_ticks(stub_broker) == {
        "2024-06-03T09:32:00+00:00": 1,
        "2024-06-03T09:33:00+00:00": 1,
        "2024-06-03T09:34:00+00:00": 1,
    }
    assert "Tick 2024-06-03T09:31:00+00:00 of outage_waited was NOT sent" in caplog.text
    missed = [line for line in caplog.messages if "missed while no scheduler ran" in line]
    assert missed == [
        "outage_waited: 1 tick(s) since 2024-06-03T09:29:00+00:00 were missed while no "
        "scheduler ran, not sent (catch_up is off): 2024-06-03T09:30:00+00:00"
    ]
